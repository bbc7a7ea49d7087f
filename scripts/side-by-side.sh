#!/usr/bin/env bash
# Runs one scenario with every mix of the Python original and `napster` (tracker, downloader
# and uploader each one or the other: eight cells), prints the all-original and all-napster
# transcripts side by side, and ends with a summary naming each expectation that failed and
# whose defect it is.
#
# Usage: scripts/side-by-side.sh ORIGINAL_DIR
#
# ORIGINAL_DIR holds the original's `server.py` and its peer script (`peer.py`, or the one
# other `*.py` there, or the file named by ORIGINAL_PEER). The project does not ship them.
#
# Scenario, the same keystrokes in every cell: the tracker T starts; peers A (the uploader)
# and B (the downloader) start; A shares song.txt (3,892 bytes) and aula.bin (300,000 bytes,
# over 64 KiB), B shares notes.txt (the original's peers in p2p/<port>, ours in
# p2p/napster-A and p2p/napster-B). A JOIN;
# B JOIN; B SEARCH song.txt; B DOWNLOAD song.txt from A's port and A answers NAO; again and A
# answers SIM (B's copy is compared with A's); B DOWNLOAD aula.bin, SIM (compared); A SEARCH
# song.txt, which lists B once B's UPDATE arrived; B leaves (SIGTERM) and T says so; A SEARCH
# song.txt, which lists A alone.
#
# Every expectation waits for its line with a bound (STEP_TIMEOUT, default 10 s), or stops at
# once at a line that rules it out; a miss is written into the transcript as "!! ...". Each
# miss is put down to the program whose defect causes it: the original's known defects (its
# uploader cannot listen on Linux; its downloader keeps one recv(fileSize) of the file; its
# tracker never forgets a peer) when that program plays the part, napster otherwise.
# Ports are shown as <A>, <B>; the temporary folder as <work>.
#
# Environment:
#   NAPSTER_BIN    use this binary instead of building target/release/napster
#   ORIGINAL_PEER  the peer script's file name inside ORIGINAL_DIR
#   STEP_TIMEOUT   seconds each expected line may take (default 10)
#   CELLS          which cells to run, as tracker/downloader/uploader letters, o (original) or
#                  n (napster): default "ooo nnn non onn noo oon ono nno" (all eight)
#   ISOLATE=1      run in a private network namespace (unshare -rn), so port 12346 (which the
#                  original hard-codes) cannot collide with anything else on the machine
#   KEEP=1         keep the temporary folder with the raw transcripts
#   SHOW=1         print every cell's transcript, not only the original/napster comparison
#
# Exit status: 0 when no miss is napster's (the original's are reported: they are what is
# being compared), 1 when one is, 2 on a usage or set-up error.
set -uo pipefail

PORT=12346
STEP_TIMEOUT="${STEP_TIMEOUT:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

usage() {
  cat >&2 <<EOF
usage: scripts/side-by-side.sh ORIGINAL_DIR

ORIGINAL_DIR must hold the Python original (the project does not ship it):
  server.py   the original's server (it listens on port $PORT)
  peer.py     the original's peer script (or set ORIGINAL_PEER=name.py; if ORIGINAL_DIR
              holds exactly one other *.py, that one is used)
The peer script is expected to connect to 127.0.0.1:$PORT when it starts and then read the
commands JOIN, SEARCH and DOWNLOAD (and their prompts' answers) from stdin, as the original
does. python3, ss (iproute2), cmp and diff must be installed.
EOF
}

die() {
  echo "side-by-side: $*" >&2
  exit 2
}

orig_dir="${1:-}"
if [ -z "$orig_dir" ] || [ "$orig_dir" = "-h" ] || [ "$orig_dir" = "--help" ]; then
  usage
  exit 2
fi
[ -d "$orig_dir" ] || { usage; die "$orig_dir is not a folder"; }
orig_dir="$(cd "$orig_dir" && pwd)"
[ -f "$orig_dir/server.py" ] || { usage; die "no server.py in $orig_dir"; }
if [ -n "${ORIGINAL_PEER:-}" ]; then
  peer_py="$orig_dir/$ORIGINAL_PEER"
elif [ -f "$orig_dir/peer.py" ]; then
  peer_py="$orig_dir/peer.py"
else
  others=()
  for f in "$orig_dir"/*.py; do
    [ "$(basename "$f")" = server.py ] || others+=("$f")
  done
  [ "${#others[@]}" -eq 1 ] || { usage; die "cannot tell which script in $orig_dir is the peer (found ${#others[@]} candidates); set ORIGINAL_PEER"; }
  peer_py="${others[0]}"
fi
[ -f "$peer_py" ] || { usage; die "peer script $peer_py not found"; }
for tool in python3 ss diff cmp; do
  command -v "$tool" >/dev/null || die "$tool is required"
done
read -ra cells <<<"${CELLS:-ooo nnn non onn noo oon ono nno}"
for cell in "${cells[@]}"; do
  [[ "$cell" =~ ^[on]{3}$ ]] || die "CELLS: $cell is not three letters o/n (tracker, downloader, uploader)"
done

if [ "${ISOLATE:-0}" = 1 ] && [ "${SIDE_BY_SIDE_ISOLATED:-0}" != 1 ]; then
  command -v unshare >/dev/null || die "ISOLATE=1 needs unshare (util-linux)"
  exec unshare -rn env SIDE_BY_SIDE_ISOLATED=1 bash "$0" "$@"
fi
if [ "${SIDE_BY_SIDE_ISOLATED:-0}" = 1 ]; then
  ip link set lo up 2>/dev/null || die "cannot bring up loopback in the private namespace"
fi

if [ -n "${NAPSTER_BIN:-}" ]; then
  napster="$(cd "$(dirname "$NAPSTER_BIN")" && pwd)/$(basename "$NAPSTER_BIN")"
else
  echo "side-by-side: building napster (release)..." >&2
  (cd "$root" && cargo build --release --quiet) || die "cargo build failed"
  napster="$root/target/release/napster"
fi
[ -x "$napster" ] || die "$napster is not executable"

if ss -Hltn "sport = :$PORT" | grep -q .; then
  die "port $PORT is in use; the original hard-codes it. Stop what uses it, or run with ISOLATE=1"
fi

tmp="$(mktemp -d "${TMPDIR:-/tmp}/side-by-side.XXXXXX")"
declare -A pid off fd
procs=()

cleanup() {
  for who in "${procs[@]}"; do
    stop "$who"
  done
  if [ "${KEEP:-0}" = 1 ]; then
    echo "side-by-side: raw transcripts kept in $tmp" >&2
  else
    rm -rf "$tmp"
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# stop WHO: ends a process this script started, by its id: SIGTERM (as a user's kill or
# Ctrl-C would), SIGKILL if it is still there after STEP_TIMEOUT; then closes its input.
stop() {
  local who="$1" p="${pid[$1]:-}" deadline=$((SECONDS + STEP_TIMEOUT))
  [ -n "$p" ] || return 0
  kill -TERM "$p" 2>/dev/null
  while kill -0 "$p" 2>/dev/null && [ "$SECONDS" -lt "$deadline" ]; do
    sleep 0.1 # polling for the exit, bounded by the deadline
  done
  kill -KILL "$p" 2>/dev/null
  wait "$p" 2>/dev/null
  pid[$who]=""
  if [ -n "${fd[$who]:-}" ]; then
    eval "exec ${fd[$who]}>&-"
    fd[$who]=""
  fi
}

# start WHO CMD...: runs CMD in $work with stdin from a fifo we hold open and stdout+stderr
# into $run/WHO.out.
start() {
  local who="$1"
  shift
  mkfifo "$run/$who.in"
  (cd "$work" && exec "$@" <"$run/$who.in" >"$run/$who.out" 2>&1) &
  pid[$who]=$!
  off[$who]=0
  procs+=("$who")
  local f
  exec {f}>"$run/$who.in"
  fd[$who]=$f
}

# type_in WHO LINE...: types lines on WHO's stdin.
type_in() {
  local who="$1"
  shift
  local line
  for line in "$@"; do
    printf '%s\n' "$line" >&"${fd[$who]}" 2>/dev/null || note "!! $who no longer reads its input"
  done
}

alive() { [ -n "${pid[$1]:-}" ] && kill -0 "${pid[$1]}" 2>/dev/null; }

# new_output WHO: what WHO printed since the last snapshot.
new_output() {
  tail -c +"$((off[$1] + 1))" "$run/$1.out" 2>/dev/null
}

note() { printf '%s\n' "$*" >>"$run/transcript"; }

# blame KIND: whose defect a miss of this kind is in the current cell (roles in $impl_T,
# $impl_A, $impl_B): one of the original's known defects, seen when its scripts were run (see
# `defect`), when that program plays the part the expectation depends on; napster otherwise.
blame() {
  case "$1" in
    upload | update)
      [ "$impl_A" = original ] && echo "original-uploader" && return ;;
    big)
      [ "$impl_A" = original ] && echo "original-uploader" && return
      [ "$impl_B" = original ] && echo "original-downloader" && return ;;
    leave)
      [ "$impl_T" = original ] && echo "original-tracker" && return ;;
    start-T | start-A | start-B)
      local role="impl_${1#start-}"
      [ "${!role}" = original ] && echo "original-did-not-start" && return ;;
  esac
  echo "napster"
}

# defect KEY: what a blame key means.
defect() {
  case "$1" in
    original-uploader) echo "the original's peer cannot serve a download on Linux: it binds its upload socket to the port of its own tracker connection, which fails with [Errno 98] Address already in use (printed right after JOIN)" ;;
    original-downloader) echo "the original's downloader keeps what one recv(fileSize) returns: a file over about 64 KiB arrives cut short, and it prints success anyway" ;;
    original-tracker) echo "the original's tracker never forgets a peer that leaves (and spins a core on its closed socket)" ;;
    original-did-not-start) echo "one of the original's programs did not start" ;;
    napster) echo "napster's own defect" ;;
  esac
}

# miss KIND TEXT: notes an expectation not met and whose defect it is.
miss() {
  local who
  who="$(blame "$1")"
  note "!! $2"
  printf '%s\t%s\t%s\n' "$cell" "$2" "$who" >>"$tmp/misses"
  if [ "$who" = napster ]; then
    napster_misses=$((napster_misses + 1))
  fi
  cell_misses=$((cell_misses + 1))
}

# expect KIND WHO REGEX [WHO! REGEX]...: waits until WHO prints a line matching REGEX since the
# last snapshot. Each further pair (its WHO written with a "!") rules the expectation out at
# once when it matches: the program said it failed. A miss is noted and put down to
# `blame KIND`.
expect() {
  local kind="$1" who="$2" regex="$3"
  shift 3
  local rules=("$@") deadline=$((SECONDS + STEP_TIMEOUT)) i w
  expectations=$((expectations + 1))
  while :; do
    if new_output "$who" | grep -qE -- "$regex"; then
      return 0
    fi
    for ((i = 0; i < ${#rules[@]}; i += 2)); do
      w="${rules[i]%!}"
      if new_output "$w" | grep -qE -- "${rules[i + 1]}"; then
        miss "$kind" "step $step: expected $who: /$regex/; $w printed /${rules[i + 1]}/ instead"
        return 1
      fi
    done
    if ! alive "$who"; then
      miss "$kind" "step $step: expected $who: /$regex/, but $who has exited"
      return 1
    fi
    if [ "$SECONDS" -ge "$deadline" ]; then
      miss "$kind" "step $step: expected $who: /$regex/ within ${STEP_TIMEOUT}s; nothing came"
      return 1
    fi
    sleep 0.1 # polling the output files; every wait is bounded by the deadline above
  done
}

# same_copy KIND FILE: B's copy of FILE must be A's, byte for byte.
same_copy() {
  local kind="$1" file="$2"
  expectations=$((expectations + 1))
  snapshot
  if cmp -s "$work/${dirs[A]}/$file" "$work/${dirs[B]}/$file"; then
    note "== check: B's copy of $file is identical to A's"
  elif [ -e "$work/${dirs[B]}/$file" ]; then
    miss "$kind" "step $step: B's copy of $file differs from A's ($(stat -c %s "$work/${dirs[B]}/$file") of $(stat -c %s "$work/${dirs[A]}/$file") bytes)"
  else
    miss "$kind" "step $step: B has no $file"
  fi
}

# snapshot: appends each process's new output to the transcript, prefixed with its name.
snapshot() {
  local who size
  for who in "${procs[@]}"; do
    size=$(stat -c %s "$run/$who.out" 2>/dev/null || echo 0)
    if [ "$size" -gt "${off[$who]}" ]; then
      tail -c +"$((off[$who] + 1))" "$run/$who.out" | head -c "$((size - off[$who]))" >"$run/chunk"
      sed -e "s/^/$who| /" "$run/chunk" >>"$run/transcript"
      # A prompt printed without a newline still ends its own transcript line.
      [ -z "$(tail -c 1 "$run/chunk")" ] || echo >>"$run/transcript"
      off[$who]=$size
    fi
  done
}

step() {
  snapshot
  step="$1"
  shift
  note ""
  note "== $step. $*"
}

# upload_port IMPL WHO: the port other peers reach WHO at, as its tracker lists it.
upload_port() {
  local impl="$1" who="$2" deadline=$((SECONDS + STEP_TIMEOUT)) port=""
  while [ -z "$port" ] && [ "$SECONDS" -lt "$deadline" ] && alive "$who"; do
    if [ "$impl" = napster ]; then
      port=$(sed -n 's/.*Aguardando pedidos de download na porta \([0-9]*\).*/\1/p' "$run/$who.out" | head -n 1)
    else
      # The original keys a peer by the local port of its connection to the server.
      port=$(ss -Htnp state established "( dport = :$PORT )" 2>/dev/null |
        grep "pid=${pid[$who]}," | awk '{print $3}' | sed 's/.*://' | head -n 1)
    fi
    [ -n "$port" ] || sleep 0.1 # polling, bounded by the deadline
  done
  printf '%s' "$port"
}

impl_of() { [ "$1" = o ] && echo original || echo napster; }

# run_cell CELL: the whole scenario with tracker, downloader B and uploader A as CELL's
# letters say; leaves $run/transcript.
run_cell() {
  cell="$1"
  impl_T=$(impl_of "${cell:0:1}")
  impl_B=$(impl_of "${cell:1:1}")
  impl_A=$(impl_of "${cell:2:1}")
  run="$tmp/$cell"
  work="$run/work"
  mkdir -p "$work"
  : >"$run/transcript"
  procs=()
  cell_misses=0
  expectations=0
  step=0
  note "tracker: $impl_T, downloader B: $impl_B, uploader A: $impl_A"

  step 1 "tracker starts on 127.0.0.1:$PORT"
  if [ "$impl_T" = original ]; then
    start T python3 -u "$orig_dir/server.py"
  else
    start T env RUST_LOG="${RUST_LOG:-warn}" "$napster" server --listen "127.0.0.1:$PORT" --legacy-folder-join
  fi
  local deadline=$((SECONDS + STEP_TIMEOUT))
  until ss -Hltn "sport = :$PORT" | grep -q .; do
    if ! alive T || [ "$SECONDS" -ge "$deadline" ]; then
      expectations=$((expectations + 1))
      miss start-T "the tracker is not listening on port $PORT"
      snapshot
      return
    fi
    sleep 0.1 # polling the listening sockets, bounded by the deadline
  done

  local who impl port
  declare -gA ports=() dirs=()
  for who in A B; do
    step "2$who" "peer $who starts"
    impl=impl_$who
    if [ "${!impl}" = original ]; then
      start "$who" python3 -u "$peer_py"
    else
      # Its own folder (the default ./p2p is one folder for every peer, locked by the first).
      dirs[$who]="p2p/napster-$who"
      start "$who" env RUST_LOG="${RUST_LOG:-warn}" "$napster" peer --server "127.0.0.1:$PORT" \
        --listen 127.0.0.1:0 --dir "${dirs[$who]}"
    fi
    port=$(upload_port "${!impl}" "$who")
    if [ -z "$port" ]; then
      expectations=$((expectations + 1))
      miss "start-$who" "cannot tell peer $who's port"
      snapshot
      return
    fi
    ports[$who]=$port
    # The original shares p2p/<the port its tracker lists>, which it creates itself.
    [ "${!impl}" = napster ] || dirs[$who]="p2p/$port"
    mkdir -p "$work/${dirs[$who]}"
  done
  seq 1 400 | sed 's/^/linha /' >"$work/${dirs[A]}/song.txt"
  head -c 300000 /dev/urandom >"$work/${dirs[A]}/aula.bin"
  echo "notas de B" >"$work/${dirs[B]}/notes.txt"

  step 3 "A: JOIN"
  type_in A JOIN
  expect join A "Sou o Peer" && expect join T "adicionado"
  step 4 "B: JOIN"
  type_in B JOIN
  expect join B "Sou o Peer" && expect join T "adicionado"

  step 5 "B: SEARCH song.txt (lists A)"
  type_in B SEARCH song.txt
  expect search B "Peers com arquivo solicitado: .*[^0-9]${ports[A]}([^0-9]|$)" B! "Erro ao buscar"

  local refused="Erro|não encontrado|Rejeitado"
  step 6 "B: DOWNLOAD song.txt from A's port; A: NAO"
  type_in B DOWNLOAD song.txt "${ports[A]}"
  if expect upload A "Gostaria de Aprovar" B! "$refused"; then
    type_in A NAO
    expect upload B "Download Rejeitado" B! "baixado com sucesso|Erro"
  fi

  step 7 "B: DOWNLOAD song.txt again; A: SIM (B's copy compared)"
  type_in B DOWNLOAD song.txt "${ports[A]}"
  if expect upload A "Gostaria de Aprovar" B! "$refused"; then
    type_in A SIM
    expect upload B "baixado com sucesso" B! "$refused"
  fi
  same_copy upload song.txt

  step 8 "B: DOWNLOAD aula.bin (300,000 bytes); A: SIM (B's copy compared)"
  type_in B DOWNLOAD aula.bin "${ports[A]}"
  if expect big A "Gostaria de Aprovar" B! "$refused"; then
    type_in A SIM
    expect big B "baixado com sucesso" B! "$refused"
  fi
  same_copy big aula.bin

  step 9 "A: SEARCH song.txt (B's UPDATE made B a holder)"
  type_in A SEARCH song.txt
  expect update A "Peers com arquivo solicitado: .*[^0-9]${ports[B]}([^0-9]|$)" A! "Erro ao buscar"

  step 10 "B leaves (SIGTERM)"
  stop B
  expect leave T "saiu"

  step 11 "A: SEARCH song.txt (only A is left)"
  type_in A SEARCH song.txt
  expect leave A "Peers com arquivo solicitado: \[([^],]*[^0-9])?${ports[A]}[^0-9,]*\]" A! "Peers com arquivo solicitado: .*,"

  step 12 "the end: A and the tracker stop"
  snapshot
  stop A
  stop T
  snapshot
  note ""
  note "== $cell: $cell_misses of $expectations expectation(s) not met"
  printf '%s %s %s\n' "$cell" "$cell_misses" "$expectations" >>"$tmp/cells"
}

# normalise CELL: the transcript with ports, folders and log timestamps made comparable.
normalise() {
  local c="$1" t="$tmp/$1/transcript"
  local who p rules=(-e "s#$tmp/$c/work#<work>#g" -e 's/^\(.| \)\[[0-9T:.+-]*Z\? */\1[/')
  for who in A B; do
    p=$(sed -n "s/^$c $who=//p" "$tmp/ports")
    [ -z "$p" ] || rules+=(-e "s/\b$p\b/<$who>/g")
  done
  sed "${rules[@]}" "$t"
}

: >"$tmp/ports"
: >"$tmp/misses"
: >"$tmp/cells"
napster_misses=0
for c in "${cells[@]}"; do
  echo "side-by-side: running tracker/downloader/uploader = $(impl_of "${c:0:1}")/$(impl_of "${c:1:1}")/$(impl_of "${c:2:1}")..." >&2
  run_cell "$c"
  for who in A B; do
    printf '%s %s=%s\n' "$c" "$who" "${ports[$who]:-}" >>"$tmp/ports"
  done
  for who in "${procs[@]}"; do stop "$who"; done
done

width="${COLUMNS:-200}"
if [ -f "$tmp/ooo/transcript" ] && [ -f "$tmp/nnn/transcript" ]; then
  normalise ooo >"$tmp/ooo.txt"
  normalise nnn >"$tmp/nnn.txt"
  echo "Python original (left)  |  napster (right)   — '|' differs, '<' only left, '>' only right"
  echo
  diff -y -W "$width" "$tmp/ooo.txt" "$tmp/nnn.txt"
  echo
fi
if [ "${SHOW:-0}" = 1 ]; then
  for c in "${cells[@]}"; do
    echo "---- $c: tracker $(impl_of "${c:0:1}"), downloader $(impl_of "${c:1:1}"), uploader $(impl_of "${c:2:1}")"
    normalise "$c"
    echo
  done
fi

echo "Summary (tracker / downloader B / uploader A):"
while read -r c n total; do
  printf '  %-8s / %-8s / %-8s  %s\n' "$(impl_of "${c:0:1}")" "$(impl_of "${c:1:1}")" "$(impl_of "${c:2:1}")" \
    "$([ "$n" = 0 ] && echo "all $total expectations met" || echo "$n of $total expectations not met:")"
  while IFS=$'\t' read -r mc text who; do
    [ "$mc" = "$c" ] || continue
    printf '      - %s [%s]\n' "$text" "$who"
  done <"$tmp/misses"
done <"$tmp/cells"
if [ -s "$tmp/misses" ]; then
  echo
  echo "Whose defect:"
  cut -f3 "$tmp/misses" | sort -u | while read -r key; do
    printf '  [%s] %s\n' "$key" "$(defect "$key")"
  done
fi
echo
echo "misses that are napster's own defects: $napster_misses"
[ "$napster_misses" -eq 0 ]

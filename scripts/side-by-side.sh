#!/usr/bin/env bash
# Runs one scenario twice, once with the Python original and once with `napster`, and prints
# the two transcripts side by side with the differences marked.
#
# Usage: scripts/side-by-side.sh ORIGINAL_DIR
#
# ORIGINAL_DIR holds the original's `server.py` and its peer script (`peer.py`, or the one
# other `*.py` there, or the file named by ORIGINAL_PEER). The project does not ship them.
#
# Scenario, the same keystrokes for both: tracker; peers A and B start; A shares song.txt;
# A JOIN; B JOIN; B SEARCH song.txt; B DOWNLOAD song.txt from A's port; A answers SIM (B's
# copy is compared with A's); A SEARCH song.txt, which lists B once B's UPDATE arrived; B
# leaves (SIGTERM); A SEARCH song.txt, which lists A alone.
# Every step waits for the lines it expects, with a timeout (STEP_TIMEOUT, default 10 s); a
# line that never comes is written into the transcript as "!! ...", so where the original
# fails the transcript shows it failing. Ports differ between runs and are replaced by <A>,
# <B>; the temporary folder by <work>.
#
# Environment:
#   NAPSTER_BIN    use this binary instead of building target/release/napster
#   ORIGINAL_PEER  the peer script's file name inside ORIGINAL_DIR
#   STEP_TIMEOUT   seconds each expected line may take (default 10)
#   ISOLATE=1      run in a private network namespace (unshare -rn), so port 12346 (which the
#                  original hard-codes) cannot collide with anything else on the machine
#   KEEP=1         keep the temporary folder with the raw transcripts
#   MIXED=1        also run the original's peers against napster's tracker and print that
#                  transcript beside the original's
#
# Exit status: 0 when napster met every expectation (the original's failures are reported,
# they are what is being compared), 1 when napster missed one, 2 on a usage or set-up error.
set -uo pipefail

PORT=12346
STEP_TIMEOUT="${STEP_TIMEOUT:-10}"
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"

usage() {
  cat >&2 <<EOF
usage: scripts/side-by-side.sh ORIGINAL_DIR

ORIGINAL_DIR must hold the Python original (the project does not ship it):
  server.py   the original's server (it listens on 127.0.0.1:$PORT)
  peer.py     the original's peer script (or set ORIGINAL_PEER=name.py; if ORIGINAL_DIR
              holds exactly one other *.py, that one is used)
The peer script is expected to connect to 127.0.0.1:$PORT when it starts and then read the
commands JOIN, SEARCH and DOWNLOAD (and their prompts' answers) from stdin, as the original
does. python3, ss (iproute2) and diff must be installed.
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
for tool in python3 ss diff; do
  command -v "$tool" >/dev/null || die "$tool is required"
done

if [ "${ISOLATE:-0}" = 1 ] && [ "${SIDE_BY_SIDE_ISOLATED:-0}" != 1 ]; then
  command -v unshare >/dev/null || die "ISOLATE=1 needs unshare (util-linux)"
  exec unshare -rn env SIDE_BY_SIDE_ISOLATED=1 bash "$0" "$@"
fi
if [ "${SIDE_BY_SIDE_ISOLATED:-0}" = 1 ]; then
  ip link set lo up 2>/dev/null || die "cannot bring up loopback in the private namespace"
fi

if [ -n "${NAPSTER_BIN:-}" ]; then
  napster="$NAPSTER_BIN"
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

# type WHO LINE...: types lines on WHO's stdin.
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

# expect WHO REGEX [WHO REGEX...]: waits until one WHO prints a line matching its REGEX since
# the last snapshot; notes a miss in the transcript and counts it.
expect() {
  local deadline=$((SECONDS + STEP_TIMEOUT)) args=("$@") i any_alive
  while :; do
    any_alive=0
    for ((i = 0; i < ${#args[@]}; i += 2)); do
      if new_output "${args[i]}" | grep -qE -- "${args[i + 1]}"; then
        return 0
      fi
      alive "${args[i]}" && any_alive=1
    done
    if [ "$any_alive" = 0 ] || [ "$SECONDS" -ge "$deadline" ]; then
      local what=""
      for ((i = 0; i < ${#args[@]}; i += 2)); do
        what+="${what:+ or }${args[i]}: /${args[i + 1]}/"
      done
      if [ "$any_alive" = 0 ]; then
        note "!! expected $what, but the process has exited"
      else
        note "!! expected $what within ${STEP_TIMEOUT}s; nothing came"
      fi
      misses=$((misses + 1))
      return 1
    fi
    sleep 0.1 # polling the output files; every wait is bounded by the deadline above
  done
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
  note ""
  note "== $*"
}

# upload_port IMPL WHO: the port the tracker keys WHO by.
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

# run_scenario IMPL: the whole scenario; leaves $run/transcript. IMPL is `original` (its server
# and peers), `napster` (ours), or `mixed` (our tracker with the original's peers).
run_scenario() {
  local impl="$1"
  run="$tmp/$impl"
  work="$run/work"
  mkdir -p "$work"
  : >"$run/transcript"
  procs=()
  misses=0

  step "1. tracker starts on 127.0.0.1:$PORT"
  if [ "$impl" = original ]; then
    start T python3 -u "$orig_dir/server.py"
  else
    start T env RUST_LOG="${RUST_LOG:-warn}" "$napster" server --listen "127.0.0.1:$PORT" --legacy-folder-join
  fi
  local deadline=$((SECONDS + STEP_TIMEOUT))
  until ss -Hltn "sport = :$PORT" | grep -q .; do
    if ! alive T || [ "$SECONDS" -ge "$deadline" ]; then
      note "!! the tracker is not listening on port $PORT"
      misses=$((misses + 1))
      snapshot
      return
    fi
    sleep 0.1 # polling the listening sockets, bounded by the deadline
  done

  local who port
  declare -gA ports=()
  for who in A B; do
    step "2$who. peer $who starts"
    if [ "$impl" != napster ]; then
      start "$who" python3 -u "$peer_py"
    else
      start "$who" env RUST_LOG="${RUST_LOG:-warn}" "$napster" peer --server "127.0.0.1:$PORT" --listen 127.0.0.1:0
    fi
    port=$(upload_port "$impl" "$who")
    if [ -z "$port" ]; then
      note "!! cannot tell peer $who's port"
      misses=$((misses + 1))
      snapshot
      return
    fi
    ports[$who]=$port
    mkdir -p "$work/p2p/$port"
  done
  # A shares song.txt; B shares notes.txt. Both peers share p2p/<port> as the original does.
  seq 1 400 | sed 's/^/linha /' >"$work/p2p/${ports[A]}/song.txt"
  echo "notas de B" >"$work/p2p/${ports[B]}/notes.txt"

  step "3. A: JOIN"
  type_in A JOIN
  expect A "Sou o Peer" && expect T "adicionado"
  step "4. B: JOIN"
  type_in B JOIN
  expect B "Sou o Peer" && expect T "adicionado"

  step "5. B: SEARCH song.txt"
  type_in B SEARCH song.txt
  expect B "Peers com arquivo solicitado" && expect T "solicitou arquivo"

  step "6. B: DOWNLOAD song.txt from A's port"
  type_in B DOWNLOAD song.txt "${ports[A]}"
  expect A "Gostaria de Aprovar" B "Erro|não encontrado|Rejeitado"

  step "7. A: SIM (B downloads, then UPDATEs the tracker)"
  type_in A SIM
  expect B "baixado com sucesso|Erro|Rejeitado"
  snapshot
  if cmp -s "$work/p2p/${ports[A]}/song.txt" "$work/p2p/${ports[B]}/song.txt"; then
    note "== check: B's copy of song.txt is identical to A's"
  elif [ -e "$work/p2p/${ports[B]}/song.txt" ]; then
    note "!! check: B's copy of song.txt differs from A's"
    misses=$((misses + 1))
  else
    note "!! check: B has no song.txt"
    misses=$((misses + 1))
  fi

  step "8. A: SEARCH song.txt (B's UPDATE made B a holder)"
  type_in A SEARCH song.txt
  expect A "Peers com arquivo solicitado: .*[^0-9]${ports[B]}([^0-9]|$)"

  step "9. B leaves (SIGTERM)"
  stop B
  expect T "saiu|Error"

  step "10. A: SEARCH song.txt (only A is left)"
  type_in A SEARCH song.txt
  expect A "Peers com arquivo solicitado: \[([^],]*[^0-9])?${ports[A]}[^0-9,]*\]"

  step "11. the end: A and the tracker stop"
  snapshot
  stop A
  stop T
  snapshot
  note ""
  note "== $impl: $misses expectation(s) not met"
}

# normalise IMPL: the transcript with ports, folders and log timestamps made comparable.
normalise() {
  local impl="$1" t="$tmp/$1/transcript"
  local who p rules=(-e "s#$tmp/$impl/work#<work>#g" -e 's/^\(.| \)\[[0-9T:.+-]*Z\? */\1[/')
  for who in A B; do
    p=$(sed -n "s/^$impl $who=//p" "$tmp/ports")
    [ -z "$p" ] || rules+=(-e "s/\b$p\b/<$who>/g")
  done
  sed "${rules[@]}" "$t"
}

: >"$tmp/ports"
runs=(original napster)
[ "${MIXED:-0}" = 1 ] && runs+=(mixed)
for impl in "${runs[@]}"; do
  echo "side-by-side: running the scenario: $impl..." >&2
  run_scenario "$impl"
  for who in A B; do
    printf '%s %s=%s\n' "$impl" "$who" "${ports[$who]:-}" >>"$tmp/ports"
  done
  for who in "${procs[@]}"; do stop "$who"; done
  case "$impl" in
    original) original_misses=$misses ;;
    napster) napster_misses=$misses ;;
    mixed) mixed_misses=$misses ;;
  esac
done

normalise original >"$tmp/original.txt"
normalise napster >"$tmp/napster.txt"
width="${COLUMNS:-200}"
echo "Python original (left)  |  napster (right)   — '|' differs, '<' only left, '>' only right"
echo "Ports: original A=$(sed -n 's/^original A=//p' "$tmp/ports") B=$(sed -n 's/^original B=//p' "$tmp/ports");" \
  "napster A=$(sed -n 's/^napster A=//p' "$tmp/ports") B=$(sed -n 's/^napster B=//p' "$tmp/ports") (shown as <A>, <B>)"
echo
diff -y -W "$width" "$tmp/original.txt" "$tmp/napster.txt"
if [ "${MIXED:-0}" = 1 ]; then
  normalise mixed >"$tmp/mixed.txt"
  echo
  echo "The original's peers: with the original's server (left)  |  with napster's tracker (right)"
  echo
  diff -y -W "$width" "$tmp/original.txt" "$tmp/mixed.txt"
fi
echo
echo "original: $original_misses expectation(s) not met; napster: $napster_misses${mixed_misses:+; mixed: $mixed_misses}"
[ "$napster_misses" -eq 0 ]

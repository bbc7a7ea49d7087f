#!/usr/bin/env bash
# The coursework demo, scripted end to end: a tracker and three peers (alice, bob, carol).
#
#   alice shares a text file and a 256 MiB "video"; everyone JOINs;
#   bob SEARCHes the video and DOWNLOADs it from alice, alice answers SIM;
#   carol SEARCHes and sees alice and bob; carol asks bob, bob answers NAO -> Download Rejeitado;
#   carol DOWNLOADs from alice, alice answers SIM; the copies are checked byte for byte;
#   everyone QUITs, and each exit code is checked (carol's is 7: one download was rejected).
#
# Every step waits for the line it expects (with a timeout that fails the demo with a clear
# message); nothing relies on a fixed sleep. Each process's stdin is a FIFO the script writes
# to, as a user would type. The transcript interleaves everyone's lines, prefixed by who
# printed them. Exit status 0 only if all of it happened.
#
# Environment: DEMO_VIDEO_MIB (default 256), DEMO_TIMEOUT seconds per step (default 120),
# NAPSTER_BIN (skip the build and use this binary).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
video_mib="${DEMO_VIDEO_MIB:-256}"
step_timeout="${DEMO_TIMEOUT:-120}"

[[ "$video_mib" =~ ^[0-9]+$ ]] || { echo "DEMO FAILED: DEMO_VIDEO_MIB must be a whole number of MiB, not '$video_mib'" >&2; exit 1; }

# alice's video and bob's and carol's copies all sit in the work folder at the end; check
# first, rather than fail half way through a copy with a full disk.
tmp_root="${TMPDIR:-/tmp}"
need_kib=$(( (3 * video_mib + 64) * 1024 ))  # three copies plus 64 MiB for logs and slack
free_kib="$(df -Pk "$tmp_root" 2>/dev/null | awk 'NR == 2 {print $4}')" || true
[[ "$free_kib" =~ ^[0-9]+$ ]] || { echo "DEMO FAILED: cannot read the free space of $tmp_root (df -Pk)" >&2; exit 1; }
if (( free_kib < need_kib )); then
  echo "DEMO FAILED: $tmp_root has $((free_kib / 1024)) MiB free; the demo needs $((need_kib / 1024)) MiB (3 copies of the ${video_mib} MiB video + 64 MiB). Set TMPDIR to a roomier folder or DEMO_VIDEO_MIB to a smaller size." >&2
  exit 1
fi

if [[ -n "${NAPSTER_BIN:-}" ]]; then
  bin="$NAPSTER_BIN"
else
  echo "== building napster (release)"
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/napster"
fi

work="$(mktemp -d "$tmp_root/napster-demo.XXXXXX")"
pids=()
ok=0

cleanup() {
  for fd in 4 5 6 7; do eval "exec $fd>&-" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  if [[ "$ok" == 1 ]]; then
    rm -rf "$work"
  else
    echo "== logs kept in $work" >&2
  fi
}
trap cleanup EXIT

fail() {
  echo "DEMO FAILED: $*" >&2
  for f in "$work"/*.err; do
    [[ -s "$f" ]] && { echo "--- $(basename "$f")" >&2; cat "$f" >&2; }
  done
  exit 1
}

# wait_for WHO TEXT [COUNT]: wait until WHO has printed a line containing TEXT (COUNT times).
wait_for() {
  local who="$1" text="$2" count="${3:-1}" deadline=$((SECONDS + step_timeout))
  while (( $(grep -cF -- "$text" "$work/$who.out" 2>/dev/null || true) < count )); do
    if (( SECONDS >= deadline )); then
      fail "$who did not print \"$text\" within ${step_timeout}s"
    fi
    sleep 0.05  # polling interval while waiting for a line, not a synchronising delay
  done
}

# start WHO ARGS...: run napster with stdin from a FIFO, stdout to WHO.out and the transcript.
start() {
  local who="$1"; shift
  mkfifo "$work/$who.in"
  : > "$work/$who.out"
  "$bin" "$@" < "$work/$who.in" \
    > >(tee -a "$work/$who.out" | sed -u "s/^/[$who] /") 2> "$work/$who.err" &
  pids+=("$!")
  eval "pid_$who=$!"
}

# exit_code_of WHO: wait for WHO's napster to exit and print its exit code.
exit_code_of() {
  local pid code=0
  eval "pid=\$pid_$1"
  wait "$pid" || code=$?
  echo "$code"
}

# say WHO LINE: type LINE on WHO's stdin.
say() {
  local fd
  case "$1" in alice) fd=5 ;; bob) fd=6 ;; carol) fd=7 ;; esac
  printf '[%s] > %s\n' "$1" "$2"
  printf '%s\n' "$2" >&"$fd"
}

port_of() {
  grep -o 'na porta [0-9]*' "$work/$1.out" | head -1 | grep -o '[0-9]*$'
}

echo "== preparing folders in $work"
mkdir -p "$work/alice" "$work/bob" "$work/carol"
printf 'Sistemas Distribuídos - Projeto 1\nNapster em Rust.\n' > "$work/alice/leia-me.txt"
head -c "$((video_mib * 1024 * 1024))" /dev/urandom > "$work/alice/video.mp4"

echo "== starting the tracker and three peers"
start tracker server --listen 127.0.0.1:0
exec 4>"$work/tracker.in"
wait_for tracker "Servidor ouvindo em"
server="$(grep -o 'Servidor ouvindo em .*' "$work/tracker.out" | awk '{print $4}')"

for who in alice bob carol; do
  start "$who" peer --server "$server" --listen 127.0.0.1:0 --dir "$work/$who"
done
exec 5>"$work/alice.in" 6>"$work/bob.in" 7>"$work/carol.in"
for who in alice bob carol; do wait_for "$who" "Digite 'JOIN' para iniciar."; done
alice_port="$(port_of alice)"
bob_port="$(port_of bob)"

for who in alice bob carol; do
  say "$who" JOIN
  wait_for "$who" "Sou o Peer"
done

say bob "SEARCH video.mp4"
wait_for bob "Peers com arquivo solicitado: ['127.0.0.1:$alice_port']"
say bob "DOWNLOAD video.mp4 $alice_port"
wait_for alice "Gostaria de Aprovar o download? (SIM/NAO)" 1
say alice SIM
wait_for bob "Arquivo video.mp4 baixado com sucesso"
wait_for tracker "atualizou os arquivos: +['video.mp4']"

say carol "SEARCH video.mp4"
wait_for carol "Peers com arquivo solicitado: ['127.0.0.1:$alice_port', '127.0.0.1:$bob_port']"
say carol "DOWNLOAD video.mp4 $bob_port"
wait_for bob "Gostaria de Aprovar o download? (SIM/NAO)" 1
say bob NAO
wait_for carol "Download Rejeitado"
say carol "DOWNLOAD video.mp4 $alice_port"
wait_for alice "Gostaria de Aprovar o download? (SIM/NAO)" 2
say alice SIM
wait_for carol "Arquivo video.mp4 baixado com sucesso"

echo "== checking the copies byte for byte"
cmp "$work/alice/video.mp4" "$work/bob/video.mp4" || fail "bob's copy differs from alice's"
cmp "$work/alice/video.mp4" "$work/carol/video.mp4" || fail "carol's copy differs from alice's"
[[ ! -e "$work/carol/leia-me.txt" ]] || fail "carol has a file she never asked for"

# Each peer's exit code says whether all its commands succeeded: carol's first download was
# rejected (7: see `napster help get`), everything else worked (0).
for who in carol bob alice; do
  say "$who" QUIT
  wait_for "$who" "Peer encerrado."
done
wait_for tracker "saiu" 3
for expected in carol:7 bob:0 alice:0; do
  who="${expected%%:*}"
  code="$(exit_code_of "$who")"
  echo "== $who exited with $code"
  [[ "$code" == "${expected#*:}" ]] || fail "$who exited with $code, expected ${expected#*:}"
done

ok=1
echo "== demo completed: bob and carol hold byte-identical copies of alice's ${video_mib} MiB video"

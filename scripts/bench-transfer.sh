#!/usr/bin/env bash
# Transfer benchmark (not a test): in one run, alternately measures
#   (a) the baseline: a file copied through a plain loopback TcpStream into a file with
#       std::io::copy, no protocol (examples/raw_copy.rs), and
#   (b) a real DOWNLOAD between two `napster peer` processes, BLAKE3 verification on,
# then prints the median MiB/s of each, the ratio (b)/(a), and each peer's peak RSS.
#
# Usage: scripts/bench.sh transfer [--size-mib N] [--rounds R] [--keep]
#   --size-mib N   file size in MiB (default 1024; env BENCH_SIZE_MIB); 4096 for 4 GiB
#   --rounds R     measured rounds of each (default 5; env BENCH_ROUNDS)
#   --keep         keep the temporary folder
# Targets: ratio >= 0.80; peak RSS <= 32 MiB on each side.
set -euo pipefail

size_mib="${BENCH_SIZE_MIB:-1024}"
rounds="${BENCH_ROUNDS:-5}"
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
echo "building (release)..."
(cd "$root" && cargo build --release --quiet --bin napster --example raw_copy)
napster="$root/target/release/napster"
raw_copy="$root/target/release/examples/raw_copy"

work="$(mktemp -d "${TMPDIR:-/tmp}/napster-bench.XXXXXX")"
pids=()
cleanup() {
  exec 3>&- 4>&- 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() { echo "bench-transfer: $*" >&2; for f in "$work"/*.log "$work"/*.err; do echo "--- $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }

# Prefixes each line with the time it was printed, so a line's time is known exactly.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done; }

# wait_line FILE PATTERN NTH: waits until FILE holds at least NTH lines matching PATTERN,
# prints the NTH one; fails after 600 s.
wait_line() {
  local file="$1" pattern="$2" nth="$3" deadline=$((SECONDS + 600)) found
  while :; do
    found="$(grep -F -- "$pattern" "$file" 2>/dev/null | sed -n "${nth}p")"
    [ -n "$found" ] && { printf '%s\n' "$found"; return 0; }
    [ $SECONDS -lt $deadline ] || fail "no line '$pattern' (#$nth) in $file within 600 s"
    sleep 0.05
  done
}

mkdir -p "$work/a" "$work/b"
echo "creating a ${size_mib} MiB file of random bytes..."
head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/a/big.bin"
bytes=$((size_mib * 1024 * 1024))

"$napster" server --listen 127.0.0.1:0 > >(stamp > "$work/tracker.log") 2> "$work/tracker.err" &
pids+=($!)
tracker="$(wait_line "$work/tracker.log" "Servidor ouvindo em " 1 | awk '{print $NF}')"

mkfifo "$work/a.in" "$work/b.in"
"$napster" peer --server "$tracker" --listen 127.0.0.1:0 \
  --dir "$work/a" --approve yes --join < "$work/a.in" > >(stamp > "$work/a.log") 2> "$work/a.err" &
pid_a=$!; pids+=($pid_a)
exec 3> "$work/a.in"
"$napster" peer --server "$tracker" --listen 127.0.0.1:0 \
  --dir "$work/b" --approve yes --join < "$work/b.in" > >(stamp > "$work/b.log") 2> "$work/b.err" &
pid_b=$!; pids+=($pid_b)
exec 4> "$work/b.in"
port_a="$(wait_line "$work/a.log" "Aguardando pedidos de download na porta " 1 | sed 's/.*porta \([0-9]*\);.*/\1/')"
wait_line "$work/a.log" "Sou o Peer " 1 > /dev/null
wait_line "$work/b.log" "Sou o Peer " 1 > /dev/null

downloads=0
# One DOWNLOAD from a to b; sets secs to the time from the command to the success line.
napster_round() {
  rm -f "$work/b/big.bin"
  downloads=$((downloads + 1))
  local t0="$EPOCHREALTIME" line t1
  echo "DOWNLOAD big.bin 127.0.0.1:$port_a" >&4
  line="$(wait_line "$work/b.log" "baixado com sucesso" "$downloads")"
  if grep -q "Erro ao processar download" "$work/b.log"; then fail "a download failed"; fi
  t1="${line%% *}"
  secs="$(awk -v a="$t0" -v b="$t1" 'BEGIN { printf "%.6f\n", b - a }')"
}
# One baseline copy; sets secs.
raw_round() {
  rm -f "$work/b/raw.bin"
  secs="$("$raw_copy" "$work/a/big.bin" "$work/b/raw.bin" | sed 's/.*seconds=//')"
}
rate() { awk -v s="$1" -v b="$bytes" 'BEGIN { printf "%.1f", b / 1048576 / s }'; }

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "load before: $(uptime)"
echo "warm-up DOWNLOAD (the uploader hashes the file once and caches the digest)..."
napster_round; echo "  warm-up: $(rate "$secs") MiB/s ($secs s)"
cmp "$work/a/big.bin" "$work/b/big.bin" || fail "the downloaded copy differs"

raw_rates=(); napster_rates=()
for i in $(seq 1 "$rounds"); do
  raw_round; r="$(rate "$secs")"; raw_rates+=("$r")
  napster_round; n="$(rate "$secs")"; napster_rates+=("$n")
  echo "  round $i: raw $r MiB/s, napster $n MiB/s"
done
rm -f "$work/b/raw.bin"
cmp "$work/a/big.bin" "$work/b/big.bin" || fail "the downloaded copy differs"
echo "load after: $(uptime)"

# Peak resident memory over the whole run (the kernel's high-water mark), read before QUIT.
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
rss_a="$(hwm "$pid_a")"
rss_b="$(hwm "$pid_b")"
echo QUIT >&3; echo QUIT >&4
exec 3>&- 4>&-
wait_line "$work/a.log" "Peer encerrado." 1 > /dev/null
wait_line "$work/b.log" "Peer encerrado." 1 > /dev/null
wait "$pid_a" "$pid_b" || fail "a peer exited with an error"

median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END { if (NR % 2) print v[(NR+1)/2]; else printf "%.1f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
raw_med="$(median "${raw_rates[@]}")"
nap_med="$(median "${napster_rates[@]}")"
ratio="$(awk -v n="$nap_med" -v r="$raw_med" 'BEGIN { printf "%.2f", n / r }')"
echo
echo "file: ${size_mib} MiB, $rounds rounds each"
echo "(a) raw loopback io::copy: median $raw_med MiB/s"
echo "(b) napster DOWNLOAD (verified): median $nap_med MiB/s"
echo "ratio (b)/(a): $ratio (target >= 0.80)"
echo "peak RSS uploader: $((rss_a / 1024)) MiB ($rss_a KiB); downloader: $((rss_b / 1024)) MiB ($rss_b KiB) (target <= 32 MiB)"

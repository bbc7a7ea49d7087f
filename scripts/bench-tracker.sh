#!/usr/bin/env bash
# Tracker load benchmark (not a test): `scripts/bench.sh tracker [--peers N] [--secs S] ...`
#
# Runs the same load (examples/tracker_load.rs) against the naive baseline
# (examples/naive_tracker.rs) and against `napster server`, in this one run, and prints
# SEARCH/s, p50/p99 latency, RSS and thread count of each, the ratios ours/baseline, and the
# latency ratio with 10,000 vs 1,000 peers joined. Extra options go to the load generator.
# Both trackers' console lines go to a file in a temporary folder (same cost for both).
# Set STACKS="64 128 2048" to also measure our tracker's RSS with those thread stack sizes (KiB).
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

cargo build --release --quiet --bin napster --example naive_tracker --example tracker_load
bin="$root/target/release"
tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "machine: $(nproc) cores, $(uname -sr); open-file limit (hard) $(ulimit -Hn)"
echo "load before: $(uptime)"

# run_one LABEL LOAD_ARGS... -- SERVER_CMD...: starts the server, runs the load, stops it.
run_one() {
  local label="$1"; shift
  local load_args=()
  while [[ "$1" != "--" ]]; do load_args+=("$1"); shift; done
  shift
  "$@" >"$tmp/$label.out" 2>"$tmp/$label.err" &
  server_pid=$!
  local addr=""
  for _ in $(seq 1 200); do
    addr="$(head -n1 "$tmp/$label.out" 2>/dev/null | grep -oE '[0-9.]+:[0-9]+$' || true)"
    [[ -n "$addr" ]] && break
    sleep 0.05
  done
  [[ -n "$addr" ]] || { echo "$label did not start:"; cat "$tmp/$label.err"; exit 1; }
  echo "== $label ($*) on $addr"
  "$bin/examples/tracker_load" --addr "$addr" --pid "$server_pid" "${load_args[@]}" \
    | tee "$tmp/$label.load"
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
  local lines; lines=$(wc -l <"$tmp/$label.out")
  echo "$label printed $lines console lines"
}

get() { awk -v k="$2" '$1=="RESULT" && $2==k {print $3}' "$tmp/$1.load"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }

run_one baseline "$@" -- "$bin/examples/naive_tracker" 127.0.0.1:0
run_one ours "$@" -- "$bin/napster" server --listen 127.0.0.1:0 --max-connections-per-host 1000000

stacks=()
for kib in ${STACKS:-}; do
  run_one "stack$kib" "$@" -- "$bin/napster" server --listen 127.0.0.1:0 --max-connections-per-host 1000000 --thread-stack-kib "$kib"
  stacks+=("stack $kib KiB: RSS $(( $(get "stack$kib" rss_kib) / 1024 )) MiB, virtual $(( $(get "stack$kib" virtual_kib) / 1024 )) MiB, $(get "stack$kib" clients_big_per_sec) SEARCH/s")
done

echo
echo "== summary (32 clients in lockstep with the full peer count joined)"
printf '%-28s %12s %12s %8s\n' "" ours baseline ratio
row() { printf '%-28s %12s %12s %8s\n' "$1" "$(get ours "$2")" "$(get baseline "$2")" "$(ratio "$(get ours "$2")" "$(get baseline "$2")")"; }
row "SEARCH/s" clients_big_per_sec
row "p50 latency (µs)" clients_big_p50_us
row "p99 latency (µs)" clients_big_p99_us
row "RSS after SEARCHes (KiB)" rss_kib
row "RSS after JOINs (KiB)" rss_joined_kib
row "threads" threads
row "virtual memory (KiB)" virtual_kib
row "wrong replies" clients_big_errors
echo
echo "latency, big/small peer count (target <= 1.5):"
for who in ours baseline; do
  echo "  $who: one client p50 $(get $who one_client_big_p50_us) / $(get $who one_client_small_p50_us) µs = $(ratio "$(get $who one_client_big_p50_us)" "$(get $who one_client_small_p50_us)");" \
    "32 clients p50 $(get $who clients_big_p50_us) / $(get $who clients_small_p50_us) µs = $(ratio "$(get $who clients_big_p50_us)" "$(get $who clients_small_p50_us)")"
done
for line in "${stacks[@]}"; do echo "$line"; done
echo
echo "== targets (ours)"
check() { # NAME VALUE OP LIMIT
  if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=" && v >= l) || (op == "<" && v < l) || (op == "<=" && v <= l)) }'; then
    echo "  met:    $1 = $2 (target $3 $4)"
  else
    echo "  MISSED: $1 = $2 (target $3 $4)"
  fi
}
check "SEARCH/s, 32 clients" "$(get ours clients_big_per_sec)" ">=" 60000
check "p99 latency µs, 32 clients" "$(get ours clients_big_p99_us)" "<" 2000
check "one-client p50 latency ratio big/small" "$(ratio "$(get ours one_client_big_p50_us)" "$(get ours one_client_small_p50_us)")" "<=" 1.5
check "RSS MiB" "$(( $(get ours rss_kib) / 1024 ))" "<=" 512
check "wrong replies" "$(get ours clients_big_errors)" "<=" 0
echo "load after: $(uptime)"

#!/usr/bin/env bash
# Tracker load benchmark (not a test): `scripts/bench.sh tracker [--peers N] [--secs S] ...`
#
# Runs the same load (examples/tracker_load.rs) against the naive baseline
# (examples/naive_tracker.rs) and against `napster server`, alternating them for ROUNDS rounds
# (default 5; the order flips every round), and prints every round, then the median and the
# spread (min–max) of each figure: exact-name SEARCH/s of both and their ratio, our keyword
# SEARCH/s and p99, the trackers' CPU time per SEARCH (steadier than wall time on a shared
# machine), RSS, and the lone-client latency with 10,000 vs 1,000 peers joined. Our tracker is
# loaded with `{name, size}` records and every digest announced (as real peers do); the
# baseline, which knows only plain names, with plain names. Extra options go to the load
# generator. Both trackers' console lines go to a file (same cost for both). The 1-minute load
# average before each round is printed with it (the benchmark's own threads raise it too):
# figures taken on a busy machine are noisy. ROUNDS and SECS (per measurement) change the run.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

rounds="${ROUNDS:-5}"
secs="${SECS:-5}"
cargo build --release --quiet --bin napster --example naive_tracker --example tracker_load
bin="$root/target/release"
tmp="$(mktemp -d)"
server_pid=""
cleanup() {
  if [[ -n "$server_pid" ]]; then kill "$server_pid" 2>/dev/null || true; wait "$server_pid" 2>/dev/null || true; fi
  rm -rf "$tmp"
}
trap cleanup EXIT

load1() { cut -d' ' -f1 /proc/loadavg; }
echo "machine: $(nproc) cores, $(uname -sr); open-file limit (hard) $(ulimit -Hn); $(date -u '+%Y-%m-%d %H:%M UTC')"
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
  echo "== $label ($*) on $addr, load $(load1)"
  "$bin/examples/tracker_load" --addr "$addr" --pid "$server_pid" --secs "$secs" "${load_args[@]}" \
    >"$tmp/$label.load"
  grep -v '^RESULT' "$tmp/$label.load" | sed 's/^/   /'
  kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""
}

get() { awk -v k="$2" '$1=="RESULT" && $2==k {print $3}' "$tmp/$1.load"; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (b > 0) printf "%.2f", a / b; else print "n/a" }'; }
# stats V1 V2 ...: "median (min–max)"
stats() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; printf "%.6g (%g–%g)", m, v[1], v[NR] }'; }
median() { printf '%s\n' "$@" | sort -g | awk '{ v[NR] = $1 } END { m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2; print m }'; }

# BEFORE=/path/to/an/older/napster adds that build to every round (exact kind, plain names):
# "no slower than before" measured in the same run.
for r in $(seq 1 "$rounds"); do
  echo "load1_$r $(load1)" >>"$tmp/loads"
  if [[ -n "${BEFORE:-}" ]]; then run_one "before.$r" "$@" -- "$BEFORE" server --listen 127.0.0.1:0; fi
  base=(baseline.$r "$@" -- "$bin/examples/naive_tracker" 127.0.0.1:0)
  # Every load peer connects from 127.0.0.1: the per-host cap is lifted for them.
  ours=(ours.$r --records 1 --kinds exact,keyword "$@" -- "$bin/napster" server --listen 127.0.0.1:0 --max-connections-per-host 1000000)
  if (( r % 2 )); then run_one "${base[@]}"; run_one "${ours[@]}"; else run_one "${ours[@]}"; run_one "${base[@]}"; fi
done

echo
echo "== every round (32 clients in lockstep, full peer count joined)"
printf '%-6s %6s | %12s %12s %6s | %10s %8s %8s | %10s %10s | %9s %9s\n' \
  round load "exact ours" "exact base" ratio keyword "kw p99" "ex p99" "cpu µs ex" "cpu µs kw" "RSS ours" "RSS base"
declare -a E_OURS E_BASE RATIO KW KWP99 EXP99 CPU_EX CPU_KW CPU_BASE RSS_O RSS_B LONE_O LONE_B
for r in $(seq 1 "$rounds"); do
  eo=$(get ours.$r clients_big_per_sec); eb=$(get baseline.$r clients_big_per_sec)
  kw=$(get ours.$r keyword_big_per_sec); kp=$(get ours.$r keyword_big_p99_us); ep=$(get ours.$r clients_big_p99_us)
  ce=$(get ours.$r clients_big_cpu_us); ck=$(get ours.$r keyword_big_cpu_us); cb=$(get baseline.$r clients_big_cpu_us)
  ro=$(( $(get ours.$r rss_kib) / 1024 )); rb=$(( $(get baseline.$r rss_kib) / 1024 ))
  lo=$(ratio "$(get ours.$r one_client_big_p50_us)" "$(get ours.$r one_client_small_p50_us)")
  lb=$(ratio "$(get baseline.$r one_client_big_p50_us)" "$(get baseline.$r one_client_small_p50_us)")
  rt=$(ratio "$eo" "$eb")
  printf '%-6s %6s | %12s %12s %6s | %10s %8s %8s | %10s %10s | %6s MiB %6s MiB\n' \
    "$r" "$(awk -v r="load1_$r" '$1==r {print $2}' "$tmp/loads")" "$eo" "$eb" "$rt" "$kw" "$kp" "$ep" "$ce/$cb" "$ck" "$ro" "$rb"
  E_OURS+=("$eo"); E_BASE+=("$eb"); RATIO+=("$rt"); KW+=("$kw"); KWP99+=("$kp"); EXP99+=("$ep")
  CPU_EX+=("$ce"); CPU_KW+=("$ck"); CPU_BASE+=("$cb"); RSS_O+=("$ro"); RSS_B+=("$rb"); LONE_O+=("$lo"); LONE_B+=("$lb")
  for who in ours baseline; do
    errors=$(get "$who.$r" clients_big_errors)
    [[ "$errors" == 0 ]] || echo "   $who round $r: $errors wrong exact replies: $(grep 'first wrong' "$tmp/$who.$r.load" || true)"
  done
  errors=$(get "ours.$r" keyword_big_errors)
  [[ "$errors" == 0 ]] || echo "   ours round $r: $errors wrong keyword replies: $(grep 'first wrong' "$tmp/ours.$r.load" || true)"
done

echo
echo "== median (min–max) over $rounds rounds"
echo "exact SEARCH/s       ours $(stats "${E_OURS[@]}"), baseline $(stats "${E_BASE[@]}")"
echo "exact ours/baseline  $(stats "${RATIO[@]}")   (before keyword search: 1.09, ≈107,000/s)"
echo "exact p99 µs (ours)  $(stats "${EXP99[@]}")"
echo "tracker CPU µs per exact SEARCH: ours $(stats "${CPU_EX[@]}"), baseline $(stats "${CPU_BASE[@]}")"
if [[ -n "${BEFORE:-}" ]]; then
  declare -a E_BEFORE R_BEFORE C_BEFORE
  for r in $(seq 1 "$rounds"); do
    E_BEFORE+=("$(get before.$r clients_big_per_sec)"); C_BEFORE+=("$(get before.$r clients_big_cpu_us)")
    R_BEFORE+=("$(ratio "$(get ours.$r clients_big_per_sec)" "$(get before.$r clients_big_per_sec)")")
  done
  echo "exact SEARCH/s before $(stats "${E_BEFORE[@]}"); ours/before $(stats "${R_BEFORE[@]}"); CPU µs each before $(stats "${C_BEFORE[@]}")"
fi
echo "keyword SEARCH/s     $(stats "${KW[@]}"), p99 µs $(stats "${KWP99[@]}"), tracker CPU µs each $(stats "${CPU_KW[@]}")"
echo "RSS MiB              ours $(stats "${RSS_O[@]}"), baseline $(stats "${RSS_B[@]}")"
echo "lone-client p50 10k/1k peers: ours $(stats "${LONE_O[@]}"), baseline $(stats "${LONE_B[@]}")"

echo
echo "== targets (ours, medians)"
check() { # NAME VALUE OP LIMIT
  if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=" && v >= l) || (op == "<" && v < l) || (op == "<=" && v <= l)) }'; then
    echo "  met:    $1 = $2 (target $3 $4)"
  else
    echo "  MISSED: $1 = $2 (target $3 $4)"
  fi
}
check "keyword SEARCH/s, 32 clients" "$(median "${KW[@]}")" ">=" 50000
check "keyword p99 latency µs" "$(median "${KWP99[@]}")" "<" 2000
check "exact SEARCH ours/baseline" "$(median "${RATIO[@]}")" ">=" 1.09
check "exact p99 latency µs" "$(median "${EXP99[@]}")" "<" 2000
check "one-client p50 latency ratio big/small" "$(median "${LONE_O[@]}")" "<=" 1.5
check "RSS MiB" "$(median "${RSS_O[@]}")" "<=" 512
echo "load after: $(uptime)"

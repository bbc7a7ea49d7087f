#!/usr/bin/env bash
# Tracker load benchmark (not a test):
#   scripts/bench.sh tracker [--rounds N] [--secs S] [--before PATH] [load generator options...]
#
# Runs the same load (examples/tracker_load.rs: 10,000 idle peers x 100 names, 32 clients
# SEARCHing in lockstep, every reply checked) against:
#   ours      `napster server` of this tree, JOINed with {name, size} records and every digest
#             announced afterwards, as real peers do;
#   baseline  examples/naive_tracker.rs, the barest thread-per-connection tracker (plain names);
#   before    with --before PATH (or BEFORE=PATH): another napster build, for an A/B column,
#             e.g. the tracker before a change (`git worktree add /tmp/b COMMIT`, build it there).
#             It gets records and keyword SEARCH if it understands them (probed), else plain
#             names and exact SEARCH only.
# Each round runs every tracker once, in an order that rotates from round to round; ROUNDS
# (default 5) rounds. Two kinds of SEARCH: exact (a whole name) and keyword (`0001234 title`: a
# word held by one name and one held by every name). For each it prints every round, then the
# median and spread (min-max): SEARCH/s, p99, and the tracker's CPU time per SEARCH, user and
# system (from /proc: steadier than wall time on a shared machine), the ratios ours/other per
# round, RSS and the lone-client latency 10k/1k peers; then the targets. The 1-minute load
# average before each run is printed beside it: figures taken on a busy machine are noisy.
# Extra options go to the load generator. SECS (default 5) is the length of each measurement.
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
cd "$root"

rounds="${ROUNDS:-5}"
secs="${SECS:-5}"
before="${BEFORE:-}"
load_opts=()
while (( $# )); do
  case "$1" in
    --rounds) rounds="$2"; shift 2 ;;
    --secs) secs="$2"; shift 2 ;;
    --before) before="$2"; shift 2 ;;
    *) load_opts+=("$1"); shift ;;
  esac
done
if [[ -n "$before" && ! -x "$before" ]]; then
  echo "--before $before: not an executable napster build" >&2
  exit 2
fi

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
echo "ours: $(git rev-parse --short HEAD)$(git diff --quiet HEAD -- src examples || echo ' + uncommitted changes')"
[[ -n "$before" ]] && echo "before: $before"
echo "load before: $(uptime)"

# The command line of each tracker.
declare -A cmd
cmd[ours]="$bin/napster server --listen 127.0.0.1:0 --max-connections-per-host 1000000"
cmd[baseline]="$bin/examples/naive_tracker 127.0.0.1:0"
trackers=(ours baseline)
if [[ -n "$before" ]]; then
  cmd[before]="$before server --listen 127.0.0.1:0"
  # Older builds may lack the per-host cap (and refuse the option); newer ones need it lifted.
  if "$before" server --help 2>/dev/null | grep -q -- --max-connections-per-host; then
    cmd[before]+=" --max-connections-per-host 1000000"
  fi
  trackers+=(before)
fi

# start LABEL TRACKER: starts the tracker, leaves its pid in server_pid and address in addr.
start() {
  # shellcheck disable=SC2086
  ${cmd[$2]} >"$tmp/$1.out" 2>"$tmp/$1.err" &
  server_pid=$!
  addr=""
  for _ in $(seq 1 200); do
    addr="$(head -n1 "$tmp/$1.out" 2>/dev/null | grep -oE '[0-9.]+:[0-9]+$' || true)"
    [[ -n "$addr" ]] && break
    sleep 0.05
  done
  [[ -n "$addr" ]] || { echo "$2 did not start:"; cat "$tmp/$1.err"; exit 1; }
}
stop() { kill "$server_pid"; wait "$server_pid" 2>/dev/null || true; server_pid=""; }

get() { awk -v k="$2" '$1=="RESULT" && $2==k {print $3}' "$tmp/$1.load"; }

# What each tracker understands: records (else plain names) and keyword SEARCH.
declare -A load_args
for t in "${trackers[@]}"; do
  start "probe.$t" "$t"
  "$bin/examples/tracker_load" --addr "$addr" --probe 1 >"$tmp/probe.$t.load"
  stop
  kinds=exact
  [[ "$(get "probe.$t" keyword)" == 1 ]] && kinds=exact,keyword
  load_args[$t]="--records $(get "probe.$t" records) --kinds $kinds"
  echo "$t: ${cmd[$t]} (${load_args[$t]})"
done

# run_one LABEL TRACKER: starts it, runs the load, stops it.
run_one() {
  start "$1" "$2"
  echo "load1 $(load1)" >"$tmp/$1.loadavg"
  echo "== $1 on $addr, load $(load1)"
  # shellcheck disable=SC2086
  "$bin/examples/tracker_load" --addr "$addr" --pid "$server_pid" --secs "$secs" ${load_args[$2]} \
    "${load_opts[@]}" >"$tmp/$1.load"
  grep -v '^RESULT' "$tmp/$1.load" | sed 's/^/   /'
  stop
}

n=${#trackers[@]}
for r in $(seq 1 "$rounds"); do
  for k in $(seq 0 $(( n - 1 ))); do
    t=${trackers[$(( (k + r - 1) % n ))]}
    run_one "$t.$r" "$t"
  done
done

ratio() { awk -v a="$1" -v b="$2" 'BEGIN { if (a != "" && b > 0) printf "%.2f", a / b; else print "-" }'; }
# stats V...: "median (min–max)" of the values given (empty ones ignored)
stats() {
  printf '%s\n' "$@" | grep -E '^[0-9.]+$' | sort -g | awk '{ v[NR] = $1 } END {
    if (NR == 0) { print "-"; exit }
    m = (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2
    printf "%.6g (%g–%g)", m, v[1], v[NR] }'
}
median() { stats "$@" | cut -d' ' -f1; }
or_dash() { if [[ -n "$1" ]]; then echo "$1"; else echo "-"; fi; }

# kind_label KIND: the load generator's label for that kind with the full peer count.
kind_label() { if [[ "$1" == exact ]]; then echo clients_big; else echo "${1}_big"; fi; }

echo
echo "== every round: 32 clients in lockstep, the full peer count joined (tracker CPU µs per SEARCH: user + system)"
printf '%-5s %-8s %5s | %9s %8s %13s | %9s %8s %13s | %7s %7s\n' \
  round tracker load "exact/s" "p99 µs" "cpu µs u+s" "keyword/s" "p99 µs" "cpu µs u+s" "RSS MiB" "lone"
declare -A V   # V[tracker,kind,field] = space-separated values over rounds
for r in $(seq 1 "$rounds"); do
  for t in "${trackers[@]}"; do
    row=()
    for kind in exact keyword; do
      l=$(kind_label "$kind")
      ps=$(get "$t.$r" "${l}_per_sec"); p99=$(get "$t.$r" "${l}_p99_us")
      us=$(get "$t.$r" "${l}_user_us"); ss=$(get "$t.$r" "${l}_sys_us"); cu=$(get "$t.$r" "${l}_cpu_us")
      V[$t,$kind,ps]+=" $ps"; V[$t,$kind,p99]+=" $p99"; V[$t,$kind,user]+=" $us"; V[$t,$kind,sys]+=" $ss"; V[$t,$kind,cpu]+=" $cu"
      if [[ -n "$ps" ]]; then row+=("$ps" "$p99" "$us+$ss"); else row+=("-" "-" "-"); fi
      errors=$(get "$t.$r" "${l}_errors")
      if [[ -n "$errors" && "$errors" != 0 ]]; then
        echo "   $t round $r: $errors wrong $kind replies: $(grep -m1 'first wrong' "$tmp/$t.$r.load" || true)"
      fi
    done
    rss=$(( $(get "$t.$r" rss_kib) / 1024 ))
    lone=$(ratio "$(get "$t.$r" one_client_big_p50_us)" "$(get "$t.$r" one_client_small_p50_us)")
    V[$t,rss]+=" $rss"; V[$t,lone]+=" $lone"
    printf '%-5s %-8s %5s | %9s %8s %13s | %9s %8s %13s | %7s %7s\n' \
      "$r" "$t" "$(awk '{print $2}' "$tmp/$t.$r.loadavg")" "${row[@]}" "$rss" "$lone"
  done
done

echo
echo "== median (min–max) over $rounds rounds"
for kind in exact keyword; do
  for t in "${trackers[@]}"; do
    # shellcheck disable=SC2086
    [[ "$(stats ${V[$t,$kind,ps]})" == "-" ]] && continue
    # shellcheck disable=SC2086
    printf '%-8s %-8s SEARCH/s %s; p99 µs %s; tracker CPU µs per SEARCH: user %s, system %s, total %s\n' \
      "$kind" "$t" "$(stats ${V[$t,$kind,ps]})" "$(stats ${V[$t,$kind,p99]})" \
      "$(stats ${V[$t,$kind,user]})" "$(stats ${V[$t,$kind,sys]})" "$(stats ${V[$t,$kind,cpu]})"
  done
done
for t in "${trackers[@]}"; do
  # shellcheck disable=SC2086
  printf 'RSS MiB %-8s %s; lone-client p50 10k/1k peers %s\n' "$t" "$(stats ${V[$t,rss]})" "$(stats ${V[$t,lone]})"
done

echo
echo "== ours / other, per round (throughput; CPU per SEARCH as other/ours, so > 1 means ours is cheaper)"
declare -A R
for other in "${trackers[@]:1}"; do
  for kind in exact keyword; do
    thr=(); cpu=()
    # shellcheck disable=SC2206
    a=(${V[ours,$kind,ps]}); b=(${V[$other,$kind,ps]}); ca=(${V[ours,$kind,cpu]}); cb=(${V[$other,$kind,cpu]})
    (( ${#b[@]} )) || continue
    for i in "${!a[@]}"; do thr+=("$(ratio "${a[$i]}" "${b[$i]:-}")"); cpu+=("$(ratio "${cb[$i]:-}" "${ca[$i]}")"); done
    R[$other,$kind]="$(median "${thr[@]}")"; R[$other,$kind,cpu]="$(median "${cpu[@]}")"
    printf '%-8s ours/%-8s SEARCH/s %s: median %s; CPU per SEARCH %s/ours: %s, median %s\n' \
      "$kind" "$other" "${thr[*]}" "$(stats "${thr[@]}")" "$other" "${cpu[*]}" "$(stats "${cpu[@]}")"
  done
done

echo
echo "== targets (medians)"
check() { # NAME VALUE OP LIMIT
  if [[ -z "$2" || "$2" == "-" ]]; then echo "  n/a:    $1 (not measured)"; return; fi
  if awk -v v="$2" -v l="$4" -v op="$3" 'BEGIN { exit !((op == ">=" && v >= l) || (op == "<" && v < l) || (op == "<=" && v <= l)) }'; then
    echo "  met:    $1 = $2 (target $3 $4)"
  else
    echo "  MISSED: $1 = $2 (target $3 $4)"
  fi
}
# shellcheck disable=SC2086
{
check "keyword SEARCH/s, 32 clients" "$(median ${V[ours,keyword,ps]})" ">=" 50000
check "keyword p99 latency µs" "$(median ${V[ours,keyword,p99]})" "<" 2000
check "exact SEARCH ours/baseline (1.09 on the issue's day, when the baseline indexed no words)" "${R[baseline,exact]:-}" ">=" 1.09
check "exact p99 latency µs" "$(median ${V[ours,exact,p99]})" "<" 2000
if [[ -n "$before" ]]; then
  check "exact SEARCH/s ours/before" "${R[before,exact]:-}" ">=" 1.00
  check "exact CPU per SEARCH before/ours" "${R[before,exact,cpu]:-}" ">=" 1.00
fi
check "one-client p50 latency ratio 10k/1k peers" "$(median ${V[ours,lone]})" "<=" 1.5
check "RSS MiB" "$(median ${V[ours,rss]})" "<=" 512
}
echo "load after: $(uptime)"

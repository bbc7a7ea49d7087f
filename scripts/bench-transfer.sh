#!/usr/bin/env bash
# Transfer benchmark (not a test). In one run, alternately, it measures
#   (a) plain copies of one file over TCP into another file (examples/raw_copy.rs): the sender
#       uses sendfile, the receiver tries each strategy (read buffers of 64 KiB to 4 MiB, splice
#       through a pipe, each with and without early write-back; read into buffers of 1-4 MiB
#       written with O_DIRECT by a second thread), fsync at the end; the baseline is the
#       strategy with the best median; beside it, as a reference that is never the baseline,
#       splice+wb+verify: the same copy hashing what it received (read back by a second thread),
#       what any page-cache receiver that verifies pays at least;
#   (b) a real DOWNLOAD between two `napster peer` processes, verification on, timed from the
#       command to the success line, the uploader's digest already known (steady);
#   (c) the first DOWNLOAD of a file an uploader has just started with (digest not known yet);
#   (d) the same comparison over a real link: two network namespaces joined by veth, shaped with
#       `tc tbf` to 100 Mbit/s and 1 Gbit/s (skipped, saying why, where that is not possible).
# Every round is printed, then the median and the spread of each, the ratios against the
# baseline within each round, CPU seconds per GiB of each side, and peak RSS of each side.
#
# Usage: scripts/bench.sh transfer [options]
#   --size-mib N        file size in MiB (default 1024; env BENCH_SIZE_MIB); 4096 for 4 GiB
#   --rounds R          rounds (default 5; env BENCH_ROUNDS)
#   --strategies "S..." receiving strategies of the plain copy (default: all, see below)
#   --no-first          skip (c)
#   --no-link           skip (d)
#   --link-mib "A B"    file size for the 100 Mbit/s and the 1 Gbit/s link (default "64 256")
#   --keep              keep the temporary folder
#   env BENCH_FILE=PATH use this file (of the given size, on the same file system as $TMPDIR)
# Targets: (b) median >= 0.90 of the baseline, no round below 0.70, CPU per GiB (both sides)
# <= 1.2x the baseline's, peak RSS <= 32 MiB each side; (c) >= 0.70; (d) ~1.0.
set -euo pipefail

size_mib="${BENCH_SIZE_MIB:-1024}"
rounds="${BENCH_ROUNDS:-5}"
strategies="read:64k read:256k read:1m read:4m splice read:1m+wb splice+wb direct:1m direct:2m direct:4m splice+wb+verify"
first=1
link=1
link_mib="64 256"
keep=0
while [ $# -gt 0 ]; do
  case "$1" in
    --size-mib) size_mib="$2"; shift 2 ;;
    --rounds) rounds="$2"; shift 2 ;;
    --strategies) strategies="$2"; shift 2 ;;
    --no-first) first=0; shift ;;
    --no-link) link=0; shift ;;
    --link-mib) link_mib="$2"; shift 2 ;;
    --keep) keep=1; shift ;;
    *) echo "unknown option $1" >&2; exit 2 ;;
  esac
done

root="$(cd "$(dirname "$0")/.." && pwd)"
echo "building (release)..."
(cd "$root" && cargo build --release --quiet --bin napster --example raw_copy)
napster="$root/target/release/napster"
raw_copy="$root/target/release/examples/raw_copy"

work="$(mktemp -d "${TMPDIR:-/tmp}/napster-speed-bench.XXXXXX")"
ns_prefix="napster-speed-$$"
pids=()
namespaces=()
cleanup() {
  exec 3>&- 4>&- 5>&- 2>/dev/null || true
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  for ns in "${namespaces[@]}"; do ip netns pids "$ns" 2>/dev/null | xargs -r kill 2>/dev/null || true; ip netns del "$ns" 2>/dev/null || true; done
  if [ "$keep" = 1 ]; then echo "kept $work"; else rm -rf "$work"; fi
}
trap cleanup EXIT

fail() { echo "bench-transfer: $*" >&2; for f in "$work"/*.log "$work"/*.err; do [ -f "$f" ] || continue; echo "--- $f" >&2; tail -n 20 "$f" >&2; done; exit 1; }

# Prefixes each line with the time it was printed, so a line's time is known exactly.
stamp() { while IFS= read -r line; do printf '%s %s\n' "$EPOCHREALTIME" "$line"; done; }

# wait_line FILE PATTERN NTH: waits until FILE holds at least NTH lines matching PATTERN,
# prints the NTH one; fails after 600 s.
wait_line() {
  local file="$1" pattern="$2" nth="$3" deadline=$((SECONDS + 600)) found
  while :; do
    found="$(grep -F -- "$pattern" "$file" 2>/dev/null | sed -n "${nth}p")" || true
    [ -n "$found" ] && { printf '%s\n' "$found"; return 0; }
    [ $SECONDS -lt $deadline ] || fail "no line '$pattern' (#$nth) in $file within 600 s"
    sleep 0.02
  done
}

ticks="$(getconf CLK_TCK)"
# CPU seconds (user + system, all threads) used so far by process $1.
cpu_of() { awk -v t="$ticks" '{ sub(/^.*\) /, ""); printf "%.2f\n", ($12 + $13) / t }' "/proc/$1/stat"; }
# Peak resident KiB of process $1 (the kernel's high-water mark).
hwm() { awk '/^VmHWM:/ {print $2}' "/proc/$1/status"; }
elapsed() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.6f\n", b - a }'; }
rate() { awk -v s="$2" -v m="$1" 'BEGIN { printf "%.1f", m / s }'; }
per_gib() { awk -v c="$2" -v m="$1" 'BEGIN { printf "%.3f", c * 1024 / m }'; }
field() { sed -n "s/.*$1=\\([0-9.]*\\).*/\\1/p" <<< "$2"; }
median() { printf '%s\n' "$@" | sort -g | awk '{v[NR]=$1} END { if (NR % 2) print v[(NR+1)/2]; else printf "%.3f\n", (v[NR/2]+v[NR/2+1])/2 }'; }
spread() { printf '%s\n' "$@" | sort -g | awk 'NR==1 {lo=$1} {hi=$1} END { printf "%s–%s", lo, hi }'; }
smallest() { printf '%s\n' "$@" | sort -g | head -n 1; }
largest() { printf '%s\n' "$@" | sort -g | tail -n 1; }
ratio() { awk -v a="$1" -v b="$2" 'BEGIN { printf "%.2f", a / b }'; }
load() { cut -d' ' -f1 /proc/loadavg; }

# raw_round [NETNS_RECV NETNS_SEND RECV_IP] MIB SRC STRATEGY: one plain copy of SRC (MIB MiB)
# with the receiving STRATEGY; sets raw_rate (MiB/s), raw_cpu_recv, raw_cpu_send (s/GiB),
# raw_rss_recv, raw_rss_send (KiB).
raw_round() {
  local in_recv=() in_send=() host=127.0.0.1
  if [ $# -eq 6 ]; then
    in_recv=(ip netns exec "$1"); in_send=(ip netns exec "$2"); host="$3"; shift 3
  fi
  # Outside every peer's folder: a peer would hash a new file there in the background.
  local mib="$1" src="$2" strategy="$3" dst="$work/raw/raw.bin" port t0 out_recv out_send
  rm -f "$dst"
  coproc RAW { "${in_recv[@]}" "$raw_copy" recv "$host:0" "$dst" "$strategy"; }
  read -r _ port <&"${RAW[0]}" || fail "raw_copy recv did not start"
  t0="$EPOCHREALTIME"
  out_send="$("${in_send[@]}" "$raw_copy" send "$host:$port" "$src")" || fail "raw_copy send failed"
  read -r out_recv <&"${RAW[0]}" || fail "raw_copy recv failed"
  wait "$RAW_PID" || fail "raw_copy recv failed"
  raw_rate="$(rate "$mib" "$(elapsed "$t0" "$(field end "$out_recv")")")"
  raw_cpu_recv="$(per_gib "$mib" "$(field cpu "$out_recv")")"
  raw_cpu_send="$(per_gib "$mib" "$(field cpu "$out_send")")"
  raw_rss_recv="$(field rss_kib "$out_recv")"
  raw_rss_send="$(field rss_kib "$out_send")"
  rm -f "$dst"
}

# A napster peer: start_peer NAME DIR LISTEN_IP [NETNS]; sets peer_pid, peer_port; its console
# input is the FIFO $work/NAME.in (opened on the next free descriptor, kept in peer_fd). It JOINs
# at start, and this waits for that, unless NO_JOIN=1 (then only for its upload port).
start_peer() {
  local name="$1" dir="$2" ip="$3" in_ns=() join=(--join)
  [ $# -ge 4 ] && [ -n "$4" ] && in_ns=(ip netns exec "$4")
  [ "${NO_JOIN:-0}" = 1 ] && join=()
  mkfifo "$work/$name.in"
  "${in_ns[@]}" "$napster" peer --server "$tracker" --listen "$ip:0" --dir "$dir" --approve yes "${join[@]}" \
    < "$work/$name.in" > >(stamp > "$work/$name.log") 2> "$work/$name.err" &
  peer_pid=$!; pids+=("$peer_pid")
  exec {peer_fd}> "$work/$name.in"
  peer_port="$(wait_line "$work/$name.log" "Aguardando pedidos de download na porta " 1 | sed 's/.*porta \([0-9]*\);.*/\1/')"
  [ "${NO_JOIN:-0}" = 1 ] || wait_line "$work/$name.log" "Sou o Peer " 1 > /dev/null
}
# stop_peer PID FD NAME: QUIT, then wait for it to end.
stop_peer() {
  local fd="$2"
  echo QUIT >&"$fd"
  exec {fd}>&-
  wait_line "$work/$3.log" "Peer encerrado." 1 > /dev/null
  wait "$1" 2>/dev/null || true
}

# napster_round FD LOG COUNT ADDR MIB DOWN_PID UP_PID DEST: one DOWNLOAD of big.bin from ADDR
# by the peer whose console is FD; COUNT is its number of downloads so far plus this one; sets
# nap_rate, nap_cpu_down, nap_cpu_up (s/GiB). With ROUND_T0 set, the time counts from then, and
# the uploader's CPU from its start (a round that starts the uploader).
napster_round() {
  local fd="$1" log="$2" count="$3" addr="$4" mib="$5" down="$6" up="$7" dest="$8"
  local c_down c_up t0 line
  c_down="$(cpu_of "$down")"; c_up="$(cpu_of "$up")"
  t0="$EPOCHREALTIME"
  if [ -n "${ROUND_T0:-}" ]; then t0="$ROUND_T0"; c_up=0; fi
  echo "DOWNLOAD big.bin $addr" >&"$fd"
  line="$(wait_line "$log" "baixado com sucesso" "$count")"
  if grep -q "Erro ao processar download" "$log"; then fail "a download failed"; fi
  nap_rate="$(rate "$mib" "$(elapsed "$t0" "${line%% *}")")"
  nap_cpu_down="$(per_gib "$mib" "$(awk -v a="$c_down" -v b="$(cpu_of "$down")" 'BEGIN{print b-a}')")"
  nap_cpu_up="$(per_gib "$mib" "$(awk -v a="$c_up" -v b="$(cpu_of "$up")" 'BEGIN{print b-a}')")"
}

echo "machine: $(nproc) cores, $(awk '/MemTotal/ {printf "%.1f GiB RAM", $2/1048576}' /proc/meminfo), $(uname -sr)"
echo "date: $(date -u '+%Y-%m-%d %H:%M UTC'); load (1 min) at start: $(load)"
echo "(the machine may be shared: compare ratios within a round and CPU time, not MiB/s across runs)"

mkdir -p "$work/a" "$work/b" "$work/raw"
if [ -n "${BENCH_FILE:-}" ]; then
  # A file made earlier (it must be $size_mib MiB, on the same file system as $work).
  ln "$BENCH_FILE" "$work/a/big.bin"
else
  echo "creating a ${size_mib} MiB file of random bytes..."
  head -c "$((size_mib * 1024 * 1024))" /dev/urandom > "$work/a/big.bin"
  # On the disk now, so that its write-back does not fall into the measured rounds.
  sync "$work/a/big.bin"
fi

"$napster" server --listen 127.0.0.1:0 > >(stamp > "$work/tracker.log") 2> "$work/tracker.err" &
pids+=($!)
tracker="$(wait_line "$work/tracker.log" "Servidor ouvindo em " 1 | awk '{print $NF}')"

start_peer a "$work/a" 127.0.0.1; pid_a=$peer_pid; port_a=$peer_port; fd_a=$peer_fd
start_peer b "$work/b" 127.0.0.1; pid_b=$peer_pid; fd_b=$peer_fd
downloads_b=0

echo
echo "== steady: ${size_mib} MiB over loopback, $rounds rounds (MiB/s; CPU s/GiB receiver+sender) =="
echo "warm-up DOWNLOAD (the uploader learns the file's digest)..."
downloads_b=$((downloads_b + 1))
rm -f "$work/b/big.bin"
napster_round "$fd_b" "$work/b.log" "$downloads_b" "127.0.0.1:$port_a" "$size_mib" "$pid_b" "$pid_a" "$work/b/big.bin"
echo "  warm-up: $nap_rate MiB/s"
cmp "$work/a/big.bin" "$work/b/big.bin" || fail "the downloaded copy differs"

declare -A rates cpus
raw_rss_max=0
nap_rates=(); nap_cpus=(); nap_downs=(); nap_ups=()
for i in $(seq 1 "$rounds"); do
  line="  round $i (load $(load)):"
  for s in $strategies; do
    raw_round "$size_mib" "$work/a/big.bin" "$s"
    rates[$s]+="$raw_rate "
    cpus[$s]+="$(awk -v a="$raw_cpu_recv" -v b="$raw_cpu_send" 'BEGIN{printf "%.3f", a+b}') "
    raw_rss_max="$(largest "$raw_rss_max" "$raw_rss_recv" "$raw_rss_send")"
    line+=" $s $raw_rate ($raw_cpu_recv+$raw_cpu_send)"
  done
  downloads_b=$((downloads_b + 1))
  rm -f "$work/b/big.bin"
  napster_round "$fd_b" "$work/b.log" "$downloads_b" "127.0.0.1:$port_a" "$size_mib" "$pid_b" "$pid_a" "$work/b/big.bin"
  nap_rates+=("$nap_rate"); nap_downs+=("$nap_cpu_down"); nap_ups+=("$nap_cpu_up")
  nap_cpus+=("$(awk -v a="$nap_cpu_down" -v b="$nap_cpu_up" 'BEGIN{printf "%.3f", a+b}')")
  echo "$line | napster $nap_rate ($nap_cpu_down+$nap_cpu_up)"
done
cmp "$work/a/big.bin" "$work/b/big.bin" || fail "the downloaded copy differs"

best=""; best_med=0
echo "plain copy, per receiving strategy: median MiB/s (spread) | CPU s/GiB both sides, median"
for s in $strategies; do
  # shellcheck disable=SC2086
  med="$(median ${rates[$s]})"
  # shellcheck disable=SC2086
  echo "  $s: $med ($(spread ${rates[$s]})) | $(median ${cpus[$s]})"
  # A verifying copy is a reference, not a candidate: the baseline does no digest.
  [[ "$s" == *+verify ]] && continue
  if awk -v a="$med" -v b="$best_med" 'BEGIN{exit !(a > b)}'; then best="$s"; best_med="$med"; fi
done
read -r -a base_rates <<< "${rates[$best]}"
read -r -a base_cpus <<< "${cpus[$best]}"
round_ratios=()
for i in "${!nap_rates[@]}"; do round_ratios+=("$(ratio "${nap_rates[$i]}" "${base_rates[$i]}")"); done
echo "baseline: $best, median $best_med MiB/s ($(spread "${base_rates[@]}")), CPU $(median "${base_cpus[@]}") s/GiB"
echo "napster steady: median $(median "${nap_rates[@]}") MiB/s ($(spread "${nap_rates[@]}")), CPU $(median "${nap_cpus[@]}") s/GiB (downloader $(median "${nap_downs[@]}") + uploader $(median "${nap_ups[@]}"))"
echo "ratio napster/baseline by round: ${round_ratios[*]}; median $(median "${round_ratios[@]}"), lowest $(smallest "${round_ratios[@]}") (targets >= 0.90, >= 0.70)"
echo "CPU per GiB napster/baseline: $(ratio "$(median "${nap_cpus[@]}")" "$(median "${base_cpus[@]}")") (target <= 1.20)"
for s in $strategies; do
  [[ "$s" == *+verify ]] || continue
  read -r -a verify_rates <<< "${rates[$s]}"
  read -r -a verify_cpus <<< "${cpus[$s]}"
  verify_ratios=()
  for i in "${!verify_rates[@]}"; do verify_ratios+=("$(ratio "${verify_rates[$i]}" "${base_rates[$i]}")"); done
  echo "reference, the plain copy verifying what it received ($s): ratio to the baseline by round ${verify_ratios[*]}; median $(median "${verify_ratios[@]}"); CPU per GiB $(ratio "$(median "${verify_cpus[@]}")" "$(median "${base_cpus[@]}")")x the baseline's"
done

if [ "$first" = 1 ]; then
  echo
  echo "== first DOWNLOAD after the uploader starts (digest not known), $rounds rounds =="
  first_ratios=(); first_rates=()
  for i in $(seq 1 "$rounds"); do
    fresh="$work/fresh$i"; mkdir -p "$fresh"
    # A new file (new inode, new times): nothing can know its digest.
    cp "$work/a/big.bin" "$fresh/big.bin"
    sync "$fresh/big.bin"
    raw_round "$size_mib" "$fresh/big.bin" "$best"
    rm -f "$work/b/big.bin"
    # Timed from the uploader's start: its start-up and any hashing before the data count.
    ROUND_T0="$EPOCHREALTIME"
    NO_JOIN=1 start_peer "fresh$i" "$fresh" 127.0.0.1
    downloads_b=$((downloads_b + 1))
    ROUND_T0="$ROUND_T0" napster_round "$fd_b" "$work/b.log" "$downloads_b" "127.0.0.1:$peer_port" "$size_mib" "$pid_b" "$peer_pid" "$work/b/big.bin"
    unset ROUND_T0
    stop_peer "$peer_pid" "$peer_fd" "fresh$i"
    first_rates+=("$nap_rate"); first_ratios+=("$(ratio "$nap_rate" "$raw_rate")")
    echo "  round $i (load $(load)): baseline $raw_rate, napster first $nap_rate ($nap_cpu_down+$nap_cpu_up s/GiB), ratio ${first_ratios[-1]}"
    rm -rf "$fresh"
  done
  cmp "$work/a/big.bin" "$work/b/big.bin" || fail "the downloaded copy differs"
  echo "napster first download: median $(median "${first_rates[@]}") MiB/s ($(spread "${first_rates[@]}")); ratio median $(median "${first_ratios[@]}"), lowest $(smallest "${first_ratios[@]}") (target >= 0.70)"
fi

echo
rss_a="$(hwm "$pid_a")"; rss_b="$(hwm "$pid_b")"
echo "peak RSS: napster uploader $((rss_a / 1024)) MiB ($rss_a KiB), downloader $((rss_b / 1024)) MiB ($rss_b KiB); plain copy $((raw_rss_max / 1024)) MiB (target <= 32 MiB)"
stop_peer "$pid_a" "$fd_a" a
stop_peer "$pid_b" "$fd_b" b

link_skip() { echo "link comparison skipped: $*"; exit 0; }
if [ "$link" = 1 ]; then
  echo
  echo "== over a real link: two network namespaces joined by veth, shaped with tc tbf =="
  [ "$(id -u)" = 0 ] || link_skip "not running as root (ip netns needs it)"
  command -v tc > /dev/null || link_skip "tc is not installed"
  up="$ns_prefix-up"; down="$ns_prefix-down"
  ip netns add "$up" 2>/dev/null || link_skip "cannot create a network namespace"
  namespaces+=("$up")
  ip netns add "$down" || link_skip "cannot create a network namespace"
  namespaces+=("$down")
  ip -n "$up" link add eth0 type veth peer name eth0 netns "$down" || link_skip "cannot create a veth pair"
  ip -n "$up" addr add 10.213.0.1/24 dev eth0; ip -n "$down" addr add 10.213.0.2/24 dev eth0
  for ns in "$up" "$down"; do ip -n "$ns" link set eth0 up; ip -n "$ns" link set lo up; done
  ip netns exec "$up" tc qdisc add dev eth0 root tbf rate 100mbit burst 256kb latency 50ms 2>/dev/null \
    || link_skip "tc cannot add a tbf qdisc"
  ip netns exec "$up" "$napster" server --listen 10.213.0.1:0 > >(stamp > "$work/ltracker.log") 2> "$work/ltracker.err" &
  pids+=($!)
  tracker="$(wait_line "$work/ltracker.log" "Servidor ouvindo em " 1 | awk '{print $NF}')"
  mkdir -p "$work/lu" "$work/ld"
  start_peer lu "$work/lu" 10.213.0.1 "$up"; pid_lu=$peer_pid; port_lu=$peer_port; fd_lu=$peer_fd
  start_peer ld "$work/ld" 10.213.0.2 "$down"; pid_ld=$peer_pid; fd_ld=$peer_fd
  downloads_ld=0
  read -r mib_slow mib_fast <<< "$link_mib"
  for shape in "100mbit $mib_slow" "1gbit $mib_fast"; do
    read -r rate_name mib <<< "$shape"
    burst=256kb; [ "$rate_name" = 1gbit ] && burst=2mb
    ip netns exec "$up" tc qdisc replace dev eth0 root tbf rate "$rate_name" burst "$burst" latency 50ms
    head -c "$((mib * 1024 * 1024))" "$work/a/big.bin" > "$work/lu/big.bin"
    sync "$work/lu/big.bin"
    downloads_ld=$((downloads_ld + 1))
    rm -f "$work/ld/big.bin"; napster_round "$fd_ld" "$work/ld.log" "$downloads_ld" "10.213.0.1:$port_lu" "$mib" "$pid_ld" "$pid_lu" "$work/ld/big.bin"
    link_raw=(); link_nap=(); link_ratios=()
    for i in $(seq 1 "$rounds"); do
      raw_round "$down" "$up" 10.213.0.2 "$mib" "$work/lu/big.bin" "$best"
      downloads_ld=$((downloads_ld + 1))
      rm -f "$work/ld/big.bin"; napster_round "$fd_ld" "$work/ld.log" "$downloads_ld" "10.213.0.1:$port_lu" "$mib" "$pid_ld" "$pid_lu" "$work/ld/big.bin"
      link_raw+=("$raw_rate"); link_nap+=("$nap_rate"); link_ratios+=("$(ratio "$nap_rate" "$raw_rate")")
      echo "  $rate_name, $mib MiB, round $i (load $(load)): plain $raw_rate, napster $nap_rate MiB/s, ratio ${link_ratios[-1]}"
    done
    cmp "$work/lu/big.bin" "$work/ld/big.bin" || fail "the downloaded copy differs"
    echo "$rate_name: plain median $(median "${link_raw[@]}") ($(spread "${link_raw[@]}")), napster median $(median "${link_nap[@]}") ($(spread "${link_nap[@]}")) MiB/s; ratio median $(median "${link_ratios[@]}"), lowest $(smallest "${link_ratios[@]}")"
  done
  stop_peer "$pid_lu" "$fd_lu" lu
  stop_peer "$pid_ld" "$fd_ld" ld
fi
echo
echo "load (1 min) at the end: $(load)"

#!/usr/bin/env bash
# Soak: everything at once for MINUTES minutes, then checks that it all held.
#
#   scripts/soak.sh MINUTES
#
# - a tracker with SOAK_IDLE (default 2000) idle peers connected and JOINed, under SEARCH load
#   (SOAK_SEARCH_RATE per second, default 200) and JOIN/leave churn (20 short-lived peers a
#   second, each checking that SEARCH finds it);
# - SOAK_PEERS (default 4) real `napster peer --join --approve yes` processes downloading each
#   other's files (SOAK_FILE_MIB, default 8) in a loop; every 5th download one side is killed
#   (SIGKILL) half way and restarted on the same port (the download resumes later);
# - the tracker is killed (SIGKILL) once at half time and restarted on the same port; the peers
#   and the idle load reconnect;
# - every 5 s the RSS, descriptors and threads of the tracker and of each peer are sampled
#   into samples.tsv.
#
# At the end it checks: every completed download byte-exact; at least 80 % of the downloads
# that were not interrupted completed; no SEARCH answered wrongly while the tracker was up;
# once the load has left, nothing that left is still listed (SEARCH of the idle and churn
# names is empty, and every holder of a peer's file is a live peer); the tracker and the peers
# back near their idle size (RSS within 32 MiB, descriptors and threads within 2 of
# what they had before the load). Exit status 0 only if every check passed; otherwise each
# failed check is printed.
#
# Environment: NAPSTER_BIN (skip the build), SOAK_IDLE, SOAK_SEARCH_RATE, SOAK_PEERS,
# SOAK_FILE_MIB, SOAK_KEEP=1 (keep the work folder). Needs python3 (the load generator).
set -euo pipefail

root="$(cd "$(dirname "$0")/.." && pwd)"
minutes="${1:-}"
[[ "$minutes" =~ ^[0-9]+([.][0-9]+)?$ ]] || { echo "usage: scripts/soak.sh MINUTES" >&2; exit 2; }
idle="${SOAK_IDLE:-2000}"
search_rate="${SOAK_SEARCH_RATE:-200}"
npeers="${SOAK_PEERS:-4}"
file_mib="${SOAK_FILE_MIB:-8}"
command -v python3 >/dev/null || { echo "SOAK FAILED: python3 is needed for the load generator" >&2; exit 2; }

if [[ -n "${NAPSTER_BIN:-}" ]]; then
  bin="$NAPSTER_BIN"
else
  echo "== building napster (release)"
  cargo build --release --quiet --manifest-path "$root/Cargo.toml"
  bin="$root/target/release/napster"
fi

# The idle peers and this script's own descriptors.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
if (( $(ulimit -n) < idle + 512 )); then
  echo "SOAK FAILED: the open-file limit $(ulimit -n) is too low for $idle idle peers (SOAK_IDLE)" >&2
  exit 2
fi

work="$(mktemp -d "${TMPDIR:-/tmp}/napster-soak.XXXXXX")"
pids=()
failures=()
tracker_pid=""
load_pid=""
declare -A peer_pid peer_port peer_fd

cleanup() {
  for who in "${!peer_fd[@]}"; do eval "exec ${peer_fd[$who]}>&-" 2>/dev/null || true; done
  [[ -n "$load_pid" ]] && kill "$load_pid" 2>/dev/null || true
  [[ -n "$tracker_pid" ]] && kill "$tracker_pid" 2>/dev/null || true
  for who in "${!peer_pid[@]}"; do kill "${peer_pid[$who]}" 2>/dev/null || true; done
  wait 2>/dev/null || true
  if [[ ${#failures[@]} -eq 0 && -z "${SOAK_KEEP:-}" ]]; then
    rm -rf "$work"
  else
    echo "== work folder kept: $work" >&2
  fi
}
trap cleanup EXIT
trap 'exit 130' INT TERM

die() { echo "SOAK FAILED: $*" >&2; exit 1; }
fail() { failures+=("$*"); echo "!! $*" >&2; }
now() { date +%s; }

# wait_count FILE TEXT COUNT SECONDS: until FILE has COUNT lines containing TEXT; 1 on timeout.
wait_count() {
  local deadline=$(( $(now) + $4 ))
  while (( $(grep -cF -- "$2" "$1" 2>/dev/null || true) < $3 )); do
    (( $(now) < deadline )) || return 1
    sleep 0.05  # polling for a line, not a synchronising delay
  done
}

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

# The peers' stdin FIFOs this script holds open are not passed on, so that descriptor counts
# are the processes' own.
close_fifos() {
  local fd
  for fd in "${peer_fd[@]}"; do eval "exec $fd>&-"; done
}

start_tracker() {
  (close_fifos; exec "$bin" server --listen "127.0.0.1:$tracker_port" --max-connections-per-host 1000000 \
    >> "$work/tracker.out" 2>> "$work/tracker.err") &
  tracker_pid=$!
  wait_count "$work/tracker.out" "Servidor ouvindo em" "$1" 30 || die "the tracker did not start"
}

start_peer() {
  local who="$1"
  (close_fifos; exec "$bin" peer --server "127.0.0.1:$tracker_port" --listen "127.0.0.1:${peer_port[$who]}" \
    --dir "$work/$who" --join --approve yes < "$work/$who.in" >> "$work/$who.out" 2>> "$work/$who.err") &
  peer_pid[$who]=$!
}

# sample LABEL PID: one line of samples.tsv (time, who, RSS KiB, descriptors, threads).
sample() {
  local rss threads fds
  rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$2/status" 2>/dev/null)" || return 0
  threads="$(awk '/^Threads:/ {print $2}' "/proc/$2/status" 2>/dev/null)" || return 0
  fds="$(ls "/proc/$2/fd" 2>/dev/null | wc -l)"
  printf '%s\t%s\t%s\t%s\t%s\n' "$(now)" "$1" "${rss:-0}" "$fds" "${threads:-0}" >> "$work/samples.tsv"
}

sample_all() {
  sample tracker "$tracker_pid"
  for who in "${!peer_pid[@]}"; do sample "$who" "${peer_pid[$who]}"; done
}

# figures LABEL PID: "RSS_KIB FDS THREADS" of PID now.
figures() {
  local rss threads fds
  rss="$(awk '/^VmRSS:/ {print $2}' "/proc/$2/status")"
  threads="$(awk '/^Threads:/ {print $2}' "/proc/$2/status")"
  fds="$(ls "/proc/$2/fd" | wc -l)"
  echo "$rss $fds $threads"
}

echo "== soak for $minutes min in $work: $idle idle peers, $search_rate SEARCH/s, $npeers peers with ${file_mib} MiB files; load $(cut -d' ' -f1-3 /proc/loadavg)"
printf 'time\twho\trss_kib\tfds\tthreads\n' > "$work/samples.tsv"
tracker_port="$(free_port)"
start_tracker 1

peers=()
for i in $(seq 1 "$npeers"); do
  who="p$i"
  peers+=("$who")
  mkdir -p "$work/$who"
  head -c "$((file_mib * 1024 * 1024))" /dev/urandom > "$work/$who/src-$who.bin"
  mkfifo "$work/$who.in"
  peer_port[$who]="$(free_port)"
  start_peer "$who"
  exec {fd}>"$work/$who.in"
  peer_fd[$who]=$fd
done
for who in "${peers[@]}"; do
  wait_count "$work/$who.out" "Sou o Peer" 1 30 || die "$who did not join"
done

declare -A idle_before
idle_before[tracker]="$(figures tracker "$tracker_pid")"
for who in "${peers[@]}"; do idle_before[$who]="$(figures "$who" "${peer_pid[$who]}")"; done

# The load generator: idle peers, SEARCH load and JOIN/leave churn, until the stop file exists.
cat > "$work/load.py" <<'PY'
import json, os, random, selectors, socket, sys, time

addr = ("127.0.0.1", int(sys.argv[1]))
idle_count, rate, stop_file = int(sys.argv[2]), float(sys.argv[3]), sys.argv[4]
stats = {"searches": 0, "search_errors": 0, "churn": 0, "churn_errors": 0,
         "reconnects": 0, "tracker_down": 0}
errors = []

def msg(method, data):
    return (json.dumps({"method": method, "data": data}) + "\n").encode()

class Conn:
    def __init__(self):
        self.s = socket.create_connection(addr, timeout=30)
        self.buf = b""
    def ask(self, m):
        self.s.sendall(m)
        while b"\n" not in self.buf:
            chunk = self.s.recv(65536)
            if not chunk:
                raise ConnectionError("closed")
            self.buf += chunk
        line, self.buf = self.buf.split(b"\n", 1)
        return json.loads(line)
    def close(self):
        self.s.close()

def joined(port, files):
    c = Conn()
    r = c.ask(msg("JOIN", {"port": port, "files": files}))
    if r.get("status") != "JOIN_OK":
        c.close()
        raise RuntimeError("JOIN refused: %r" % r)
    return c

sel = selectors.DefaultSelector()
idle = {}          # i -> Conn
missing = set(range(idle_count))

def connect_idle(budget):
    for i in list(missing)[:budget]:
        try:
            c = joined(20000 + i, ["idle-%d.txt" % i])
        except (OSError, RuntimeError):
            stats["tracker_down"] += 1
            return
        idle[i] = c
        missing.discard(i)
        sel.register(c.s, selectors.EVENT_READ, i)

def drop_broken_idle():
    for key, _ in sel.select(timeout=0):
        i = key.data
        sel.unregister(key.fileobj)
        idle.pop(i).close()
        missing.add(i)
        stats["reconnects"] += 1

searchers = {}
def search_once():
    k = random.randrange(4)
    try:
        if k not in searchers:
            searchers[k] = joined(19000 + k, ["searcher-%d.txt" % k])
        i = random.randrange(idle_count)
        r = searchers[k].ask(msg("SEARCH", {"query": "idle-%d.txt" % i}))
    except (OSError, RuntimeError, ValueError):
        searchers.pop(k, None)
        stats["tracker_down"] += 1
        return
    stats["searches"] += 1
    if r.get("status") != "OK":
        stats["search_errors"] += 1
        errors.append("SEARCH answered %r" % r)

churn_n = 0
def churn_once():
    global churn_n
    churn_n += 1
    name = "churn-%d.txt" % churn_n
    try:
        c = joined(30000 + churn_n % 20000, [name])
    except (OSError, RuntimeError):
        stats["tracker_down"] += 1
        return
    try:
        r = c.ask(msg("SEARCH", {"query": name}))
        want = ["127.0.0.1:%d" % (30000 + churn_n % 20000)]
        if r.get("peers") != want:
            stats["churn_errors"] += 1
            errors.append("churn SEARCH %s answered %r" % (name, r))
        stats["churn"] += 1
    except (OSError, ValueError):
        stats["tracker_down"] += 1
    c.close()

connect_idle(idle_count)
print("READY %d idle peers" % len(idle), flush=True)
next_search = next_churn = time.monotonic()
while not os.path.exists(stop_file):
    t = time.monotonic()
    if t >= next_search:
        search_once()
        next_search += 1.0 / rate
        if next_search < t - 1:
            next_search = t
    if t >= next_churn:
        churn_once()
        next_churn = t + 0.05
    drop_broken_idle()
    if missing:
        connect_idle(200)
    time.sleep(max(0.0, min(next_search, next_churn) - time.monotonic()))

for c in list(idle.values()) + list(searchers.values()):
    c.close()

# Nothing that left may stay listed: ask until the tracker has noticed every close.
checker = joined(18999, ["checker.txt"])
names = ["idle-%d.txt" % i for i in random.sample(range(idle_count), min(300, idle_count))]
names += ["churn-%d.txt" % n for n in range(max(1, churn_n - 300), churn_n + 1)]
stale = names
deadline = time.monotonic() + 20
while stale and time.monotonic() < deadline:
    stale = [n for n in stale if checker.ask(msg("SEARCH", {"query": n})).get("peers")]
checker.close()
for k, v in stats.items():
    print("RESULT %s %d" % (k, v))
print("RESULT stale_listings %d" % len(stale))
for e in errors[:10]:
    print("ERROR %s" % e)
for n in stale[:10]:
    print("STALE %s" % n)
PY

python3 -u "$work/load.py" "$tracker_port" "$idle" "$search_rate" "$work/stop" > "$work/load.out" 2> "$work/load.err" &
load_pid=$!
wait_count "$work/load.out" "READY" 1 300 || die "the load generator did not connect its idle peers"
echo "== load running: $(head -1 "$work/load.out"); tracker $(figures tracker "$tracker_pid" | awk '{printf "RSS %d MiB, %d fds, %d threads", $1/1024, $2, $3}')"

start_time=$(now)
end_time=$(( start_time + $(awk -v m="$minutes" 'BEGIN { printf "%d", m * 60 }') ))
half_time=$(( (start_time + end_time) / 2 ))
restarted=0
round=0
completed=0
late=0
completed_expected=0
expected=0
timed_out=0
next_sample=0

while (( $(now) < end_time )); do
  if (( $(now) >= next_sample )); then
    sample_all
    next_sample=$(( $(now) + 5 ))
  fi
  if (( ! restarted && $(now) >= half_time )); then
    echo "== $(date +%T) killing the tracker (SIGKILL) and restarting it on port $tracker_port"
    kill -9 "$tracker_pid"; wait "$tracker_pid" 2>/dev/null || true
    start_tracker 2
    restarted=1
    for who in "${peers[@]}"; do
      wait_count "$work/$who.out" "Reconectado ao servidor" 1 60 || fail "$who did not reconnect to the restarted tracker"
    done
  fi
  round=$((round + 1))
  d="${peers[RANDOM % npeers]}"
  u="${peers[RANDOM % npeers]}"
  [[ "$d" != "$u" ]] || continue
  name="src-$u.bin"
  done_line="Arquivo $name baixado com sucesso"
  # A download that finished after its round was over (its uploader was killed just as the
  # last bytes arrived) left the file: check it like any other, then clear the way.
  if [[ -f "$work/$d/$name" ]]; then
    late=$((late + 1))
    cmp -s "$work/$u/$name" "$work/$d/$name" || fail "round $round: $d's late copy of $name differs from $u's"
    rm -f "$work/$d/$name"
  fi
  before="$(grep -cF -- "$done_line" "$work/$d.out" || true)"
  printf 'DOWNLOAD %s 127.0.0.1:%s\n' "$name" "${peer_port[$u]}" >&"${peer_fd[$d]}"
  if (( round % 5 == 0 )); then
    # Kill one side half way (as far as a small file has a half way), then bring it back.
    victim="$d"; (( RANDOM % 2 )) && victim="$u"
    sleep "0.0$((RANDOM % 10))"  # a random moment into the transfer is the point here
    left="Peer 127.0.0.1:${peer_port[$victim]} saiu"
    gone="$(grep -cF -- "$left" "$work/tracker.out" || true)"
    kill -9 "${peer_pid[$victim]}" 2>/dev/null || true
    wait "${peer_pid[$victim]}" 2>/dev/null || true
    # As a user would, restart once the tracker has let the old entry go: a JOIN onto an
    # address the tracker still holds for a live connection is refused (rule T7).
    wait_count "$work/tracker.out" "$left" $((gone + 1)) 10 || true
    joins="$(grep -cF "Sou o Peer" "$work/$victim.out" || true)"
    start_peer "$victim"
    wait_count "$work/$victim.out" "Sou o Peer" $((joins + 1)) 60 || fail "$victim did not come back after being killed"
  else
    expected=$((expected + 1))
    if ! wait_count "$work/$d.out" "$done_line" $((before + 1)) 120; then
      timed_out=$((timed_out + 1))
      echo "!! round $round: $d did not finish $name from $u within 120 s: $(tail -2 "$work/$d.out" | tr '\n' ' ')" >&2
      continue
    fi
  fi
  # A file under its final name must be whole and exact, whether or not a kill came first.
  if [[ -f "$work/$d/$name" ]]; then
    if (( $(grep -cF -- "$done_line" "$work/$d.out" || true) > before )); then
      completed=$((completed + 1))
      (( round % 5 == 0 )) || completed_expected=$((completed_expected + 1))
    fi
    cmp -s "$work/$u/$name" "$work/$d/$name" || fail "round $round: $d's copy of $name differs from $u's"
    rm -f "$work/$d/$name"
  fi
done
(( restarted )) || fail "the tracker was never restarted"

echo "== $(date +%T) stopping the load"
touch "$work/stop"
wait "$load_pid" || fail "the load generator failed: $(tail -3 "$work/load.err")"
load_pid=""
cat "$work/load.out"
result() { awk -v k="$1" '$1 == "RESULT" && $2 == k {print $3}' "$work/load.out"; }
(( $(result search_errors) == 0 )) || fail "$(result search_errors) SEARCH replies were errors while the tracker was up"
(( $(result churn_errors) == 0 )) || fail "$(result churn_errors) churn peers were not found by their own SEARCH"
(( $(result stale_listings) == 0 )) || fail "$(result stale_listings) names of peers that left are still listed"
(( $(result searches) > 0 )) || fail "no SEARCH was answered"

# Every holder the tracker lists for a peer's file must be a live peer.
live="$(for who in "${peers[@]}"; do echo "127.0.0.1:${peer_port[$who]}"; done)"
for who in "${peers[@]}"; do
  holders="$(python3 - "$tracker_port" "src-$who.bin" <<'PY'
import json, socket, sys
s = socket.create_connection(("127.0.0.1", int(sys.argv[1])), timeout=30)
s.sendall((json.dumps({"method": "SEARCH", "data": {"query": sys.argv[2]}}) + "\n").encode())
buf = b""
while b"\n" not in buf:
    buf += s.recv(65536)
print("\n".join(json.loads(buf.split(b"\n")[0]).get("peers", [])))
PY
)"
  for h in $holders; do
    grep -qxF "$h" <<<"$live" || fail "src-$who.bin is listed at $h, which is not a live peer"
  done
done

(( expected == 0 || completed_expected * 100 >= expected * 80 )) || \
  fail "only $completed_expected downloads completed of $expected not interrupted ($timed_out timed out)"

# Back near idle size: the tracker once the load left (give it a moment to close the threads).
settle() {
  local who="$1" pid="$2" deadline=$(( $(now) + 30 ))
  read -r rss0 fds0 threads0 <<<"${idle_before[$who]}"
  while :; do
    read -r rss fds threads <<<"$(figures "$who" "$pid")"
    if (( rss <= rss0 + 32768 && fds <= fds0 + 2 && threads <= threads0 + 2 )); then
      echo "$who: RSS $((rss0 / 1024)) -> $((rss / 1024)) MiB, fds $fds0 -> $fds, threads $threads0 -> $threads"
      return 0
    fi
    if (( $(now) >= deadline )); then
      fail "$who did not return near its idle size: RSS $((rss0 / 1024)) -> $((rss / 1024)) MiB, fds $fds0 -> $fds, threads $threads0 -> $threads"
      return 0
    fi
    sleep 0.5  # waiting for threads to end, not a synchronising delay
  done
}
echo "== idle size before the load -> after"
settle tracker "$tracker_pid"
for who in "${peers[@]}"; do settle "$who" "${peer_pid[$who]}"; done
sample_all

echo "== samples (max over the run): who, RSS MiB, fds, threads"
awk -F'\t' 'NR > 1 { if ($3 > r[$2]) r[$2] = $3; if ($4 > f[$2]) f[$2] = $4; if ($5 > t[$2]) t[$2] = $5 }
  END { for (w in r) printf "  %-8s %6.1f %6d %6d\n", w, r[w] / 1024, f[w], t[w] }' "$work/samples.tsv" | sort
echo "== $round rounds: $completed downloads completed, each verified byte-exact ($completed_expected of the $expected not interrupted, $timed_out timed out; the rest finished before a kill; $late more finished after their round), $(cat "$work"/p*.out | grep -c 'Retomando o download' || true) resumed after a kill; tracker restarted once; load now $(cut -d' ' -f1-3 /proc/loadavg)"

if (( ${#failures[@]} )); then
  echo "SOAK FAILED:" >&2
  printf '  - %s\n' "${failures[@]}" >&2
  exit 1
fi
echo "== soak passed"

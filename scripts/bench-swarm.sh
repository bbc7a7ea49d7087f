#!/usr/bin/env bash
# Swarm benchmark (not a test): three uploaders each behind a shaped link (tc tbf, 50 Mbit/s by
# default) and one downloader with a fast link, in network namespaces; alternates a
# single-source DOWNLOAD (the baseline) and a swarm DOWNLOAD of the same file, then prints every
# round, the medians and spread, the ratio (target >= 2.5), the downloader's CPU seconds and
# every peer's peak RSS (target <= 32 MiB). Driver: examples/bench_swarm.rs.
#
# Usage: scripts/bench.sh swarm [--size-mib N] [--rounds R] [--rate RATE]   (as root)
#   --size-mib N   file size in MiB (default 200)
#   --rounds R     rounds of each kind, alternating (default 5)
#   --rate RATE    each uploader's link (default 50mbit)
set -euo pipefail
root="$(cd "$(dirname "$0")/.." && pwd)"
if [ "$(id -u)" != 0 ]; then
  echo "bench-swarm: needs root for ip netns and tc; skipped" >&2
  exit 2
fi
for tool in ip tc; do
  command -v "$tool" >/dev/null || { echo "bench-swarm: $tool is missing; skipped" >&2; exit 2; }
done
echo "building (release)..."
(cd "$root" && cargo build --release --quiet --bin napster --example bench_swarm)
date -u '+%Y-%m-%d %H:%M UTC'
exec "$root/target/release/examples/bench_swarm" "$root/target/release/napster" "$@"

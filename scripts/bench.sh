#!/usr/bin/env bash
# Benchmarks (not tests): each prints figures and ratios against a baseline measured in the
# same run. Usage: scripts/bench.sh transfer|tracker|swarm [options]
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
case "${1:-}" in
  transfer) shift; exec "$here/bench-transfer.sh" "$@" ;;
  tracker) shift; exec "$here/bench-tracker.sh" "$@" ;;
  swarm) shift; exec "$here/bench-swarm.sh" "$@" ;;
  *) echo "usage: scripts/bench.sh transfer|tracker|swarm" >&2; exit 2 ;;
esac

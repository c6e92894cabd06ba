#!/usr/bin/env bash
# GraphNet from tags (gcn-tags) against its CAM on the built-in dataset (docs/results.md, AffinityNet path).
# Usage: benchmarks/gcn_tags.sh OUT_DIR [standard|holdout] [--cam-set NAME=VALUE ...]
#   the --cam-set values shorten the CAM stages (as `wsss affinitynet --set` would) when the
#   default schedule does not fit the time at hand; the same values reuse them after affinitynet.
# Writes OUT_DIR/{data,ws}; the table is copied to benchmarks/results/gcn_tags-<variant>.json.
set -euo pipefail
out=${1:?usage: gcn_tags.sh OUT_DIR [standard|holdout] [--cam-set NAME=VALUE ...]}
variant=${2:-standard}
shift $(( $# >= 2 ? 2 : 1 ))
seed=0; [ "$variant" = holdout ] && seed=1
wsss() { command "${WSSS:-wsss}" "$@"; }
[ -d "$out/data" ] || wsss generate --out "$out/data" --images 200 --variant "$variant" --seed "$seed"
wsss ingest --root "$out/data" --workspace "$out/ws" --no-progress
start=$(date +%s)
wsss graphnet --workspace "$out/ws" --supervision tags --no-progress "$@"
echo "graphnet --supervision tags: $(( $(date +%s) - start )) s"
mkdir -p "$(dirname "$0")/results"
cp "$out/ws/reports/evaluation-graphnet-tags.json" "$(dirname "$0")/results/gcn_tags-$variant.json"

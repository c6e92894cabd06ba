#!/usr/bin/env bash
# GraphNet pseudo-mask quality on the built-in dataset: every method of the GraphNet table in docs/results.md.
# Usage: benchmarks/graphnet_quality.sh OUT_DIR [standard|holdout]
#   standard: `wsss generate --seed 0` (the data the offline preset was tuned on)
#   holdout:  `wsss generate --variant holdout --seed 1` (never used for tuning)
# Writes OUT_DIR/{data,ws}; the tables land in OUT_DIR/ws/reports/evaluation-graphnet-*.json.
set -euo pipefail
out=${1:?usage: graphnet_quality.sh OUT_DIR [standard|holdout]}
variant=${2:-standard}
seed=0; [ "$variant" = holdout ] && seed=1
wsss() { command "${WSSS:-wsss}" "$@"; }  # `command`: the function must not call itself
wsss generate --out "$out/data" --images 200 --variant "$variant" --seed "$seed"
wsss ingest --root "$out/data" --workspace "$out/ws" --no-progress
wsss graphnet --workspace "$out/ws" --supervision scribbles --propagation label-propagation --no-progress
wsss graphnet --workspace "$out/ws" --supervision scribbles --crf --no-progress
wsss graphnet --workspace "$out/ws" --supervision boxes --no-progress

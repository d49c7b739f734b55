#!/usr/bin/env bash
# The expert datasets the shipped models train on (~1.5 h on 2 cores; resumes after a kill):
# default (40 episodes) -> large (120; its first 40 are default's, reused) -> dart (60, 4x
# execution noise) -> data/large_dart (merged, 17.6k transitions).
# `bash bench/expert_data.sh large` stops after data/large (what the shipped bundle trains on).
set -euo pipefail
UNTIL=${1:-large_dart}
cd "$(dirname "$0")/.."
P=.venv/bin/planner
$P data generate --recipe default --out data/default --workers 2
$P data generate --recipe large --out data/large --workers 2 --reuse data/default
[ "$UNTIL" = large ] && exit 0
$P data generate --recipe dart --out data/dart --workers 2
[ -f data/large_dart/meta.json ] || $P data merge data/large data/dart --out data/large_dart

#!/usr/bin/env bash
# The expert datasets the shipped models train on (~1.5 h on 2 cores; resumes after a kill):
# default (40 episodes) -> large (120; its first 40 are default's, copied) -> dart (60, 4x
# execution noise) -> data/large_dart (merged, 17.6k transitions).
# `bash bench/expert_data.sh large` stops after data/large (what the shipped bundle trains on).
set -euo pipefail
UNTIL=${1:-large_dart}
cd "$(dirname "$0")/.."
P=.venv/bin/planner
$P data generate --recipe default --out data/default --workers 2
if [ ! -f data/large/meta.json ]; then
  mkdir -p data/large
  [ -f data/large/recipe.json ] || .venv/bin/python -c "
import json; from dataclasses import asdict; from planner_node.sim.generate import RECIPES
from planner_node.atomic import write_json
r = asdict(RECIPES['large']); r['tasks'] = list(r['tasks']); write_json('data/large/recipe.json', {'name': 'large', **r})"
  cp -n data/default/shard_*.npz data/large/
fi
$P data generate --recipe large --out data/large --workers 2
[ "$UNTIL" = large ] && exit 0
$P data generate --recipe dart --out data/dart --workers 2
[ -f data/large_dart/meta.json ] || $P data merge data/large data/dart --out data/large_dart

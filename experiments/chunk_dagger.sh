#!/usr/bin/env bash
# DAgger rounds for the action-chunk policy (README "Chunk policy"). Round k: the previous
# round's policy drives 20-200 steps (`--recipe dagger_late`, seed 20+k), the MPPI expert
# recovers from where it took the robot (or from 10-30 steps before its fall), the round's data
# is merged with everything before it, and a fresh policy is trained on the union and evaluated
# on stand and forward (20 episodes x 300 steps, schedule B: 0.3 m/s every 67 steps, seeds 9000+).
# Round 0 is runs/chunk_r0 on data/train2 (trained here when missing). Every run uses
# experiments/configs/chunk_small_3k.yaml, the setting the rounds were measured with. Every step is
# skipped when its output exists, so the script resumes after a kill. The committed round-1 data
# names its learner by the checkpoint's sha256: a runs/chunk_r0 trained on another machine may
# differ in its bytes, and then round 1 must go to a new --out.
#   bash experiments/chunk_dagger.sh [FIRST] [LAST]     (default 1 1)
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-39} RAY_USAGE_STATS_ENABLED=0
P=.venv/bin/planner
FIRST=${1:-1}; LAST=${2:-$FIRST}
data_of() { [ "$1" = 0 ] && echo data/train2 || echo "data/train_chunk$1"; }
CONFIG=experiments/configs/chunk_small_3k.yaml
$P train --config $CONFIG --data data/train2 --out runs/chunk_r0 --quiet   # no-op when done
for k in $(seq "$FIRST" "$LAST"); do
  learner=runs/chunk_r$((k - 1)); data=$(data_of $((k - 1)))
  $P data generate --recipe dagger_late --learner "$learner" --seed $((20 + k)) --out data/dagger_chunk$k \
    --workers "${WORKERS:-2}" --quiet
  merged=$(data_of "$k")
  [ -f "$merged.json" ] || $P data merge "$data" data/dagger_chunk$k --out "$merged"
  run=runs/chunk_r$k
  $P train --config $CONFIG --data "$merged" --out $run --quiet  # resumes; no-op when done
  res=results/chunk_dagger/r$k
  mkdir -p $res
  for t in stand forward; do
    out=$res/chunk_$t.json
    [ -f "$out" ] || $P eval --planner chunk --checkpoint $run --task $t --episodes 20 --steps 300 --seed 9000 \
      --push-every 67 --push-speed 0.3 --quiet --json "$out" > /dev/null
  done
  .venv/bin/python bench/eval_table.py $res/*.json
done

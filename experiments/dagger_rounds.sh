#!/usr/bin/env bash
# DAgger rounds for H-GAP (what results/dagger_r1/ and dagger_r2/ came from; ~40 min a round on 2 cores).
# Round k: the previous round's planner drives, the MPPI expert recovers (`--recipe dagger`,
# seed 1+k), the round's data is merged with everything before it, a fresh H-GAP `small` is
# trained on the union and evaluated on every task (20 episodes x 150 steps, seeds 0-19, pushes
# of 0.25 m/s every 100 steps). Round 0 is runs/hgap_r0 on data/expert (`make data`).
# Every step is skipped when its output exists, so the script resumes after a kill.
#   bash experiments/dagger_rounds.sh [ROUNDS]     (default 2)
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-39}
P=.venv/bin/planner
ROUNDS=${1:-2}
TASKS="stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track"
learner=${LEARNER:-runs/hgap_r0}; data=${DATA:-data/expert}
for k in $(seq 1 "$ROUNDS"); do
  sfx=$([ "$k" = 1 ] && echo "" || echo "$k")
  $P data generate --recipe dagger --learner "$learner" --seed $((1 + k)) --out data/dagger$sfx --workers 2
  merged=data/large_dagger$sfx
  [ -f $merged.json ] || $P data merge "$data" data/dagger$sfx --out $merged
  run=runs/hgap_ldg$sfx
  $P train --config config/train/hgap_small.yaml --data $merged --out $run --quiet  # resumes; no-op when done
  res=results/dagger_r$k
  mkdir -p $res
  for t in $TASKS; do
    out=$res/hgap_$t.json
    [ -f "$out" ] || $P eval --planner hgap --checkpoint $run --task "$t" --episodes 20 --seed 0 --steps 150 \
      --quiet --json "$out" > /dev/null
  done
  .venv/bin/python bench/eval_table.py results/final20/zero_*.json $res/hgap_*.json
  learner=$run; data=$merged
done

#!/usr/bin/env bash
# Regenerate the closed-loop tables quoted in the issue notes (long: ~2 h on 2 cores).
# Steps: expert data (default -> large, + dart; merged) -> train H-GAP and TAP (small) on the
# merged set -> evaluate every planner on every task. Everything lands in results/ (JSON per
# run) and runs/; each step is skipped if done, so the script resumes after a kill.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-38} MUJOCO_GL=${MUJOCO_GL:-egl}
P=.venv/bin/planner
EPISODES=${EPISODES:-5}; STEPS=${STEPS:-150}; MPPI_EPISODES=${MPPI_EPISODES:-2}
TASKS=${TASKS:-"stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track"}
mkdir -p results/final runs
# The expert data (data/large and data/dart are committed; a missing one is generated, resumably).
[ -f data/large.json ] || $P data generate --recipe large --out data/large --workers 2
[ -f data/dart.json ] || $P data generate --recipe dart --out data/dart --workers 2
[ -f data/large_dart.json ] || $P data merge data/large data/dart --out data/large_dart
for m in hgap tap; do
  /usr/bin/time -f "train $m: %e s wall" $P train --config config/train/${m}_small.yaml --data data/large_dart \
    --out runs/${m}_ld --quiet 2>&1 | tail -2
done
ev() { # name, args...
  local name=$1; shift
  [ -f results/final/$name.json ] || $P eval --steps $STEPS --seed 0 --quiet --json results/final/$name.json "$@" >/dev/null
}
for t in $TASKS; do
  ev zero_$t --planner zero --task $t --episodes $EPISODES
  ev hgap_$t --planner hgap --checkpoint runs/hgap_ld --task $t --episodes $EPISODES
  ev tap_$t --planner tap --checkpoint runs/tap_ld --task $t --episodes $EPISODES
done
# Ground-truth MPPI is ~2 control steps/s offline: fewer episodes.
for t in $TASKS; do
  ev mppi30_$t --planner mppi --budget-ms 30 --task $t --episodes $MPPI_EPISODES
  ev mppi_$t --planner mppi --task $t --episodes $MPPI_EPISODES
done
.venv/bin/python bench/eval_table.py results/final/{zero,mppi30,hgap,tap,mppi}_*.json

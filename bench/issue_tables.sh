#!/usr/bin/env bash
# Regenerate the closed-loop tables quoted in the issue notes (long: ~1.5 h on 2 cores).
# Steps: default dataset -> train H-GAP and TAP (small) -> eval every planner on every task.
# Everything lands in results/ (JSON per run) and runs/; each step is skipped if done.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-38} MUJOCO_GL=${MUJOCO_GL:-egl}
P=.venv/bin/planner
EPISODES=${EPISODES:-2}; STEPS=${STEPS:-150}
TASKS=${TASKS:-"stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track"}
mkdir -p results runs
$P data generate --recipe default --out data/default
for m in hgap tap; do
  /usr/bin/time -f "train $m: %e s wall" $P train --config config/train/${m}_small.yaml --data data/default \
    --out runs/${m}_small --quiet 2>&1 | tail -2
done
ev() { # name, args...
  local name=$1; shift
  [ -f results/$name.json ] || $P eval --episodes $EPISODES --steps $STEPS --seed 0 --quiet --json results/$name.json "$@" >/dev/null
}
for t in $TASKS; do
  ev zero_$t --planner zero --task $t
  ev mppi30_$t --planner mppi --budget-ms 30 --task $t
  ev hgap_$t --planner hgap --checkpoint runs/hgap_small --task $t
  ev tap_$t --planner tap --checkpoint runs/tap_small --task $t
done
for t in $TASKS; do ev mppi_$t --planner mppi --task $t; done
.venv/bin/python bench/eval_table.py results/{zero,mppi30,hgap,tap,mppi}_*.json

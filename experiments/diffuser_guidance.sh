#!/usr/bin/env bash
# Does Diffuser's value guidance keep the robot up longer? The real-time sampler (32 samples,
# warm start re-noised to level 9, 2 DDIM steps, so both steps are guided) ranked only, and
# guided with the value gradient at growing scales; schedule B of bench/stay_up.sh (0.3 m/s
# every 67 steps, seeds 9000+, not tuned on). Finished files are kept (resume).
#   BUNDLE=build/bundles/diffuser_small bash experiments/diffuser_guidance.sh [TASKS...]
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-38} RAY_USAGE_STATS_ENABLED=0
B=${BUNDLE:?export a Diffuser bundle and name it in BUNDLE}
EPISODES=${EPISODES:-10}
out=results/diffuser/guidance
mkdir -p "$out"
for t in ${*:-stand forward}; do
  for g in rank 1 10 100; do
    f=$out/${g}_$t.json
    set_guide=(--set guide=rank)
    [ "$g" != rank ] && set_guide=(--set guide=gradient --set guide_scale="$g")
    [ -f "$f" ] || .venv/bin/planner eval --bundle "$B" --task "$t" --episodes "$EPISODES" --steps 300 --seed 9000 \
      --push-every 67 --push-speed 0.3 --quiet --set sampler=warm --set warm_start=9 --set steps=2 \
      "${set_guide[@]}" --json "$f" > /dev/null
  done
done
.venv/bin/python bench/eval_table.py "$out"/*.json

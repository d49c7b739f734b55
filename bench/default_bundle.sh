#!/usr/bin/env bash
# The shipped bundle from the committed data (`make default-bundle`; ~25 min on 2 cores):
# H-GAP small trained on data/train, evaluated on every task (20 episodes x 150 steps, seeds
# 0-19, pushes of 0.25 m/s every 100 steps; episodes as Ray tasks), exported with the table in
# its card, with the Lyapunov density safety filter (runs/ldm). Resumes: training continues from
# its checkpoint, finished evaluations are kept.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-39} RAY_USAGE_STATS_ENABLED=0
P=.venv/bin/planner
DATA=${DATA:-data/train}
RUN=${RUN:-runs/hgap_default}
RES=${RES:-results/default_bundle}
OUT=${OUT:-bundles/default_hgap}
TASKS="stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track"
$P train --config config/train/hgap_small.yaml --data "$DATA" --out "$RUN" --quiet
mkdir -p "$RES"
for t in $TASKS; do
  out=$RES/hgap_$t.json
  [ -f "$out" ] || $P eval --planner hgap --checkpoint "$RUN" --task "$t" --episodes 20 --seed 0 --steps 150 \
    --workers "${WORKERS:-2}" --quiet --json "$out" > /dev/null
done
.venv/bin/python bench/eval_table.py $RES/hgap_*.json
rm -rf "$OUT.new"
# The Lyapunov density safety filter's model on the same data (kept if trained: ~5 min).
LDM=${LDM:-runs/ldm}
[ -f "$LDM/ldm.pt" ] || $P train-ldm --data "$DATA" --out "$LDM" --quiet
$P export --checkpoint "$RUN" --out "$OUT.new" --evaluation $RES/hgap_*.json --ldm "$LDM"
rm -rf "$OUT" && mv "$OUT.new" "$OUT"

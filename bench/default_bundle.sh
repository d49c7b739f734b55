#!/usr/bin/env bash
# The shipped bundle from the committed data (`make default-bundle`; ~10 min on 2 cores): the
# action-chunk policy (CONFIG: config/train/chunk_rsw4_s0.yaml, chunk_small.yaml with the rescue
# round's rows counted 4 times) trained on DATA (train16: train3 + the full expert's DAgger labels
# + four far-sighted stand label rounds + 150 expert stand episodes + the stand rescue round, README
# "DAgger by rescue"), evaluated on every task
# (20 episodes x 300 steps, seeds 0-19, pushes of 0.25 m/s every 100 steps: schedule A of
# bench/stay_up.sh), exported with the table in its card and the Lyapunov density safety
# filter's graphs (runs/ldm). Resumes: training continues from its checkpoint, finished
# evaluations are kept. The previous shipped bundle (H-GAP) is bundles/hgap.
# TASK_WEIGHTS: how much of the policy's task conditioning is each task's own rather than
# stand's, chosen on schedule A by experiments/task_weights.py (results/task_weights/sweep_A.*: the
# largest weight within one s.e. of the best return) and confirmed on B and C (README "Chunk
# policy"); TASK_WEIGHTS= ships every task at full weight.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-39} RAY_USAGE_STATS_ENABLED=0
P=.venv/bin/planner
DATA=${DATA:-data/train16}
RUN=${RUN:-runs/chunk_rsw4_s0}
CONFIG=${CONFIG:-config/train/chunk_rsw4_s0.yaml}
RES=${RES:-results/default_bundle}
OUT=${OUT:-bundles/default}
TASK_WEIGHTS=${TASK_WEIGHTS-rotate_x:0.3,rotate_y:0.5,rotate_z:0.3,shift_left:0.3,forward:0.7}
TASKS="stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track"
$P train --config "$CONFIG" --data "$DATA" --out "$RUN" --quiet
mkdir -p "$RES"
for t in $TASKS; do
  out=$RES/chunk_$t.json
  [ -f "$out" ] || $P eval --planner chunk --checkpoint "$RUN" --task "$t" --episodes 20 --seed 0 --steps 300 \
    --push-every 100 --push-speed 0.25 --set task_weights="$TASK_WEIGHTS" --workers "${WORKERS:-2}" --quiet \
    --json "$out" > /dev/null
done
.venv/bin/python bench/eval_table.py $RES/chunk_*.json
rm -rf "$OUT.new"
# The Lyapunov density safety filter's model (kept if trained: ~5 min).
LDM=${LDM:-runs/ldm}
[ -f "$LDM/ldm.pt" ] || $P train-ldm --data "$DATA" --out "$LDM" --quiet
$P export --checkpoint "$RUN" --out "$OUT.new" --evaluation $RES/chunk_*.json --ldm "$LDM" \
  --set task_weights="$TASK_WEIGHTS"
rm -rf "$OUT" && mv "$OUT.new" "$OUT"

#!/usr/bin/env bash
# IDQL against the chunk policy trained on the same data (data/train16), 20 x 300 per task on the
# stay-up schedules (B: 0.3 m/s every 67 steps, seeds 9000+; A, C, D as bench/stay_up.sh), the
# same seeds for every column: the critic's choice (select=argmax, and the VARIANTS given) against
# a uniform choice among the same samples (the attribution: diffusion alone). Both bundles run
# the shipped bundle's task weights and posture term. Finished files are kept (resumes).
#   bash experiments/idql_eval.sh                       # schedule B, all 10 tasks
#   SCHEDULES="A C D" TASKS=stand bash experiments/idql_eval.sh
# Other bundles or settings: LABEL names their files, SETS adds --set flags, e.g.
#   IDQL=build/idql_s2 LABEL=idql_s2 bash experiments/idql_eval.sh     # exported with --set steps=2
#   LABEL=idql_o1 SETS="overlap=1" VARIANTS=uniform TASKS=stand bash experiments/idql_eval.sh
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-38} RAY_USAGE_STATS_ENABLED=0
P=.venv/bin/planner
RUN=${RUN:-runs/idql_small}
IDQL=${IDQL:-build/idql}
CHUNK=${CHUNK:-bundles/default}
OUT=${OUT:-results/idql}
VARIANTS=${VARIANTS:-"argmax uniform"}
SCHEDULES=${SCHEDULES:-B}
TASKS=${TASKS:-stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track}
declare -A SCHED=([A]="100 0.25 0" [B]="67 0.3 9000" [C]="80 0.35 7000" [D]="90 0.3 5000")
if [ ! -d "$IDQL" ]; then
  weights=$(.venv/bin/python -c "import yaml,sys; print(yaml.safe_load(open('$CHUNK/manifest.yaml'))['planner_defaults']['task_weights'])")
  $P export --checkpoint "$RUN" --out "$IDQL" --samples "${SAMPLES:-32}" --set steps="${STEPS:-4}" \
    --set task_weights="$weights" > /dev/null
fi
for s in $SCHEDULES; do
  read -r every speed seed <<< "${SCHED[$s]}"
  mkdir -p "$OUT/$s"
  common=(--episodes "${EPISODES:-20}" --steps 300 --seed "$seed" --push-every "$every" --push-speed "$speed"
          --quiet --workers "${WORKERS:-2}")
  for t in $TASKS; do
    f=$OUT/$s/chunk_$t.json
    [ -f "$f" ] || $P eval --task "$t" "${common[@]}" --bundle "$CHUNK" --json "$f" > /dev/null
    for v in $VARIANTS; do
      f=$OUT/$s/${LABEL:-idql}_${v}_$t.json
      sets=(--set select="$v")
      for kv in ${SETS:-}; do sets+=(--set "$kv"); done
      [ -f "$f" ] || $P eval --task "$t" "${common[@]}" --bundle "$IDQL" "${sets[@]}" --json "$f" > /dev/null
    done
  done
  echo "== schedule $s"
  .venv/bin/python bench/eval_table.py "$OUT/$s"/*.json
done

#!/usr/bin/env bash
# Policies trained on the policy-rollout dataset (`make rollouts`: 1.0M transitions the shipped
# chunk policy made with per-episode action noise, task weights and pushes), learning its clean
# actions: the chunk policy (experiments/configs/chunk_rollouts.yaml) and IDQL
# (idql_rollouts.yaml), against the shipped chunk policy that made the data, 20 x 300 per task on
# the stay-up schedules, the same seeds for every column (B: 0.3 m/s every 67 steps, seeds 9000+;
# A, C, D as bench/stay_up.sh). IDQL with a uniform choice among its 32 samples (its default) and
# with the critic's argmax (the attribution). Every bundle runs the shipped bundle's task weights
# and posture term. Resumable: finished runs, bundles and files are kept.
#   bash experiments/rollout_study.sh                              # schedule B, all 10 tasks
#   SCHEDULES="A C D" TASKS=stand bash experiments/rollout_study.sh
#   SCHEDULES="A C D" SKIP_ARGMAX=1 bash experiments/rollout_study.sh     # all tasks, without the argmax column
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-37} RAY_USAGE_STATS_ENABLED=0
P=.venv/bin/planner
DATA=${DATA:-build/rollouts/policy_rollouts}
OUT=${OUT:-results/rollouts}
SCHEDULES=${SCHEDULES:-B}
TASKS=${TASKS:-stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track}
declare -A SCHED=([A]="100 0.25 0" [B]="67 0.3 9000" [C]="80 0.35 7000" [D]="90 0.3 5000")

for c in chunk_rollouts idql_rollouts; do   # a finished run is left as it is
  $P train --config "experiments/configs/$c.yaml" --data "$DATA" --out "runs/$c" --quiet
done
shipped=$(.venv/bin/python -c "import yaml; d = yaml.safe_load(open('bundles/default/manifest.yaml'))['planner_defaults']; \
print(' '.join(f'--set {k}={d[k]}' for k in ('task_weights', 'overlap', 'decay', 'stance_gain', 'stance_width')))")
# shellcheck disable=SC2086
[ -d build/chunk_rollouts ] || $P export --checkpoint runs/chunk_rollouts --out build/chunk_rollouts $shipped > /dev/null
# shellcheck disable=SC2086
[ -d build/idql_rollouts ] || $P export --checkpoint runs/idql_rollouts --out build/idql_rollouts --samples 32 \
  --set steps=2 $shipped > /dev/null

COLUMNS_=("chunk|bundles/default|" "chunk_rollouts|build/chunk_rollouts|" "idql_rollouts|build/idql_rollouts|"
          "idql_rollouts_argmax|build/idql_rollouts|select=argmax")
if [ -n "${SKIP_ARGMAX:-}" ]; then COLUMNS_=("${COLUMNS_[@]:0:3}"); fi   # the attribution column left out
for s in $SCHEDULES; do
  read -r every speed seed <<< "${SCHED[$s]}"
  mkdir -p "$OUT/$s"
  common=(--episodes "${EPISODES:-20}" --steps 300 --seed "$seed" --push-every "$every" --push-speed "$speed"
          --quiet --workers "${WORKERS:-2}")
  for t in $TASKS; do
    for col in "${COLUMNS_[@]}"; do
      IFS='|' read -r label bundle set <<< "$col"
      f=$OUT/$s/${label}_$t.json
      sets=()
      [ -n "$set" ] && sets=(--set "$set")
      [ -f "$f" ] || $P eval --task "$t" "${common[@]}" --bundle "$bundle" "${sets[@]}" --json "$f" > /dev/null
    done
  done
  echo "== schedule $s"
  .venv/bin/python bench/eval_table.py --markdown --against "bundle[onnxruntime][default]" \
    "bundle[onnxruntime][chunk_rollouts]" "bundle[onnxruntime][idql_rollouts]" -- "$OUT/$s"/*.json | tee "$OUT/${s}_table.md"
done

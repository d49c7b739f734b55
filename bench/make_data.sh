#!/usr/bin/env bash
# Regenerate the committed datasets from scratch (`make data`; resumes after a kill: every step
# is skipped when its output exists, and a generation in progress keeps its finished episodes).
#
#   data/fast     400 episodes x 100 steps on the 10 tasks, pushes 0.3 m/s every 50 steps, from the
#                 cheaper planning copy (balance data: 2.5x the transitions per CPU-hour)
#   data/walk     the expert with its capture-point lead (0.2 m/s) on forward/backward/shift_left/track
#   data/dart     4x execution noise: the expert recovering from drift (DART, Laskey et al. 2017)
#   data/expert   = fast + walk + dart
#   runs/hgap_r0  H-GAP small on data/expert: the first DAgger learner
#   data/dagger1  H-GAP drives, the expert recovers (DAgger, Ross et al. 2011)
#   data/train    = expert + dagger1: what `make default-bundle` trains on
#   data/dagger2  round 2: the shipped bundle's H-GAP (runs/hgap_default) drives; data/train2 = train + dagger2
#
# Episodes run as Ray tasks on a local Ray (--workers 2); RAY=ADDRESS uses a cluster instead.
set -euo pipefail
cd "$(dirname "$0")/.."
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-39} RAY_USAGE_STATS_ENABLED=0
P=.venv/bin/planner
PAR=(--workers "${WORKERS:-2}")
[ -n "${RAY:-}" ] && PAR+=(--ray "$RAY")
gen() { $P data generate "$@" "${PAR[@]}"; }
have() { [ -f "data/$1.json" ]; }  # a finished dataset is kept as it is (shards are immutable)
merged() { local out=$1; shift; [ -f "$out.json" ] || $P data merge "$@" --out "$out"; }
have fast || gen --recipe fast --out data/fast
have walk || gen --recipe walk --out data/walk
have dart || gen --recipe dart --out data/dart
merged data/expert data/fast data/walk data/dart
# The learner is named by its checkpoint's hash in dagger1's recipe: a retrained runs/hgap_r0 is
# another learner, so a finished dagger1 is kept rather than compared with it.
if ! have dagger1; then
  $P train --config config/train/hgap_small.yaml --data data/expert --out runs/hgap_r0 --quiet
  gen --recipe dagger --learner runs/hgap_r0 --out data/dagger1
fi
merged data/train data/expert data/dagger1
# Round 2: the shipped bundle's H-GAP (runs/hgap_default, `make default-bundle`) drives, seed 3.
if ! have dagger2 && [ -f runs/hgap_default/checkpoint.pt ]; then
  gen --recipe dagger --learner runs/hgap_default --seed 3 --out data/dagger2
fi
have dagger2 && merged data/train2 data/train data/dagger2
for d in fast walk dart dagger1 train dagger2 train2; do have $d && $P data info data/$d; done

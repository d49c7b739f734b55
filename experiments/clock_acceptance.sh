#!/usr/bin/env bash
# The command-clock issue's repeat checks, on a quiet machine (nothing else running):
#   1. `planner up humanoid --duration 30` with the shipped bundle, UP_RUNS times: the last status
#      line of each (is the robot up at the end?);
#   2. `pytest -k "hil or ros or node or bridge"` HIL_RUNS times in a row: passed / failed per run.
# Writes results/command_clock/acceptance/{up,hil}.txt (one line per run, then a summary line), and
# a failed run's whole pytest output as hil_failed_run<N>.log.
#   bash experiments/clock_acceptance.sh [UP_RUNS=5] [HIL_RUNS=10]
set -u
cd "$(dirname "$0")/.."
UP_RUNS=${UP_RUNS:-5}
HIL_RUNS=${HIL_RUNS:-10}
OUT=results/command_clock/acceptance
mkdir -p "$OUT"
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${ROS_DOMAIN_ID:-35}
PY=.venv/bin/python

if [ "$UP_RUNS" -gt 0 ]; then
  : > "$OUT/up.txt.part"
  up=0
  for i in $(seq 1 "$UP_RUNS"); do
    log=$(mktemp)
    .venv/bin/planner up humanoid --duration 30 > "$log" 2>&1
    rc=$?
    last=$(grep -E "fell" "$log" | tail -1)
    echo "run $i: rc $rc | $last" | tee -a "$OUT/up.txt.part"
    case "$last" in *"fell no"*) up=$((up + 1));; esac
    rm -f "$log"
  done
  echo "up at the end: $up of $UP_RUNS" | tee -a "$OUT/up.txt.part"
  mv "$OUT/up.txt.part" "$OUT/up.txt"
fi

if [ "$HIL_RUNS" -gt 0 ]; then
  : > "$OUT/hil.txt.part"
  ok=0
  for i in $(seq 1 "$HIL_RUNS"); do
    log=$(mktemp)
    $PY -m pytest -q -p no:cacheprovider -k "hil or ros or node or bridge" test > "$log" 2>&1
    rc=$?
    summary=$(grep -E "[0-9]+ (passed|failed)" "$log" | tail -1)
    echo "run $i: rc $rc | $summary" | tee -a "$OUT/hil.txt.part"
    [ "$rc" -eq 0 ] && ok=$((ok + 1))
    if [ "$rc" -ne 0 ]; then
      grep -E "^(FAILED|ERROR)" "$log" | tee -a "$OUT/hil.txt.part"
      cp "$log" "$OUT/hil_failed_run$i.log"   # the whole pytest output: what failed, and the nodes' logs
    fi
    rm -f "$log"
  done
  echo "passed: $ok of $HIL_RUNS runs in a row" | tee -a "$OUT/hil.txt.part"
  mv "$OUT/hil.txt.part" "$OUT/hil.txt"
fi

#!/usr/bin/env bash
# Build and test planner_node as a ROS 2 package with colcon, in its own venv
# (colcon needs setuptools<80), and check colcon sees it as ros.ament_python.
set -euo pipefail
cd "$(dirname "$0")/.."
V=.venv-colcon
test -x $V/bin/python || python3 -m venv $V
$V/bin/pip install -q "setuptools<80" colcon-common-extensions ros-ament-package pytest
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
source $V/bin/activate
kind=$(colcon list --base-paths . | awk '$1=="planner_node"{print $3}')
echo "colcon list: planner_node is ${kind:-missing}"
[ "$kind" = "(ros.ament_python)" ] || { echo "colcon does not see planner_node as ros.ament_python" >&2; exit 1; }
colcon build --base-paths . --build-base "$W/build" --install-base "$W/install" --event-handlers console_direct- 
test -f "$W/install/planner_node/share/planner_node/package.xml"
test -x "$W/install/planner_node/lib/planner_node/planner"
colcon test --base-paths . --build-base "$W/build" --install-base "$W/install" \
  --pytest-args test/test_package.py --event-handlers console_direct-
colcon test-result --test-result-base "$W/build" --verbose

#!/usr/bin/env bash
# Install as a user does: a non-editable `pip install .` into a fresh venv with no extras, then,
# from outside the source tree, check that the installed node configures and activates on the
# shipped bundle from share/ (`planner up humanoid` with no bundle argument), and that torch is
# not needed. An editable install once hid a missing planner_node.runtime package.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
W=$(mktemp -d)
trap 'rm -rf "$W"' EXIT
export ROS_AUTOMATIC_DISCOVERY_RANGE=LOCALHOST
export ROS_DOMAIN_ID=${INSTALL_CHECK_DOMAIN:-44}
python3 -m venv "$W/venv"
"$W/venv/bin/pip" install -q --upgrade pip
# Install from a copy without build outputs: a stale build/ in the tree would be packaged as is.
mkdir "$W/src"
tar -C "$SRC" --exclude=./build --exclude=./install --exclude=./log --exclude=./.venv --exclude=./.venv-colcon \
  --exclude=./.git --exclude='*.egg-info' --exclude=./data --exclude=./runs -cf - . | tar -C "$W/src" -xf -
"$W/venv/bin/pip" install -q "$W/src"
cd "$W"
PY="$W/venv/bin/python"
"$PY" - "$W/venv" <<'PYEOF'
import importlib.util, sys
from pathlib import Path
venv = Path(sys.argv[1]).resolve()
import planner_node
from planner_node.ros.default_bundle import default_bundle_path
from planner_node.ros.launch_description import argument_defaults
from planner_node.runtime.bundle_planner import runtime_planner  # noqa: F401 (the runtime is installed)
assert venv in Path(planner_node.__file__).resolve().parents, f"imported from {planner_node.__file__}, not the venv"
share = venv / "share" / "planner_node" / "bundles" / "default"
assert default_bundle_path() == share, (default_bundle_path(), share)
assert argument_defaults()["bundle"] == str(share)
assert importlib.util.find_spec("torch") is None, "torch got installed: it is a training extra only"
print(f"install check: planner_node from {Path(planner_node.__file__).parent}, default bundle {share}")
PYEOF
"$W/venv/bin/planner" verify "$W/venv/share/planner_node/bundles/default"
"$W/venv/bin/planner" up humanoid --duration 8 --log-dir "$W/logs" > "$W/up.out" 2>&1 || { cat "$W/up.out" "$W"/logs/*.log; exit 1; }
grep -q "configured: planner $W/venv/share/planner_node/bundles/default" "$W/logs/planner.log" \
  || { echo "install check: the node did not configure on the installed bundle" >&2; cat "$W"/logs/*.log; exit 1; }
grep -q "activated: commanding" "$W/logs/planner.log" || { echo "install check: not activated" >&2; exit 1; }
grep -E "planner: ticks [1-9][0-9]*" "$W/up.out" | tail -1
! grep -E "Traceback|terminate called" "$W"/logs/*.log
echo "install check: OK (non-editable pip install, no extras, configured + activated on the installed bundle)"

# planner_node: `make demo` runs the main job on an embedded default; `make test` runs the tests.
# Both set up .venv first (idempotent: re-installs only when requirements/setup files change).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
PLANNER := $(VENV)/bin/planner

# DDS discovery stays on this machine; every run gets its own ROS domain.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
export ROS_DOMAIN_ID ?= 37
export MUJOCO_GL ?= egl
export PYTHONDONTWRITEBYTECODE := 1

.PHONY: setup test demo default-bundle data rollouts lint bench colcon-check clean

setup: $(VENV)/.stamp

$(VENV)/.stamp: requirements.txt setup.py package.xml
	@$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), f"Python 3.11+ needed, found {sys.version}"'
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.txt
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

test: setup
	$(PY) -m pytest -q -rs -p no:cacheprovider test

# Sim bridge + planner node (default bundle) over ROS 2: stand, walk, turn, pushes. Writes demo_out/.
demo: setup
	$(PLANNER) demo --bundle $(BUNDLE) --out demo_out --rrd demo_out/demo.rrd

BUNDLE ?= bundles/default

# The shipped bundle from the committed data (data/train16: expert, walking, DART and DAgger
# episodes, DAgger label rounds and a stand rescue round; config/train/chunk_rsw4_s0.yaml): train
# the chunk policy, evaluate every task, export with the table in its card (~10 min).
default-bundle: setup
	bash bench/default_bundle.sh

# Regenerate the committed datasets from scratch (expert recipes, the first DAgger learner and
# round; resumable; RAY=auto spreads the episodes over a Ray cluster).
data: setup
	bash bench/make_data.sh

# The policy-rollout dataset (over the data budget: only its manifest is committed), regenerated
# from the committed policy into build/rollouts/ and checked shard by shard against that manifest.
rollouts: setup
	$(PLANNER) data generate --recipe policy_rollouts --learner runs/chunk_rsw4_s0 --workers 2 \
		--out build/rollouts/policy_rollouts --expect data/regenerate/policy_rollouts.json

bench: setup
	$(PY) bench/data_throughput.py

lint: setup
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check .

colcon-check: setup
	bash .ci/colcon_check.sh

clean:
	rm -rf $(VENV) build install log .venv-colcon demo_out

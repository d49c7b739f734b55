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

.PHONY: setup test demo default-bundle lint bench colcon-check clean

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
	$(PLANNER) demo --bundle $(BUNDLE) --out demo_out

BUNDLE ?= bundles/default_hgap

# Rebuild the shipped bundle from scratch (~2.5 h on 2 cores): expert data (default, then large:
# +80 episodes, ~55 min), H-GAP on it (~5 min), two DAgger rounds (each: the last H-GAP drives,
# the expert recovers, 80 episodes ~25 min; retrain ~3 min; 20-episode evaluation of every task
# ~8 min), export of the second round's H-GAP with its evaluation in the card. Resumable.
TASKS := stand speed forward backward shift_left jump rotate_x rotate_y rotate_z track
default-bundle: setup
	bash bench/expert_data.sh large
	$(PLANNER) train --config config/train/hgap_small.yaml --data data/large --out runs/hgap_large
	bash bench/dagger_rounds.sh 2
	rm -rf bundles/default_hgap.new
	$(PLANNER) export --checkpoint runs/hgap_ldg2 --out bundles/default_hgap.new \
	  --evaluation $(foreach t,$(TASKS),results/dagger_r2/hgap_$(t).json)
	rm -rf bundles/default_hgap && mv bundles/default_hgap.new bundles/default_hgap

bench: setup
	$(PY) bench/sim_throughput.py

lint: setup
	$(PY) -m pip install -q ruff
	$(VENV)/bin/ruff check .

colcon-check: setup
	bash .ci/colcon_check.sh

clean:
	rm -rf $(VENV) build install log .venv-colcon demo_out

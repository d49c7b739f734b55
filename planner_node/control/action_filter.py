"""What sits between the plan and the command: the ``ActionFilter`` seam, ROS-free.

The controller plans, then asks the filter which action to command now, then passes that action
through the output guard. A filter sees the observation and the whole plan (its ``info`` may
hold the planner's other candidates, e.g. sampled plans' first actions with their scores) and
returns the action plus what it did. The pass-through default commands the plan's first
action. The Lyapunov-density safety filter (``ldm``: keep the robot inside the data the model
learned from; ``planner_node/runtime/ldm_filter.py``) is the first real one. Filters register
here by name, with a ``"module:Class"`` string, and the node's ``safety_filter`` parameter picks
one (``safety_filter_config``: its YAML config). A filter class with ``needs_bundle = True`` is
given the planner's bundle (its graphs live there).
"""
from __future__ import annotations

import importlib
from abc import ABC, abstractmethod
from dataclasses import dataclass, field

import numpy as np

from planner_node.control.parameters import yaml_mapping
from planner_node.planning import Plan


@dataclass
class Filtered:
    """The action to command now (56 normalized targets) and what the filter did."""

    action: np.ndarray
    intervened: bool = False
    info: dict = field(default_factory=dict)


class ActionFilter(ABC):
    """reset at the start of an episode; filter once per planned tick."""

    name: str = "filter"

    def reset(self) -> None:  # noqa: B027 - optional hook
        """Forget any state kept between ticks."""

    @abstractmethod
    def filter(self, observation: np.ndarray, plan: Plan) -> Filtered:
        """Choose the action to command now from ``plan`` (and its candidates)."""


class PassThrough(ActionFilter):
    """Commands the plan's first action, unchanged."""

    name = "none"

    def __init__(self, **config):
        if config:
            raise ValueError(f"safety_filter_config: filter 'none' takes no settings, got {sorted(config)}")

    def filter(self, observation: np.ndarray, plan: Plan) -> Filtered:
        return Filtered(np.asarray(plan.actions[0], float))


#: name -> "module:Class" (lazy: choosing one filter never imports another's dependencies).
FILTERS: dict[str, str] = {
    "none": "planner_node.control.action_filter:PassThrough",
    "ldm": "planner_node.runtime.ldm_filter:LDMFilter",
}


def parse_threshold(value) -> float | None:
    """A filter threshold: a finite number, or None / '' / NaN for the bundle's own."""
    import math
    if value is None or (isinstance(value, float) and math.isnan(value)) or (isinstance(value, str) and not value.strip()):
        return None
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"safety_filter threshold must be a number, got {value!r}") from None
    if not math.isfinite(v):
        raise ValueError(f"safety_filter threshold must be finite, got {value!r}")
    return v


def filter_class(name: str) -> type[ActionFilter]:
    if name not in FILTERS:
        raise ValueError(f"safety_filter: unknown filter {name!r}; valid: {', '.join(FILTERS)}")
    module, cls = FILTERS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def make_filter(name: str, config_yaml: str = "{}", bundle=None) -> ActionFilter:
    """The filter registered as ``name``, built from its YAML config (and the planner's bundle, for
    a filter that needs one); errors name the parameter."""
    klass = filter_class(name)
    config = yaml_mapping(config_yaml, "safety_filter_config")
    if getattr(klass, "needs_bundle", False):
        if bundle is None:
            raise ValueError(f"safety_filter: {name!r} needs the planner's bundle (planner: bundle)")
        return klass(bundle, **config)
    return klass(**config)

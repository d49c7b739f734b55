"""Where the shipped default bundle is: installed under ``share/planner_node/bundles/`` by colcon
and by ``pip install``, or in the source tree's ``bundles/`` (editable installs, the repo)."""
from __future__ import annotations

import sys
from pathlib import Path

DEFAULT_BUNDLE = "default"
SHARE = Path("share") / "planner_node" / "bundles"


def candidates(here: Path | None = None) -> list[Path]:
    """In order: the install prefix this module lives under (colcon: install/planner_node;
    pip: the venv), the running interpreter's prefix, then the source tree. ``here``: this
    module's path (tests)."""
    here = here or Path(__file__).resolve()
    out = []
    # <prefix>/lib/pythonX.Y/site-packages/planner_node/ros/default_bundle.py -> <prefix>
    if len(here.parents) > 5 and here.parents[3].name.startswith("python"):
        out.append(here.parents[5] / SHARE / DEFAULT_BUNDLE)
    out.append(Path(sys.prefix) / SHARE / DEFAULT_BUNDLE)
    out.append(here.parents[2] / "bundles" / DEFAULT_BUNDLE)
    return out


def default_bundle_path() -> Path | None:
    """The first candidate that holds a manifest, or None."""
    for c in candidates():
        if (c / "manifest.yaml").is_file():
            return c
    return None


def share_dir(here: Path | None = None) -> Path:
    """The package's data root, where ``config/`` and ``bundles/`` sit: ``<prefix>/share/planner_node``
    when installed, the source tree otherwise. Relative ``trusted_keys`` resolve against it."""
    for bundle in candidates(here):
        root = bundle.parents[1]
        if (root / "config").is_dir():
            return root
    return (here or Path(__file__).resolve()).parents[2]

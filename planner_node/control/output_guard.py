"""The last check before a command leaves the controller, ROS-free.

A command is 56 joint position targets [rad] in spec order. It passes only if every value is
finite and inside its joint's position range (the MJCF range, which the normalized action
interval [-1, 1] maps onto exactly; ``tolerance_rad`` absorbs float rounding of that map).
Nothing else is published: the controller tries its fallbacks in order, each through this
guard, down to the standing pose, which is checked once when the guard is built.
"""
from __future__ import annotations

import numpy as np

#: Every reason a candidate command can fail the guard (each is a /diagnostics counter).
GUARD_REASONS = ("bad_shape", "non_finite", "out_of_limits")


class OutputGuard:
    """``check(positions)`` returns None when the command may be published, else a reason."""

    def __init__(self, joint_range: np.ndarray, tolerance_rad: float = 1e-6):
        joint_range = np.asarray(joint_range, float)
        if joint_range.ndim != 2 or joint_range.shape[1] != 2 or not np.all(joint_range[:, 0] <= joint_range[:, 1]):
            raise ValueError(f"joint_range: expected (n, 2) with low <= high, got shape {joint_range.shape}")
        self.low = joint_range[:, 0] - tolerance_rad
        self.high = joint_range[:, 1] + tolerance_rad

    def check(self, positions) -> str | None:
        q = np.asarray(positions, dtype=float) if positions is not None else np.zeros(0)
        if q.shape != self.low.shape:
            return "bad_shape"
        if not np.all(np.isfinite(q)):
            return "non_finite"
        if np.any(q < self.low) or np.any(q > self.high):
            return "out_of_limits"
        return None

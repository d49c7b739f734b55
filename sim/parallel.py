"""Episodes spread over processes: one process, a local Ray, or an existing Ray cluster.

Generation and evaluation hand a module-level function and a list of argument tuples to
``EpisodePool.run``, which yields ``(index, result)`` as episodes finish, in any order:

* ``workers <= 1`` and no address: in this process, in order (no Ray at all);
* ``workers > 1`` or the address ``local``: a private local Ray with ``workers`` CPUs, started
  here and shut down after;
* an address (``auto`` for the cluster this machine belongs to, or ``HOST:PORT``): an existing
  cluster; the package must be installed on its nodes (`pip install .`).

Each episode is one Ray task. A worker process that dies mid-episode (killed, out of memory)
makes Ray run the task again (``max_retries``); a task that *raises* is not retried: the error
is the episode's and stops the run. Nothing here writes files: the caller decides what is
recorded, so a retried task can never leave half an episode behind.
"""
from __future__ import annotations

import os
from collections.abc import Callable, Iterator, Sequence

MAX_RETRIES = 3  # re-runs of an episode whose worker process died


class EpisodePool:
    def __init__(self, workers: int = 1, ray_address: str | None = None, cpus_per_task: int = 1):
        if workers < 1:
            raise ValueError(f"--workers must be >= 1, got {workers}")
        self.workers = workers
        self.address = None if ray_address in (None, "", "local") else ray_address
        self.cpus_per_task = max(1, cpus_per_task)
        self.uses_ray = bool(ray_address) or workers > 1
        self._started = False

    def __enter__(self) -> "EpisodePool":
        if self.uses_ray:
            try:
                import ray
            except ImportError as e:
                raise RuntimeError("--workers N / --ray need the `ray` package: pip install 'planner_node[train]' "
                                   "(or `pip install ray`)") from e

            # No telemetry: nothing leaves the machine at run time.
            os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
            if not ray.is_initialized():
                if self.address is None:
                    ray.init(num_cpus=self.workers, include_dashboard=False, log_to_driver=False,
                             object_store_memory=128 * 1024**2, configure_logging=False)
                else:
                    ray.init(address=self.address, log_to_driver=False, configure_logging=False)
                self._started = True
        return self

    def __exit__(self, *exc) -> None:
        if self._started:
            import ray
            ray.shutdown()
            self._started = False

    @property
    def threads_per_task(self) -> int:
        """MuJoCo rollout threads an episode may use: the whole machine when serial."""
        return self.cpus_per_task if self.uses_ray else max(1, os.cpu_count() or 1)

    def run(self, fn: Callable, args: Sequence[tuple]) -> Iterator[tuple[int, object]]:
        if not self.uses_ray:
            for i, a in enumerate(args):
                yield i, fn(*a)
            return
        import ray

        remote = ray.remote(num_cpus=self.cpus_per_task, max_retries=MAX_RETRIES, retry_exceptions=False)(fn)
        pending = {remote.remote(*a): i for i, a in enumerate(args)}
        try:
            while pending:
                done, _ = ray.wait(list(pending), num_returns=1)
                for ref in done:
                    yield pending.pop(ref), ray.get(ref)
        finally:
            for ref in pending:  # stopped early (an error, or the caller broke off)
                ray.cancel(ref, force=True)

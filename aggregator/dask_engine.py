"""The Dask engine (``run.engine = "dask"``): the local engine's parts, computed on a Dask cluster.

The plan is the local engine's (``LocalEngine.plan``: each read task cut into parts of about
``part_bytes`` at line boundaries) and so is the work: every part runs ``engine.process_part`` on a Dask
worker, which reads it, parses it and folds it into partial window aggregates (sketches and exact
counters). The client takes the ``PartResult``s back **in input order**, exactly as the local engine
yields them, so ``aggregator.run`` merges, spills and commits them in the same single transaction, with
the same checkpoints: the stored windows are identical to a local run's on the same input.

Only aggregates travel: a part's result is bounded by its series (plus its dead letters and the trace
records the insights need), never by its bytes. The workers read the files themselves, so the inputs must
be at the same path on every worker (a shared filesystem), and the file's identity (device, inode, first
bytes) is checked where it is read, as locally.

At most ``2 x`` the cluster's worker threads parts are in flight, which keeps the client's memory bounded
whatever the backlog. Without a scheduler address, a ``distributed.LocalCluster`` of ``settings.workers``
single-threaded worker processes is started for the run and shut down after it.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import threading
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from typing import Any, Final

from aggregator.engine import EngineSettings, LocalEngine, PartResult, process_part

WAIT_SECONDS: Final = 0.2  # how often the client wakes up to draw progress while it waits for a part
CONNECT_TIMEOUT: Final = "30s"


class DaskEngineError(RuntimeError):
    """The cluster cannot be reached or started (the run fails before its commit: nothing changes)."""


def _compute_part(source: Any, task: Any, settings: EngineSettings, task_index: int, part_index: int) -> PartResult:
    # Runs on a worker. No shared progress counter crosses machines: the client counts bytes as results come.
    return process_part(source, _as_seen_here(task), settings, task_index, part_index, None)


def _as_seen_here(task: Any) -> Any:
    """The task as this worker sees its file. A path missing here means the worker does not mount the
    inputs (the local engine would quietly read nothing, as for a file rotated away, and the run would
    commit without those lines' windows): fail the run instead, before its commit. The same inode under
    another device number is the same file through another mount (NFS numbers devices per machine); the
    read still checks the file's first bytes against the task's fingerprint."""
    path = getattr(task, "path", None)
    if not isinstance(path, str):
        return task
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise DaskEngineError(f"{path} does not exist on Dask worker {socket.gethostname()}: every worker must "
                              "see the inputs at the same path (a shared filesystem)") from None
    dev, ino = getattr(task, "dev", 0), getattr(task, "ino", 0)
    if dev and st.st_ino == ino and st.st_dev != dev:
        return dataclasses.replace(task, dev=st.st_dev)
    return task


class DaskEngine(LocalEngine):
    """``LocalEngine``'s plan and results, with the parts computed by Dask workers."""

    def __init__(self, source: Any, settings: EngineSettings, *, scheduler: str | None = None,
                 lock_path: str | None = None, client: Any = None) -> None:
        super().__init__(source, settings, lock_path=lock_path)
        self.scheduler = scheduler or None
        self._client = client  # an existing distributed.Client (tests, notebooks); never closed here
        self.threads = 0  # worker threads of the cluster the last run used

    def _connect(self, stack: ExitStack) -> Any:
        try:
            from distributed import Client, LocalCluster
        except ImportError as exc:  # pragma: no cover - dask[distributed] is a declared dependency
            raise DaskEngineError("run.engine = dask needs the distributed package "
                                  "(pip install 'logging-apm[dask]')") from exc
        if self._client is not None:
            return self._client
        try:
            if self.scheduler:
                return stack.enter_context(Client(self.scheduler, timeout=CONNECT_TIMEOUT,
                                                  set_as_default=False))
            cluster = stack.enter_context(LocalCluster(
                n_workers=max(1, self.settings.workers), threads_per_worker=1, processes=True,
                dashboard_address=None, silence_logs=40))
            return stack.enter_context(Client(cluster, set_as_default=False))
        except (OSError, TimeoutError) as exc:
            where = self.scheduler or "a LocalCluster"
            raise DaskEngineError(f"cannot use the Dask cluster at {where}: {exc}") from exc

    def run(self, tasks: Sequence[Any], on_wait: Callable[[], None] | None = None) -> Iterator[PartResult]:
        """Results of every part, in input order (computed on the cluster)."""
        jobs = self.plan(tasks)
        if not jobs:
            return
        with ExitStack() as stack:
            client = self._connect(stack)
            threads = sum(client.nthreads().values())
            if threads <= 0:  # a scheduler with no worker yet: wait for one rather than queue forever
                client.wait_for_workers(1, timeout=CONNECT_TIMEOUT)
                threads = sum(client.nthreads().values())
            self.threads = threads
            limit = 2 * max(1, threads)
            inflight: deque[Any] = deque()
            todo = iter(jobs)

            def submit(job: tuple[int, int, Any]) -> None:
                ti, pi, task = job
                inflight.append(client.submit(_compute_part, self.source, task, self.settings, ti, pi,
                                              pure=False))

            try:
                for job in todo:
                    submit(job)
                    if len(inflight) >= limit:
                        break
                while inflight:
                    result = self._result(inflight[0], on_wait)
                    inflight.popleft().release()
                    nxt = next(todo, None)
                    if nxt is not None:
                        submit(nxt)
                    with self.progress.get_lock():
                        self.progress.value += result.bytes_read
                    yield result
            finally:
                for fut in inflight:  # an abandoned run (killed, failed merge) leaves nothing running
                    fut.cancel()

    @staticmethod
    def _result(future: Any, on_wait: Callable[[], None] | None) -> PartResult:
        """The part's result (a worker's exception is raised here), drawing progress while waiting."""
        # Not ``future.result(timeout=...)``: a timed-out wait there cancels the part on this version.
        done = threading.Event()
        future.add_done_callback(lambda _f: done.set())
        while not done.wait(WAIT_SECONDS):
            if on_wait is not None:
                on_wait()
        result: PartResult = future.result()
        return result

"""The Ray engine: a task's batches run on a pool of long-lived Ray actors.

Ray Data streams the paths through ``map_batches`` with an
``ActorPoolStrategy``: each actor builds the task once (``setup``: backbone,
memory bank) and then runs batch after batch. Order is preserved and the
driver consumes the outputs one block at a time, so whatever the caller writes
(``results.csv``, overlays, a coreset) is written on the driver exactly as with
the local engine. Memory is bounded: the paths go in windows of
:data:`WINDOW` and Ray Data's streaming executor keeps only a few batches in
flight.

Without shared storage (``shared_storage=False``) the image bytes are read by
a Ray task pinned to the driver's node and travel through the object store to
the actors, which write them to a private spool folder and read them with the
same reader as the local engine (``task.run(paths, local_copies)``).

Ray is an optional extra (``pip install -e ".[ray]"``); only this module imports it.
Outputs cross process boundaries as pickles (in flight only, never stored).
"""

from __future__ import annotations

import logging
import os
import pickle
import re
import shutil
import tempfile
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..progress import Progress
from .engine import BatchTask, T

log = logging.getLogger(__name__)

INSTALL_HINT = ('the ray engine needs Ray, which is not installed: pip install -e ".[ray]" '
                '(or pip install "ray[data]>=2.51,<3")')
WINDOW = 100_000  # paths per Ray dataset: the driver never holds a dataset of every path


class EngineUnavailable(RuntimeError):
    """The engine's optional dependency is missing (one line saying how to install it)."""


def import_ray():
    try:
        import ray
        import ray.data  # noqa: F401  (the extra is ray[data])
    except ImportError:
        raise EngineUnavailable(INSTALL_HINT) from None
    return ray


@dataclass(frozen=True)
class RayShared:
    """A value put once in Ray's object store; ``get`` (in a task's setup) fetches it."""

    ref: Any

    def get(self):
        import ray

        return ray.get(self.ref)


class _TaskActor:
    """One Ray actor: builds the task once, then runs it on every batch it is given."""

    def __init__(self, task: BatchTask):
        self.task = task
        task.setup()
        self.spool: Path | None = None

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        paths = [Path(os.fsdecode(bytes(p))) for p in batch["path"]]
        local = self._spool(paths, batch["data"], batch["error"]) if "data" in batch else None
        ns, outs = [], []
        it = self.task.run(paths) if local is None else self.task.run(paths, local_copies=local)
        for n, out in it:
            ns.append(n)
            outs.append(pickle.dumps(out, protocol=5))
        if local is not None:
            for p in local:
                p.unlink(missing_ok=True)
        return {"n": np.asarray(ns, np.int64), "out": np.asarray(outs, dtype=object)}

    def _spool(self, paths: list[Path], data: np.ndarray, errors: np.ndarray) -> list[Path]:
        """Write shipped image bytes to a private folder (unreadable ones stay absent)."""
        if self.spool is None:
            self.spool = Path(tempfile.mkdtemp(prefix="anomaly-inspect-spool-"))
        out = []
        for k, (p, blob, err) in enumerate(zip(paths, data, errors, strict=True)):
            local = self.spool / f"{k}_{p.name}"
            if not err:
                local.write_bytes(bytes(blob))
            out.append(local)
        return out

    def __del__(self):
        if getattr(self, "spool", None) is not None:
            shutil.rmtree(self.spool, ignore_errors=True)


def _read_bytes(batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """On the driver's node: the files' bytes (an empty blob and the reason when unreadable)."""
    data, errors = [], []
    for p in batch["path"]:
        try:
            data.append(Path(os.fsdecode(bytes(p))).read_bytes())
            errors.append("")
        except OSError as exc:
            data.append(b"")
            errors.append(exc.strerror or type(exc).__name__)
    return {"path": batch["path"], "data": np.asarray(data, dtype=object),
            "error": np.asarray(errors, dtype=object)}


class RayEngine:
    """Runs a task's batches on ``workers`` Ray actors (default: one per CPU of the cluster).

    ``address``: an existing cluster (``auto``, ``ray://host:port``); without it a local Ray
    instance is started with this machine's cores (or the running one is reused).
    """

    name = "ray"
    in_process = False

    def __init__(self, address: str | None = None, workers: int | None = None,
                 shared_storage: bool = True):
        if workers is not None and workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers}")
        self.ray = import_ray()
        self.address = address
        self.workers = workers
        self.shared_storage = shared_storage

    def start(self) -> None:
        """Connect to (or start) Ray; a no-op when this process is already connected."""
        if not self.ray.is_initialized():
            self.ray.init(address=self.address, include_dashboard=False,
                          logging_level=logging.WARNING, log_to_driver=False)
        ctx = self.ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # outputs in path order
        ctx.enable_progress_bars = False  # ours counts images
        ctx.print_on_execution_start = False
        # a small input gives fewer batches than actors: nothing to warn about
        warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors")
        for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.WARNING)

    def pool(self) -> tuple[int, float]:
        """(actors, CPUs per actor): the cluster's CPUs shared among the actors (whole CPUs
        when there are enough, so that each actor's backbone gets that many threads)."""
        self.start()
        cpus = max(1, int(self.ray.cluster_resources().get("CPU", 1)))
        n = self.workers or cpus
        return n, float(cpus // n) if n <= cpus else cpus / n

    def share(self, value: Any) -> RayShared:
        self.start()
        return RayShared(self.ray.put(value))

    def map(self, task: BatchTask[T], paths: Sequence[Path],
            progress: Progress | None = None) -> Iterator[T]:
        paths = list(paths)
        for s in range(0, len(paths), WINDOW):
            yield from self._map_window(task, paths[s:s + WINDOW], progress)

    def _map_window(self, task: BatchTask[T], paths: list[Path],
                    progress: Progress | None) -> Iterator[T]:
        ray = self.ray
        n_actors, cpus = self.pool()
        blocks = max(1, min(-(-len(paths) // task.batch_size), 32 * n_actors))
        ds = ray.data.from_items([{"path": os.fsencode(p)} for p in paths],
                                 override_num_blocks=blocks)
        with warnings.catch_warnings():
            # max_restarts has no named parameter yet; a restarted actor would need the task
            # from the object store, so a failed actor fails the run instead
            warnings.simplefilter("ignore", DeprecationWarning)
            if not self.shared_storage:  # read on this node, ship through the object store
                here = f"node:{ray.util.get_node_ip_address()}"
                ds = ds.map_batches(_read_bytes, batch_size=task.batch_size, num_cpus=0,
                                    resources={here: 0.001})
            ds = ds.map_batches(_TaskActor, fn_constructor_kwargs={"task": task},
                                batch_size=task.batch_size, batch_format="numpy", num_cpus=cpus,
                                compute=ray.data.ActorPoolStrategy(size=n_actors),
                                max_restarts=0)
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                for n, blob in zip(out["n"], out["out"], strict=True):
                    if progress is not None:
                        progress.update(int(n))
                    yield pickle.loads(blob)
        except ray.exceptions.RayError as exc:
            raise EngineFailed(f"ray engine: {_one_line(exc)}") from None


class EngineFailed(RuntimeError):
    """A worker or the cluster failed (one line; Ray's own log has the details)."""


def _one_line(exc: BaseException) -> str:
    """The root cause of a Ray error in one line: a task's own ``XError: message`` (Ray carries
    the worker's traceback as text), else the first line of Ray's message."""
    chain = [exc]
    for _ in range(10):  # RayTaskError -> UserCodeException -> ...
        nxt = getattr(chain[-1], "cause", None) or chain[-1].__cause__
        if nxt is None or nxt in chain:
            break
        chain.append(nxt)
    pattern = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt): ")
    for e in chain:
        for line in reversed([ln.strip() for ln in str(e).splitlines()]):
            if pattern.match(line) and not line.startswith(("ray.", "UserCodeException",
                                                             "RayTaskError")):
                return line
    lines = [ln.strip() for ln in str(chain[-1]).splitlines() if ln.strip()]
    return f"{type(chain[-1]).__name__}: {lines[0] if lines else ''}"

"""Where the per-batch work runs: in this process, or on a pool of workers (Ray).

The seam between *what* is computed per batch and *where*. A :class:`BatchTask`
is a small, picklable description of the per-batch step (for example "load the
model directory X, score images"); :meth:`BatchTask.setup` builds its heavy
state (backbone, memory bank) once per worker, and :meth:`BatchTask.run` turns
a run of consecutive paths into one output per batch, in order. The local
engine calls ``run`` once over every path, so decoding of the next batch
overlaps the backbone as before; a distributed engine cuts the paths into the
same batches (``batch_size`` paths from position 0) and calls ``run`` on each
batch it hands to a worker. Both run the same code on the same batches, so they
give the same outputs whatever the number of workers.
"""

from __future__ import annotations

import inspect
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Generic, Protocol, TypeVar, runtime_checkable

from ..choices import ENGINES
from ..progress import Progress

T = TypeVar("T", covariant=True)


@runtime_checkable
class BatchTask(Protocol[T]):
    """The per-batch step. ``batch_size`` paths (fewer at the end) make one output. A task
    that reads its images with a pixel budget of its own names it in ``max_pixels`` (an
    engine that reads the files for its workers refuses larger ones unread); one without
    it reads with the default budget."""

    batch_size: int

    def setup(self) -> None:
        """Build the heavy state (once per worker; idempotent)."""

    def run(self, paths: Sequence[Path], local_copies: Sequence[Path] | None = None
            ) -> Iterator[tuple[int, T]]:
        """Yield ``(number of paths consumed, output)`` per batch, in path order. With
        ``local_copies`` (an engine that shipped the files' bytes), read those instead and
        report ``paths``. A task that numbers its batches takes ``first`` too: the position
        of ``paths[0]`` in the map's paths (a multiple of ``batch_size``; see
        :func:`run_task`)."""


def run_task(task: BatchTask[T], paths: Sequence[Path], local_copies: Sequence[Path] | None = None,
             first: int = 0) -> Iterator[tuple[int, T]]:
    """``task.run`` on the paths from position ``first`` of a map; ``first`` is given only to
    a task whose ``run`` takes it, ``local_copies`` only where there are some."""
    kwargs: dict[str, Any] = {} if local_copies is None else {"local_copies": local_copies}
    if "first" in inspect.signature(task.run).parameters:
        kwargs["first"] = first
    return task.run(paths, **kwargs)


V = TypeVar("V")


class Shared(Protocol[V]):
    """A read-only value every worker can reach (``get`` it inside ``setup``)."""

    def get(self) -> V: ...


@dataclass(frozen=True)
class InProcess(Generic[V]):
    """A shared value that stays in this process."""

    value: V

    def get(self) -> V:
        return self.value


class Engine(Protocol):
    name: str
    in_process: bool  # tasks may hold live objects (no pickling)
    shared_storage: bool  # workers can open the driver's paths

    def map(self, task: BatchTask[T], paths: Sequence[Path],
            progress: Progress | None = None) -> Iterator[T]:
        """The task's outputs over ``paths``, in order; ``progress`` counts paths."""

    def share(self, value: Any) -> Shared:
        """``value`` sent once to every worker (Ray: the object store)."""


class LocalEngine:
    """Runs the task in this process: one ``setup``, one ``run`` over every path."""

    name = "local"
    in_process = True
    shared_storage = True

    def share(self, value: V) -> InProcess[V]:
        return InProcess(value)

    def map(self, task: BatchTask[T], paths: Sequence[Path],
            progress: Progress | None = None) -> Iterator[T]:
        task.setup()
        for n, out in run_task(task, list(paths)):
            if progress is not None:
                progress.update(n)
            yield out


def make_engine(name: str = "local", address: str | None = None,
                workers: int | None = None, shared_storage: bool = True) -> Engine:
    """The engine called ``name``; ``address`` / ``workers`` / ``shared_storage`` configure
    the distributed one."""
    if name == "local":
        if address is not None or workers is not None or not shared_storage:
            raise ValueError("--address, --workers and --no-shared-storage apply to a "
                             "distributed engine, not 'local'")
        return LocalEngine()
    if name == "ray":
        from .ray_engine import RayEngine  # Ray is an optional extra, imported only here

        return RayEngine(address=address, workers=workers, shared_storage=shared_storage)
    raise ValueError(f"unknown engine '{name}'; choose from {', '.join(ENGINES)}")


def start_engine(engine: Engine) -> float:
    """Start ``engine`` (Ray: connect to or start the instance; its first ``map`` would do it
    otherwise, inside the first timed fit) and return the seconds it took; 0 for an engine
    without a ``start`` (the local one)."""
    start = getattr(engine, "start", None)
    if start is None:
        return 0.0
    begin = time.perf_counter()
    start()
    return time.perf_counter() - begin


def warm_up_seconds(engine: Engine | None) -> float:
    """The seconds ``engine``'s last ``map`` waited, before its first output, for its workers
    to start and set up (Ray: the actors' processes and ``setup``, a model load), less the
    work of the batches that output carries. No image is scored in it, so a rate leaves it out, as it leaves out
    :func:`start_engine`'s seconds. 0 for an engine that records none (the local one: no
    workers to start, and an in-process task is given its model already loaded)."""
    return float(getattr(engine, "warm_up", 0.0))


def check_engine(engine: object) -> None:
    """Raise a one-line TypeError unless ``engine``, an API argument, is None (this process) or
    an engine (:func:`make_engine` makes one; :class:`Engine` is a protocol,
    so its members are what is checked). Without it an engine's name ("local", "ray") failed
    later as an AttributeError."""
    if engine is None or all(hasattr(engine, a) for a in ("in_process", "map", "share")):
        return
    got = f"{engine!r} (a str)" if isinstance(engine, str) else f"a {type(engine).__name__}"
    raise TypeError(f"engine: expected an Engine (make_engine('local') or make_engine('ray', "
                    f"...)), got {got}")

"""The Ray engine: a task's batches run on a pool of long-lived Ray actors.

The driver cuts the paths into the task's batches (``batch_size`` paths from position 0,
as the local engine reads them) and Ray Data streams the batches, one row each, through
``map_batches`` with an ``ActorPoolStrategy``: each actor builds the task once (``setup``:
backbone, memory bank) and then runs batch after batch. A batch is never split or merged,
so every output is the local engine's whatever the number of workers. Order is preserved
and the driver consumes the outputs one batch at a time, so whatever the caller writes
(``results.csv``, overlays, a coreset) is written on the driver exactly as with the local
engine. One dataset (every path, about 100 bytes each in the object store) and one actor
pool serve the whole map, so each actor loads the model once; Ray Data's streaming executor
keeps only a few batches in flight. Each map records its warm-up (``warm_up``): the wait for
its first output less the run of the batches that output carries (a block), as the actor timed
it (a duration, so no clocks are compared across nodes): the actors' start and ``setup`` (a
model load), no scoring.

Without shared storage (``shared_storage=False``) the image bytes are read by a few Ray
tasks pinned to the driver's node, with the local reader's checks
(:func:`~..data.image_io.read_file`: its size guard before reading, its reasons), and travel
through the object store to the actors, which write them to a private spool folder and run
the task on those copies (``task.run(paths, local_copies)``); a file refused on the driver's
node reaches the task as an unreadable copy with that reason. This module imports no torch,
so those readers stay small.

Each actor keeps its temporary files (the spool, a shipped model) in one folder named after
the map and locked while the actor lives. The driver removes its maps' folders from its node
when each map ends and when it exits, also where Ray killed the actor (no ``__del__``), and,
before each map, the unlocked ones a killed run left (``files.remove_stale_folders``).
Ray is an optional extra (``pip install -e ".[ray]"``); only this module imports it.
Outputs cross process boundaries as pickles (in flight only, never stored).
"""

from __future__ import annotations

import atexit
import logging
import os
import pickle
import re
import shutil
import signal
import socket
import tempfile
import threading
import time
import uuid
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..data.image_io import DEFAULT_MAX_PIXELS, ImageReadError, read_file, unreadable_copies
from ..files import lock_folder, remove_stale_folders
from ..progress import DEBUG_ENV, Progress
from .engine import BatchTask, T, run_task

log = logging.getLogger(__name__)

INSTALL_HINT = ('the ray engine needs Ray, which is not installed: pip install "ray[data]>=2.51,<3" '
                '(in a source checkout: pip install -e ".[ray]")')
GROUPS_PER_BLOCK = 4  # batches per Ray Data block (fewer for a short map: every actor gets some)
# without shared storage: byte-reading tasks at once on the driver's node (no more than the
# actors, nor the blocks: Ray Data warns of a limit above its inputs, even under --quiet)
READERS = 4
RUN_PREFIX = "anomaly-inspect-run-"  # an actor's temporary folder: RUN_PREFIX + map id + "-..."
_RUN_FOLDER = re.compile(re.escape(RUN_PREFIX) + r"[0-9a-f]{12}-[a-z0-9_]{8}")
_RUNS: list[str] = []  # this process's maps, whose folders are removed at exit too
# Ray's notices that say nothing to our user: the progress bars we turn off ourselves, and,
# without info logs (--quiet), that the local instance uses token authentication
_PROGRESS_LOGGER = "ray.data._internal.progress"
_TOKEN_LOGGER = "ray._private.authentication.authentication_token_setup"
_TOKEN_NOTICE = "Token authentication is enabled for this Ray cluster"
WORKER_DIED = ("a Ray worker process died (killed, out of memory or crashed); see Ray's logs "
               "(/tmp/ray/session_latest/logs)")
PROBE_S = 3.0  # how long an explicit --address may take to accept a connection and answer
ADDRESS_FORMS = "auto, host:port, ray://host:port"  # the --address forms the engine reads
RAY_ADDRESS_ENV = "RAY_ADDRESS"  # the cluster ray.init joins when no address is given
# an HTTP/2 client's first bytes (its preface and an empty SETTINGS frame): a gRPC server answers
# them with its SETTINGS frame
_HTTP2_PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes([0, 0, 0, 4, 0, 0, 0, 0, 0])


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


def batch_groups(paths: Sequence[Path], batch_size: int) -> list[tuple[int, list[bytes]]]:
    """The task's batches: (position of the first path, its ``batch_size`` paths, fewer at the
    end), paths as ``os.fsencode`` gives them."""
    encoded = [os.fsencode(p) for p in paths]
    return [(s, encoded[s:s + batch_size]) for s in range(0, len(encoded), batch_size)]


def _read_groups(batch: dict[str, np.ndarray], max_pixels: int):
    """On the driver's node: each batch's files as ``(bytes, "")``, or ``(b"", reason)`` for a
    file the local reader refuses (unread when its size alone rules it out)."""
    import pyarrow as pa

    files = []
    for blob in batch["paths"]:
        out = []
        for p in pickle.loads(blob):
            try:
                out.append((read_file(os.fsdecode(p), max_pixels), ""))
            except ImageReadError as exc:
                out.append((b"", exc.reason))
        files.append(pickle.dumps(out, protocol=5))
    return pa.table({"first": pa.array(batch["first"], pa.int64()),
                     "paths": pa.array(list(batch["paths"]), pa.large_binary()),
                     "files": pa.array(files, pa.large_binary())})


def _max_pixels(task: BatchTask) -> int:
    """The pixel budget ``task`` reads images with: the read stage refuses larger files before
    reading them."""
    value = getattr(task, "max_pixels", None)
    return DEFAULT_MAX_PIXELS if value is None else int(value)


class _TaskActor:
    """One Ray actor: builds the task once, then runs it on every batch it is given. Its
    temporary files (spool, shipped model) live in one folder named after the map."""

    def __init__(self, task: BatchTask, run: str):
        self.folder = Path(tempfile.mkdtemp(prefix=f"{RUN_PREFIX}{run}-"))
        self.lock = lock_folder(self.folder)  # released when this process ends, however
        atexit.register(shutil.rmtree, self.folder, ignore_errors=True)  # a late actor's exit
        self.spool = self.folder / "spool"
        self.spool.mkdir()
        tempfile.tempdir = str(self.folder)  # this process is the actor's alone
        self.task = task
        task.setup()

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Each output with its paths' number (``n``) and the seconds its work took here
        (``busy``: spooling, reading, running the task; see :attr:`RayEngine.warm_up`)."""
        ns, busy, outs = [], [], []
        for k, first in enumerate(batch["first"]):
            began = time.perf_counter()
            paths = [Path(os.fsdecode(p)) for p in pickle.loads(batch["paths"][k])]
            files = pickle.loads(batch["files"][k]) if "files" in batch else None
            copies, refused = (None, {}) if files is None else self._spool(paths, files)
            try:
                with unreadable_copies(refused):
                    for n, out in run_task(self.task, paths, copies, int(first)):
                        ns.append(n)
                        outs.append(pickle.dumps(out, protocol=5))
                        now = time.perf_counter()
                        busy.append(now - began)
                        began = now
            finally:
                _unlink(copies or ())
        return {"n": np.asarray(ns, np.int64), "busy": np.asarray(busy, np.float64),
                "out": np.asarray(outs, dtype=object)}

    def _spool(self, paths: list[Path], files: list[tuple[bytes, str]]
               ) -> tuple[list[Path], dict[Path, str]]:
        """Write the shipped bytes to the spool folder: the copies (a refused file's stays
        absent) and the refused ones' reasons."""
        copies = [self.spool / (f"{k}_{p.name}" if len(os.fsencode(p.name)) <= 200
                                else f"{k}{p.suffix[-16:]}") for k, p in enumerate(paths)]
        try:
            for c, (blob, reason) in zip(copies, files, strict=True):
                if not reason:
                    c.write_bytes(blob)
        except BaseException:
            _unlink(copies)
            raise
        return copies, {c: reason for c, (_, reason) in zip(copies, files, strict=True) if reason}

    def __del__(self):
        if getattr(self, "folder", None) is not None:
            shutil.rmtree(self.folder, ignore_errors=True)
        if getattr(self, "lock", None) is not None:
            os.close(self.lock)
            self.lock = None


def _unlink(paths: Sequence[Path]) -> None:
    for p in paths:
        p.unlink(missing_ok=True)


def remove_run_folders(runs: Sequence[str]) -> None:
    """Remove the temporary folders the actors of these maps made on this node (their work
    is over: the map has ended)."""
    for run in runs:
        for folder in Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}{run}-*"):
            shutil.rmtree(folder, ignore_errors=True)


# at exit; where Ray is imported after this module (the CLI), after Ray's own shutdown
atexit.register(remove_run_folders, _RUNS)


def _quiet_token_notice(record: logging.LogRecord) -> bool:
    return not (record.getMessage().startswith(_TOKEN_NOTICE) and not log.isEnabledFor(logging.INFO))


class RayEngine:
    """Runs a task's batches on ``workers`` Ray actors (default: one per CPU of the cluster).

    ``address``: an existing cluster (``auto``, ``host:port``, ``ray://host:port``; its host
    and port, ``auto``'s as Ray finds them, must accept a connection and answer as a gRPC
    server within :data:`PROBE_S` seconds); without it the cluster in ``RAY_ADDRESS`` is
    joined where that is set (probed alike), else a local Ray instance is started with this
    machine's cores (or the running one is reused).
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
        self.actors: int | None = None  # the actor pool the last map ran on (a record of it)
        #: the last map's wait, before its first output, for its actors to start and set up
        #: (a model load), less the work of the batches it carries (0: no map, or one without
        #: paths);
        #: read by :func:`~.engine.warm_up_seconds`
        self.warm_up = 0.0
        check_reachable(address)  # before the caller's first progress bar

    def start(self) -> None:
        """Connect to (or start) Ray; a no-op when this process is already connected. Our
        SIGTERM handler survives (``ray.init`` installs its own, which dumps a stack); a
        SIGTERM that Ray's handler took during ``ray.init`` (it exits 15) stops what Ray had
        started and is raised by ours (the CLI's: "terminated", 143)."""
        logging.getLogger(_PROGRESS_LOGGER).setLevel(logging.ERROR)
        token = logging.getLogger(_TOKEN_LOGGER)
        if _quiet_token_notice not in token.filters:
            token.addFilter(_quiet_token_notice)
        if not self.ray.is_initialized():
            check_reachable(self.address)  # ray.init would retry a silent one for ever
            sigterm = signal.getsignal(signal.SIGTERM)
            try:
                self.ray.init(address=self.address, include_dashboard=False,
                              logging_level=logging.WARNING, log_to_driver=False)
            except BaseException as exc:
                self._stop_starting()
                if isinstance(exc, SystemExit) and exc.code == signal.SIGTERM and callable(sigterm):
                    # SIGTERM under Ray's handler (sys.exit(15)): ours says it (the CLI: 143)
                    sigterm(signal.SIGTERM, None)
                raise
            finally:
                if sigterm is not None and threading.current_thread() is threading.main_thread():
                    signal.signal(signal.SIGTERM, sigterm)
        ctx = self.ray.data.DataContext.get_current()
        ctx.execution_options.preserve_order = True  # outputs in path order
        ctx.enable_progress_bars = False  # ours counts images
        ctx.print_on_execution_start = False
        # a small input gives fewer batches than actors: nothing to warn about
        warnings.filterwarnings("ignore", message=".*minimum number of concurrent actors")
        for name in ("ray.data", "ray.data._internal.execution.streaming_executor"):
            logging.getLogger(name).setLevel(logging.WARNING)
        for handler in logging.getLogger("ray.data").handlers:  # the console's, not its files'
            if isinstance(handler, logging.StreamHandler) and not isinstance(
                    handler, logging.FileHandler) and _quiet_data_errors not in handler.filters:
                handler.addFilter(_quiet_data_errors)

    def _stop_starting(self) -> None:
        """Stop what a ``ray.init`` cut short (SIGTERM, Ctrl-C, an error) had started: its
        helper processes would outlive the run (about a minute)."""
        try:
            self.ray.shutdown()
        except Exception as exc:  # noqa: BLE001 - the error that cut ray.init is the one to raise
            log.debug("ray.shutdown after a failed start: %s", exc)

    def pool(self) -> tuple[int, float]:
        """(actors, CPUs per actor): the cluster's CPUs shared among the actors (whole CPUs
        when there are enough, so that each actor's backbone gets that many threads). A
        cluster without one whole CPU is refused: no actor could start, and the map would wait
        forever."""
        self.start()
        total = float(self.ray.cluster_resources().get("CPU", 0))
        if total < 1:
            raise EngineFailed(f"the Ray cluster at {self.address or 'this machine (local)'} has "
                               f"{total:g} CPUs; an actor needs at least 1 (start it with "
                               f"--num-cpus 1 or more)")
        cpus = int(total)
        n = self.workers or cpus
        return n, float(cpus // n) if n <= cpus else cpus / n

    def share(self, value: Any) -> RayShared:
        self.start()
        return RayShared(self.ray.put(value))

    def map(self, task: BatchTask[T], paths: Sequence[Path],
            progress: Progress | None = None) -> Iterator[T]:
        self.warm_up = 0.0
        groups = batch_groups(paths, task.batch_size)
        if not groups:
            return
        ray = self.ray
        n_actors, cpus = self.pool()
        self.actors = n_actors
        begun = time.perf_counter()  # after the start (pool): ray.init is start_engine's
        remove_stale_folders(tempfile.gettempdir(), _RUN_FOLDER)
        run = uuid.uuid4().hex[:12]
        _RUNS.append(run)
        # a batch is a row, so blocks (a task's input) never cut one
        per_block = max(1, min(GROUPS_PER_BLOCK, len(groups) // (2 * n_actors)))
        n_blocks = -(-len(groups) // per_block)
        ds = ray.data.from_items([{"first": first, "paths": pickle.dumps(group, protocol=5)}
                                  for first, group in groups], override_num_blocks=n_blocks)
        del groups  # the dataset holds them now
        with warnings.catch_warnings():
            # max_restarts has no named parameter yet; a restarted actor would need the task
            # from the object store, so a failed actor fails the run instead
            warnings.simplefilter("ignore", DeprecationWarning)
            if not self.shared_storage:  # read on this node, ship through the object store
                here = f"node:{ray.util.get_node_ip_address()}"
                ds = ds.map_batches(_read_groups, fn_kwargs={"max_pixels": _max_pixels(task)},
                                    batch_size=1, batch_format="numpy", num_cpus=0,
                                    resources={here: 0.001},
                                    compute=ray.data.TaskPoolStrategy(
                                        size=min(READERS, n_actors, n_blocks)))
            ds = ds.map_batches(_TaskActor, fn_constructor_kwargs={"task": task, "run": run},
                                batch_size=1, batch_format="numpy", num_cpus=cpus,
                                compute=ray.data.ActorPoolStrategy(size=n_actors),
                                max_restarts=0)
        try:
            for out in ds.iter_batches(batch_size=None, batch_format="numpy", prefetch_batches=1):
                if begun is not None and len(out["busy"]):  # the first output: warm actors
                    # less the whole first block's work: an actor returns a block's batches
                    # (up to GROUPS_PER_BLOCK) together, after running them all
                    self.warm_up = max(0.0, time.perf_counter() - begun - float(out["busy"].sum()))
                    begun = None
                for n, blob in zip(out["n"], out["out"], strict=True):
                    if progress is not None:
                        progress.update(int(n))
                    yield pickle.loads(blob)
        except ray.exceptions.RayError as exc:
            raise EngineFailed(f"ray engine: {_one_line(exc)}") from None
        finally:
            remove_run_folders([run])


class EngineFailed(RuntimeError):
    """A worker or the cluster failed, or cannot be reached (one line; Ray's own log has the
    details)."""


def probe_target(address: str | None) -> tuple[str, int] | None:
    """(host, port) of an explicit cluster address (``host:port``, ``ray://host:port``, IPv6
    in brackets); None for none, ``auto``, ``local`` or a form this does not know
    (:func:`check_reachable` refuses those)."""
    if not address:
        return None
    rest = address.removeprefix("ray://")
    host, sep, port = rest.rpartition(":")
    if not sep or not host or not port.isdigit():
        return None
    return host.strip("[]"), int(port)


def auto_address() -> str | None:
    """The address ``ray.init(address="auto")`` would join (``RAY_ADDRESS``, the last ``ray
    start``'s, or a Ray instance running on this machine), as Ray itself finds it; None where
    this Ray does not say (Ray judges at start). No cluster at all is refused."""
    try:
        from ray._private.services import get_ray_address_from_environment
    except ImportError:
        return None
    try:
        return get_ray_address_from_environment("auto", None)
    except ConnectionError:
        raise EngineFailed("cannot reach the Ray cluster at auto (no running Ray instance found: "
                           "start one with 'ray start --head', or give its address)") from None


def check_reachable(address: str | None, timeout: float = PROBE_S) -> None:
    """Refuse a cluster address that ``ray.init`` would retry for ever, silently, or refuse
    only after a command has written its outputs: one of no form Ray reads, one that accepts
    no TCP connection within ``timeout`` seconds, or one where no Ray answers within them
    (:func:`_answers_grpc`). No address means ``RAY_ADDRESS`` where it is set (``ray.init``
    joins that one), probed alike; ``auto`` is resolved first (and refused where there is no
    cluster), so that a command fails before it writes anything."""
    env = os.environ.get(RAY_ADDRESS_ENV)
    from_env = address is None and bool(env)
    if from_env:
        address = env
    given = f"{RAY_ADDRESS_ENV}={address}" if from_env else f"--address {address}"
    where = address
    if address == "auto":
        resolved = auto_address()
        where = f"auto ({resolved})" if resolved else address
        address = resolved
    elif address not in (None, "local") and probe_target(address) is None:
        raise EngineFailed(f"{given}: not a Ray address ({ADDRESS_FORMS})")
    target = probe_target(address)
    if target is None:
        return
    if from_env:
        where = f"{where} (from {RAY_ADDRESS_ENV})"
    deadline = time.monotonic() + timeout
    try:
        conn = socket.create_connection(target, timeout=timeout)
    except OSError as exc:
        reason = exc.strerror or str(exc) or type(exc).__name__
        raise EngineFailed(f"cannot reach the Ray cluster at {where} ({reason})") from None
    with conn:
        if os.environ.get("RAY_USE_TLS", "0").lower() in ("1", "true"):
            return  # a TLS handshake comes first there: Ray checks its certificates itself
        answered = _answers_grpc(conn, deadline)
    if answered is None:
        raise EngineFailed(f"cannot connect to the Ray cluster at {where}: no Ray answered "
                           f"within {timeout:g} s")
    if not answered:
        raise EngineFailed(f"cannot connect to the Ray cluster at {where}: what answers there "
                           f"is not Ray (no gRPC handshake)")


def _answers_grpc(conn: socket.socket, deadline: float) -> bool | None:
    """Whether the server on ``conn`` opens an HTTP/2 session, as every gRPC server does (Ray's
    GCS and its client server are; a reply in well under a millisecond): True when its first
    frame is SETTINGS, False when it answers otherwise or hangs up, None when it says nothing
    before ``deadline`` (``time.monotonic``)."""
    head = b""
    try:
        conn.sendall(_HTTP2_PREFACE)
        while len(head) < 9:  # a frame header: length (3 bytes), type (1), flags, stream
            conn.settimeout(max(deadline - time.monotonic(), 0.001))
            chunk = conn.recv(9 - len(head))
            if not chunk:
                return False
            head += chunk
    except TimeoutError:
        return None
    except OSError:  # reset: it hung up
        return False
    return head[3] == 0x4


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
    if not lines:  # a worker that died inside a task (SystemException) leaves no message
        return WORKER_DIED
    return f"{type(chain[-1]).__name__}: {lines[0]}"


def _quiet_data_errors(record: logging.LogRecord) -> bool:
    """Ray Data's error records, off the console unless the CLI's debug switch is on: a failed
    task's traceback (~35 lines, logged from Ray's executor thread, also after the map has
    ended) is EngineFailed's one line here; Ray's own ``ray-data.log`` keeps it."""
    return not logging.ERROR <= record.levelno < logging.CRITICAL or os.environ.get(DEBUG_ENV) == "1"

"""The Ray engine on toy tasks: order, batching, once-per-actor setup, shared values, shipped
bytes (spool names); and the one-line error when Ray is missing. Real-data equality (and
shipped model and images): test_ray_real.py."""

from __future__ import annotations

import logging
import os
import pickle
import signal
import subprocess
import sys
import tempfile
import time
import types
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from anomaly_inspect.pipeline import LocalEngine, make_engine


class Counter:
    n = 0

    def update(self, n: int) -> None:
        self.n += n


@dataclass
class EchoTask:
    """Yields, per batch of ``batch_size`` paths: the names, the worker's pid, its setup count,
    the shared value and (when the engine shipped bytes) the files' contents."""

    batch_size: int = 4
    shared: object = None
    setups: int = field(default=0)

    def setup(self) -> None:
        self.setups += 1
        self.value = None if self.shared is None else self.shared.get()

    def run(self, paths, local_copies=None):
        for s in range(0, len(paths), self.batch_size):
            chunk = paths[s:s + self.batch_size]
            local = chunk if local_copies is None else local_copies[s:s + self.batch_size]
            contents = [p.read_text() if p.is_file() else None for p in local]
            yield len(chunk), ([p.name for p in chunk], os.getpid(), self.setups, self.value,
                               contents)


@pytest.fixture(scope="module")
def echo_pickled_by_value(ray_session):
    ray_session.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # tests/ is not on
    yield ray_session  # the workers' path


def _files(tmp_path, n):
    paths = []
    for i in range(n):
        p = tmp_path / f"img_{i:03d}.txt"
        p.write_text(f"content {i}")
        paths.append(p)
    return paths


def test_ray_engine_keeps_order_and_sets_up_once_per_actor(echo_pickled_by_value, tmp_path):
    paths = _files(tmp_path, 37)
    engine = make_engine("ray", workers=2)
    bar = Counter()
    outs = list(engine.map(EchoTask(shared=engine.share({"k": 7})), paths, bar))
    assert bar.n == 37
    names = [n for o in outs for n in o[0]]
    assert names == [p.name for p in paths]  # every path once, in order
    assert len({o[1] for o in outs}) <= 2  # at most two actors ...
    assert {o[2] for o in outs} == {1}  # ... each set up once
    assert {o[3]["k"] for o in outs} == {7}  # the shared value reached every actor
    local = [o[0] for o in LocalEngine().map(EchoTask(), paths)]
    assert [o[0] for o in outs] == local  # the local engine's batches, exactly


@dataclass
class NumberedTask:
    """Yields, per batch: its paths' names and the position of its first path in the map."""

    batch_size: int = 4

    def setup(self) -> None:
        pass

    def run(self, paths, local_copies=None, first=0):
        for s in range(0, len(paths), self.batch_size):
            yield len(paths[s:s + self.batch_size]), (first + s, [p.name for p in
                                                                  paths[s:s + self.batch_size]])


@pytest.mark.parametrize("shared", [True, False], ids=["by-path", "shipped"])
def test_batches_do_not_depend_on_the_workers(echo_pickled_by_value, tmp_path, shared):
    """37 paths in batches of 4: 9 batches of 4 from position 0, then 1, on 1 or 2 workers
    (Ray Data used to cut batches at its block boundaries, which depend on the pool)."""
    paths = _files(tmp_path, 37)
    want = [(s, [f"img_{i:03d}.txt" for i in range(s, min(s + 4, 37))]) for s in range(0, 37, 4)]
    assert [len(names) for _, names in want] == [4] * 9 + [1]
    assert list(LocalEngine().map(NumberedTask(), paths)) == want  # one run, numbered from 0
    for workers in (1, 2):
        engine = make_engine("ray", workers=workers, shared_storage=shared)
        assert list(engine.map(NumberedTask(), paths)) == want


@dataclass
class SetupCounter:
    batch_size: int = 2_000

    def setup(self) -> None:
        self.setup_at = f"{os.getpid()}-{id(self)}"

    def run(self, paths, local_copies=None):
        yield len(paths), self.setup_at


def test_one_actor_pool_serves_the_whole_map(echo_pickled_by_value):
    """250,001 paths (batches of 2,000): one actor, set up once (each 100,000 paths had their
    own dataset, actor pool and model load)."""
    outs = list(make_engine("ray", workers=1).map(SetupCounter(), [Path(f"/x/{i}.png")
                                                                    for i in range(250_001)]))
    assert len(outs) == 126 and len(set(outs)) == 1


@dataclass
class ReadingTask:
    """Yields, per path: the bytes the local reader gives (from the shipped copy) or its
    reason; with ``max_pixels`` as the pixel budget."""

    max_pixels: int
    batch_size: int = 8

    def setup(self) -> None:
        pass

    def run(self, paths, local_copies=None):
        from anomaly_inspect.data.image_io import ImageReadError, read_file

        out = []
        for p in local_copies or paths:
            try:
                out.append(read_file(p, self.max_pixels))
            except ImageReadError as exc:
                out.append(exc.reason)
        yield len(paths), out


def _hostile_files(tmp_path):
    """A good file, a dangling link, an empty file and a sparse 65 MiB one (the size guard's
    limit at max_pixels=1: 8 bytes + 64 MiB)."""
    good, dangling, empty, big = (tmp_path / n for n in ("good.png", "dangling.png", "empty.png",
                                                          "big.png"))
    good.write_bytes(b"pixels")
    dangling.symlink_to(tmp_path / "gone.png")
    empty.write_bytes(b"")
    with open(big, "wb") as fh:
        fh.truncate(65 << 20)
    return [good, dangling, empty, big]


def test_shipped_files_keep_the_local_readers_reasons(echo_pickled_by_value, tmp_path):
    """--no-shared-storage: the driver's node reads with the local reader (size guard first,
    its reasons), and each reason reaches the task as that of its copy."""
    files = _hostile_files(tmp_path)
    want = [b"pixels", f"broken symbolic link (to {tmp_path / 'gone.png'})",
            "file is empty (0 bytes)", "file too large for the pixel budget (65 MiB for at most "
            "1e-06 MP)"]
    local = list(LocalEngine().map(ReadingTask(1), files))
    shipped = list(make_engine("ray", workers=1, shared_storage=False).map(ReadingTask(1), files))
    assert local == shipped == [want]
    assert no_run_folders()  # the spool is gone


def no_run_folders(wait_s: float = 30.0) -> bool:
    """Whether the actors' temporary folders are gone: the map removes them as it ends, an
    actor that started after that (a pool of 2 for a few batches) as it exits."""
    from anomaly_inspect.pipeline.ray_engine import RUN_PREFIX

    deadline = time.monotonic() + wait_s
    while list(Path(tempfile.gettempdir()).glob(f"{RUN_PREFIX}*")):
        if time.monotonic() > deadline:
            return False
        time.sleep(0.5)
    return True


def test_missing_ray_is_one_line_saying_how_to_install(monkeypatch):
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray -> ImportError
    with pytest.raises(RuntimeError, match=r'pip install -e "\.\[ray\]"') as err:
        make_engine("ray")
    assert "\n" not in str(err.value)


def test_local_engine_rejects_distributed_options():
    with pytest.raises(ValueError, match="distributed engine"):
        make_engine("local", workers=2)
    assert make_engine("local").share(3).get() == 3


def test_cli_without_ray_stops_with_install_hint(monkeypatch, tmp_path, capsys):
    from anomaly_inspect.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    rc = main(["screen", str(tmp_path / "model"), str(tmp_path), "--out", str(tmp_path / "o"),
               "--engine", "ray", "--quiet"])
    err = capsys.readouterr().err.strip()
    assert rc != 0 and len(err.splitlines()) == 1 and 'pip install -e ".[ray]"' in err


def test_spooled_names_do_not_collide(tmp_path):
    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray")
    from anomaly_inspect.pipeline.ray_engine import _TaskActor

    actor = _TaskActor.__new__(_TaskActor)
    actor.folder = tmp_path / "run"
    actor.spool = actor.folder / "spool"
    actor.spool.mkdir(parents=True)
    a, b, c = Path("x/a.png"), Path("y/a.png"), Path("z/" + "a" * 250 + ".png")
    out, refused = actor._spool([a, b, c], [(b"1", ""), (b"2", ""), (b"", "file not found")])
    assert len(set(out)) == 3 and [p.read_bytes() for p in out[:2]] == [b"1", b"2"]
    assert not out[2].exists() and refused == {out[2]: "file not found"}  # refused: no copy
    assert out[2].name == "2.png"  # a name too long for a prefix keeps its extension
    actor.__del__()
    assert not actor.folder.exists()


def test_read_stage_refuses_from_the_size_before_reading(tmp_path, monkeypatch):
    """The driver-side read stage is the local reader: a file too large for the pixel budget
    is refused from its size, never read (a 300 MB file was read and shipped first)."""
    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray  # noqa: F401
    else:
        pytest.importorskip("ray")
    import numpy as np

    from anomaly_inspect.pipeline.ray_engine import _read_groups, batch_groups

    files = _hostile_files(tmp_path)
    read = []
    real = os.open
    monkeypatch.setattr(os, "open", lambda path, *a, **k: read.append(Path(path).name) or
                        real(path, *a, **k))
    (first, group), = batch_groups(files, 8)
    table = _read_groups({"first": np.array([first]), "paths": np.array(
        [pickle.dumps(group)], dtype=object)}, max_pixels=1)
    shipped = pickle.loads(table.column("files")[0].as_py())
    assert [reason for _, reason in shipped] == [
        "", f"broken symbolic link (to {tmp_path / 'gone.png'})", "file is empty (0 bytes)",
        "file too large for the pixel budget (65 MiB for at most 1e-06 MP)"]
    assert [blob for blob, _ in shipped] == [b"pixels", b"", b"", b""]
    assert read == ["good.png", "empty.png"]  # neither the link's target nor the big file


def test_read_stage_budget_is_the_tasks_own_or_the_default():
    """The read stage refuses files with the task's ``max_pixels`` (a pipeline task's from its
    extractor, the distributed fit's from its field, screening's from the driver model's
    overrides); a task without one gets the default budget."""
    import types

    from anomaly_inspect.data.image_io import DEFAULT_MAX_PIXELS
    from anomaly_inspect.pipeline.ray_engine import _max_pixels
    from anomaly_inspect.pipeline.remote_fit import RemoteFitTask
    from anomaly_inspect.pipeline.runner import ExtractTask
    from anomaly_inspect.screening.model import ScoreTask

    extractor = types.SimpleNamespace(batch_size=4,
                                      transform=types.SimpleNamespace(max_pixels=4321))
    assert _max_pixels(ExtractTask(extractor)) == 4321
    assert _max_pixels(RemoteFitTask({}, 1234)) == 1234
    assert _max_pixels(ScoreTask(overrides={"batch_size": 2, "max_pixels": 999})) == 999
    in_memory = types.SimpleNamespace(extractor=extractor)
    assert _max_pixels(ScoreTask(model=in_memory)) == 4321
    assert _max_pixels(ScoreTask()) == _max_pixels(EchoTask()) == DEFAULT_MAX_PIXELS


def test_engine_module_imports_no_torch():
    """Ray starts the read stage's processes from ray_engine: they must not load torch (each
    did: 49 processes for 83 images)."""
    code = ("import sys, anomaly_inspect.pipeline.ray_engine; "
            "sys.exit(1 if 'torch' in sys.modules else 0)")
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


class _FakeRay:
    """ray.init replaces the SIGTERM handler and logs Ray's notices, as Ray 2.60's does."""

    def __init__(self):
        self.initialized = False
        self.data = types.SimpleNamespace(DataContext=types.SimpleNamespace(
            get_current=lambda: types.SimpleNamespace(execution_options=types.SimpleNamespace())))

    def is_initialized(self):
        return self.initialized

    def init(self, **kwargs):
        signal.signal(signal.SIGTERM, lambda *a: None)
        logging.getLogger("ray._private.authentication.authentication_token_setup").warning(
            "Token authentication is enabled for this Ray cluster. Set RAY_AUTH_MODE=disabled")
        self.initialized = True


def _started_engine():
    from anomaly_inspect.pipeline.ray_engine import RayEngine

    engine = RayEngine.__new__(RayEngine)
    engine.ray, engine.address = _FakeRay(), None
    engine.start()
    return engine


def test_start_keeps_our_sigterm_handler():
    """The CLI's handler (exit 143, cleanup) survives ray.init (which dumped a stack, 134)."""
    def ours(signum, frame):
        raise SystemExit(143)

    previous = signal.signal(signal.SIGTERM, ours)
    try:
        _started_engine()
        assert signal.getsignal(signal.SIGTERM) is ours
    finally:
        signal.signal(signal.SIGTERM, previous)


@pytest.mark.parametrize("quiet", [True, False])
def test_ray_notices_are_silent_without_info_logs(quiet):
    """"Progress bars disabled" (our own setting) never shows; the token-auth notice only
    where info logs show (not with --quiet)."""
    seen = []
    handler = logging.Handler()
    handler.emit = lambda record: seen.append(record.getMessage())
    loggers = [logging.getLogger(n) for n in ("ray.data._internal.progress",
                                              "ray._private.authentication.authentication_token_setup")]
    ours = logging.getLogger("anomaly_inspect")
    level = ours.level
    ours.setLevel(logging.WARNING if quiet else logging.INFO)  # as --quiet / not
    for lg in loggers:
        lg.addHandler(handler)
    try:
        _started_engine()
        loggers[0].warning("Progress bars disabled. To enable, set ...")
    finally:
        ours.setLevel(level)
        for lg in loggers:
            lg.removeHandler(handler)
    assert not any(m.startswith("Progress bars") for m in seen)
    assert any(m.startswith("Token authentication is enabled") for m in seen) is not quiet


def test_shard_actors_search_equals_unsharded(ray_session):
    import numpy as np

    from anomaly_inspect.pipeline.ray_shards import RayShardedSearch
    from anomaly_inspect.scorers.nn_index import NearestNeighbours

    rng = np.random.default_rng(0)
    bank = rng.normal(size=(900, 12)).astype(np.float32)
    queries = rng.normal(size=(150, 12)).astype(np.float32)
    shards = RayShardedSearch(bank, n_shards=3)
    try:
        for k in (1, 3):
            d0, i0 = NearestNeighbours("flat").fit(bank).search(queries, k)
            d1, i1 = shards.search(queries, k)
            np.testing.assert_array_equal(i1, i0)
            np.testing.assert_allclose(d1, d0, rtol=1e-6)
    finally:
        shards.close()


@dataclass
class FailingTask:
    batch_size: int = 2

    def setup(self) -> None:
        pass

    def run(self, paths, local_copies=None):
        raise ValueError(f"cannot score {paths[0].name}")
        yield  # a generator, as tasks are


def test_a_failing_task_is_one_line_naming_its_error(echo_pickled_by_value, tmp_path):
    from anomaly_inspect.pipeline.ray_engine import EngineFailed

    with pytest.raises(EngineFailed, match="ValueError: cannot score img_000.txt") as err:
        list(make_engine("ray", workers=1).map(FailingTask(), _files(tmp_path, 2)))
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("debug", [False, True])
def test_ray_data_errors_stay_off_the_console_unless_debugging(monkeypatch, debug):
    """Ray Data logs a failed task's error (with a dead actor, a ~35-line traceback; --quiet
    or not) from its executor thread, also after the map has ended; EngineFailed says it in
    one line, so its console shows them only with ANOMALY_INSPECT_DEBUG=1 (its files keep
    them; warnings still show)."""
    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray.data  # noqa: F401
    else:
        pytest.importorskip("ray.data")
    if debug:
        monkeypatch.setenv("ANOMALY_INSPECT_DEBUG", "1")
    else:
        monkeypatch.delenv("ANOMALY_INSPECT_DEBUG", raising=False)
    _started_engine()
    handlers = logging.getLogger("ray.data").handlers
    console = [h for h in handlers if type(h).__name__ == "PlainRayHandler"]
    files = [h for h in handlers if type(h).__name__ == "SessionFileHandler"]
    assert console and files

    def record(level):
        return logging.LogRecord("ray.data._internal.execution.streaming_executor_state", level,
                                 "x.py", 1, "An exception was raised from a task", None, None)

    for h in console:
        assert bool(h.filter(record(logging.ERROR))) is debug
        assert h.filter(record(logging.WARNING)) and h.filter(record(logging.CRITICAL))
    assert all(h.filter(record(logging.ERROR)) for h in files)


def test_an_unreachable_address_fails_in_seconds_naming_it():
    """ray.init retried a closed port forever (SIGTERM took ~20 s); the engine refuses it
    when made, before any progress bar."""
    from anomaly_inspect.pipeline.ray_engine import EngineFailed

    start = time.monotonic()
    with pytest.raises(EngineFailed, match=r"^cannot reach the Ray cluster at 127\.0\.0\.1:1 "
                                           r"\(Connection refused\)$"):
        make_engine("ray", address="127.0.0.1:1")
    assert time.monotonic() - start < 5


def test_start_probes_an_explicit_address_before_ray_init():
    from anomaly_inspect.pipeline.ray_engine import EngineFailed, RayEngine

    engine = RayEngine.__new__(RayEngine)
    engine.ray, engine.address = _FakeRay(), "ray://127.0.0.1:1"
    with pytest.raises(EngineFailed, match="cannot reach the Ray cluster at ray://127.0.0.1:1"):
        engine.start()
    assert not engine.ray.initialized


@pytest.mark.parametrize("address, target", [
    ("10.0.0.5:6379", ("10.0.0.5", 6379)), ("ray://head:10001", ("head", 10001)),
    ("[::1]:6379", ("::1", 6379)), ("auto", None), ("local", None), (None, None),
    ("head", None), ("head:port", None)])
def test_probe_target_reads_host_and_port_only_from_explicit_addresses(address, target):
    from anomaly_inspect.pipeline.ray_engine import probe_target

    assert probe_target(address) == target


def test_engine_help_does_not_promise_equal_fits(capsys):
    """Screen results are the local engine's; a distributed fit's bank differs by design."""
    from anomaly_inspect.cli import main

    with pytest.raises(SystemExit):
        main(["fit", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "results are the same" not in text
    assert "screen results are identical, a distributed fit differs slightly by design: " \
           "docs/scaling.md" in text


def test_a_worker_that_died_in_a_task_is_named_not_an_empty_error():
    """A worker killed inside a task (os._exit, SIGKILL, OOM) reached the user as Ray Data's
    message-less ``SystemException: ``; the line now says what happened and where to look."""
    from anomaly_inspect.pipeline.ray_engine import _one_line

    class SystemException(Exception):  # Ray Data's, raised without a message
        pass

    died = RuntimeError("The worker died unexpectedly while executing this task.")
    died.__cause__ = SystemException()
    assert _one_line(died) == ("a Ray worker process died (killed, out of memory or crashed); "
                               "see Ray's logs (/tmp/ray/session_latest/logs)")
    assert _one_line(RuntimeError("Actor died.\nmore")) == "RuntimeError: Actor died."


@pytest.mark.parametrize("resources", [{}, {"CPU": 0.0}, {"CPU": 0.5}])
def test_a_cluster_without_a_whole_cpu_is_refused_not_waited_on(resources):
    """Ray Data waited forever (0/N, its warning filtered) for an actor a cluster started with
    ``--num-cpus 0`` could never place; the pool is refused naming the address."""
    from anomaly_inspect.pipeline.ray_engine import EngineFailed

    engine = _started_engine()
    engine.address, engine.workers = "auto", None
    engine.ray.cluster_resources = lambda: resources
    with pytest.raises(EngineFailed, match=r"^the Ray cluster at auto has 0(\.5)? CPUs; an actor "
                                           r"needs at least 1 "):
        engine.pool()
    engine.ray.cluster_resources = lambda: {"CPU": 3.0}
    assert engine.pool() == (3, 1.0)
    engine.workers = 2
    assert engine.pool() == (2, 1.0)


# --address auto without a cluster is refused before --out is touched. No Ray instance is started.
@pytest.mark.parametrize("found", [None, "127.0.0.1:1"])
def test_address_auto_without_a_cluster_is_refused_when_the_engine_is_made(monkeypatch, found):
    """None: Ray finds no instance; 127.0.0.1:1: the last `ray start`'s address, stopped since
    (ray.init would retry it forever). screen makes the engine before it touches --out; the
    cluster was looked for only when the first batch was sent, after results.csv was begun."""
    import argparse
    import os
    import time

    if os.environ.get("CI"):  # CI installs the ray extra: without it, the test fails there
        import ray._private.services as services
    else:
        services = pytest.importorskip("ray._private.services")
    from anomaly_inspect.commands.common import engine_from_args
    from anomaly_inspect.pipeline.ray_engine import EngineFailed

    def resolve(addr, temp_dir):
        if found is None:
            raise ConnectionError("Could not find any running Ray instance.\nPlease specify...")
        return found

    monkeypatch.setattr(services, "get_ray_address_from_environment", resolve)
    args = argparse.Namespace(engine="ray", address="auto", workers=None, shared_storage=True)
    start = time.monotonic()
    with pytest.raises(EngineFailed, match=r"^cannot reach the Ray cluster at auto \(") as err:
        engine_from_args(args)
    assert "\n" not in str(err.value) and time.monotonic() - start < 5
    if found:
        assert "127.0.0.1:1" in str(err.value)


# SIGTERM while the Ray engine starts: Ray's own handler (installed by ray.init) exits 15; the
# engine stops what Ray started and raises the CLI's termination (143, "terminated").
class _TermDuringInit:
    """A ``ray`` whose ``init`` is cut by SIGTERM under Ray's handler (``sys.exit(signum)``)."""

    def __init__(self):
        self.shutdowns = 0

    def is_initialized(self):
        return False

    def init(self, **kwargs):
        signal.signal(signal.SIGTERM, lambda signum, frame: None)  # Ray's, replacing ours
        raise SystemExit(signal.SIGTERM)

    def shutdown(self):
        self.shutdowns += 1


def _engine(ray):
    from anomaly_inspect.pipeline.ray_engine import RayEngine

    engine = RayEngine.__new__(RayEngine)
    engine.ray, engine.address = ray, None
    return engine


def test_sigterm_while_ray_starts_is_the_clis_termination_and_ray_is_stopped():
    from anomaly_inspect.cli import Terminated, _raise_terminated

    ray = _TermDuringInit()
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    try:
        with pytest.raises(Terminated):
            _engine(ray).start()
        assert ray.shutdowns == 1
        assert signal.getsignal(signal.SIGTERM) is _raise_terminated
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_the_cli_says_terminated_and_exits_143(monkeypatch, capsys):
    from anomaly_inspect import cli

    ray = _TermDuringInit()

    def run(args):
        _engine(ray).start()

    monkeypatch.setattr(cli, "_main", lambda argv: run(argv))
    assert cli.main(["screen"]) == 143
    assert capsys.readouterr().err == "terminated\n"
    assert ray.shutdowns == 1


def test_without_a_handler_of_ours_ray_s_exit_stands():
    ray = _TermDuringInit()
    previous = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        with pytest.raises(SystemExit) as caught:
            _engine(ray).start()
        assert caught.value.code == signal.SIGTERM and ray.shutdowns == 1
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, previous)


def test_another_failure_of_ray_init_is_raised_as_it_was():
    ray = types.SimpleNamespace(is_initialized=lambda: False, shutdown=lambda: None)

    def init(**kwargs):
        raise ConnectionError("no cluster")

    ray.init = init
    with pytest.raises(ConnectionError, match="no cluster"):
        _engine(ray).start()

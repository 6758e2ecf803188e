"""Engine overhead, measured: the same images screened locally and on Ray at 1, 2, ... workers.

Each configuration runs in a fresh Python process (so that the driver's peak RSS is its own),
one after the other in one call, with the load average recorded around each run: timings on a
shared machine are only comparable side by side. A run scores the images through
``Model.iter_score`` (the path ``screen`` takes, maps off as with ``--overlays none``,
remote workers sending 128 px thumbnails as ``screen`` asks them to) and drops the results, so it times the engine, not the CSV writer. Reported per run: start-up
(from the run's process start to the first batch's arrival: imports, ``ray.init``, model
loading), the steady rate after
the first batch (n/a below :data:`MIN_STEADY_BATCHES` batches or :data:`MIN_STEADY_S` seconds
after it), the overall rate, the driver's peak RSS and the largest peak RSS of a Ray
worker process (sampled from ``/proc``). The rates count the images scored; unreadable
ones (error rows) are the run's ``errors`` (``first_error``: the first one's path and
reason). A configuration that fails gets its row with the reason (``error``) and the
others still run. Each run is a session of its own whose SIGTERM
raises SystemExit, so that when this process is interrupted the run is stopped with
SIGTERM and shuts its Ray instance down (killed only if it has not ended in
:data:`STOP_GRACE_S` seconds).
"""

from __future__ import annotations

import functools
import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Sequence
from pathlib import Path

from ..progress import Progress
from ..resources import peak_rss_mb

STOP_GRACE_S = 30.0  # an interrupted run's time to shut its Ray instance down before a kill
#: the least a steady rate is measured over: batches after the first, and seconds from the first
#: batch's arrival to the last's; below either the rate is "n/a" (None): a short run's later
#: batches, finished while the first was in flight, arrive at once (40 images on Ray: 758 img/s)
MIN_STEADY_BATCHES = 3
MIN_STEADY_S = 1.0
#: a run's own preamble: ``started``, the clock at its start (before any import of the package,
#: for the start-up figure), and SIGTERM raising SystemExit, so its cleanup (ray.shutdown,
#: atexit) runs
_CHILD_PREAMBLE = ("import time; started = time.perf_counter(); import signal, sys; "
                   "signal.signal(signal.SIGTERM, lambda *_: sys.exit(143)); ")


def _descendants(root: int) -> list[int]:
    """Process ids below ``root`` (Linux ``/proc``; empty elsewhere)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").glob("[0-9]*"):
        try:
            ppid = int((entry / "stat").read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def _peak_mb(pid: int) -> tuple[str, float]:
    """(command line, peak RSS in MB) of a process, or ('', 0) when it is gone."""
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return cmd, int(line.split()[1]) / 1024
    except OSError:
        pass
    return "", 0.0


class WorkerPeaks:
    """Samples the peak RSS of this process's Ray worker processes in a thread."""

    def __init__(self, every: float = 0.5):
        self.every = every
        self.peaks: dict[int, float] = {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> WorkerPeaks:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self.sample()
            self._stop.wait(self.every)

    def sample(self) -> None:
        for pid in _descendants(os.getpid()):
            cmd, mb = _peak_mb(pid)
            if cmd.startswith("ray::") and "IDLE" not in cmd:
                self.peaks[pid] = max(self.peaks.get(pid, 0.0), mb)

    @property
    def max_mb(self) -> float:
        return max(self.peaks.values(), default=0.0)


def run_one(model_dir: str, paths_file: str, engine: str, workers: int | None,
            batch_size: int | None = None, started: float | None = None) -> dict:
    """One configuration, in this process: timings and memory as a dict. ``started``: the
    ``time.perf_counter()`` of the process's start (the run's preamble takes it), from which
    the start-up and overall figures count, imports included; default: now."""
    t0 = time.perf_counter() if started is None else started
    from ..pipeline import make_engine
    from .model import load_model

    paths = read_path_list(paths_file)
    made = time.perf_counter()
    eng = make_engine(engine, workers=workers)
    init_s = 0.0
    if engine == "ray":
        eng.start()
        init_s = time.perf_counter() - made  # importing Ray and ray.init
    model = load_model(model_dir, batch_size=batch_size)
    first_at, first_n, n, batches = None, 0, 0, 0
    failed = []  # the error rows (unreadable images): not screened, so not in the rates
    with WorkerPeaks() as peaks:
        start = time.perf_counter()
        for batch in model.iter_score(paths, keep_maps=False, engine=eng, thumb_size=128,
                                      expand=False):
            failed += [s for s in batch.images if s.error]
            n += sum(not s.error for s in batch.images)
            batches += 1
            if first_at is None:
                first_at, first_n = time.perf_counter(), n
        end = time.perf_counter()
    steady, steady_na = steady_rate(n - first_n, batches - 1, end - first_at)
    return {"engine": engine, "workers": workers, "images": n, "errors": len(failed),
            **({"first_error": f"{failed[0].path}: {failed[0].error}"} if failed else {}),
            "batch_size": model.extractor.batch_size,
            "init_s": round(init_s, 2), "first_batch_s": round(first_at - start, 2),
            "startup_s": round(first_at - t0, 2), "total_s": round(end - t0, 2),
            "steady_img_s": None if steady is None else round(steady, 3), "overall_img_s": round(n / (end - t0), 3),
            "driver_peak_rss_mb": round(peak_rss_mb(), 1),
            "worker_peak_rss_mb": round(peaks.max_mb, 1), "worker_processes": len(peaks.peaks),
            **({} if steady_na is None else {"steady_na": steady_na})}


def write_path_list(paths: Sequence[Path | str], path: Path) -> None:
    """Write the image list handed to a run as JSON: each name as results.csv holds it, its
    text and, where it is not UTF-8, its percent-encoded bytes (``raw_path``), so that a name
    with a line break, U+2028 or bytes that are not UTF-8 reaches the run whole (lines of
    UTF-8 text split the first two and could not hold the last)."""
    from ..data.layout import display_path
    from .runner import raw_path_field

    rows = [{"path": display_path(p), "raw_path": raw_path_field(str(p))} for p in paths]
    path.write_text(json.dumps(rows), encoding="utf-8")


def read_path_list(path: Path | str) -> list[str]:
    """The names :func:`write_path_list` wrote to ``path``, as the file system spells them."""
    from .runner import row_key

    return [row_key(row) for row in json.loads(Path(path).read_text(encoding="utf-8"))]


def steady_rate(images: int, batches: int, seconds: float) -> tuple[float | None, str | None]:
    """(img/s, None) of the ``images`` in the ``batches`` that arrived in the ``seconds`` after
    the first batch; (None, why) below :data:`MIN_STEADY_BATCHES` or :data:`MIN_STEADY_S`."""
    if batches < 1:
        return None, "one batch"
    if batches < MIN_STEADY_BATCHES:
        return None, (f"{batches} batch{'es' if batches > 1 else ''} after the first; "
                      f"{MIN_STEADY_BATCHES} needed")
    if seconds < MIN_STEADY_S:
        return None, f"{seconds:.2f} s after the first batch; {MIN_STEADY_S:g} s needed"
    return images / seconds, None


def load_average() -> float:
    try:
        return os.getloadavg()[0]
    except OSError:
        return float("nan")


def _die_with_parent(parent: int, prctl) -> None:
    """In the run, before it starts (Linux; ``prctl`` resolved in ``parent`` beforehand):
    SIGTERM when bench-scale dies however it dies (SIGKILL, a closed terminal's SIGHUP), so
    that a run in its own session is not left behind with its Ray instance; also where
    bench-scale died before this ran."""
    if prctl is not None:
        prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGTERM)


def _prctl():
    """libc's ``prctl`` (Linux), else None (an interrupted bench-scale still stops its run)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None


def run_child(call: str, grace: float = STOP_GRACE_S) -> subprocess.CompletedProcess:
    """``python -c`` running ``call`` in a fresh process (its own session, so a Ctrl-C reaches
    only this one), output captured. If this process is interrupted meanwhile, the child gets
    SIGTERM (which raises there, so its cleanup runs) and is killed if it has not ended within
    ``grace`` seconds."""
    proc = subprocess.Popen([sys.executable, "-c", _CHILD_PREAMBLE + call],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "RAY_DEDUP_LOGS": "1"}, start_new_session=True,
                            preexec_fn=functools.partial(_die_with_parent, os.getpid(), _prctl()))
    try:
        out, err = proc.communicate()
    except BaseException:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.communicate(timeout=grace)
        except (subprocess.TimeoutExpired, KeyboardInterrupt):
            proc.kill()
            proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def failure_reason(proc: subprocess.CompletedProcess) -> str:
    """Why a run failed, in one line: the last line of its error output (its exception, the
    module path dropped from the exception's name), or how it ended."""
    if proc.returncode < 0:
        return f"killed by {signal.Signals(-proc.returncode).name}"
    lines = [ln.strip() for ln in proc.stderr.splitlines() if ln.strip()]
    if not lines:
        return f"exit status {proc.returncode}"
    return re.sub(r"^(?:[A-Za-z_]\w*\.)+(?=\w+: )", "", lines[-1])


def bench_scale(model_dir: Path, paths: list[Path], configs: list[tuple[str, int | None]],
                work_dir: Path, rounds: int = 1, progress: bool = True,
                batch_size: int | None = None) -> list[dict]:
    """Every (engine, workers) configuration in a fresh process, ``rounds`` times interleaved;
    a failed one's row holds ``error`` (one line) instead of the measurements. ``progress``:
    a bar over the runs on stderr and each row printed as its run ends."""
    work_dir.mkdir(parents=True, exist_ok=True)
    paths_file = work_dir / "paths.json"
    write_path_list(paths, paths_file)
    rows = []
    with Progress(rounds * len(configs), "bench-scale runs", unit="run", enabled=progress) as bar:
        for r in range(rounds):
            for engine, workers in configs:
                load_before = load_average()
                proc = run_child("import json; from anomaly_inspect.screening.scale_bench import "
                                 f"run_one; print(json.dumps(run_one({str(model_dir)!r}, "
                                 f"{str(paths_file)!r}, {engine!r}, {workers!r}, {batch_size!r}, "
                                 f"started)))")
                if proc.returncode == 0:
                    row = json.loads(proc.stdout.strip().splitlines()[-1])
                else:
                    row = {"engine": engine, "workers": workers, "error": failure_reason(proc)}
                row.update(round=r, load_before=round(load_before, 2),
                           load_after=round(load_average(), 2))
                rows.append(row)
                bar.update()
                if progress:
                    print(format_row(row, rows), flush=True)
    return rows


def local_rate(row: dict, rows: list[dict], key: str) -> float:
    """The same round's local rate (the reference of the ratio; NaN where that run failed,
    has no such rate or read no image)."""
    ref = [r[key] for r in rows if r["engine"] == "local" and r["round"] == row["round"]
           and "error" not in r and r[key]]
    return ref[0] if ref else float("nan")


def run_label(row: dict) -> str:
    """A run's configuration as printed: ``local``, or ``ray x2`` (its Ray actors)."""
    return "local" if row["engine"] == "local" else f"ray x{row['workers']}"


def format_row(row: dict, rows: list[dict]) -> str:
    name = run_label(row)
    if "error" in row:
        return f"{name:<8} failed: {row['error']}"
    ratio = row["overall_img_s"] / local_rate(row, rows, "overall_img_s")
    steady = row["steady_img_s"]
    steady_text = (f"n/a ({row.get('steady_na', 'one batch')})" if steady is None else
                   f"{steady:6.2f} img/s (x{steady / local_rate(row, rows, 'steady_img_s'):.2f})")
    return (f"{name:<8} {row['images']:>5} img ({row.get('errors', 0)} unreadable)  "
            f"overall {row['overall_img_s']:6.2f} img/s (x{ratio:.2f} local)  steady {steady_text}  "
            f"start-up {row['startup_s']:5.1f} s (ray.init {row['init_s']:.1f} s)  "
            f"peak RSS driver {row['driver_peak_rss_mb']:.0f} MB, worker "
            f"{row['worker_peak_rss_mb']:.0f} MB  load {row['load_before']:.1f}->"
            f"{row['load_after']:.1f}")

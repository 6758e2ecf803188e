"""Command-line interface: parse arguments, call the library, print. Nothing else lives here."""

from __future__ import annotations

import argparse
import atexit
import importlib
import logging
import os
import re
import signal
import sys
import threading

# A file OpenCV cannot decode is reported once, as "PATH: reason"; OpenCV's own log lines about
# it (libtiff, loadsave) would add one to four more.
os.environ.setdefault("OPENCV_LOG_LEVEL", "SILENT")
# OpenMP threads (torch's, faiss's) spin for a while after each parallel region, waiting for
# the next; where other work shares the cores, spinning threads take them from it and from each
# other (bottle `evaluate` beside one busy process: 19-23 -> 28-29 img/s; the same on a quiet
# machine; docs/runtime.md). Read when torch first loads libgomp, so set before any import of it.
if "OMP_WAIT_POLICY" not in os.environ:  # a policy the user set decides the spin itself
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

from . import __version__
from .progress import DEBUG_ENV, close_drawn, drawn_mark

# Each module in anomaly_inspect.commands registers one or more sub-commands.
COMMAND_MODULES = (
    "evaluate",
    "bench_backbone",
    "bench_coreset",
    "bench_scale",
    "demo",
    "fit",
    "screen",
    "explain",
    "evaluate_lt",
    "ood_benchmark",
    "export",
    "tune",
    "cache",
)


class OneLineParser(argparse.ArgumentParser):
    """Argument errors as one line (``PROG: error: ...``), not a usage dump; exit status 2."""

    def error(self, message: str):  # type: ignore[override]
        self.exit(2, f"{self.prog}: error: {message} (see '{self.prog} --help')\n")


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(
        prog="anomaly-inspect",
        description="Anomaly inspection for industrial and medical images (CPU-first).",
    )
    parser.add_argument("--version", action="version", version=f"anomaly-inspect {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(f".commands.{name}", __package__).register(sub)
    return parser


#: library parameter phrases in error messages -> the command-line flag that sets them
FLAG_HINTS = {"overwrite=True": "--overwrite", "rescore=True": "--rescore", "out_dir": "--out",
              "labels='mvtec'": "--labels mvtec", "calibration=DIR": "--calibration DIR",
              "weights=FILE": "--weights FILE", "weights='random'": "--weights random",
              "max_images=": "--max-tune-images "}


def _whole(phrase: str) -> str:
    """A pattern for ``phrase`` as a word of its own, not inside a path or a name
    (``/tmp/my_out_dir/x``, ``out_dir.json``, ``out_dir/``)."""
    tail = r"(?![\w/:-]|\.\w)" if phrase[-1].isalnum() else ""
    return rf"(?<![\w./-]){re.escape(phrase)}{tail}"


_HINTS = re.compile("|".join(map(_whole, FLAG_HINTS)))


def with_flag_hints(message: str) -> str:
    """A library error message in the command line's terms (its flags)."""
    return _HINTS.sub(lambda m: FLAG_HINTS[m.group()], message)


def _quiet_root_info(record: logging.LogRecord) -> bool:
    """Drop INFO that libraries log on the root logger itself (ONNX Runtime's quantiser prints
    ~50 "Increased scale" lines per int8 graph); named loggers, ours included, pass."""
    return record.name != "root" or record.levelno >= logging.WARNING


class Terminated(BaseException):
    """SIGTERM (``kill``, a scheduler's time limit), raised in the main thread like Ctrl-C so
    that every cleanup runs: temporary files and folders are removed, locks released, the
    files already complete (results.csv rows, a saved model) kept."""


def _raise_terminated(signum, frame):
    raise Terminated


#: a stop after the command returned: {"code": the exit code of the first (Ctrl-C 130, SIGTERM
#: 143), None while none came; "exiting": the exit handlers run}
_SHUTDOWN: dict = {"code": None, "exiting": False}
#: signal -> (the line said, the exit code) of a stop during the process's shutdown
_STOPS = {signal.SIGINT: ("interrupted", 130), signal.SIGTERM: ("terminated", 143)}


def _exit_stopped(signum, frame):
    """Ctrl-C (SIGTERM) once the command has returned: "interrupted" and 130 ("terminated" and
    143), after the exit handlers (Ray's shutdown, temporary copies removed), which a bare exit
    would skip, each run once (a stop while they run lets them finish); a second of the same
    signal ends the process at once."""
    signal.signal(signum, signal.SIG_DFL)
    sys.stdout.flush()
    line, code = _STOPS[signum]
    print(line, file=sys.stderr, flush=True)
    if _SHUTDOWN["code"] is None:
        _SHUTDOWN["code"] = code
    if not _SHUTDOWN["exiting"]:  # e.g. waiting for threads: run the handlers now, then exit
        atexit._run_exitfuncs()
        os._exit(_SHUTDOWN["code"])


def _exit_code_after_handlers() -> None:  # registered first, so it runs last
    if _SHUTDOWN["code"] is not None:
        os._exit(_SHUTDOWN["code"])


def _handlers_started() -> None:  # registered last, so it runs first
    _SHUTDOWN["exiting"] = True


def main(argv: list[str] | None = None) -> int:
    """Run a command; Ctrl-C is "interrupted" and 130, SIGTERM "terminated" and 143, from the
    first import of a command to the process's exit (for the command line, ``argv`` None: also
    during its shutdown; a library caller gets its own SIGTERM handler back)."""
    if threading.current_thread() is not threading.main_thread():
        return _main(argv)
    if argv is None:
        atexit.register(_exit_code_after_handlers)
    previous = signal.signal(signal.SIGTERM, _raise_terminated)
    mark = drawn_mark()
    try:
        return _main(argv)
    except KeyboardInterrupt:
        close_drawn(mark)  # the bars the stop left open: their closing lines before this one
        print("interrupted", file=sys.stderr)
        return 130
    except Terminated:
        close_drawn(mark)
        print("terminated", file=sys.stderr)
        return 143
    finally:
        if argv is None:  # the process ends next: nothing is left for a KeyboardInterrupt to undo
            atexit.register(_handlers_started)
            for signum in _STOPS:
                signal.signal(signum, _exit_stopped)
        else:
            signal.signal(signal.SIGTERM, previous)


def _setup_logging(quiet: bool) -> None:
    """Our INFO lines (WARNING with ``quiet``) on stderr, without the libraries' INFO: faiss's
    loader, torch's (its own setup keeps "torch" at WARNING, but only once it has run: a command
    stopped while torch loads printed its FakeTensor cache stats after "interrupted"), and
    what libraries log on the root logger."""
    logging.basicConfig(
        level=logging.WARNING if quiet else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    logging.getLogger("faiss.loader").setLevel(logging.WARNING)
    if logging.getLogger("torch").level == logging.NOTSET:  # a library caller's level stays
        logging.getLogger("torch").setLevel(logging.WARNING)
    for handler in logging.getLogger().handlers:  # the handler basicConfig made (or the caller's)
        if _quiet_root_info not in handler.filters:
            handler.addFilter(_quiet_root_info)


def _parse(parser: argparse.ArgumentParser, argv: list[str] | None) -> argparse.Namespace:
    """``parser.parse_args``, with an unrecognised option reported by the sub-command's parser
    (pointing to its ``--help``, which lists its options)."""
    args, extra = parser.parse_known_args(argv)
    if extra:
        commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        sub = commands.choices.get(getattr(args, "command", None) or "", parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    return args


def _main(argv: list[str] | None) -> int:
    mark = drawn_mark()
    parser = build_parser()
    args = _parse(parser, argv)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    _setup_logging(getattr(args, "quiet", False))
    try:
        from .commands.common import check_output_json

        check_output_json(getattr(args, "output_json", None), getattr(args, "out", None),
                          getattr(args, "out_owns", None), getattr(args, "inputs", None),
                          {flag: getattr(args, flag[2:], None)
                           for flag in ("--config", "--labels", "--manifest")})
        return int(args.func(args) or 0)
    except (OSError, ValueError, RuntimeError) as exc:
        # Expected user-facing failures (bad paths, layouts, configs, weights): one clear line.
        if os.environ.get(DEBUG_ENV) == "1":
            raise
        close_drawn(mark)
        print(f"error: {with_flag_hints(str(exc))}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())

"""Arguments and helpers shared by several sub-commands."""

from __future__ import annotations

import argparse
import functools
import os
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from .. import files
from ..choices import ENGINES, PRECISIONS, RESIZE_MODES, RUNTIMES
from ..config import (
    MAX_IMAGE_SIZE,
    MIN_IMAGE_SIZE,
    SEED_LIMIT,
    SEED_RANGE,
    ConfigError,
    ModelConfig,
    absolute_weights,
    check_layers_exist,
    load_config,
)
from ..data.image_io import DEFAULT_MAX_PIXELS, looks_like_image
from ..data.layout import canonical_path, expand_inputs


def _int(text: str, what: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be {what}, got {text!r}") from None


def positive_int(text: str) -> int:
    """argparse type: an integer >= 1."""
    v = _int(text, "a positive integer")
    if v < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return v


def nonempty(text: str) -> str:
    """argparse type of every path argument (and of one that may be a name instead, e.g.
    ``--config patchcore``, ``--weights random``): not empty, which the OS reads as the current
    folder, so that ``--train ''`` would quietly train on every image below it."""
    if not text:
        raise argparse.ArgumentTypeError("empty path")
    return text


def nonempty_path(text: str) -> Path:
    """argparse type: :func:`nonempty`, as a Path."""
    return Path(nonempty(text))


def _checked(path: Path, test: Callable[[Path], bool]) -> bool:
    """``test(path)`` (it looks at the file system) in an argparse type: an OSError (a name too
    long, a parent folder this process may not search) becomes an argparse error naming the
    path and the reason, not a traceback (argparse turns only ArgumentTypeError, TypeError and
    ValueError into errors)."""
    try:
        return test(path)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"{path}: cannot check it ({exc.strerror or exc})") from None


def out_dir(text: str) -> Path:
    """argparse type: a folder to write into (it may not exist yet, but must not be a file)."""
    path = nonempty_path(text)
    if _checked(path, lambda p: p.exists() and not p.is_dir()):
        raise argparse.ArgumentTypeError(f"{text} is a file, not a folder")
    return path


def int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers, e.g. ``2,3``."""
    try:
        return [int(v) for v in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be comma-separated integers (e.g. 2,3), got {text!r}") from None


def positive_int_list(text: str) -> list[int]:
    """argparse type: comma-separated integers >= 1, e.g. ``1,2,4``, none given twice (each
    is a run of a benchmark: a repeat would run it again)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        values = []
    if not values or min(values) < 1:
        raise argparse.ArgumentTypeError(f"must be comma-separated positive integers (e.g. 1,2), "
                                         f"got {text!r}")
    refuse_repeats(values, text, "each value is one run")
    return values


def refuse_repeats(values: list, text: str, why: str) -> None:
    """argparse: refuse a list ``text`` naming a value twice (compared as parsed: 0.1 and 0.10
    are one), saying ``why`` each must be given once."""
    twice = sorted({v for v in values if values.count(v) > 1})
    if twice:
        raise argparse.ArgumentTypeError(f"{', '.join(map(str, twice))} given twice in {text!r}; {why}")


def non_negative_int(text: str) -> int:
    """argparse type: an integer >= 0."""
    v = _int(text, "a non-negative integer")
    if v < 0:
        raise argparse.ArgumentTypeError(f"must be a non-negative integer, got {text!r}")
    return v


def seed(text: str) -> int:
    """argparse type: a random seed, in [0, ``SEED_LIMIT``) (``config.SEED_RANGE`` says why)."""
    v = non_negative_int(text)
    if v >= SEED_LIMIT:
        raise argparse.ArgumentTypeError(f"{SEED_RANGE}, got {text!r}")
    return v


def image_size(text: str) -> int:
    """argparse type: a model input side length in pixels, in [``MIN_IMAGE_SIZE``,
    ``MAX_IMAGE_SIZE``] (the config's bounds)."""
    v = _int(text, "a whole number of pixels")
    if v < MIN_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be at least {MIN_IMAGE_SIZE} pixels, got {text!r}")
    if v > MAX_IMAGE_SIZE:
        raise argparse.ArgumentTypeError(f"must be at most {MAX_IMAGE_SIZE} pixels, got {text!r}")
    return v


def _float(text: str) -> float:
    """``text`` as a number; NaN (which fails every range check) when it is none."""
    try:
        return float(text)
    except ValueError:
        return float("nan")


def fraction(text: str) -> float:
    """argparse type: a number strictly between 0 and 1."""
    v = _float(text)
    if not 0.0 < v < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number between 0 and 1 (exclusive), got {text!r}")
    return v


def noise_ratio(text: str) -> float:
    """argparse type: a share in [0, 1) (evaluate-lt's --noise: of the test anomalies)."""
    v = _float(text)
    if not 0.0 <= v < 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a number in [0, 1), got {text!r}")
    return v


def pixel_budget(text: str) -> int:
    """argparse type: a positive pixel count, e.g. 100000000 or 1e8."""
    v = _float(text)
    if not (v >= 1 and v < float("inf")):
        raise argparse.ArgumentTypeError(f"must be a positive number of pixels, got {text!r}")
    return int(v)


def add_max_pixels_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--max-pixels", type=pixel_budget, default=DEFAULT_MAX_PIXELS, metavar="N",
                   help="refuse images with more pixels than this, before decoding (an error row, or "
                        "a training image skipped; evaluate refuses the dataset, naming them) "
                        f"(default {DEFAULT_MAX_PIXELS:.0e})")


def add_model_args(p: argparse.ArgumentParser, tunes: bool = False,
                   but: Collection[str] = ()) -> None:
    """--config plus the overrides every model-building command accepts; ``tunes``: the
    command tunes (``tune``, ``--auto``), so --seed's help says what it does not seed there;
    ``but``: dests of the optional overrides (method, runtime, precision, resize, batch_size)
    the command has no use for: not offered, and read as not given (None) by
    :func:`model_config_from_args`."""
    p.set_defaults(**dict.fromkeys(but))
    p.add_argument("--config", type=nonempty_path, help="YAML config FILE or packaged config name (e.g. patchcore); flags below override it")
    if "method" not in but:
        p.add_argument("--method", help="scorer name, e.g. patchcore")
    p.add_argument("--backbone", help="timm model name (default tf_efficientnet_lite0)")
    p.add_argument("--weights", type=nonempty,
                   help="checkpoint FILE (a relative path, here or in --config, is read from the "
                        "current folder; the model records it absolute), or 'random' (default: "
                        "bundled/offline weights)")
    p.add_argument("--layers", type=int_list,
                   help="comma-separated timm feature indices (default: stride 8 and 16)")
    add_runtime_args(p, but=but)
    p.add_argument("--image-size", type=image_size, help="input side length in pixels (default 320)")
    if "resize" not in but:
        p.add_argument("--resize", choices=RESIZE_MODES,
                       help="stretch: squash to a square (default); pad: keep the aspect ratio "
                            "and mirror-pad, the padding is ignored")
    if "batch_size" not in but:
        p.add_argument("--batch-size", type=positive_int,
                       help="images per backbone batch (default 32)")
    p.add_argument("--seed", type=seed,
                   help="random seed (default 0)" + (
                       ": seeds the scorer's coreset, random weights and, in fit, the calibration "
                       "split; tuning (tune, --auto) seeds its fold banks with it, but tuning's "
                       "image subset, folds and synthetic anomalies always use seed 0 "
                       "(docs/auto_config.md)" if tunes else ""))


def add_runtime_args(p: argparse.ArgumentParser, help_suffix: str = "",
                     but: Collection[str] = ()) -> None:
    """--runtime / --precision: how the backbone runs (never what it computes); ``but``: as
    :func:`add_model_args`'s (the caller sets their defaults)."""
    if "runtime" not in but:
        p.add_argument("--runtime", choices=RUNTIMES,
                       help="how the backbone runs (default onnxruntime; torch = eager PyTorch)" + help_suffix)
    if "precision" not in but:
        p.add_argument("--precision", choices=PRECISIONS,
                       help="f32 (default); bf16 (openvino only) or int8 (onnxruntime only, calibrated on "
                            "the training images): faster, not bit-equal to torch")


def add_engine_args(p: argparse.ArgumentParser) -> None:
    """--engine / --address / --workers / --no-shared-storage: where the per-batch work runs."""
    g = p.add_argument_group("engine (where the batches run; screen results are identical, a "
                             "distributed fit differs slightly by design: docs/scaling.md)")
    g.add_argument("--engine", choices=ENGINES,
                   help="local: this process (default); ray: a pool of Ray actors "
                        "(pip install \"ray[data]>=2.51,<3\")")
    g.add_argument("--address", metavar="ADDR",
                   help="Ray cluster to join (auto, host:port, ray://host:port; one where no "
                        "Ray answers within 3 s is refused); default: the one in RAY_ADDRESS "
                        "where that is set (checked alike), else start a local Ray instance "
                        "with this machine's cores")
    g.add_argument("--workers", type=positive_int, metavar="N",
                   help="Ray actors (default: one per CPU of the cluster)")
    g.add_argument("--no-shared-storage", dest="shared_storage", action="store_false",
                   help="the workers cannot see this machine's files: ship the model once "
                        "through the object store and read the images here")


def engine_from_args(args: argparse.Namespace):
    """The engine the --engine arguments ask for (Ray is imported only for --engine ray)."""
    from ..pipeline import make_engine

    return make_engine(args.engine or "local", args.address, args.workers, args.shared_storage)


def check_engine_fits(cfg: ModelConfig, engine) -> None:
    """Refuse, before tuning or fitting, a ``cfg`` that a distributed ``engine`` cannot fit: a
    method other than PatchCore, precision int8, a weights file its workers cannot read. The
    fit refuses them too, but only after ``--auto``'s minutes of tuning, which keeps the method
    and the precision, and the weights file wherever it keeps the base backbone."""
    if engine.in_process:
        return
    from ..pipeline.remote_fit import (
        check_distributable,
        check_distributed_precision,
        check_weights_reach_workers,
    )
    check_distributable(cfg.check_scorer())  # the scorer alone: no backbone yet
    check_distributed_precision(cfg)
    check_weights_reach_workers(cfg, engine)


def add_output_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--output-json", type=nonempty_path, help="write the results as JSON here")
    p.add_argument("--quiet", action="store_true", help="no progress bars or info logs")


@functools.cache
def options_of(add_args: Callable[[argparse.ArgumentParser], None]) -> dict[str, argparse.Action]:
    """dest -> argparse action (its flags, its default) of each option that ``add_args`` (an
    ``add_*_args`` function, or a command's whole set) adds, in the order it adds them: read
    from argparse itself, so that a new option needs no table of flags."""
    p = argparse.ArgumentParser(add_help=False)
    add_args(p)
    return {a.dest: a for a in p._actions if a.option_strings}


def given_options(args: argparse.Namespace, add_args: Callable[[argparse.ArgumentParser], None],
                  only: Sequence[str] | None = None, but: Collection[str] = ()) -> dict[str, Any]:
    """Flag -> value of the options of ``add_args`` (see :func:`options_of`) given on the
    command line: those whose value is not the option's default (None, False for a
    ``store_true``, True for a ``--no-...``; ``--seed 0`` counts). ``only``: these dests (in
    this order) of them; ``but``: all of them except these dests."""
    options = options_of(add_args)
    dests = [d for d in (options if only is None else only) if d not in but]
    given = {}
    for dest in dests:
        action = options[dest]
        value = getattr(args, dest, action.default)
        if value is not action.default:
            given[max(action.option_strings, key=len)] = value  # the long form: --image-size
    return given


def given_flags(args: argparse.Namespace, add_args: Callable[[argparse.ArgumentParser], None],
                only: Sequence[str] | None = None, but: Collection[str] = ()) -> list[str]:
    """The flags of :func:`given_options`, e.g. ``["--grid", "--folds"]``: to refuse options
    that would be ignored, naming them."""
    return list(given_options(args, add_args, only, but))


def model_config_from_args(args: argparse.Namespace) -> ModelConfig:
    """The ``--config`` file with the flags' overrides, checked as a whole: an override that
    does not fit the file (``--image-size`` below its crop_size, a ``--method`` that does not
    take its ``scorer:`` keys) is refused naming both. A ``--backbone`` other than the file's
    drops the file's ``layers`` and its weights file (another model's; ``random`` is kept), as
    a tuning candidate of another backbone does, unless ``--layers`` / ``--weights`` say. A
    backbone that is no timm model, layers it lacks, and a ``scorer: block`` its stages do not
    make are refused too, naming the flag or the file's key that gave them."""
    from ..scorers import get_scorer_class

    cfg = load_config(args.config)
    given = " ".join(f"{flag} {','.join(map(str, v)) if isinstance(v, list) else v}"
                     for flag, v in given_options(args, add_model_args, but=("config",)).items())
    source = " with ".join(s for s in (args.config and str(args.config), given) if s)
    backbone = {k: getattr(args, k) for k in ("weights", "runtime", "precision")
                if getattr(args, k) is not None}
    if args.backbone is not None:
        if args.backbone != cfg.backbone.name:
            backbone["layers"] = None  # the file's stages are another model's
            if args.weights is None:
                backbone["weights"] = cfg.backbone.weights_for(args.backbone)
        backbone["name"] = args.backbone
    if args.layers is not None:
        backbone["layers"] = list(args.layers)
    features = {k: getattr(args, k) for k in ("image_size", "resize", "batch_size")
                if getattr(args, k) is not None}
    try:
        if args.method is not None:
            get_scorer_class(args.method)
            cfg.method = args.method
        if args.seed is not None:
            cfg.seed = args.seed
        cfg.backbone = replace(cfg.backbone, **backbone)  # rebuilt, so that __post_init__ checks
        cfg.backbone.weights = absolute_weights(cfg.backbone.weights)  # model.json keeps it
        cfg.features = replace(cfg.features, **features)
    except ValueError as exc:
        raise ConfigError(f"{source}: {exc}") from None
    layers = args.layers and f"--layers {','.join(map(str, args.layers))}"
    if args.backbone is not None or args.config is not None:
        check_backbone_name(cfg, f"--backbone {args.backbone}" if args.backbone is not None
                             else f"{args.config}: backbone: name")
    check_layers_exist(cfg, layers or str(args.config))  # naming the flag or file, before any work
    if not hasattr(args, "methods"):  # evaluate-lt checks its own
        method = args.method and f"--method {args.method}"
        # the block, the flags that set the backbone's stages too
        cfg.check_block(" with ".join(s for s in (args.config and str(args.config), method,
                                                  args.backbone and f"--backbone {args.backbone}",
                                                  layers) if s), _default_layers(cfg))
        if args.config is not None or args.method is not None:
            # the scorer's settings are the file's and --method's only: no other flag is blamed
            cfg.check_scorer(" with ".join(s for s in (args.config and str(args.config), method) if s))
    return cfg


def _default_layers(cfg: ModelConfig) -> tuple[int, ...] | None:
    """The stages ``cfg``'s backbone extracts without ``backbone: layers`` (stride 8 and 16),
    from its card or timm, where a scorer reads a block (``ModelConfig.check_block``); None
    where that is not needed or the backbone is no timm model (refused elsewhere)."""
    if cfg.backbone.layers is not None or cfg.scorer.get("block", "final") == "final":
        return None
    from ..features.backbone import default_layers, stage_strides

    try:
        strides = stage_strides(cfg.backbone.name, cfg.backbone.weights)
        return default_layers([{"reduction": s} for s in strides])
    except ValueError:
        return None


def check_backbone_name(cfg: ModelConfig, source: str) -> None:
    """Refuse, before any work, a backbone name that is no timm model, naming ``source`` (the
    flag or the file's key): building the backbone refuses it too (with the names it
    resembles), but later and naming neither. A name with a cached card needs no timm import."""
    from ..features.backbone import UnknownBackboneError, cached_feature_info, create_timm_model

    b = cfg.backbone
    if cached_feature_info(b.name, b.weights) is not None:
        return
    import timm

    if not timm.is_model(b.name):
        try:
            create_timm_model(b.name)  # refuses it now, with its message and the names it resembles
        except UnknownBackboneError as exc:
            raise UnknownBackboneError(f"{source}: {exc}") from None


def check_writable(path: Path, flag: str, into: bool = False) -> None:
    """Refuse, before any work, a ``flag`` path that could not be written at the end: the
    nearest of its parent folders that exists must be a folder this process may write in
    (the file or folder is made beside its target and renamed onto it, see ``files``).
    ``into``: ``path`` is a folder the command writes files into (screen's ``--out``, a
    cache): where it exists, it is the folder checked."""
    for parent in ((path,) if into else ()) + tuple(path.parents):
        if parent.exists():
            if not parent.is_dir():
                raise NotADirectoryError(f"{flag} {path}: {parent} is a file, not a folder")
            if not os.access(parent, os.W_OK | os.X_OK):
                if _read_only_mount(parent):  # e.g. a read-only bind mount: no chmod helps
                    raise OSError(f"{flag} {path}: cannot write in {parent} (read-only file system)")
                raise PermissionError(f"{flag} {path}: cannot write in {parent} (permission denied)")
            return


def _read_only_mount(folder: Path) -> bool:
    """Whether ``folder`` lies on a file system mounted read-only (False where that cannot be
    told: no ``os.statvfs``, or it fails)."""
    try:
        return bool(os.statvfs(folder).f_flag & os.ST_RDONLY)
    except (AttributeError, OSError):
        return False


def check_output_json(path: Path | None, managed: Path | None = None,
                      owns: Callable[[], Sequence[str]] | None = None,
                      inputs: Sequence[str | Path] | None = None,
                      reads: Mapping[str, str | Path | None] | None = None) -> None:
    """Refuse, before any work, an ``--output-json`` that could not be written at the end or
    would replace what the command writes: a folder, a path below a file or in a folder this
    process may not write in (:func:`check_writable`), or a path inside
    ``managed`` (the command's ``--out`` folder) that the command writes: with ``owns``, the
    names it returns (files and folders directly in ``managed``, e.g. a screen's
    ``results.csv``); without, anything there (a model directory is replaced whole). Nor may
    it replace what an earlier run wrote: a model directory's file or a file a screen /
    explain wrote in its results folder (:func:`_earlier_output`); nor an image the command
    reads (:func:`_input_image`); nor one of ``reads``, flag -> the file the command reads
    (``--config``, ``--labels``, ``--manifest``; compared resolved, a name that is no file,
    e.g. ``--labels mvtec``, is none)."""
    if path is None:
        return
    if path.is_dir():
        raise IsADirectoryError(f"--output-json {path}: is a folder; give a file name")
    check_writable(path, "--output-json")
    if managed is not None:
        out, target = managed.resolve(), path.resolve()
        if target == out or out in target.parents:
            first = target.relative_to(out).parts[:1]
            if owns is None or not first:
                raise ValueError(f"--output-json {path}: inside --out {managed}, whose files "
                                 f"this command writes; give a path outside it")
            if first[0] in owns():
                raise ValueError(f"--output-json {path}: this command writes {first[0]} in "
                                 f"--out {managed}; give another path")
    for flag, read in (reads or {}).items():
        if read is not None and os.path.isfile(read) and Path(read).resolve() == path.resolve():
            raise ValueError(f"--output-json {path}: is this command's {flag} file; give "
                             f"another path")
    earlier = _earlier_output(path) or _input_image(path, inputs)
    if earlier:
        raise ValueError(f"--output-json {path}: is {earlier}; give another path")


def _input_image(path: Path, inputs: Sequence[str | Path] | None) -> str | None:
    """What ``path`` is, where it is one of ``inputs``' images (files / folders / globs as the
    command expands them, compared resolved; a named file whatever it holds) or an image by its
    content: the summary would replace it. Inputs are expanded only when ``path`` exists."""
    if not os.path.lexists(path):
        return None
    if inputs and canonical_path(path) in expand_inputs(list(inputs)):
        return "an input image of this command"
    if looks_like_image(path):
        return "an image file (by its content)"
    return None


def _earlier_output(path: Path) -> str | None:
    """What ``path`` is, where it is a file of a model directory or one that screen or explain
    wrote in a results folder (``screening.model.earlier_runs``, as screen and fit tell their
    earlier outputs). A link is looked at as itself and as the file it names, which is the one
    written (``files.replacing`` writes through a link)."""
    from ..screening import explain, runner
    from ..screening.model import earlier_runs
    from ..screening.model_dir import model_dir_holding

    model = model_dir_holding(path)
    if model is not None:
        return f"a file of model directory {model}"
    for named in dict.fromkeys((path, Path(os.path.realpath(path)))):
        folder = named.parent
        runs = earlier_runs(folder)
        for run, outputs in (("screen", runner.OUTPUTS), ("explain", explain.OUTPUTS)):
            if run in runs and named.name in outputs:
                return f"the {named.name} of an earlier {run} run in {folder}"
    return None


def write_json(path: Path | None, data: dict) -> None:
    """``--output-json``: written atomically (:mod:`anomaly_inspect.files`), if given; a
    failure is one line naming the flag and the reason (not the temporary file)."""
    if path is not None:
        try:
            files.write_json(path, data)
        except OSError as exc:
            reason = exc.strerror or (os.strerror(exc.errno) if exc.errno else str(exc))
            raise type(exc)(f"--output-json {path}: cannot write it ({reason})") from None


def write_json_and_show(path: Path | None, data: dict, show: Callable[[], None]) -> None:
    """``--output-json`` first (a reader that closes the pipe early, ``| head``, must not lose
    it), then ``show`` (the command's table) even where the JSON cannot be written: the
    results are printed before that error."""
    try:
        write_json(path, data)
    finally:
        show()


def print_table(rows: list[tuple[str, str]]) -> None:
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        print(f"{k:<{width}}  {v}")

"""How a saved model reaches workers that do not share this process: by path, or as bytes.

With shared storage every worker loads the model directory from the path the
driver loaded it from. Without it (or for a model that was never saved) the
directory's files (``model.json``, checksums, the memory bank, the backbone
export) are sent once through the engine (Ray's object store) and each worker
writes them to a private folder and loads them with :func:`load_model`, so the
same checksums are verified on every worker.

Either way the task carries the fingerprint of the model the driver loaded (the sha256 of
its ``checksums.json``, which covers every other file), and a worker refuses to score with
a model whose fingerprint differs: a model folder replaced while the run starts would
otherwise be scored with on the workers while the driver reports (threshold, summary,
strips) its own.
"""

from __future__ import annotations

import atexit
import json
import shutil
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from ..pipeline.engine import Engine, Shared
from ..pipeline.remote_fit import check_weights_reach_workers
from .model import Model, ScoredBatch, load_model
from .model_dir import CHECKSUMS_JSON, MODEL_JSON, ModelInfo, directory_fingerprint, fingerprint


def model_files(directory: Path) -> dict[str, bytes]:
    """Every file of a model directory, by relative path."""
    return {p.relative_to(directory).as_posix(): p.read_bytes()
            for p in sorted(directory.rglob("*")) if p.is_file()}


def _private_dir(prefix: str) -> Path:
    path = Path(tempfile.mkdtemp(prefix=prefix))
    atexit.register(shutil.rmtree, path, ignore_errors=True)
    return path


def model_source(model: Model, engine: Engine) -> dict:
    """``ScoreTask`` arguments that let ``engine``'s workers rebuild ``model``, with its
    fingerprint (``model_fingerprint``, see :func:`load_remote_model`)."""
    check_weights_reach_workers(model.cfg, engine)
    overrides = {"batch_size": model.extractor.batch_size,
                 "max_pixels": model.extractor.transform.max_pixels}
    directory = model.directory
    if directory is not None and engine.shared_storage:
        directory = Path(directory).resolve()
        files = {name: (directory / name).read_bytes() for name in (MODEL_JSON, CHECKSUMS_JSON)
                 if (directory / name).is_file()}
        return {"model_dir": directory, "overrides": overrides,
                "model_fingerprint": driver_fingerprint(model, files, directory)}
    if directory is None:  # never saved: save a copy to ship, removed once read
        origin = "the model (never saved)"
        with tempfile.TemporaryDirectory(prefix="anomaly-inspect-model-") as copy:
            files = model_files(model.save(Path(copy) / "model"))
        sealed = fingerprint(files.get(CHECKSUMS_JSON))
    else:
        origin = str(Path(directory).resolve())
        files = model_files(Path(directory))
        sealed = driver_fingerprint(model, files, origin)
    return {"model_files": engine.share(files), "overrides": overrides, "model_origin": origin,
            "model_fingerprint": sealed}


def driver_fingerprint(model: Model, files: dict[str, bytes], where: Path | str) -> str | None:
    """The fingerprint of ``files`` (a model directory's, ``where``), refused unless its
    ``model.json`` still describes ``model``: the folder may have been replaced since the
    driver loaded it."""
    try:
        info = ModelInfo.from_dict(json.loads(files[MODEL_JSON]), str(where)).to_dict()
    except (KeyError, ValueError):
        info = None
    if info != model.info.to_dict():
        raise ValueError(f"{where}: the model directory was replaced or changed since this run "
                         f"loaded it; run again to use the model now there")
    return fingerprint(files.get(CHECKSUMS_JSON))


def _check_fingerprint(directory: Path, expected: str | None, name: str) -> None:
    if expected is None:  # a model saved without checksums (loading warns)
        return
    if directory_fingerprint(directory) != expected:
        raise ValueError(f"{name}: the model directory was replaced or changed since the driver "
                         f"loaded it (its {CHECKSUMS_JSON} differs); the workers would score "
                         f"with another model than the one reported; run again")


def load_remote_model(directory: Path | None, files: Shared | None,
                      overrides: dict | None, origin: str | None = None,
                      expected: str | None = None) -> Model:
    """The model a worker scores with: loaded from ``directory`` or from shipped ``files``
    (written to a private copy; an error names ``origin``, the driver's model directory, in
    place of that copy). Refused, before and after loading, unless the directory's fingerprint
    is the driver's (``expected``; None = not checked)."""
    if files is not None:
        directory = _private_dir("anomaly-inspect-model-")
        for rel, blob in files.get().items():
            (directory / rel).parent.mkdir(parents=True, exist_ok=True)
            (directory / rel).write_bytes(blob)
    if directory is None:
        raise ValueError("a remote ScoreTask needs a model directory or its files")
    name = str(directory) if files is None else origin or "the shipped model"
    _check_fingerprint(directory, expected, name)
    try:
        model = load_model(directory, **(overrides or {}))
    except (ValueError, OSError) as exc:
        if files is None:
            raise
        text = str(exc).replace(str(directory), origin or "the shipped model")
        raise (ValueError(text) if isinstance(exc, ValueError) else OSError(text)) from None
    _check_fingerprint(directory, expected, name)  # replaced while it loaded
    return model


def renamed(batches: Iterator[tuple[int, ScoredBatch]], paths: Sequence[Path]
            ) -> Iterator[tuple[int, ScoredBatch]]:
    """Scored batches of local copies, reported under the original ``paths`` (same order)."""
    offset = 0
    for n, batch in batches:
        for j, image in enumerate(batch.images):
            image.path = str(paths[offset + j])
        offset += n
        yield n, batch


def thumbnailed(batches: Iterator[tuple[int, ScoredBatch]], transform, size: int,
                flagged_inputs: bool = False) -> Iterator[tuple[int, ScoredBatch]]:
    """Scored batches whose model inputs are replaced by the report's uint8 thumbnails (made
    here, on the worker, by the writer's own functions: the same pixels, 25x fewer bytes);
    with ``flagged_inputs``, a flagged image's by its whole model input in uint8 RGB (what
    its explanation strip is drawn on; the writer makes its thumbnail from it)."""
    from .overlays import denormalise, fit_within

    for n, batch in batches:
        rgb = {k: denormalise(x, transform.mean, transform.std) for k, x in batch.inputs.items()}
        batch.inputs = {k: x if flagged_inputs and batch.images[k].flagged else fit_within(x, size)
                        for k, x in rgb.items()}
        yield n, batch

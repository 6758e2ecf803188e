"""Helpers that write small image files and dataset layouts into a temporary folder.

Tests build their inputs with these instead of shipping binary fixtures.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np


def rgb_image(size: int = 32, seed: int = 0) -> np.ndarray:
    """A small random RGB uint8 image (a smooth gradient plus noise, so JPEG keeps it)."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:size, 0:size]
    base = np.stack([x * 255 // size, y * 255 // size, np.full_like(x, 128)], axis=2)
    return np.clip(base + rng.integers(-20, 20, base.shape), 0, 255).astype(np.uint8)


def write_image(path: Path, array: np.ndarray) -> Path:
    """Write ``array`` (RGB, RGBA, gray; uint8 or uint16) with OpenCV; returns ``path``."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if array.ndim == 3 and array.shape[2] == 3:
        array = cv2.cvtColor(array, cv2.COLOR_RGB2BGR)
    elif array.ndim == 3 and array.shape[2] == 4:
        array = cv2.cvtColor(array, cv2.COLOR_RGBA2BGRA)
    assert cv2.imwrite(str(path), array), path
    return path


def write_mask(path: Path, size: int = 32, box: tuple[int, int, int, int] = (8, 8, 16, 16)) -> Path:
    mask = np.zeros((size, size), np.uint8)
    x0, y0, x1, y1 = box
    mask[y0:y1, x0:x1] = 255
    return write_image(path, mask)


def write_mvtec(
    root: Path,
    category: str = "widget",
    n_train: int = 3,
    n_good: int = 2,
    defects: dict[str, int] | None = None,
    masks: bool = True,
    size: int = 32,
) -> Path:
    """Write a tiny MVTec-layout category; returns the category folder."""
    defects = {"scratch": 2, "dent": 1} if defects is None else defects
    cat = root / category
    seed = 0
    for i in range(n_train):
        write_image(cat / "train" / "good" / f"{i:03d}.png", rgb_image(size, seed := seed + 1))
    for i in range(n_good):
        write_image(cat / "test" / "good" / f"{i:03d}.png", rgb_image(size, seed := seed + 1))
    for name, n in defects.items():
        for i in range(n):
            write_image(cat / "test" / name / f"{i:03d}.png", rgb_image(size, seed := seed + 1))
            if masks:
                write_mask(cat / "ground_truth" / name / f"{i:03d}_mask.png", size)
    return cat


def link_subset(src: Path, dst: Path, n: int, pattern: str = "*.png") -> list[Path]:
    """Symlink the first ``n`` files of ``src`` matching ``pattern`` (sorted) into ``dst``.

    Links, not copies: the licensed images in ../shared/data never leave it.
    """
    dst.mkdir(parents=True, exist_ok=True)
    links = []
    for p in sorted(src.glob(pattern))[:n]:
        (dst / p.name).symlink_to(p)
        links.append(dst / p.name)
    return links


def corrupt_data_png(path: Path, seed: int = 0) -> Path:
    """A PNG whose header reads (``image_size``) but whose pixel data does not decode."""
    data = bytearray(write_image(path, rgb_image(40, seed=seed)).read_bytes())
    k = data.find(b"IDAT")
    data[k + 20:k + 60] = b"\x00" * 40
    path.write_bytes(bytes(data))
    return path


def earlier_screen(run: Path) -> None:
    """A results folder as screen --overlays all --explain leaves it."""
    (run / "thumbs").mkdir(parents=True)
    (run / "results.csv").write_text("path\n")
    (run / "screen.json").write_text("{}")
    for rel in ("overlays/a_0123456789.jpg", "thumbs/a_0123456789.jpg",
                "thumbs/a_0123456789_overlay.jpg", "explain/a_0123456789.jpg"):
        write_image(run / rel, rgb_image(16))


def fake_datasets(root: Path, sizes: dict[str, tuple[int, int]]):
    """Category -> (n_train, n_anomalous) datasets of paths (files need not exist for the builder)."""
    from anomaly_inspect.data.mvtec import AnomalyDataset
    from anomaly_inspect.data.samples import Sample

    datasets, dirs = {}, {}
    for c, (n_train, n_anom) in sizes.items():
        d = root / c
        train = [Sample(d / "train/good" / f"{i:03d}.png", 0, "train", "good") for i in range(n_train)]
        test = [Sample(d / "test/good" / f"{i:03d}.png", 0, "test", "good") for i in range(5)]
        test += [Sample(d / "test/crack" / f"{i:03d}.png", 1, "test", "crack") for i in range(n_anom)]
        datasets[c], dirs[c] = AnomalyDataset(c, train, test), d
    return datasets, dirs


def small_config(**backbone):
    """The small model config of the fast tests: random backbone weights (nothing to load),
    64 px inputs; ``backbone``: other ``BackboneConfig`` fields (runtime, layers ...)."""
    from anomaly_inspect.config import BackboneConfig, FeatureConfig, ModelConfig

    return ModelConfig(backbone=BackboneConfig(weights="random", **backbone),
                       features=FeatureConfig(image_size=64))


def fit_tiny_model(root: Path):
    """A PatchCore model on 8 small random-weight training images written under ``root/train``
    (:func:`small_config`, a quarter held out for calibration), and its saved directory
    ``root/model``."""
    from anomaly_inspect.screening.model import fit

    for i in range(8):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    model = fit([root / "train"], small_config(), calibration_fraction=0.25, progress=False)
    return model, model.save(root / "model")


def noise_layout(root: Path, categories=("x", "y", "z"), n_train: int = 10) -> Path:
    """Small seeded random-noise PNGs in an MVTec layout (readable images)."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for c in categories:
        for sub, n in (("train/good", n_train), ("test/good", 3), ("test/crack", 4)):
            (root / c / sub).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(
                    root / c / sub / f"{i:03d}.png")
    return root


def read_only_below(monkeypatch, part: str) -> None:
    """Make ``Path.mkdir`` fail with EROFS (a read-only file system) for folders with ``part``
    among their path components, as a read-only cache folder would."""
    import errno

    real_mkdir = Path.mkdir

    def read_only(self, *args, **kwargs):
        if part in self.parts:
            raise OSError(errno.EROFS, "Read-only file system", str(self))
        return real_mkdir(self, *args, **kwargs)

    monkeypatch.setattr(Path, "mkdir", read_only)


def stub_batch_writer(tmp_path, monkeypatch, fail):
    """A batch writer of a stub model whose image writes fail where ``fail(path)`` raises."""
    from types import SimpleNamespace

    from anomaly_inspect.data.transforms import TransformConfig
    from anomaly_inspect.screening import runner

    write_rgb = runner.write_rgb

    def failing(path, image):
        fail(path)
        write_rgb(path, image)

    monkeypatch.setattr(runner, "write_rgb", failing)
    model = SimpleNamespace(extractor=SimpleNamespace(transform=TransformConfig()),
                            info=SimpleNamespace(display={}), threshold=1.0)
    csv_path = tmp_path / "out" / "results.csv"
    csv_path.parent.mkdir()
    runner._write_rows_atomic(csv_path, [])  # the header, as screen starts the file
    return runner._BatchWriter(model, csv_path.parent, csv_path, "none", 16), csv_path


def stub_model_dir(folder: Path) -> Path:
    """A saved model directory holding a tiny PatchCore on random patches (for commands that
    check a model folder before their stubbed runs, e.g. bench-scale)."""
    from anomaly_inspect.features.extractor import Features
    from anomaly_inspect.scorers.patchcore import PatchCore
    from anomaly_inspect.screening.model_dir import ModelInfo, save_model_dir

    scorer = PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(patches=np.random.default_rng(0).normal(size=(4, 3, 3, 8)).astype(np.float32)))
    info = ModelInfo(config={}, backbone={"name": "b", "weights": {"checksum": "abc"}},
                     calibration={}, train_images=["a.png"], calibration_images=["b.png"])
    return save_model_dir(folder, info, scorer)


def fake_screen_clock(monkeypatch, per_image_s: float):
    """Screen's clock (and the engine start's) moved only by faked work: ``per_image_s`` per
    image any scoring pass yields. Returns the clock (``.t``, seconds) for a test to move."""
    import types

    from anomaly_inspect.pipeline import engine
    from anomaly_inspect.screening import runner
    from anomaly_inspect.screening.model import Model

    now = types.SimpleNamespace(t=0.0)
    fake = types.SimpleNamespace(perf_counter=lambda: now.t)
    monkeypatch.setattr(runner, "time", fake)
    monkeypatch.setattr(engine, "time", fake)
    scored = Model.iter_score

    def iter_score(self, paths, *args, **kwargs):
        for batch in scored(self, paths, *args, **kwargs):
            now.t += per_image_s * len(batch.images)
            yield batch

    monkeypatch.setattr(Model, "iter_score", iter_score)
    return now

"""Shared fixtures: where the real data lives, and skipping rules for it.

Real data is read from ``../shared/data`` beside the checkout (or
``$ANOMALY_INSPECT_DATA``). A test that needs it is skipped only when the data
is absent and ``CI`` is unset; on CI a missing data folder is a failure.
"""

from __future__ import annotations

import errno
import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]


def pytest_configure(config):
    """Import the runtimes' telemetry switches as the toolkit does before any test imports
    onnxruntime or OpenVINO directly: features/runtime.py sets ``ORT_DISABLE_TELEMETRY``, and
    OpenVINO, where installed, is imported with its telemetry declined (``load_openvino``)."""
    import importlib.util

    from anomaly_inspect.features.runtime import load_openvino

    if importlib.util.find_spec("openvino") is not None:
        load_openvino()


def shared_data_dir() -> Path:
    env = os.environ.get("ANOMALY_INSPECT_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


@pytest.fixture(scope="session")
def shared_data() -> Path:
    root = shared_data_dir()
    if not root.is_dir():
        if os.environ.get("CI"):
            pytest.fail(f"real data not found at {root} (required on CI)")
        pytest.skip(f"real data not found at {root}")
    return root


@pytest.fixture(scope="session")
def bottle_subset(shared_data, tmp_path_factory):
    """Factory of small real-bottle layouts, each made once per session for its arguments and
    shared by the tests that ask for the same ones: ``root/train`` (``n_train`` train-good
    images), ``root/bottle/test/{good,broken_large}`` (``n_test`` each; links, nothing copied,
    plus an unreadable ``zz_corrupt.png`` with ``corrupt``) and ``root/model``, fitted on them
    at 128 px with ``fit_args``. Tests write their outputs beside these and change none of them."""
    from anomaly_inspect.cli import main
    from layout_writer import link_subset

    made: dict[tuple, Path] = {}

    def make(n_train: int, n_test: int, fit_args: tuple[str, ...] = (), corrupt: bool = False) -> Path:
        key = (n_train, n_test, tuple(fit_args), corrupt)
        if key not in made:
            src = shared_data / "mvtec_ad" / "bottle"
            root = tmp_path_factory.mktemp("bottle")
            link_subset(src / "train" / "good", root / "train", n_train)
            for group in ("good", "broken_large"):
                link_subset(src / "test" / group, root / "bottle" / "test" / group, n_test)
            if corrupt:
                (root / "bottle" / "test" / "zz_corrupt.png").write_bytes(b"not an image")
            assert main(["fit", "--train", str(root / "train"), "--out", str(root / "model"),
                         "--image-size", "128", "--quiet", *fit_args]) == 0
            made[key] = root
        return made[key]

    return make


@pytest.fixture(autouse=True, scope="session")
def _onnx_export_cache(tmp_path_factory):
    """Backbone ONNX exports go to a per-session folder, never the user's cache."""
    old = os.environ.get("ANOMALY_INSPECT_CACHE")
    os.environ["ANOMALY_INSPECT_CACHE"] = str(tmp_path_factory.mktemp("anomaly_inspect_cache"))
    yield
    if old is None:
        os.environ.pop("ANOMALY_INSPECT_CACHE", None)
    else:
        os.environ["ANOMALY_INSPECT_CACHE"] = old


def pytest_collection_modifyitems(config, items):
    """Every test that reads the real data is ``slow``, whether or not its module says so."""
    for item in items:
        if "shared_data" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)


@pytest.fixture(scope="session")
def ray_session():
    """One small local Ray instance for every Ray test. Skipped only when Ray is not
    installed and ``CI`` is unset (CI installs the extra)."""
    try:
        import ray
    except ImportError:
        if os.environ.get("CI"):
            pytest.fail('Ray not installed (CI installs it: pip install -e ".[ray]")')
        pytest.skip('Ray not installed (pip install -e ".[ray]")')
    ray.init(num_cpus=2, include_dashboard=False, object_store_memory=int(2e8),
             log_to_driver=False)
    yield ray
    ray.shutdown()


# -- permissions that hold as root too (CI runs as root, where chmod stops nothing) --

def _same_file(a, b) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


@pytest.fixture()
def unlistable(monkeypatch):
    """Make a folder unlistable by ``chmod 000``; where that changes nothing (root, as in CI),
    listing it is made to fail as it would (``os.scandir`` raises EACCES)."""
    made = []
    scandir = os.scandir

    def denied(path="."):
        if any(_same_file(path, f) for f in made):
            raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), str(path))
        return scandir(path)

    def make(folder):
        folder.chmod(0)
        made.append(folder)
        if os.access(folder, os.R_OK):
            monkeypatch.setattr(os, "scandir", denied)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


@pytest.fixture()
def read_only(monkeypatch):
    """Make a folder read-only (``chmod 555``); where that changes nothing (root, as in CI),
    ``os.access`` is made to answer for it as it would."""
    made = []
    access = os.access

    def denied(path, mode, **kwargs):
        if mode & os.W_OK and any(_same_file(path, f) for f in made):
            return False
        return access(path, mode, **kwargs)

    def make(folder):
        folder.mkdir(parents=True, exist_ok=True)
        folder.chmod(0o555)
        made.append(folder)
        if os.access(folder, os.W_OK):
            monkeypatch.setattr(os, "access", denied)
        return folder

    yield make
    for folder in made:
        folder.chmod(0o755)


@pytest.fixture(scope="module")
def ood_tiny(tmp_path_factory):
    """A small synthetic MVTec-layout category (64 px): 8 train good, 4 test good, 2 + 2 defects."""
    from anomaly_inspect.data.synthetic import generate_dataset

    return generate_dataset(tmp_path_factory.mktemp("data"), "tiny", n_train=8, n_test_good=4,
                            n_test_per_defect=2, image_size=64, defects=("scratch", "stain")).parent


@pytest.fixture()
def images(tmp_path):
    """A folder of readable training images."""
    from layout_writer import rgb_image, write_image

    for i in range(4):
        write_image(tmp_path / "train" / f"{i}.png", rgb_image(48, seed=i))
    return tmp_path / "train"


@pytest.fixture()
def reads_nothing(monkeypatch):
    """fit(), evaluate() and screen() fail loudly should they list or read an image before
    refusing."""
    def read(*args, **kwargs):
        raise AssertionError("images were read before the arguments were refused")

    from anomaly_inspect.evaluation import evaluate as evaluate_mod
    from anomaly_inspect.screening import model as model_mod
    from anomaly_inspect.screening import runner as runner_mod

    monkeypatch.setattr(model_mod, "input_images", read)
    monkeypatch.setattr(model_mod, "build", read)
    monkeypatch.setattr(runner_mod, "input_images", read)
    monkeypatch.setattr(evaluate_mod, "check_dataset", read)
    monkeypatch.setattr(evaluate_mod, "build", read)


@pytest.fixture
def tune_reached(monkeypatch):
    """The training images ``anomaly-inspect tune`` handed to ``run_tune``, which then stops
    the command (exit 0): a run got past the command's checks."""
    from anomaly_inspect.commands import tune as tune_cmd

    seen = {}

    def fake_tune(paths, args, cfg):
        seen["paths"] = list(paths)
        raise SystemExit(0)

    monkeypatch.setattr(tune_cmd, "run_tune", fake_tune)
    return seen

"""Synthetic MVTec-layout generator: layout, determinism, texture character, exact masks."""

from __future__ import annotations

import json

import numpy as np
import pytest

from anomaly_inspect.data.image_io import read_image, read_mask
from anomaly_inspect.data.mvtec import load_mvtec
from anomaly_inspect.data.synthetic import (
    DEFECTS,
    MANIFEST,
    TEXTURE_STYLES,
    TEXTURES,
    generate_dataset,
    render_sample,
)

SIZE = 128


@pytest.mark.parametrize("texture", TEXTURES)
@pytest.mark.parametrize("defect", DEFECTS)
def test_mask_is_exactly_where_the_image_changed(texture, defect):
    for seed in range(3):
        s = render_sample(texture, defect, (seed, 99), SIZE)
        changed = (s.image != s.clean).any(axis=2)
        np.testing.assert_array_equal(changed, s.mask.astype(bool))
        area = s.mask.mean()
        assert 0.001 < area < 0.08, f"{texture}/{defect}: defect covers {area:.2%} of the image"
        # Visible, not a one-level flicker: masked pixels move by tens of grey levels on average.
        diff = np.abs(s.image.astype(int) - s.clean.astype(int)).max(axis=2)
        assert diff[changed].mean() > 20


@pytest.mark.parametrize("texture", TEXTURES)
def test_normal_render_has_no_mask_and_varies_between_images(texture):
    a, b = render_sample(texture, None, (0, 1), SIZE), render_sample(texture, None, (0, 2), SIZE)
    assert not a.mask.any() and np.array_equal(a.image, a.clean)
    assert a.image.shape == (SIZE, SIZE, 3) and a.image.dtype == np.uint8
    assert not np.array_equal(a.image, b.image)  # phase, lighting and noise differ
    np.testing.assert_array_equal(a.image, render_sample(texture, None, (0, 1), SIZE).image)


def test_fabric_weave_has_the_designed_thread_period():
    period = TEXTURE_STYLES["fabric"]["period"]
    for seed in range(3):
        lum = render_sample("fabric", None, (seed, 0), SIZE).image.mean(axis=2)
        spec = np.abs(np.fft.fft2(lum - lum.mean()))
        fy, fx = np.unravel_index(spec.argmax(), spec.shape)
        freq = np.hypot(min(fy, SIZE - fy), min(fx, SIZE - fx))
        assert SIZE / freq == pytest.approx(period, rel=0.1)


def test_metal_is_brushed_along_one_direction():
    for seed in range(3):
        lum = render_sample("metal", None, (seed, 0), SIZE).image.astype(float).mean(axis=2)
        along = np.abs(np.diff(lum, axis=1)).mean()
        across = np.abs(np.diff(lum, axis=0)).mean()
        assert across > 2.5 * along


def test_generate_dataset_layout_and_files(tmp_path):
    cat = generate_dataset(tmp_path, texture="metal", n_train=3, n_test_good=2,
                           n_test_per_defect=2, image_size=SIZE, seed=5)
    assert cat == tmp_path / "synthetic_metal"
    spec = json.loads((cat / MANIFEST).read_text())
    assert spec["texture"] == "metal" and spec["seed"] == 5 and spec["defects"] == list(DEFECTS)
    ds = load_mvtec(cat)
    assert (len(ds.train), len(ds.test), ds.n_anomalous) == (3, 2 + 2 * len(DEFECTS), 2 * len(DEFECTS))
    assert ds.has_masks and sorted(ds.groups) == sorted([*DEFECTS, "good"])
    # Files are the rendered samples: stream k = position in train, test/good, then each defect.
    k = 3 + 2 + 2 * DEFECTS.index("hole") + 1
    sample = render_sample("metal", "hole", (5, k), SIZE)
    np.testing.assert_array_equal(read_image(cat / "test" / "hole" / "001.png"), sample.image)
    np.testing.assert_array_equal(read_mask(cat / "ground_truth" / "hole" / "001_mask.png"), sample.mask)
    for s in ds.test:
        if s.label == 1:
            assert read_mask(s.mask_path).any()


def test_generate_dataset_is_deterministic(tmp_path):
    kw = dict(n_train=2, n_test_good=1, n_test_per_defect=1, image_size=64, defects=("stain",))
    a = generate_dataset(tmp_path / "a", seed=1, **kw)
    b = generate_dataset(tmp_path / "b", seed=1, **kw)
    c = generate_dataset(tmp_path / "c", seed=2, **kw)
    files = sorted(p.relative_to(a) for p in a.rglob("*.png"))
    assert len(files) == 2 + 1 + 1 + 1
    assert all((a / f).read_bytes() == (b / f).read_bytes() for f in files)
    assert any((a / f).read_bytes() != (c / f).read_bytes() for f in files)


def test_generate_dataset_refuses_to_clobber(tmp_path):
    kw = dict(n_train=1, n_test_good=1, n_test_per_defect=1, image_size=64, defects=("hole",))
    cat = generate_dataset(tmp_path, **kw)
    with pytest.raises(FileExistsError, match=str(cat)):
        generate_dataset(tmp_path, **kw)
    assert generate_dataset(tmp_path, overwrite=True, **kw) == cat  # ours: replaced
    user = tmp_path / "synthetic_metal"
    user.mkdir()
    (user / "precious.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not a generated synthetic dataset"):
        generate_dataset(tmp_path, texture="metal", overwrite=True, **kw)
    assert (user / "precious.txt").read_text() == "keep me"


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"texture": "velvet"}, "unknown texture 'velvet'"),
        ({"defects": ("dent",)}, "unknown or no defects"),
        ({"n_train": 0}, "must all be >= 1"),
        ({"image_size": 32}, "at least 64"),
    ],
)
def test_bad_arguments(tmp_path, kwargs, message):
    with pytest.raises(ValueError, match=message):
        generate_dataset(tmp_path, **{"n_train": 1, "n_test_good": 1, "n_test_per_defect": 1, **kwargs})


def _interrupt_after(monkeypatch, n):
    """Stop generation with Ctrl-C after ``n`` images have been drawn."""
    import anomaly_inspect.data.synthetic as synthetic

    drawn = []

    def render(*args, **kwargs):
        if len(drawn) == n:
            raise KeyboardInterrupt
        drawn.append(1)
        return render_sample(*args, **kwargs)

    monkeypatch.setattr(synthetic, "render_sample", render)


def test_an_interrupted_generation_leaves_nothing_the_next_run_refuses(tmp_path, monkeypatch):
    kw = dict(n_train=2, n_test_good=1, n_test_per_defect=1, image_size=64, defects=("hole",))
    with monkeypatch.context() as m:
        _interrupt_after(m, 2)
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(tmp_path / "out", **kw)
    assert list((tmp_path / "out").iterdir()) == []  # before: half a dataset, without its manifest
    cat = generate_dataset(tmp_path / "out", **kw)
    assert json.loads((cat / MANIFEST).read_text())["n_train"] == 2
    old = (cat / "train" / "good" / "000.png").read_bytes()
    with monkeypatch.context() as m:  # an interrupted --overwrite keeps the complete one
        _interrupt_after(m, 1)
        with pytest.raises(KeyboardInterrupt):
            generate_dataset(tmp_path / "out", overwrite=True, **{**kw, "n_train": 3})
    assert [p.name for p in (tmp_path / "out").iterdir()] == [cat.name]
    assert (cat / "train" / "good" / "000.png").read_bytes() == old
    assert generate_dataset(tmp_path / "out", overwrite=True, **{**kw, "n_train": 3}) == cat
    assert len(list((cat / "train" / "good").iterdir())) == 3


def test_the_refusal_to_replace_names_the_command_line_flag(tmp_path):
    from anomaly_inspect.cli import with_flag_hints

    kw = dict(n_train=1, n_test_good=1, n_test_per_defect=1, image_size=64, defects=("hole",))
    cat = generate_dataset(tmp_path, **kw)
    with pytest.raises(FileExistsError) as info:
        generate_dataset(tmp_path, **kw)
    assert with_flag_hints(str(info.value)) == (f"{cat}: already exists and is not empty; pass "
                                                f"--overwrite to replace it")

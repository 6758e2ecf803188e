"""The synthetic-anomaly recipe: mask sizes, reproducibility, changes only inside the mask."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest

from anomaly_inspect.data.anomalies import (
    FAMILIES,
    MANIFEST,
    AnomalyRecipe,
    draw_anomaly,
    perlin,
    read_anomalies,
    write_anomalies,
)
from anomaly_inspect.data.image_io import ImageReadError, read_image
from anomaly_inspect.data.synthetic import render_sample


def _image(shape=(96, 128), grey=False, seed=0):
    img = render_sample("metal", None, seed, max(shape)).clean[: shape[0], : shape[1]].copy()
    if grey:
        img[:] = img.mean(axis=2, keepdims=True).astype(np.uint8)
    return img


@pytest.mark.parametrize("family", FAMILIES)
def test_mask_in_range_and_changes_only_inside(family):
    recipe = AnomalyRecipe()
    img, donor = _image(), _image(seed=1)
    for seed in range(25):
        out, mask = draw_anomaly(img, family, np.random.default_rng(seed), recipe, donor)
        assert out.shape == img.shape and out.dtype == np.uint8 and mask.dtype == bool
        assert recipe.min_area <= mask.mean() <= recipe.max_area
        changed = (out != img).any(axis=2)
        assert not (changed & ~mask).any(), "a pixel outside the mask changed"
        np.testing.assert_array_equal(out[~mask], img[~mask])


@pytest.mark.parametrize("family", FAMILIES)
def test_same_seed_same_anomaly_other_seed_other(family):
    img, donor = _image(), _image(seed=1)
    a = draw_anomaly(img, family, np.random.default_rng(7), donor=donor)
    b = draw_anomaly(img, family, np.random.default_rng(7), donor=donor)
    c = draw_anomaly(img, family, np.random.default_rng(8), donor=donor)
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert not np.array_equal(a[1], c[1])


def test_most_draws_change_the_image():
    """The families draw visible anomalies (a blur of a flat area may not; most must)."""
    img, donor = _image(), _image(seed=1)
    for family in FAMILIES:
        changed = [(draw_anomaly(img, family, np.random.default_rng(s), donor=donor)[0] != img).any()
                   for s in range(10)]
        assert sum(changed) >= 8, family


@pytest.mark.parametrize("family", FAMILIES)
def test_grey_images_stay_grey(family):
    img = _image(grey=True)
    out, _ = draw_anomaly(img, family, np.random.default_rng(3), donor=_image(seed=2, grey=True))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()


def test_sizes_follow_the_recipe_not_a_fixed_value():
    recipe = AnomalyRecipe(families=("cutpaste",), min_area=0.01, max_area=0.02)
    img = _image((128, 128))
    areas = [draw_anomaly(img, "cutpaste", np.random.default_rng(s), recipe)[1].mean() for s in range(20)]
    assert min(areas) >= 0.01 and max(areas) <= 0.02 and np.ptp(areas) > 0.002


def test_bad_inputs_are_refused():
    img = _image()
    with pytest.raises(ValueError, match="unknown anomaly family"):
        draw_anomaly(img, "glitter", np.random.default_rng(0))
    with pytest.raises(ValueError, match="donor"):
        draw_anomaly(img, "poisson", np.random.default_rng(0))
    with pytest.raises(ValueError, match="uint8"):
        draw_anomaly(img.astype(np.float32), "cutpaste", np.random.default_rng(0))
    with pytest.raises(ValueError, match="min_area"):
        AnomalyRecipe(min_area=0.1, max_area=0.01)


def test_perlin_is_smooth_and_bounded():
    noise = perlin(np.random.default_rng(0), (64, 64), (2, 2))
    assert np.abs(noise).max() <= 1.0 + 1e-9 and noise.std() > 0.05
    # smooth: neighbouring pixels differ much less than the overall range
    assert np.abs(np.diff(noise, axis=1)).max() < 0.2 * np.ptp(noise)


def test_write_anomalies_is_reproducible_and_lossless(tmp_path):
    srcs = []
    for i in range(3):
        p = tmp_path / f"src{i}.png"
        cv2.imwrite(str(p), cv2.cvtColor(_image(seed=i), cv2.COLOR_RGB2BGR))
        srcs.append(p)
    fams = ["cutpaste", "poisson", "local"]
    donors = [srcs[1], srcs[2], srcs[0]]
    recipe = AnomalyRecipe(seed=5)
    rows = write_anomalies(srcs, fams, donors, tmp_path / "a", recipe)
    again = write_anomalies(srcs, fams, donors, tmp_path / "b", recipe)
    for r, s, q in zip(rows, srcs, again, strict=True):
        out, mask = read_image(r.path), read_image(r.mask_path)[..., 0] > 0
        np.testing.assert_array_equal(out, read_image(q.path))
        np.testing.assert_array_equal(out[~mask], read_image(s)[~mask])  # PNG: lossless outside
        assert r.area == pytest.approx(mask.mean())
    manifest = json.loads((tmp_path / "a" / "anomalies.json").read_text())
    assert manifest["recipe"]["seed"] == 5 and [r["family"] for r in manifest["images"]] == fams
    # a finished set is read back wherever its folder has moved (tune renames it into place)
    (tmp_path / "a").rename(tmp_path / "moved")
    back = read_anomalies(tmp_path / "moved")
    assert [r.path for r in back] == [str(tmp_path / "moved" / f"{i:05d}_{f}.png") for i, f in enumerate(fams)]
    assert [(r.source, r.family, r.area) for r in back] == [(r.source, r.family, r.area) for r in rows]
    (tmp_path / "moved" / "00001_poisson_mask.png").unlink()  # a damaged set: said, naming the file
    with pytest.raises(ValueError, match="00001_poisson_mask.png"):
        read_anomalies(tmp_path / "moved")
    assert read_anomalies(tmp_path / "none") is None


def test_a_source_too_small_is_an_unreadable_image_naming_it(tmp_path):
    src = tmp_path / "small.png"
    cv2.imwrite(str(src), np.full((12, 40, 3), 128, np.uint8))
    with pytest.raises(ImageReadError, match=r"small\.png: too small for synthetic anomalies: 40 x 12 px"):
        write_anomalies([src], ["cutpaste"], [None], tmp_path / "out", AnomalyRecipe())


def _pattern(h, w, seed):
    """A deterministic textured RGB image from numpy alone (no renderer whose output may change)."""
    y, x = np.mgrid[0:h, 0:w].astype(np.float64)
    rng = np.random.default_rng(seed)
    c = [np.sin(x / (7 + 3 * k) + k) * np.cos(y / (11 + 2 * k)) * 80 + 120 + rng.normal(0, 6, (h, w))
         for k in range(3)]
    return np.clip(np.stack(c, -1), 0, 255).astype(np.uint8)


def test_the_recipe_draws_what_it_drew_when_it_was_fixed(tmp_path):
    """The recipe was fixed before the real test sets were scored (docs/auto_config.md): every
    family's draws on ordinary shapes (colour and grey), and a written set, hash as they did
    then (digests computed with the code before the elongated-image scar was added)."""
    import hashlib

    digest = hashlib.sha256()
    for shape, grey in [((256, 256), False), ((200, 320), False), ((256, 256), True), ((96, 64), False)]:
        img, donor = _pattern(*shape, 1), _pattern(*shape, 2)
        if grey:
            img[...], donor[...] = img[..., :1], donor[..., :1]
        for family in FAMILIES:
            for s in range(4):
                out, mask = draw_anomaly(img, family, np.random.default_rng((7, s)), AnomalyRecipe(), donor)
                digest.update(out.tobytes())
                digest.update(mask.tobytes())
    assert digest.hexdigest() == "5231b1c8b32b0dfe5a6b371e2d4d2998321f0c9c546e5bdf0f7f44a750af5e1f"
    srcs = []
    for i in range(5):
        srcs.append(tmp_path / f"n{i}.png")
        cv2.imwrite(str(srcs[-1]), _pattern(256, 256, 10 + i))
    rows = write_anomalies(srcs, list(FAMILIES), [srcs[(i + 1) % 5] for i in range(5)], tmp_path / "syn",
                           AnomalyRecipe(), stream=3)
    written = hashlib.sha256()
    for r in rows:
        written.update(read_image(r.path).tobytes())
        written.update((read_image(r.mask_path)[..., 0] > 0).astype(np.uint8).tobytes())
    assert written.hexdigest() == "d21cfec2dd5b340dde8bb8f564980a7030567d9172b8cc62b44d684316e75772"


@pytest.mark.parametrize("shape", [(256, 4096), (4096, 256), (48, 2048)])
def test_a_scar_on_a_very_elongated_image_is_drawn_along_its_long_side(shape):
    """A line-scan strip: a scar 0.4 x the short side long cannot cover 0.1 % of it, so the
    recipe's scar fails all its draws; the scar is then drawn along the long side, in range."""
    from anomaly_inspect.data.anomalies import _scar

    recipe = AnomalyRecipe()
    img = _pattern(*shape, 3)
    n_pix = shape[0] * shape[1]
    rng = np.random.default_rng(0)
    short = [_scar(img, rng, recipe.min_area * n_pix * k, None)[1].mean() for k in (1, 5, 20, 49)]
    assert max(short) < recipe.min_area  # the recipe's own scar cannot reach the range
    lengths = []
    for seed in range(10):
        out, mask = draw_anomaly(img, "scar", np.random.default_rng(seed), recipe)
        assert recipe.min_area <= mask.mean() <= recipe.max_area
        assert not ((out != img).any(axis=2) & ~mask).any()
        assert (out != img).any(axis=2)[mask].mean() > 0.5
        ys, xs = np.nonzero(mask)
        lengths.append(max(np.ptp(ys), np.ptp(xs)) + 1)
    assert max(lengths) > 0.4 * min(shape)  # longer than the short side allows the recipe's scar


# A damaged synthetic-anomaly set is refused naming the file; one written without checksums is a
# plain miss.
def _written_set(tmp_path):
    srcs = []
    for i in range(2):
        p = tmp_path / f"src{i}.png"
        cv2.imwrite(str(p), render_sample("metal", None, i, 96).clean)
        srcs.append(p)
    write_anomalies(srcs, ["cutpaste", "local"], [None, None], tmp_path / "set", AnomalyRecipe())
    return tmp_path / "set"


def test_read_anomalies_refuses_a_damaged_png_naming_it(tmp_path):
    out = _written_set(tmp_path)
    assert len(read_anomalies(out)) == 2
    png = out / "00001_local.png"
    data = png.read_bytes()
    png.write_bytes(data[:100])  # truncated
    with pytest.raises(ValueError, match=r"00001_local\.png: .*bytes"):
        read_anomalies(out)
    png.write_bytes(data[:50] + bytes([data[50] ^ 1]) + data[51:])  # same size, one bit changed
    with pytest.raises(ValueError, match=r"00001_local\.png: .*checksum"):
        read_anomalies(out)
    png.write_bytes(data)
    assert len(read_anomalies(out)) == 2
    (out / "00000_cutpaste_mask.png").unlink()
    with pytest.raises(ValueError, match=r"00000_cutpaste_mask\.png"):
        read_anomalies(out)
    assert read_anomalies(tmp_path / "none") is None  # no set there: a miss, not damage


def test_a_set_written_without_checksums_is_a_plain_miss_not_damage(tmp_path):
    out = _written_set(tmp_path)
    manifest = json.loads((out / MANIFEST).read_text())
    del manifest["files"]  # as an older version wrote it: drawn again, without a warning
    (out / MANIFEST).write_text(json.dumps(manifest))
    assert read_anomalies(out) is None
    manifest["files"] = ["not", "a", "mapping"]
    (out / MANIFEST).write_text(json.dumps(manifest))
    with pytest.raises(ValueError, match="not a synthetic-anomaly manifest"):
        read_anomalies(out)

"""A bundle's manifest.json holds what a deployment outside the toolkit needs: a small
reimplementation that reads only the manifest, the graph and the bank (onnxruntime, numpy,
OpenCV to decode and resize) scores as ``screen`` does, a padded non-square image included
(before, the manifest left out the padded cells skipped at scoring, the embedding's channel
pooling and the scorer's input: 55 % off on such an image)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from anomaly_inspect.config import BackboneConfig, FeatureConfig, ModelConfig
from anomaly_inspect.screening import fit, load_model
from anomaly_inspect.screening.deploy import MANIFEST_VERSION, export_model
from layout_writer import rgb_image, write_image

# --- the outside reimplementation: manifest.json, the graph and the bank only ---------------


def _preprocess(path: Path, p: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """The (1, 3, S, S) input and the content box (top, left, height, width) after the crop."""
    img = cv2.cvtColor(cv2.imread(str(path), cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)
    img, box = resize_pad_crop(img, p)
    x = (img.astype(np.float32) / 255 - np.float32(p["mean"])) / np.float32(p["std"])
    return x.transpose(2, 0, 1)[None].astype(np.float32), box


def resize_pad_crop(img: np.ndarray, p: dict) -> tuple[np.ndarray, tuple[int, int, int, int]]:
    """Resize (stretch or pad), then centre crop, as the manifest's ``order`` states, on ``img``
    whatever its dtype (cv2.resize keeps it); and the content box (top, left, height, width)
    after the crop."""
    h, w = img.shape[:2]
    size, crop = p["image_size"], p["crop_size"]
    if p["resize"] == "stretch":
        img = cv2.resize(img, (size, size), interpolation=cv2.INTER_LINEAR)
        top, left, bh, bw = 0, 0, size, size
    else:
        scale = size / max(h, w)
        bh, bw = min(size, max(1, round(h * scale))), min(size, max(1, round(w * scale)))
        top, left = (size - bh) // 2, (size - bw) // 2
        img = cv2.resize(img, (bw, bh), interpolation=cv2.INTER_LINEAR)
        img = cv2.copyMakeBorder(img, top, size - top - bh, left, size - left - bw,
                                 cv2.BORDER_REFLECT_101)
    if crop:
        o = (size - crop) // 2
        img = img[o:o + crop, o:o + crop]
        t2, l2 = max(top - o, 0), max(left - o, 0)
        bh, bw = max(min(top + bh - o, crop) - t2, 1), max(min(left + bw - o, crop) - l2, 1)
        top, left = t2, l2
    return img, (top, left, bh, bw)


def _neighbourhood(fm: np.ndarray, k: int, mode: str) -> np.ndarray:
    """(C, h, w) -> (C', h, w): step 1, zero padded, zeros counted."""
    c, h, w = fm.shape
    if k == 1:
        return fm
    pad = k // 2
    padded = np.pad(fm, ((0, 0), (pad, pad), (pad, pad)))
    win = np.stack([np.stack([padded[:, r:r + h, q:q + w] for q in range(k)], 1)
                    for r in range(k)], 1)  # (C, k rows, k cols, h, w)
    if mode == "mean":
        return win.mean((1, 2))
    if mode == "rows":
        return win.mean(2).reshape(c * k, h, w)
    return win.reshape(c * k * k, h, w)


def _pool_channels(fm: np.ndarray, width: int) -> np.ndarray:
    """Step 2: adaptive average pooling over the channels."""
    n = fm.shape[0]
    return np.stack([fm[math.floor(j * n / width):math.ceil((j + 1) * n / width)].mean(0)
                     for j in range(width)])


def _upsample(fm: np.ndarray, h: int, w: int) -> np.ndarray:
    """Step 3: bilinear, align_corners=False."""
    def axis(n_in: int, n_out: int):
        src = np.maximum((np.arange(n_out) + 0.5) * n_in / n_out - 0.5, 0)
        i0 = np.minimum(np.floor(src).astype(int), n_in - 1)
        return i0, np.minimum(i0 + 1, n_in - 1), (src - i0).astype(np.float32)

    y0, y1, ly = axis(fm.shape[1], h)
    x0, x1, lx = axis(fm.shape[2], w)
    rows = fm[:, y0] * (1 - ly)[:, None] + fm[:, y1] * ly[:, None]
    return rows[:, :, x0] * (1 - lx) + rows[:, :, x1] * lx


def _outside_score(bundle: Path, image: Path, every_cell: bool = False) -> float:
    """The image score; ``every_cell``: the padding's cells scored too (as the manifest alone
    led one to before)."""
    import onnxruntime as ort
    from safetensors.numpy import load_file

    m = json.loads((bundle / "manifest.json").read_text())
    graph = next(g for g in m["backbone"]["graphs"] if g["runs"])
    session = ort.InferenceSession(str(bundle / graph["onnx"]), providers=["CPUExecutionProvider"])
    x, (top, left, bh, bw) = _preprocess(image, m["preprocess"])
    outs = dict(zip([o["name"] for o in graph["outputs"]],
                    session.run(None, {graph["input"]["name"]: x}), strict=True))
    e = m["embedding"]
    assert m["scorer"]["input"] == ["patches"] and not m["scorer"]["l2_normalized"]
    h, w = outs[e["stages"][0]["output"]].shape[2:]
    parts = []
    for st in e["stages"]:
        fm = _neighbourhood(outs[st["output"]][0], e["aggregate"], st["neighbourhood"])
        assert fm.shape[0] == st["summary_width"]
        if st["pooled_to_cap"]:
            fm = _pool_channels(fm, st["width"])
        if st["upsampled"]:
            fm = _upsample(fm, h, w)
        if e["equal_stage_weights"]:
            fm = fm / math.sqrt(st["width"])
        parts.append(fm)
    emb = np.concatenate(parts).reshape(e["width"], h * w).T.astype(np.float64)
    size = m["preprocess"]["crop_size"] or m["preprocess"]["image_size"]

    def scored(start: int, length: int, cells: int) -> np.ndarray:
        centres = (np.arange(cells) + 0.5) * size / cells
        inside = (centres >= start) & (centres < start + length)
        if not inside.any():
            inside[int(np.clip((start + length / 2) // (size / cells), 0, cells - 1))] = True
        return inside

    cells = (scored(top, bh, h)[:, None] & scored(left, bw, w)[None, :]).ravel()
    if every_cell:
        cells[:] = True
    return _outside_image_score(m["scorer"], load_file(str(bundle / m["scorer"]["state"])),
                                emb[cells])


def _outside_image_score(scorer: dict, state: dict, emb: np.ndarray) -> float:
    """The image score of the scored cells' embedding rows ``emb`` as the manifest's
    ``scorer.patch_score`` and ``scorer.image_score`` state it, from the scorer's state."""
    params = scorer["params"]
    bank = state["memory_bank"].astype(np.float64)
    dist = np.sqrt(((emb[:, None, :] - bank[None]) ** 2).sum(-1))  # (cells, rows)
    nearest = dist.argmin(1)
    patch = dist[np.arange(len(emb)), nearest]
    if params.get("soft_weight"):
        assert "times sqrt(item_weights[m*])" in scorer["patch_score"]
        patch = patch * np.sqrt(state["item_weights"][nearest].astype(np.float64))
    b = params["num_neighbors"]
    assert scorer["image_score"].startswith(f"num_neighbors = {'b = ' if b > 1 else ''}{b}")
    t = int(patch.argmax())
    if b <= 1:
        return float(patch[t])
    m_star = bank[nearest[t]]
    support = np.argsort(np.linalg.norm(bank - m_star, axis=1), kind="stable")[:b]
    d = np.linalg.norm(bank[support] - emb[t], axis=1)
    return float((1 - np.exp(d.min()) / np.exp(d).sum()) * patch[t])


# --- the toolkit's side ----------------------------------------------------------------------


def _bundle(root: Path, features: FeatureConfig, method: str = "patchcore",
            scorer: dict | None = None) -> Path:
    for i in range(6):
        write_image(root / "train" / f"{i}.png", rgb_image(48, seed=i))
    cfg = ModelConfig(backbone=BackboneConfig(weights="random", runtime="onnxruntime"),
                      features=features, method=method, scorer=scorer or {})
    model = fit([root / "train"], cfg, calibration_fraction=0.34, progress=False)
    export_model(model.save(root / "model"), root / "bundle")
    return root / "bundle"


def _banded(path: Path, h: int, w: int) -> Path:
    """A grey h x w image with a dark band along its bottom and right edges: mirrored into the
    padding, the band makes patches the training images lack."""
    rgb = np.full((h, w, 3), 128, np.uint8)
    rgb[-3:], rgb[:, -3:] = 0, 0
    return write_image(path, rgb)


@pytest.mark.parametrize("features", [
    # padded, the finest stage's rows pooled to the cap (embed_dim 64: 32 a stage)
    FeatureConfig(image_size=64, resize="pad", embed_dim=64),
    # padded and cropped, every value of the finest stage's neighbourhood, unweighted stages
    FeatureConfig(image_size=64, crop_size=48, resize="pad", finest_stage="full",
                  equal_stage_weights=False),
    # stretched (as before the fix): no pooling, every cell
    FeatureConfig(image_size=64),
], ids=["pad", "pad-crop-full", "stretch"])
def test_an_outside_reimplementation_from_the_manifest_scores_as_screen_does(tmp_path, features):
    bundle = _bundle(tmp_path, features)
    manifest = json.loads((bundle / "manifest.json").read_text())
    assert manifest["manifest_version"] == MANIFEST_VERSION == 3
    images = [_banded(tmp_path / "wide.png", 20, 80), _banded(tmp_path / "tall.png", 72, 30),
              write_image(tmp_path / "square.png", rgb_image(48, seed=9))]
    want = [r.score for r in load_model(bundle).score(images)]
    got = [_outside_score(bundle, p) for p in images]
    assert got == pytest.approx(want, rel=1e-5)
    if features.resize == "pad":
        assert manifest["embedding"]["scored_cells"].startswith("the cells whose centre lies")
        assert manifest["preprocess"]["content_box"]["top"] == "(image_size - height) // 2"
    if features.resize == "pad" and not features.crop_size:
        # the padding's cells matter: scored too, a non-square image's score is another
        every = [_outside_score(bundle, p, every_cell=True) for p in images[:2]]
        assert every != pytest.approx(want[:2], rel=1e-2)


@pytest.mark.parametrize("method, scorer", [
    ("patchcore", {"num_neighbors": 3}),
    ("softpatch", {"soft_weight": True, "lof_k": 2, "num_neighbors": 2}),
], ids=["patchcore-nn3", "softpatch-soft-weight"])
def test_the_manifest_states_the_image_score_rule_screen_applies(tmp_path, method, scorer):
    """With num_neighbors > 1 the image score is the paper's re-weighted one, not the maximum
    patch score the manifest claimed (the threshold is calibrated on it); SoftPatch's soft
    weights scale each patch's distance. Both stated and followed from the manifest alone."""
    bundle = _bundle(tmp_path, FeatureConfig(image_size=64, resize="pad", embed_dim=64),
                     method, scorer)
    m = json.loads((bundle / "manifest.json").read_text())
    assert "maximum" not in m["embedding"]["scored_cells"]
    assert "(1 - exp(min_k d_k) / sum_k exp(d_k)) * s*" in m["scorer"]["image_score"]
    images = [_banded(tmp_path / "wide.png", 20, 80),
              write_image(tmp_path / "square.png", rgb_image(48, seed=9))]
    results = load_model(bundle).score(images)
    got = [_outside_score(bundle, p) for p in images]
    assert got == pytest.approx([r.score for r in results], rel=1e-5)
    # the re-weighted score is not the largest patch score the manifest used to promise
    largest = [float(np.nanmax(r.patch_scores)) for r in results]
    assert got != pytest.approx(largest, rel=1e-3)
    if method == "softpatch":  # the weights matter: without them the score is another
        from safetensors.numpy import load_file

        state = load_file(str(bundle / m["scorer"]["state"]))
        assert not np.allclose(state["item_weights"], 1)


def test_the_score_rules_follow_the_scorer_and_its_params():
    from anomaly_inspect.screening.deploy import _score_rules

    plain = _score_rules("patchcore", {"num_neighbors": 1}, views=False)
    assert plain["image_score"].startswith("num_neighbors = 1: the largest patch score")
    assert "sqrt(item_weights" not in plain["patch_score"]
    tailed = _score_rules("tailedcore", {"num_neighbors": 1, "soft_weight": False}, views=True)
    assert tailed["patch_score"] == plain["patch_score"]
    assert tailed["image_score"].endswith("(with scorer.views: per view, then their mean)")
    gauss = _score_rules("patch_mahalanobis", {"shrinkage": 0.01}, views=False)
    assert gauss["patch_score"].startswith("per scored cell, x its embedding row: (x - mean)^T "
                                           "precision (x - mean)")
    pooled = _score_rules("knn", {"k": 5}, views=False)
    assert pooled["patch_score"] is None and "scorers.distance.KNN" in pooled["image_score"]


def test_the_manifest_states_each_stage_and_the_scorers_input(tmp_path):
    bundle = _bundle(tmp_path, FeatureConfig(image_size=64, resize="pad", embed_dim=64))
    m = json.loads((bundle / "manifest.json").read_text())
    e = m["embedding"]
    # the settings kept as before; the steps per stage added
    assert (e["aggregate"], e["embed_dim"], e["finest_stage"], e["equal_stage_weights"]) == \
        (3, 64, "rows", True)
    assert [(s["output"], s["neighbourhood"], s["pooled_to_cap"], s["upsampled"])
            for s in e["stages"]] == [("stage0", "rows", True, False),
                                      ("stage1", "mean", True, True)]
    assert sum(s["width"] for s in e["stages"]) == e["width"] == 64
    assert len(e["steps"]) == 5
    assert m["scorer"]["input"] == ["patches"] and m["scorer"]["l2_normalized"] is False
    assert m["preprocess"]["resize"] == "pad" and m["threshold"] == pytest.approx(
        load_model(bundle).threshold)


def test_a_pooled_scorers_input_is_named_with_its_normalisation():
    from anomaly_inspect.screening.deploy import _scorer_input

    assert _scorer_input("knn", {"k": 5, "normalize": True, "reduction": "kth"})[
        "l2_normalized"] is True
    got = _scorer_input("feature_norm", {})
    assert got["input"] == ["pooled"] and got["l2_normalized"] is False
    assert "'pooled'" in got["input_meaning"]["pooled"]


def test_a_bundle_with_a_version_1_manifest_still_loads_and_screens(tmp_path):
    """Loading never reads the manifest: a bundle written before manifest_version loads."""
    from anomaly_inspect.screening.model_dir import write_checksums

    bundle = _bundle(tmp_path, FeatureConfig(image_size=64))
    m = json.loads((bundle / "manifest.json").read_text())
    for key in ("manifest_version",):
        del m[key]
    for key in ("content_box",):
        del m["preprocess"][key]
    for key in ("stages", "steps", "scored_cells"):
        del m["embedding"][key]
    (bundle / "manifest.json").write_text(json.dumps(m))
    write_checksums(bundle)
    image = write_image(tmp_path / "t.png", rgb_image(48, seed=3))
    assert np.isfinite(load_model(bundle).score([image])[0].score)

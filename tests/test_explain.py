"""Bank provenance and explanations on hand-made banks whose provenance is known."""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

from anomaly_inspect.core import FitContext
from anomaly_inspect.data.layout import display_path
from anomaly_inspect.data.transforms import Box, TransformConfig
from anomaly_inspect.features.extractor import Features
from anomaly_inspect.features.views import ViewFeatures, view_params
from anomaly_inspect.scorers import Scorer, build_scorer
from anomaly_inspect.scorers.coreset import TwoRoundCoreset
from anomaly_inspect.scorers.patchcore import PatchCore
from anomaly_inspect.scorers.provenance import Provenance
from anomaly_inspect.screening.explain import (
    ExplainUnavailable,
    TrainingImages,
    cell_rect,
    explain_scored,
    explain_to_dir,
    input_to_file,
    render_strip,
    top_patches,
)
from anomaly_inspect.screening.model import ScoredImage
from anomaly_inspect.screening.model_dir import ModelInfo, file_sha256
from anomaly_inspect.screening.runner import raw_path_field
from browser import headless_dom
from layout_writer import fit_tiny_model, rgb_image, write_image
from test_tailedcore import lt_features


def _assert_provenance(scorer, patches_of):
    """Every memory item equals the training patch its provenance names."""
    prov = scorer.provenance
    assert prov is not None and len(prov) == scorer.bank_size
    for k in range(scorer.bank_size):
        img, (r, c, v) = int(prov.image[k]), prov.cell[k]
        np.testing.assert_array_equal(scorer.memory_bank[k], patches_of(img, int(v))[r, c])


# -- provenance through the coreset ---------------------------------------------------------
def test_of_cells_hand_checked():
    valid = np.array([[[True, False], [True, True]], [[False, False], [False, True]]])
    # patches[valid] order: (0,0,0) (0,1,0) (0,1,1) (1,1,1)
    prov = Provenance.of_cells(valid, np.array([1, 3]), image_ids=np.array([7, 9]))
    np.testing.assert_array_equal(prov.image, [7, 9])
    np.testing.assert_array_equal(prov.cell, [[1, 0, 0], [1, 1, 0]])
    assert prov.image.dtype == np.int32 and prov.cell.dtype == np.int16


@pytest.mark.parametrize("kw", [dict(ratio=0.5), dict(ratio=0.01, chunk_size=64),
                                dict(ratio=0.05, chunk_size=64, max_items=20),
                                dict(ratio=0.1, chunk_size=None)])
def test_coreset_positions_name_their_rows(kw):
    x = np.random.default_rng(0).standard_normal((3000, 8)).astype(np.float32)
    c = TwoRoundCoreset(keep_rows=True, **kw)
    for s in range(0, 3000, 700):
        c.add(x[s:s + 700])
    pos, rows = c.finish_positions_rows()
    assert np.all(np.diff(pos) > 0)
    np.testing.assert_array_equal(rows, x[pos])
    np.testing.assert_array_equal(pos, c.finish())


def test_patchcore_streamed_fit_keeps_provenance_with_padding():
    rng = np.random.default_rng(1)
    patches = rng.standard_normal((9, 6, 5, 8)).astype(np.float32)
    valid = np.ones((9, 6, 5), bool)
    valid[::2, 0] = False  # padding rows never enter the bank
    feats = Features(patches, valid=valid)
    batches = (feats.subset(np.arange(s, min(s + 4, 9))) for s in range(0, 9, 4))
    pc = PatchCore(coreset_ratio=0.3, chunk_size=32, progress=False).fit_batches(batches, 9)
    _assert_provenance(pc, lambda i, v: patches[i])
    assert valid[pc.provenance.image, pc.provenance.cell[:, 0], pc.provenance.cell[:, 1]].all()
    assert (pc.provenance.cell[:, 2] == 0).all()


def test_softpatch_provenance_after_the_lof_filter():
    feats = lt_features()
    sp = build_scorer("softpatch", coreset_ratio=0.5, progress=False).fit(feats)
    _assert_provenance(sp, lambda i, v: feats.patches[i])
    # the defect injected at image 5, cell (2, 2) is filtered out, so no item comes from it
    assert not ((sp.provenance.image == 5) & (sp.provenance.cell[:, 0] == 2)
                & (sp.provenance.cell[:, 1] == 2)).any()


class _IndexedViews:
    """A view source with provenance: two views per image (rotated 90 degrees, flipped)."""

    VIEWS = ((90, False), (0, True))
    views_per_image = 2

    def __init__(self, feats):
        self.feats = feats

    def view(self, i, params):
        p = self.feats.patches[i] + (0.5 if params[1] else 0.25)  # distinct from the image's own
        return np.ascontiguousarray(np.rot90(p, 1) if params == (90, False) else p[:, ::-1])

    def iter_view_blocks(self, idx):
        for i in idx:  # one image per batch
            for params in self.VIEWS:
                yield np.array([i]), params, Features(self.view(i, params)[None])

    def iter_views(self, idx):
        for _, _, feats in self.iter_view_blocks(idx):
            yield feats


class _PlainViews(_IndexedViews):
    """The same views from a source that does not say where they came from."""

    iter_view_blocks = None

    def iter_views(self, idx):
        for i in idx:
            yield Features(np.stack([self.view(i, p) for p in self.VIEWS]))


def test_tailedcore_provenance_of_head_tail_and_views():
    feats = lt_features()
    src = _IndexedViews(feats)
    tc = build_scorer("tailedcore", coreset_ratio=0.5, progress=False)
    tc.fit(feats, context=FitContext(views=src))
    table = [tuple(v) for v in tc.provenance.views.tolist()]
    assert table[0] == (0, 0) and sorted(table[1:]) == sorted((a, int(f)) for a, f in src.VIEWS)

    def patches_of(i, v):
        return feats.patches[i] if v == 0 else src.view(i, (table[v][0], bool(table[v][1])))

    _assert_provenance(tc, patches_of)
    tail_items = tc.provenance.image[:tc.tail_size]
    assert set(tail_items.tolist()) <= {30, 31}  # the tail class
    assert (tc.provenance.cell[:tc.tail_size, 2] > 0).any()  # views made it into the memory
    assert (tc.provenance.cell[tc.tail_size:, 2] == 0).all()  # the head has no views


def test_tailedcore_views_of_a_plain_source_are_marked_unknown():
    feats = lt_features()
    tc = build_scorer("tailedcore", coreset_ratio=1.0, progress=False)
    tc.fit(feats, context=FitContext(views=_PlainViews(feats)))
    unknown = tc.provenance.image == -1
    assert unknown.sum() == 2 * 2 * 16  # every view patch of the two tail images
    _assert_provenance(SimpleNamespace(provenance=tc.provenance.take(np.flatnonzero(~unknown)),
                                       memory_bank=tc.memory_bank[~unknown],
                                       bank_size=int((~unknown).sum())),
                       lambda i, v: feats.patches[i])


def test_view_features_name_the_images_and_view_of_every_block():
    class _Extractor:  # batches of 2 images, one block per view in view_params order
        batch_size = 2

        def iter_views(self, paths, kind, progress=None, times=None):
            for s in range(0, len(paths), self.batch_size):
                for _ in view_params(kind):
                    yield Features(np.zeros((len(paths[s:s + 2]), 2, 2, 3), np.float32))

    views = ViewFeatures(_Extractor(), [f"{i}.png" for i in range(10)], "rotflip", progress=False)
    blocks = list(views.iter_view_blocks([7, 3, 5]))
    params = view_params("rotflip")
    assert len(blocks) == 2 * len(params)
    assert [b[0].tolist() for b in blocks] == [[7, 3]] * len(params) + [[5]] * len(params)
    assert [b[1] for b in blocks] == params * 2


def test_provenance_is_saved_in_a_few_bytes_and_old_states_still_load(tmp_path):
    rng = np.random.default_rng(0)
    pc = PatchCore(coreset_ratio=0.5, progress=False).fit(
        Features(rng.standard_normal((6, 8, 8, 232)).astype(np.float32)))
    pc.save(tmp_path / "s")
    back = Scorer.load(tmp_path / "s")
    for k in ("image", "cell", "views"):
        np.testing.assert_array_equal(getattr(back.provenance, k), getattr(pc.provenance, k))
    extra = pc.provenance.image.nbytes + pc.provenance.cell.nbytes
    assert extra == 10 * pc.bank_size  # int32 + 3 x int16 per item: ~1 % of a 232-d item
    old = {k: v for k, v in pc.get_state().items() if not k.startswith("provenance")}
    legacy = PatchCore(progress=False)
    legacy.set_state(old)
    assert legacy.provenance is None
    assert np.isfinite(legacy.score(Features(rng.standard_normal((1, 8, 8, 232)).astype(
        np.float32))).image_scores).all()
    for bad in ({"provenance_image": pc.provenance.image[:-1]},  # damaged: dropped, still scores
                {"provenance_cell": np.full_like(pc.provenance.cell, 7)}):  # no view 7
        damaged = PatchCore(progress=False)
        damaged.set_state({**pc.get_state(), **bad})
        assert damaged.provenance is None and damaged.bank_size == pc.bank_size


# -- geometry --------------------------------------------------------------------------------
def test_top_patches_are_non_overlapping_and_start_at_the_maximum():
    s = np.zeros((8, 8), np.float32)
    s[4, 4], s[4, 5], s[5, 5], s[1, 1], s[7, 7] = 9, 8, 7, 6, 5
    assert top_patches(s, 3) == [(4, 4), (1, 1), (7, 7)]
    assert top_patches(s, 1) == [(4, 4)]


def test_input_boxes_map_back_to_image_pixels():
    stretch = TransformConfig(image_size=64)
    # a 128 x 256 image stretched to 64 x 64: y x2, x x4
    assert stretch.input_to_image(128, 256, 8, 16, 24, 32) == Box(16, 64, 32, 64)
    pad = TransformConfig(image_size=64, resize="pad")
    # 32 x 64 padded: content rows 16..48 of the input, scale 1
    assert pad.input_to_image(32, 64, 24, 8, 48, 32) == Box(8, 8, 24, 24)
    assert pad.input_to_image(32, 64, 0, 0, 16, 8) == Box(0, 0, 1, 8)  # padding clips to the image
    cropped = TransformConfig(image_size=80, crop_size=64)
    # 80 x 80 image, crop offset 8
    assert cropped.input_to_image(80, 80, 0, 0, 8, 8) == Box(8, 8, 8, 8)
    # a 3 x 3 patch of cells on an 8 x 8 grid over 64 px, clipped to the grid at the edge
    assert cell_rect(0, 7, (8, 8), 64, 3) == (0.0, 48.0, 16.0, 64.0)
    # a crop window keeps its size, moved inside the grid
    assert cell_rect(0, 7, (8, 8), 64, 3, shift=True) == (0.0, 40.0, 24.0, 64.0)


# -- explanations on a hand-made bank ---------------------------------------------------------
GRID, SIZE, D = 8, 64, 16


def _hand_made(tmp_path, index="flat", n_train=3, seed=0):
    """Training images on disk (64 x 64) and a bank of all their patches (provenance known):
    patches far apart (about 57), so a patch moved by a few units is matched with its own."""
    rng = np.random.default_rng(seed)
    train = (10 * rng.standard_normal((n_train, GRID, GRID, D))).astype(np.float32)
    paths = [write_image(tmp_path / "train" / f"{i}.png", rgb_image(SIZE, seed=i))
             for i in range(n_train)]
    scorer = PatchCore(coreset_ratio=1.0, index=index, progress=False).fit(Features(train))
    info = ModelInfo({}, {}, {}, [str(p) for p in paths], [],
                     train_image_sha256=[file_sha256(p) for p in paths])
    model = SimpleNamespace(scorer=scorer, info=info, threshold=2.0,
                            extractor=SimpleNamespace(transform=TransformConfig(image_size=SIZE)))
    return model, train, paths


def _scored(model, test, path="test.png"):
    res = model.scorer.score(Features(test[None]))
    return ScoredImage(str(path), float(res.image_scores[0]), 0.01, True, "",
                       res.patch_scores[0], res.nearest[0], Box(0, 0, GRID, GRID), (GRID, GRID))


def test_explanation_names_the_training_patch_and_its_box(tmp_path):
    model, train, paths = _hand_made(tmp_path)
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 3.0 / np.sqrt(D)  # 3 away from image 2's patch at (4, 4)
    test[1, 6] = train[1, 1, 6] + 2.0 / np.sqrt(D)  # 2 away from image 1's patch at (1, 6)
    scored = _scored(model, test)
    e = explain_scored(model, scored, top=3, image_size=(128, 64))
    first, second = e.patches[:2]
    assert first.distance == scored.score  # exactly the image score
    assert first.distance == pytest.approx(3.0, abs=1e-4)
    assert first.cell == (4, 4) and first.match.image_index == 2 and first.match.cell == (4, 4)
    assert first.match.path == str(paths[2]) and first.match.note == ""
    # the test image is 128 x 64 (stretched: y x2); cells 3..5 of 8 over 64 px -> 24..48
    assert first.box == Box(48, 24, 48, 24)
    assert first.match.box == Box(24, 24, 24, 24)  # in the 64 x 64 training image
    assert second.cell == (1, 6) and second.match.image_index == 1
    assert second.match.box == Box(0, 40, 24, 24)  # cells 0..2 x 5..7 of the 64 x 64 image
    assert len(e.patches) == 3 and e.patches[2].distance <= second.distance


def test_boxes_of_a_padded_image_stay_on_the_image(tmp_path):
    model, train, _ = _hand_made(tmp_path)
    model.extractor.transform = TransformConfig(image_size=SIZE, resize="pad")
    # a 32 x 64 image padded to 64 x 64: content rows 16..48 of the input = grid rows 2..5
    cells = model.extractor.transform.content_box(32, 64).on_grid(SIZE, (GRID, GRID))
    assert cells == Box(2, 0, 4, 8)
    test = train[0].copy()
    test[3, 4] = train[1, 3, 4] + 2.0 / np.sqrt(D)
    res = model.scorer.score(Features(test[None]))
    scored = ScoredImage("t.png", float(res.patch_scores[0][cells.slices()].max()), 0.1, True, "",
                         res.patch_scores[0][cells.slices()], res.nearest[0][cells.slices()],
                         cells, (GRID, GRID))
    e = explain_scored(model, scored, top=3, image_size=(32, 64))
    assert e.patches[0].cell == (3, 4) and e.patches[0].match.image_index == 1
    # rows 2..4 of the grid (kept on the content) = input y 16..40 = image y 0..24; x 24..48
    assert e.patches[0].box == Box(0, 24, 24, 24)
    for p in e.patches:
        assert p.box.top >= 0 and p.box.top + p.box.height <= 32
        assert 2 <= p.cell[0] <= 5


def test_top_distance_is_the_image_score_with_a_poor_approximate_index(tmp_path):
    rng = np.random.default_rng(0)
    train = rng.standard_normal((40, 16, 16, 32)).astype(np.float32)
    exact = PatchCore(coreset_ratio=1.0, index="flat", progress=False).fit(Features(train))
    approx = PatchCore(coreset_ratio=1.0, index="hnsw", progress=False).fit(Features(train))
    approx._nn.index.hnsw.efSearch = 4
    model = SimpleNamespace(scorer=approx, info=ModelInfo({}, {}, {}, [], []), threshold=1.0,
                            extractor=SimpleNamespace(transform=TransformConfig(image_size=128)))
    missed = 0
    for _ in range(8):
        test = (1.2 * rng.standard_normal((1, 16, 16, 32))).astype(np.float32)
        res = approx.score(Features(test))
        ref = exact.score(Features(test))
        missed += int((res.nearest != ref.nearest).sum())
        scored = ScoredImage("t.png", float(res.image_scores[0]), 0.5, True, "", res.patch_scores[0],
                             res.nearest[0], Box(0, 0, 16, 16), (16, 16))
        e = explain_scored(model, scored, top=3, image_size=(128, 128))
        top = e.patches[0]
        assert top.distance == scored.score
        assert top.distance == pytest.approx(float(ref.image_scores[0]), rel=1e-5)
        # the matched item really lies at that distance from the patch
        gap = np.linalg.norm(test[0][top.cell] - approx.memory_bank[top.match.item])
        assert gap == pytest.approx(top.distance, rel=1e-4)
    assert missed > 0  # the index really is approximate


def test_moved_and_changed_training_images_give_a_note(tmp_path):
    model, train, paths = _hand_made(tmp_path)
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 1.0
    test[0, 0] = train[1, 0, 0] + 0.9
    write_image(paths[2], rgb_image(SIZE, seed=99))  # changed content
    paths[1].unlink()  # moved away
    scored = _scored(model, test)
    e = explain_scored(model, scored, top=2, image_size=(64, 64))
    notes = {p.match.image_index: p.match.note for p in e.patches}
    assert "changed since fit" in notes[2] and "moved or deleted" in notes[1]
    assert all(p.match.box is None for p in e.patches)
    strip = render_strip(model, e, rgb_image(SIZE), TrainingImages(model))  # no crash
    assert strip.ndim == 3 and strip.shape[2] == 3


def test_a_training_image_with_a_non_utf8_name_is_opened_by_its_raw_name(tmp_path):
    model, train, paths = _hand_made(tmp_path)
    raw = os.fsdecode(os.path.join(os.fsencode(tmp_path / "train"), b"caf\xe9.png"))
    os.replace(paths[1], raw)
    files = [str(paths[0]), raw, str(paths[2])]
    text = [display_path(f) for f in files]  # as model.json keeps them: "caf\\xe9.png"
    sha = model.info.train_image_sha256
    test = train[0].copy()
    test[1, 6] = train[1, 1, 6] + 2.0 / np.sqrt(D)  # matched with image 1's patch at (1, 6)
    model.info = ModelInfo({}, {}, {}, text, [], train_image_sha256=sha,
                           train_images_raw=[raw_path_field(f) for f in files])
    match = explain_scored(model, _scored(model, test), top=1, image_size=(64, 64)).patches[0].match
    assert match.image_index == 1 and match.path == text[1] != raw
    assert match.note == "" and match.box == Box(0, 40, 24, 24)
    # a model saved before the raw names were recorded opens the text (which names no file)
    model.info = ModelInfo({}, {}, {}, text, [], train_image_sha256=sha)
    match = explain_scored(model, _scored(model, test), top=1, image_size=(64, 64)).patches[0].match
    assert "moved or deleted" in match.note and match.box is None


def test_strip_shows_the_matched_crop(tmp_path):
    import cv2

    from anomaly_inspect.screening.explain import BAND, GAP, PANEL

    model, train, _ = _hand_made(tmp_path)
    test = train[0].copy()
    test[2, 3] = train[1, 2, 3] + 1.5
    e = explain_scored(model, _scored(model, test), top=3, image_size=(64, 64))
    strip = render_strip(model, e, rgb_image(SIZE), TrainingImages(model))
    assert strip.shape == (2 * BAND + 3 * (PANEL + BAND), 4 * PANEL + 3 * GAP, 3)
    assert e.patches[0].cell == (2, 3) and e.patches[0].match.image_index == 1

    def nearest_image(panel):
        """The seed of the image (screened: 0, training i: i) whose pixels ``panel`` shows:
        the images share a gradient, their noise tells them apart."""
        diff = [np.median(np.abs(panel.astype(int) - cv2.resize(
            rgb_image(SIZE, seed=s), (PANEL, PANEL), interpolation=cv2.INTER_NEAREST)))
            for s in range(3)]
        return int(np.argmin(diff))

    # each row: the screened image and its patch's crop, then the matched training image's
    # crop and the whole training image (the crop of 9 cells is the whole 8 x 8 grid here)
    for k, p in enumerate(e.patches):
        row = strip[2 * BAND + k * (PANEL + BAND):][:PANEL]
        panels = [row[:, j * (PANEL + GAP):][:, :PANEL] for j in range(4)]
        assert [nearest_image(x) for x in panels] == [0, 0, p.match.image_index,
                                                      p.match.image_index], k


def test_models_without_provenance_say_refit(tmp_path):
    model, train, _ = _hand_made(tmp_path)
    model.scorer.provenance = None
    with pytest.raises(ExplainUnavailable, match="refit"):
        explain_scored(model, _scored(model, train[0]))
    model.scorer = SimpleNamespace(name="knn")
    with pytest.raises(ExplainUnavailable, match="no memory bank"):
        explain_scored(model, ScoredImage("t.png", 1.0, 0.5, True))


# -- the report with many rows -----------------------------------------------------------------
def _report_with_strips(out, strip, rows_in):
    """The HTML report of ``rows_in`` (path, score, flagged); each flagged row's explanation
    strip is a copy of ``strip``."""
    from anomaly_inspect.screening.html_report import write_report
    from anomaly_inspect.screening.runner import explain_relpath

    rows = []
    for path, score, flagged in rows_in:
        rows.append({"path": path, "score": score, "p_value": "0.5",
                     "decision": "anomalous" if flagged else "normal", "error": "", "overlay": "",
                     "raw_path": "", "explain": explain_relpath(path) if flagged else ""})
        if flagged:
            (out / explain_relpath(path)).parent.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(strip, out / explain_relpath(path))
    return write_report(out, rows, _report_model(), labels="none")


def _report_model():
    from anomaly_inspect.screening.calibration import calibrate

    cal = calibrate(np.linspace(0, 2, 50), 0.05, "test")
    return SimpleNamespace(calibration=cal, threshold=cal.threshold,
                           cfg=SimpleNamespace(method="patchcore"),
                           info=SimpleNamespace(created="now", backbone={"name": "b"},
                                                train_images=[]))


def test_the_report_says_a_model_without_calibration_scores_has_no_p_values(tmp_path):
    from anomaly_inspect.screening.calibration import Calibration
    from anomaly_inspect.screening.html_report import write_report

    model = _report_model()
    rows = [{"path": "/d/a.png", "score": "3", "p_value": "", "decision": "anomalous",
             "error": "", "overlay": "", "raw_path": "", "explain": ""}]
    page = write_report(tmp_path, rows, model, labels="none").read_text()
    assert "id='no-p-values'" not in page and "flagged iff p &le; expected FPR" in page
    model.calibration = Calibration.from_dict({**model.calibration.to_dict(), "scores": []})
    page = write_report(tmp_path, rows, model, labels="none").read_text()
    assert "<dd id='no-p-values'>not available" in page and "flagged iff p" not in page


def test_report_with_10000_rows_loads_strips_lazily(tmp_path):
    """10,000 rows, 1,000 flagged with a strip: the page opens with no strip decoded, no
    console errors, and opening one loads it."""
    out = tmp_path / "r"
    strip = write_image(tmp_path / "strip.jpg", rgb_image(64))
    report = _report_with_strips(out, strip, [
        (f"/data/batch/img_{i:05d}.png", f"{(3.0 if i % 10 == 0 else 1.0) + i * 1e-5:.6g}", i % 10 == 0)
        for i in range(10000)])
    html = report.read_text()
    assert html.count("class='why-row'") == 1000 and html.count("data-src=") == 1000
    assert not re.search(r"(?<!data-)src='explain/", html)  # nothing decoded until opened
    opened = out / "opened.html"
    opened.write_text(html.replace("<details class='why'>", "<details class='why' open>", 1))
    for page, loaded in ((report, 0), (opened, 1)):
        dom, console = headless_dom(page, 5000)
        assert console == []
        assert 'data-ready="1"' in dom
        assert len(re.findall(r'(?<!data-)src="explain/', dom)) == loaded
    summary = json.loads(html.split("id='summary'>")[1].split("</script>")[0])
    assert summary["n_flagged"] == 1000


@pytest.mark.parametrize("n_flagged, inlined", [(10, True), (250, False)])
def test_strips_are_inlined_only_up_to_a_limit(tmp_path, n_flagged, inlined):
    strip = write_image(tmp_path / "strip.jpg", rgb_image(16))
    html = _report_with_strips(tmp_path, strip, [
        (f"/data/img_{i:04d}.png", "3" if i < n_flagged else "1", i < n_flagged)
        for i in range(300)]).read_text()
    assert html.count("data-src='data:image/jpeg") == (n_flagged if inlined else 0)
    assert html.count("data-src='explain/") == (0 if inlined else n_flagged)


# -- review fixes: geometry, strips, report ---------------------------------------------------
def _scores_at(peaks: dict[tuple[int, int], float]) -> np.ndarray:
    s = np.zeros((GRID, GRID), np.float32)
    for cell, v in peaks.items():
        s[cell] = v
    return s


def _scored_map(scores, path="t.png", flagged=True):
    return ScoredImage(str(path), float(scores.max()), 0.01, flagged, "", scores,
                       np.zeros(scores.shape, np.int64), Box(0, 0, GRID, GRID), (GRID, GRID))


def _overlap(a: Box, b: Box) -> bool:
    return not (a.left + a.width <= b.left or b.left + b.width <= a.left
                or a.top + a.height <= b.top or b.top + b.height <= a.top)


def test_boxes_at_the_border_are_clipped_and_never_overlap(tmp_path):
    model, _, _ = _hand_made(tmp_path)
    # (0, 7) and (0, 4) are 3 cells apart: both chosen; shifted inside the grid, (0, 7)'s box
    # took cells 5..7 and overlapped (0, 4)'s 3..5
    s = _scores_at({(0, 7): 9, (0, 4): 8, (7, 0): 7})
    e = explain_scored(model, _scored_map(s), top=3, image_size=(64, 64))
    assert [p.cell for p in e.patches] == [(0, 7), (0, 4), (7, 0)]
    assert [p.box for p in e.patches] == [Box(0, 48, 16, 16), Box(0, 24, 16, 24),
                                          Box(48, 0, 16, 16)]
    rng = np.random.default_rng(0)
    for _ in range(20):
        e = explain_scored(model, _scored_map(rng.random((GRID, GRID)).astype(np.float32)),
                           top=9, image_size=(64, 64))
        boxes = [p.box for p in e.patches]
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_training_images_are_read_without_the_screening_pixel_budget(tmp_path):
    model, train, _ = _hand_made(tmp_path)
    model.extractor.transform = TransformConfig(image_size=SIZE, max_pixels=100)  # < 64 x 64
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 1.0
    e = explain_scored(model, _scored(model, test), top=1, image_size=(64, 64))
    assert e.patches[0].match.note == "" and e.patches[0].match.box == Box(24, 24, 24, 24)


def test_the_image_size_comes_from_the_header_without_decoding(tmp_path, monkeypatch):
    import anomaly_inspect.screening.explain as ex

    model, train, _ = _hand_made(tmp_path)
    path = write_image(tmp_path / "tall.png", np.zeros((128, 64, 3), np.uint8))
    read = ex.read_image

    def no_decode_of_the_test_image(p, *a, **k):
        assert str(p) != str(path), "the explained image was decoded again"
        return read(p, *a, **k)

    monkeypatch.setattr(ex, "read_image", no_decode_of_the_test_image)
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 1.0
    scored = _scored(model, test, path)
    e = explain_scored(model, scored, top=2)
    assert e.image_size == (128, 64)
    assert [p.box for p in e.patches] == \
        [p.box for p in explain_scored(model, scored, top=2, image_size=(128, 64)).patches]
    assert e.patches[0].box == Box(48, 24, 48, 24)  # y x2 (128 / 64)


def _huge_jpeg(path):
    """A 4100 x 4001 JPEG (16.4 MP): the loader decodes it at 1/8 size, 513 x 501 (each side
    rounded up)."""
    image = np.full((4001, 4100, 3), 128, np.uint8)
    image[:, :2050] = 60
    return write_image(path, image)


def _loaded(path, t):
    """``path`` as the loader gives it to fit and screen: (normalised model input, content box)."""
    from anomaly_inspect.data.loader import BatchStream

    batch = next(iter(BatchStream([path], t, 1, None, prefetch=False)))
    return batch.images[0], batch.boxes[0]


# cells 3..5 = input px 24..48 on the decode's 63 x 64 px of content: decode rows 191..382
# (x 501 / 63: 190.9..381.7), columns 192..385 (x 513 / 64: 192.4..384.8), both edges rounded
# half up; times 8 in the file's pixels
HUGE_BOX = Box(1528, 1536, 3056 - 1528, 3080 - 1536)


def test_a_huge_jpeg_is_explained_on_the_reduced_decode_it_was_scored_from(tmp_path):
    model, train, _ = _hand_made(tmp_path)
    t = model.extractor.transform = TransformConfig(image_size=SIZE, resize="pad")
    big = _huge_jpeg(tmp_path / "big.jpg")
    x, box = _loaded(big, t)
    # the decode's content (63 x 64 px) is not the header's (62 x 64 px, one row lower)
    assert box == Box(0, 0, 63, 64) and t.content_box(4001, 4100) == Box(1, 0, 62, 64)
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 1.0
    res = model.scorer.score(Features(test[None]))
    cells = box.on_grid(SIZE, (GRID, GRID))
    scored = ScoredImage(str(big), float(res.image_scores[0]), 0.01, True, "",
                         res.patch_scores[0][cells.slices()], res.nearest[0][cells.slices()],
                         cells, (GRID, GRID))
    e = explain_scored(model, scored, top=2)
    assert e.image_size == (4001, 4100) and e.decode_factor == 8
    assert e.patches[0].cell == (4, 4) and e.patches[0].box == HUGE_BOX
    rows, cols = box.slices()
    strip = render_strip(model, e, x[:, rows, cols], TrainingImages(model))  # was refused
    assert strip.ndim == 3 and strip.shape[2] == 3


def test_a_huge_training_jpeg_is_decoded_as_fit_decoded_it(tmp_path):
    from anomaly_inspect.screening.overlays import denormalise

    model, train, _ = _hand_made(tmp_path)
    t = model.extractor.transform = TransformConfig(image_size=SIZE, resize="pad")
    big = _huge_jpeg(tmp_path / "train" / "big.jpg")
    model.info.train_images[2], model.info.train_image_sha256[2] = str(big), file_sha256(big)
    x, box = _loaded(big, t)
    image, content, size, factor = TrainingImages(model).model_input(2)
    assert content == box and size == (4001, 4100) and factor == 8
    np.testing.assert_array_equal(image, denormalise(x, t.mean, t.std))
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 1.0
    match = explain_scored(model, _scored(model, test), top=1, image_size=(64, 64)).patches[0].match
    assert match.image_index == 2 and match.cell == (4, 4) and match.box == HUGE_BOX


def test_entries_name_a_non_utf8_image_as_results_csv_does_and_are_keyed_by_its_bytes(tmp_path):
    import os

    import anomaly_inspect.screening.explain as ex

    raw = os.fsdecode(b"/d/\xe9.png")  # a byte that is not UTF-8
    lookalike = "/d/\\xe9.png"  # the text it is shown as
    d = ex.Explanation(raw, 5.0, 2.0, True, (64, 64), (GRID, GRID), Box(0, 0, GRID, GRID)).to_dict()
    assert (d["path"], d["raw_path"]) == (lookalike, "/d/%E9.png")
    json.dumps(d, ensure_ascii=False).encode("utf-8")  # no lone surrogate left
    (tmp_path / ex.EXPLANATIONS_JSON).write_text(json.dumps(
        [{"path": "/d/old.png", "strip": "old_1.jpg"}, {"path": "/d/kept.png", "error": "x"}]))
    record = ex.ExplanationsRecord(tmp_path)  # entries written before raw_path existed
    record.add({**d, "strip": "a.jpg"})
    record.add({**ex.path_fields(lookalike), "error": "unreadable"})  # shown alike: another image
    record.add({**ex.path_fields("/d/old.png"), "strip": "old_2.jpg"})  # replaces the old entry
    record.append_batch()
    assert len(ex.read_explanations(tmp_path)) == 4
    record.close()
    doc = json.loads((tmp_path / ex.EXPLANATIONS_JSON).read_text(encoding="utf-8"))
    assert [(e["path"], e.get("raw_path"), e.get("strip")) for e in doc] == [
        ("/d/kept.png", None, None), (lookalike, "/d/%E9.png", "a.jpg"), (lookalike, "", None),
        ("/d/old.png", "", "old_2.jpg")]


def test_explain_takes_batch_size_as_screen_does(tmp_path, monkeypatch):
    import anomaly_inspect.screening as screening
    from anomaly_inspect.cli import main

    seen = {}

    def load(directory, **kwargs):
        seen.update(kwargs)
        raise ValueError("stop after loading")

    monkeypatch.setattr(screening, "load_model", load)
    main(["explain", str(tmp_path / "m"), "x.png", "--out", str(tmp_path / "o"), "--batch-size",
          "2", "--quiet"])
    assert seen["batch_size"] == 2


def _texts(monkeypatch):
    """The (text, colour) of every cv2.putText call from now on."""
    import cv2

    drawn = []
    put = cv2.putText
    monkeypatch.setattr(cv2, "putText", lambda img, text, org, font, scale, colour, *a, **k:
                        (drawn.append((text, tuple(colour))), put(img, text, org, font, scale,
                                                                   colour, *a, **k))[1])
    return drawn


def test_strip_colour_follows_the_decision_not_a_patch_against_the_threshold(tmp_path,
                                                                             monkeypatch):
    from anomaly_inspect.screening.explain import GREEN, RED

    model, train, _ = _hand_made(tmp_path)
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 3.0 / np.sqrt(D)  # distance 3 > threshold 2
    scored = _scored(model, test)
    scored.flagged = False  # as with num_neighbors > 1: the image score is not that distance
    e = explain_scored(model, scored, top=2, image_size=(64, 64))
    assert e.patches[0].distance > e.threshold and not e.flagged
    drawn = _texts(monkeypatch)
    render_strip(model, e, rgb_image(SIZE), TrainingImages(model))
    texts = [t for t, _ in drawn]
    assert texts[-5] == f"score {e.score:.3f} <= threshold 2.000: normal"
    assert texts[0].startswith("#1 patch distance 3.000") and "threshold" not in texts[0]
    colours = {c for t, c in drawn if t.startswith(("#", "score"))}
    assert colours == {GREEN} and RED not in colours


def test_strip_text_is_ascii_and_a_note_spans_both_panels(tmp_path, monkeypatch):
    from anomaly_inspect.screening.explain import BAND, GAP, PANEL

    model, train, paths = _hand_made(tmp_path)
    named = [shutil.copyfile(p, p.with_name(f"Prüfteil_{p.name}")) for p in paths]
    model.info.train_images = [str(p) for p in named]
    test = train[0].copy()
    test[4, 4] = train[2, 4, 4] + 1.0
    e = explain_scored(model, _scored(model, test), top=1, image_size=(64, 64))
    drawn = _texts(monkeypatch)
    render_strip(model, e, rgb_image(SIZE), TrainingImages(model))
    assert all(t.isascii() for t, _ in drawn)
    assert any("matched: Pr\\xfcfteil_2.png" in t for t, _ in drawn)

    paths[2].unlink()  # the match now has a note instead of crops
    model.info.train_images = [str(p) for p in paths]
    e = explain_scored(model, _scored(model, test), top=1, image_size=(64, 64))
    assert "moved or deleted" in e.patches[0].match.note
    strip = render_strip(model, e, rgb_image(SIZE), TrainingImages(model))
    assert strip.shape[1] == 4 * PANEL + 3 * GAP
    # one grey note from the third panel to the end, also where the gap between them was
    note = strip[2 * BAND:2 * BAND + PANEL, 2 * (PANEL + GAP):]
    assert (note[-20:] == 245).all()


def test_a_strip_draws_at_most_max_rows_and_refuses_a_thumbnail(tmp_path, monkeypatch):
    from anomaly_inspect.screening.explain import (
        BAND,
        MAX_STRIP_ROWS,
        PANEL,
        Explanation,
        Match,
        PatchExplanation,
    )

    model, _, _ = _hand_made(tmp_path)
    note = Match(0, -1, None, (0, 0), None, None, "origin unknown")
    e = Explanation("t.png", 5.0, 2.0, True, (64, 64), (GRID, GRID), Box(0, 0, GRID, GRID),
                    [PatchExplanation((4, 4), Box(24, 24, 24, 24), 5.0, note)] * 60)
    drawn = _texts(monkeypatch)
    strip = render_strip(model, e, rgb_image(SIZE), TrainingImages(model))
    assert strip.shape[0] == 2 * BAND + MAX_STRIP_ROWS * (PANEL + BAND)  # 50 rows, not 60
    assert any("(first 50 of 60 patches; all in the JSON)" in t for t, _ in drawn)
    with pytest.raises(ValueError, match=r"^a strip is drawn on the model input's "
                                         r"content \(64x64 px\), got a 16x16 px image"):
        render_strip(model, e, rgb_image(16), TrainingImages(model))


def test_cli_summary_says_a_view_box_is_in_model_input_pixels():
    from anomaly_inspect.commands.explain import summary
    from anomaly_inspect.screening.explain import Explanation, Match, PatchExplanation

    def line(view):
        match = Match(3, 0, "/train/007.png", (1, 2), Box(8, 16, 24, 24), view)
        e = Explanation("t.png", 5.0, 2.0, True, (64, 64), (8, 8), Box(0, 0, 8, 8),
                        [PatchExplanation((4, 4), Box(24, 24, 24, 24), 5.0, match)])
        return summary(e)

    assert line(None).endswith("matched 007.png (x 16, y 8, 24x24)")
    assert line((90, True)).endswith("matched 007.png (x 16, y 8, 24x24) in its view "
                                     "(rotated 90, flipped), model-input px")


def test_report_shows_only_the_strips_results_csv_records(tmp_path):
    from anomaly_inspect.screening.runner import explain_relpath

    strip = write_image(tmp_path / "strip.jpg", rgb_image(16))
    out = tmp_path / "r"
    html = _report_with_strips(out, strip, [("/d/a.png", "3", True), ("/d/b.png", "3", True),
                                            ("/d/c.png", "1", False)]).read_text()
    assert html.count("class='why-row'") == 2
    # strips an earlier run left on disk, for rows that do not name them (a later model's run,
    # an older results.csv without the column, a name that is not the row's strip)
    from anomaly_inspect.screening.html_report import write_report

    rows = [{"path": "/d/a.png", "score": "3", "p_value": "0.5", "decision": "anomalous",
             "error": "", "overlay": "", "raw_path": "", "explain": ""},
            {"path": "/d/b.png", "score": "3", "p_value": "0.5", "decision": "anomalous",
             "error": "", "overlay": "", "raw_path": ""},
            {"path": "/d/c.png", "score": "1", "p_value": "0.5", "decision": "anomalous",
             "error": "", "overlay": "", "raw_path": "", "explain": explain_relpath("/d/a.png")}]
    shutil.copyfile(strip, out / explain_relpath("/d/c.png"))
    html = write_report(out, rows, _report_model(), labels="none").read_text()
    assert "class='why-row'" not in html and "<th>why?</th>" not in html


def test_remote_results_carry_a_flagged_images_model_input_for_its_strip():
    from anomaly_inspect.screening.model import ScoredBatch
    from anomaly_inspect.screening.overlays import denormalise, fit_within
    from anomaly_inspect.screening.remote import thumbnailed

    t = TransformConfig(image_size=64)
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 48)).astype(np.float32)
    images = [ScoredImage("a.png", 5.0, 0.01, True), ScoredImage("b.png", 1.0, 0.5, False)]

    def sent(flagged_inputs):
        batch = ScoredBatch(list(images), {0: x[0], 1: x[1]})
        return next(thumbnailed(iter([(2, batch)]), t, 16, flagged_inputs))[1].inputs

    full = [denormalise(v, t.mean, t.std) for v in x]
    plain, kept = sent(False), sent(True)
    np.testing.assert_array_equal(plain[0], fit_within(full[0], 16))
    np.testing.assert_array_equal(kept[0], full[0])  # what the strip is drawn on, in uint8
    np.testing.assert_array_equal(kept[1], plain[1])  # normal images: the thumbnail only
    # the writer's thumbnail of the whole input is the one the worker would have sent
    np.testing.assert_array_equal(fit_within(kept[0], 16), plain[0])
    assert fit_within(plain[1], 16) is plain[1]


def test_strips_listed_in_explanations_json_are_not_inputs_other_files_are(tmp_path):
    from anomaly_inspect.screening.model import without_earlier_outputs

    folder = tmp_path / "in"
    names = ["part_1700000000.jpg", "part_1700000000_9e3ada8587.jpg", "x_0123456789.jpg"]
    files = [write_image(folder / n, rgb_image(8)) for n in names]
    assert without_earlier_outputs(files, [folder]) == files  # no explanations.json
    (folder / "explanations.json").write_text(json.dumps(
        [{"path": str(files[0]), "strip": names[1], "model_id": "m"},
         {"path": "/gone.png", "error": "unreadable", "model_id": "m"}]))
    assert without_earlier_outputs(files, [folder]) == [files[0], files[2]]
    assert without_earlier_outputs(files, [folder, files[1]]) == files  # named: an input
    (folder / "explanations.json").write_text("not ours")
    assert without_earlier_outputs(files, [folder]) == files


def test_strips_a_killed_runs_journal_lists_are_not_inputs_either(tmp_path):
    from anomaly_inspect.screening.explain import JOURNAL
    from anomaly_inspect.screening.model import without_earlier_outputs

    folder = tmp_path / "in"
    names = ["part.jpg", "part_9e3ada8587.jpg"]
    files = [write_image(folder / n, rgb_image(8)) for n in names]
    (folder / JOURNAL).write_text(json.dumps([{"path": str(files[0]), "strip": names[1]}]) + "\n")
    assert without_earlier_outputs(files, [folder]) == [files[0]]


# -- explanations.json and its journal -------------------------------------------------------
def _entry(k: int, model: str = "m") -> dict:
    return {"path": f"/d/{k}.png", "strip": f"{k}_0123456789.jpg", "model_id": model}


def test_batches_are_appended_and_folded_once_at_the_end(tmp_path, monkeypatch):
    import anomaly_inspect.screening.explain as ex

    written = []
    write_json = ex.write_json
    monkeypatch.setattr(ex, "write_json", lambda path, *a, **k: (written.append(path),
                                                                 write_json(path, *a, **k)))
    record = ex.ExplanationsRecord(tmp_path)
    for k in range(100):
        record.add(_entry(k))
        if k % 10 == 9:
            record.append_batch()
    assert written == [] and not (tmp_path / ex.EXPLANATIONS_JSON).exists()  # no rewrite per batch
    lines = (tmp_path / ex.JOURNAL).read_text().splitlines()
    assert [len(json.loads(line)) for line in lines] == [10] * 10  # a line per batch
    assert ex.read_explanations(tmp_path) == [_entry(k) for k in range(100)]  # readers see them
    record.close()
    assert written == [tmp_path / ex.EXPLANATIONS_JSON] and not (tmp_path / ex.JOURNAL).exists()
    assert json.loads((tmp_path / ex.EXPLANATIONS_JSON).read_text()) == [_entry(k) for k in range(100)]


def test_a_kill_loses_at_most_the_batch_in_flight_and_the_next_run_adds_to_the_file(tmp_path):
    import anomaly_inspect.screening.explain as ex

    first = ex.ExplanationsRecord(tmp_path)
    for k in range(3):
        first.add(_entry(k))
    first.close()  # explanations.json: 0, 1, 2
    killed = ex.ExplanationsRecord(tmp_path)
    killed.add(_entry(1, "new"))
    killed.add(_entry(3))
    killed.append_batch()
    killed.add(_entry(4))  # in flight when killed: never appended
    with open(tmp_path / ex.JOURNAL, "a") as fh:  # and a batch cut off half-written
        fh.write(json.dumps([_entry(5)])[:20])
    # no close(): kill -9
    want = [_entry(0), _entry(2), _entry(1, "new"), _entry(3)]
    assert ex.read_explanations(tmp_path) == want
    assert ex.listed_strips(tmp_path) == {d["strip"] for d in want}
    again = ex.ExplanationsRecord(tmp_path)  # folds the journal before appending to a new one
    assert not (tmp_path / ex.JOURNAL).exists()
    assert json.loads((tmp_path / ex.EXPLANATIONS_JSON).read_text()) == want
    again.add(_entry(0, "new"))
    again.append_batch()
    again.close()
    assert json.loads((tmp_path / ex.EXPLANATIONS_JSON).read_text()) == \
        [_entry(2), _entry(1, "new"), _entry(3), _entry(0, "new")]


def test_a_damaged_record_or_journal_is_refused_naming_it(tmp_path):
    import anomaly_inspect.screening.explain as ex

    journal = tmp_path / ex.JOURNAL
    journal.write_text(json.dumps([_entry(0)]) + "\n{cut\n" + json.dumps([_entry(1)]) + "\n")
    for call in (ex.read_explanations, ex.ExplanationsRecord):
        with pytest.raises(ValueError, match=re.escape(f"{journal}: line 2: damaged explanations "
                                                       f"journal")):
            call(tmp_path)
    journal.write_text(json.dumps({"path": "x"}) + "\n")
    with pytest.raises(ValueError, match=re.escape("line 1: damaged explanations journal (not a "
                                                   "list of entries with a path)")):
        ex.read_explanations(tmp_path)
    journal.write_bytes(b"\xff\xfe\n")
    with pytest.raises(ValueError, match=re.escape(f"{journal}: damaged explanations journal")):
        ex.read_explanations(tmp_path)
    assert ex.listed_strips(tmp_path) == set()
    journal.unlink()
    (tmp_path / ex.EXPLANATIONS_JSON).write_text("[{")
    with pytest.raises(ValueError, match=re.escape(f"{tmp_path / ex.EXPLANATIONS_JSON}: not an "
                                                   f"explanations file of this tool")):
        ex.ExplanationsRecord(tmp_path)
    assert (tmp_path / ex.EXPLANATIONS_JSON).read_text() == "[{"  # left as it was


def test_overlay_heat_sits_where_the_model_saw_it_through_crop_and_pad():
    from anomaly_inspect.screening.overlays import heatmap_overlay, image_map

    # stretch 200 x 100 to 96, centre crop 48 (offset 24), 6 x 6 cells of 8 px: cell (1, 4) is
    # input y 8..16, x 32..40 = resized y 32..40, x 56..64 = image y 66.7..83.3, x 58.3..66.7
    # (stretched over the whole image, as before, it was y 33.3..66.7, x 66.7..83.3)
    crop = TransformConfig(image_size=96, crop_size=48)
    scores = np.zeros((6, 6), np.float32)
    scores[1, 4] = 5
    amap, covered = image_map(scores, Box(0, 0, 6, 6), (6, 6), crop, (200, 100), (200, 100))
    y, x = np.unravel_index(np.argmax(amap), amap.shape)
    assert 66 <= y <= 83 and 58 <= x <= 66
    # the crop covers resized 24..72 = image y 50..150, x 25..75; no heat outside it
    expected = np.zeros((200, 100), bool)
    expected[50:150, 25:75] = True
    np.testing.assert_array_equal(covered, expected)
    image = rgb_image(100)[np.arange(200) // 2]
    over = heatmap_overlay(image, scores, Box(0, 0, 6, 6), (6, 6), crop, 0.0, 5.0)
    np.testing.assert_array_equal(over[~expected], image[~expected])
    assert (over[expected] != image[expected]).any()
    # pad: a 32 x 64 image lies in rows 16..48 of the 64 px input = grid rows 2..5 of 8; its
    # cell (1, 6) is grid cell (3, 6) = input y 24..32, x 48..56 = image y 8..16, x 48..56
    pad = TransformConfig(image_size=64, resize="pad")
    scores = np.zeros((4, 8), np.float32)
    scores[1, 6] = 5
    amap, covered = image_map(scores, Box(2, 0, 4, 8), (8, 8), pad, (32, 64), (32, 64))
    y, x = np.unravel_index(np.argmax(amap), amap.shape)
    assert 8 <= y < 16 and 48 <= x < 56 and covered.all()
    # shown at half size: the same place, halved
    amap, _ = image_map(scores, Box(2, 0, 4, 8), (8, 8), pad, (32, 64), (16, 32))
    y, x = np.unravel_index(np.argmax(amap), amap.shape)
    assert 4 <= y < 8 and 24 <= x < 28


def test_an_entry_from_before_raw_path_is_replaced_by_the_image_it_was_written_for(tmp_path):
    """An old entry of a non-UTF-8 image has only its escaped text as ``path``: explaining the
    image again replaces it (the new entry's key is the raw name, which the old text never
    matched, so both were kept)."""
    import os

    import anomaly_inspect.screening.explain as ex

    raw = os.fsdecode(b"/d/\xe9.png")
    (tmp_path / ex.EXPLANATIONS_JSON).write_text(json.dumps(
        [{"path": "/d/\\xe9.png", "strip": "old.jpg"}, {"path": "/d/other.png", "strip": "o.jpg"}]))
    record = ex.ExplanationsRecord(tmp_path)
    record.add({**ex.path_fields(raw), "strip": "new.jpg"})
    record.close()
    doc = json.loads((tmp_path / ex.EXPLANATIONS_JSON).read_text(encoding="utf-8"))
    assert [(e["path"], e.get("strip")) for e in doc] == [("/d/other.png", "o.jpg"),
                                                          ("/d/\\xe9.png", "new.jpg")]


# An earlier strip stays out of the inputs after its entry became an error; patch boxes in file
# pixels never overlap (also at a fractional scale). The model is a tiny one (random backbone
# weights, 64 px inputs, stretch) fitted once per module.
@pytest.fixture(scope="module")
def tiny_model(tmp_path_factory):
    """(fitted model, saved model directory)."""
    return fit_tiny_model(tmp_path_factory.mktemp("tiny_model"))


# -- an error entry keeps the strip of the entry it replaces ------------------------------
def test_a_strip_stays_out_of_the_inputs_after_its_entry_became_an_error(tiny_model, tmp_path):
    """explain --out INPUT_FOLDER; the image made unreadable (its entry becomes an error);
    restored: the first run's strip used to be scored as an input (and a strip of it drawn)."""
    model, _ = tiny_model
    inp = tmp_path / "inp2"
    first = write_image(inp / "000.png", rgb_image(40, seed=0))
    write_image(inp / "001.png", rgb_image(40, seed=1))
    names = ["000.png", "001.png"]
    assert [Path(p).name for p, _, _ in explain_to_dir(model, [inp], inp, top=1)] == names
    strip = {e["path"]: e["strip"] for e in json.loads((inp / "explanations.json").read_text())}
    good = first.read_bytes()
    first.write_bytes(b"not an image")
    results = explain_to_dir(model, [inp], inp, top=1)
    assert [Path(p).name for p, _, _ in results] == names and results[0][2]  # an error
    entries = {e["path"]: e for e in json.loads((inp / "explanations.json").read_text())}
    broken = entries[str(first)]
    assert broken["error"] and broken["strip"] == strip[str(first)]  # its file is still there
    assert (inp / broken["strip"]).is_file()
    first.write_bytes(good)
    results = explain_to_dir(model, [inp], inp, top=1)
    assert [Path(p).name for p, _, _ in results] == names  # no strip among them
    assert all(not error for _, _, error in results)
    assert sorted(p.name for p in inp.glob("*.jpg")) == sorted(strip.values())


# -- boxes of adjacent cells share no pixel --------------------------------------------------
@pytest.mark.parametrize("resize", ["stretch", "pad"])
@pytest.mark.parametrize("size,factor", [((900, 900), 1), ((900, 700), 1), ((1801, 1203), 2)])
def test_boxes_of_adjacent_cells_are_disjoint_and_cover_the_image(resize, size, factor):
    """Input-pixel cells mapped to file pixels at a fractional scale (320 px over 900 px):
    the start was floored and the end ceiled, so neighbours shared a pixel."""
    t = TransformConfig(image_size=320, resize=resize)
    content = t.content_box(-(-size[0] // factor), -(-size[1] // factor))
    for axis, (start, extent) in enumerate(((content.top, content.height),
                                            (content.left, content.width))):
        edges = list(range(start, start + extent, 8)) + [start + extent]
        spans = []
        for a, b in zip(edges, edges[1:], strict=False):
            rect = (a, 0, b, 8) if axis == 0 else (0, a, 8, b)
            box = input_to_file(t, size, factor, rect)
            spans.append((box.top, box.height) if axis == 0 else (box.left, box.width))
        assert spans[0][0] == 0 and spans[-1][0] + spans[-1][1] == size[axis]  # all of it
        for (s0, n0), (s1, _) in zip(spans, spans[1:], strict=False):
            assert s0 + n0 == s1, (axis, s0, n0, s1)  # touching, not overlapping, no gap


def test_explained_boxes_never_overlap_in_the_files_pixels(tmp_path):
    """Patches 3 cells apart at a fractional scale (64 px input over a 100 px image)."""
    model, _, _ = _hand_made(tmp_path)
    rng = np.random.default_rng(0)
    for _ in range(20):
        e = explain_scored(model, _scored_map(rng.random((8, 8)).astype(np.float32)), top=9,
                           image_size=(100, 100))
        boxes = [p.box for p in e.patches]
        assert len(boxes) > 1
        assert not any(_overlap(a, b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


def test_the_input_to_image_rounding_is_hand_checked():
    t = TransformConfig(image_size=64)
    # 100 / 64 = 1.5625 px per input px: 8 -> 12.5, 16 -> 25, 24 -> 37.5, rounded half up
    assert t.input_to_image(100, 100, 8, 8, 24, 16) == Box(13, 13, 25, 12)
    assert t.input_to_image(100, 100, 0, 0, 8, 8) == Box(0, 0, 13, 13)
    assert t.input_to_image(100, 100, 56, 56, 64, 64) == Box(88, 88, 12, 12)


def test_a_strip_that_cannot_be_drawn_again_keeps_the_earlier_ones_name(tiny_model, tmp_path,
                                                                       monkeypatch):
    import anomaly_inspect.screening.explain as ex

    model, _ = tiny_model
    inp = tmp_path / "inp"
    write_image(inp / "000.png", rgb_image(40, seed=0))
    explain_to_dir(model, [inp], inp, top=1)
    (entry,) = json.loads((inp / "explanations.json").read_text())

    def fails(*args):
        raise OSError("disk full")

    with monkeypatch.context() as m:
        m.setattr(ex, "render_strip", fails)
        (result,) = explain_to_dir(model, [inp], inp, top=1)
    assert result[2] == "no strip: disk full"
    (again,) = json.loads((inp / "explanations.json").read_text())
    assert again["strip_error"] == "disk full" and again["strip"] == entry["strip"]
    assert [Path(p).name for p, _, _ in explain_to_dir(model, [inp], inp, top=1)] == ["000.png"]

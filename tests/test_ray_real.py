"""Ray engine == local engine on real bottle images: same results.csv (scores to float
tolerance), same error rows and exit code, with the model loaded by path or shipped through the
object store together with the image bytes."""

from __future__ import annotations

import csv
import shutil

import numpy as np
import pytest

from anomaly_inspect.cli import main

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def bottle(bottle_subset):
    root = bottle_subset(12, 5, ("--target-fpr", "0.2"), corrupt=True)
    return root, _screen(root, "local")


def _rows(out):
    with open(out / "results.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def _screen(root, name, *extra):
    out = root / name
    shutil.rmtree(out, ignore_errors=True)
    rc = main(["screen", str(root / "model"), str(root / "bottle" / "test"), "--out", str(out),
               "--overlays", "all", "--batch-size", "4", "--quiet", *extra])
    thumbs = {p.name: p.read_bytes() for p in (out / "thumbs").iterdir()}
    return rc, _rows(out), sorted(p.name for p in (out / "overlays").iterdir()), thumbs


@pytest.mark.parametrize("extra", [["--workers", "2"], ["--workers", "1", "--no-shared-storage"]],
                         ids=["by-path", "shipped"])
def test_ray_scores_equal_local(bottle, ray_session, extra):
    root, (rc_l, local, ov_l, th_l) = bottle
    rc_r, remote, ov_r, th_r = _screen(root, "ray", "--engine", "ray", *extra)
    assert rc_l == rc_r == 1  # the corrupt file is an error row in both
    assert len(local) == len(remote) == 11
    for a, b in zip(local, remote, strict=True):
        assert (a["path"], a["decision"], a["error"], a["overlay"]) == \
               (b["path"], b["decision"], b["error"], b["overlay"])
    scores = [[float(r["score"] or "nan") for r in rows] for rows in (local, remote)]
    np.testing.assert_allclose(*scores, rtol=1e-5, equal_nan=True)
    assert ov_l == ov_r and len(ov_l) == 10
    assert th_l == th_r and len(th_l) == 20  # thumbnails made on the workers: the same bytes


def test_ray_strips_equal_local(bottle, ray_session):
    """Strips are drawn on a flagged image's model input, which the workers send for it (not
    on the thumbnail): the same files as a local run's."""
    root, _ = bottle
    ray = ["--engine", "ray", "--workers", "1"]
    strips = []
    for name, runs in (("x_local", [["--explain", "2"]]), ("x_ray", [["--explain", "2", *ray]]),
                       ("x_ray_resumed", [ray, ["--explain", "2", *ray]])):  # strips drawn later
        out = root / name
        shutil.rmtree(out, ignore_errors=True)
        for extra in runs:
            main(["screen", str(root / "model"), str(root / "bottle" / "test"), "--out",
                  str(out), "--overlays", "none", "--batch-size", "4", "--quiet", *extra])
        strips.append({p.name: p.read_bytes() for p in (out / "explain").glob("*.jpg")})
        assert sorted(r["explain"] for r in _rows(out) if r["explain"]) == \
            sorted(f"explain/{n}" for n in strips[-1])
    assert strips[0] and strips[0] == strips[1] == strips[2]

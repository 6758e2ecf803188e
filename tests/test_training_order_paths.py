"""`tune` validates the training images in fit's order (:func:`..data.layout.listing_order`),
so its folds, hence its result, do not depend on the Unicode form of the names (a copy made on
macOS is NFD) any more than a fit does."""

from __future__ import annotations

import json
import shutil
import unicodedata

from anomaly_inspect.cli import main
from anomaly_inspect.data.synthetic import generate_dataset


def test_tune_gives_the_same_result_for_names_in_nfc_and_in_nfd(tmp_path):
    demo = generate_dataset(tmp_path / "demo", "fabric", "fabric", n_train=12, n_test_good=1,
                            n_test_per_defect=1, image_size=64, seed=0)
    images = sorted((demo / "train" / "good").iterdir())
    # NFC sorts "café" after "caff", NFD between "cafe" and "caff": a plain sort of the two
    # copies puts the images in different orders
    names = [f"{i}{stem}.png" for i in range(4) for stem in ("cafe", "caf\u00e9", "caff")]
    runs = []
    for form in ("NFC", "NFD"):
        folder = tmp_path / form
        folder.mkdir()
        for name, image in zip(names, images, strict=True):
            shutil.copyfile(image, folder / unicodedata.normalize(form, name))
        out = tmp_path / f"{form}.json"
        assert main(["tune", "--train", str(folder), "--image-size", "64", "--batch-size", "8",
                     "--candidates", "lite0-64-8+16-rows-stretch,lite0-64-8+16-mean-stretch",
                     "--quiet", "--tune-cache", str(tmp_path / f"cache_{form}"),
                     "--output-json", str(out)]) == 0
        runs.append(json.loads(out.read_text())["tuning"]["candidates"])
    assert sorted(unicodedata.normalize("NFD", n) for n in names) != \
        sorted(unicodedata.normalize("NFC", n) for n in names)
    for nfc, nfd in zip(*runs, strict=True):
        nfc.pop("seconds"), nfd.pop("seconds")
        assert nfc == nfd


def test_an_mvtec_folder_of_links_is_fitted_in_fit_s_order(tmp_path):
    """train/good holding links to files elsewhere (a DVC-style cache): evaluate fits them in
    the order fit gives the same folder (by the files linked to), not by the links' names."""
    import numpy as np

    from anomaly_inspect.data.layout import listing_order
    from anomaly_inspect.data.mvtec import load_mvtec
    from anomaly_inspect.screening.model import input_images
    from layout_writer import rgb_image, write_image

    store, good = tmp_path / "store", tmp_path / "cat" / "train" / "good"
    good.mkdir(parents=True)
    for link, target in (("a.png", "z1.png"), ("b.png", "y2.png"), ("c.png", "x3.png")):
        write_image(store / target, rgb_image(32, seed=len(target) + ord(target[0])))
        (good / link).symlink_to(store / target)
    write_image(tmp_path / "cat" / "test" / "good" / "0.png", rgb_image(32, seed=9))
    write_image(tmp_path / "cat" / "test" / "bad" / "0.png", rgb_image(32, seed=8))
    write_image(tmp_path / "cat" / "ground_truth" / "bad" / "0_mask.png",
                np.full((32, 32), 255, np.uint8))
    train = [s.path for s in load_mvtec(tmp_path, "cat").train]
    assert [p.name for p in train] == ["c.png", "b.png", "a.png"]  # x3, y2, z1
    assert [p.resolve() for p in train] == [p.resolve() for p in listing_order(input_images([good], twins="once"))]

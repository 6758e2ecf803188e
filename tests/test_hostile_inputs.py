"""Screening you can leave running: hostile inputs, damaged models, concurrent runs, bad arguments.

Every case is generated on the fly in a temporary folder; the model is a tiny
one (random backbone weights, 64 px inputs) fitted once per module.
"""

from __future__ import annotations

import csv
import io
import json
import os
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import urllib.parse
import zlib
from pathlib import Path

import cv2
import numpy as np
import pytest
from PIL import Image, ImageOps
from safetensors.numpy import load_file, save_file

from anomaly_inspect.cli import main
from anomaly_inspect.config import ModelConfig
from anomaly_inspect.data.image_io import ImageReadError, read_image
from anomaly_inspect.data.layout import expand_inputs
from anomaly_inspect.data.loader import iter_batches
from anomaly_inspect.data.transforms import TransformConfig
from anomaly_inspect.screening import ModelFormatError, fit, load_model
from anomaly_inspect.screening.lock import LOCK_NAME, OutputLock, OutputLockedError
from anomaly_inspect.screening.model_dir import CHECKSUMS_JSON, save_model_dir
from anomaly_inspect.screening.runner import CSV_COLUMNS, screen
from layout_writer import fit_tiny_model, rgb_image, write_image

REPO = Path(__file__).resolve().parents[1]
SRC = str(REPO / "inspect")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(root folder, fitted model, saved model directory)."""
    root = tmp_path_factory.mktemp("hostile")
    return root, *fit_tiny_model(root)


def _rows(out: Path) -> list[dict[str, str]]:
    data = (out / "results.csv").read_bytes()
    text = data.decode("utf-8")  # strict: must be valid UTF-8
    reader = csv.DictReader(io.StringIO(text, newline=""))
    assert tuple(reader.fieldnames) == CSV_COLUMNS
    return list(reader)


def _screen(model, inputs, out, **kw):
    return screen(model, inputs, out, progress=False, report=False, overlays="none", **kw)


def _by_name(rows):
    return {os.path.basename(r["path"]): r for r in rows}


# ---------------------------------------------------------------- inputs accounted for once


def test_one_row_per_file_whatever_the_spelling(tiny, tmp_path, monkeypatch):
    root, model, _ = tiny
    a = write_image(tmp_path / "a.png", rgb_image(40, seed=1))
    (tmp_path / "x").mkdir()
    (tmp_path / "link.png").symlink_to(a)
    (tmp_path / "dirlink").symlink_to(tmp_path, target_is_directory=True)
    monkeypatch.chdir(tmp_path)
    spellings = ["a.png", str(a), "x/../a.png", "./a.png", "link.png", "dirlink/a.png",
                 str(tmp_path / "x" / ".." / "a.png")]
    assert expand_inputs(spellings) == [a.resolve()]
    s = _screen(model, spellings, tmp_path / "out")
    rows = _rows(tmp_path / "out")
    assert s.n_inputs == 1 and len(rows) == 1 and rows[0]["path"] == str(a.resolve())


def _random_tree(root: Path, seed: int) -> set[Path]:
    """A folder tree with image files and symlinks to folders (loops included); the real files."""
    rng = np.random.default_rng(seed)
    root.mkdir()
    dirs = [root]
    files: set[Path] = set()
    png = cv2.imencode(".png", rgb_image(8, seed=seed))[1].tobytes()
    for i in range(12):
        d = dirs[rng.integers(len(dirs))] / f"d{i}"
        d.mkdir()
        dirs.append(d)
    for i in range(20):
        f = dirs[rng.integers(len(dirs))] / f"f{i}.png"
        f.write_bytes(png)
        files.add(f.resolve())
    for i in range(8):  # links to arbitrary folders: ancestors (loops), siblings, itself
        src, dst = dirs[rng.integers(len(dirs))], dirs[rng.integers(len(dirs))]
        (src / f"l{i}").symlink_to(dst, target_is_directory=True)
    (root / "self").symlink_to(root, target_is_directory=True)
    return files


@pytest.mark.parametrize("seed", range(6))
def test_walks_and_recursive_globs_terminate_once_per_file(tmp_path, seed, monkeypatch):
    files = _random_tree(tmp_path / "tree", seed)
    monkeypatch.chdir(tmp_path)
    for inputs in (["tree"], ["tree/**/*.png"], [str(tmp_path / "tree" / "**" / "*.png")],
                   ["tree/**"], ["tree", "tree/**/*.png", "tree/self/self/d0/.."]):
        got = expand_inputs(inputs)
        assert len(got) == len(set(got)) == len(files), inputs
        assert set(got) == files


def test_glob_keeps_glob_semantics(tmp_path, monkeypatch):
    for rel in ("a.png", "b.jpg", "sub/c.png", "sub/deep/d.png", ".hidden/e.png", "sub/.f.png"):
        write_image(tmp_path / rel, rgb_image(8))
    monkeypatch.chdir(tmp_path)
    names = lambda pattern: sorted(p.name for p in expand_inputs([pattern]))  # noqa: E731
    assert names("*.png") == ["a.png"]
    assert names("**/*.png") == ["a.png", "c.png", "d.png"]  # like glob: hidden skipped
    assert names("sub/*/*.png") == ["d.png"]
    assert names("s?b/[cd].png") == ["c.png"]
    with pytest.raises(FileNotFoundError, match="matched no files"):
        expand_inputs(["*.tif"])


def _animated_gif(path: Path, frames: int = 3) -> Path:
    imgs = [Image.fromarray(rgb_image(32, seed=i)) for i in range(frames)]
    imgs[0].save(path, save_all=True, append_images=imgs[1:], duration=50, loop=0)
    return path


def test_every_image_like_file_in_a_folder_gets_a_row(tiny, tmp_path):
    root, model, _ = tiny
    d = tmp_path / "in"
    d.mkdir()
    png = cv2.imencode(".png", rgb_image(40, seed=3))[1].tobytes()
    (d / "scan_0001").write_bytes(png)  # no extension: found by content
    (d / "scan.dat").write_bytes(cv2.imencode(".jpg", rgb_image(40, seed=4))[1].tobytes())
    write_image(d / "UPPER.PNG", rgb_image(40, seed=5))
    Image.fromarray(rgb_image(32, seed=6)).save(d / "still.gif")
    _animated_gif(d / "moving.gif")
    (d / "gone.png").symlink_to(d / "deleted.png")  # dangling
    (d / "gone_too").symlink_to("/nonexistent/file")
    (d / "notes.txt").write_text("not an image")
    (d / "data.bin").write_bytes(os.urandom(64))
    s = _screen(model, [d], tmp_path / "out")
    rows = _by_name(_rows(tmp_path / "out"))
    assert set(rows) == {"scan_0001", "scan.dat", "UPPER.PNG", "still.gif", "moving.gif",
                         "gone.png", "gone_too"}
    for ok in ("scan_0001", "scan.dat", "UPPER.PNG", "still.gif"):
        assert not rows[ok]["error"] and np.isfinite(float(rows[ok]["score"])), ok
    assert "multi-frame image (3 frames" in rows["moving.gif"]["error"]
    assert "broken symbolic link" in rows["gone.png"]["error"]
    assert "broken symbolic link" in rows["gone_too"]["error"]
    assert s.n_errors == 3 and s.exit_code == 1


def test_dangling_symlink_on_the_command_line_is_a_row_not_a_stop(tiny, tmp_path, capsys):
    root, _, model_dir = tiny
    good = write_image(tmp_path / "good.png", rgb_image(40, seed=7))
    (tmp_path / "dangling.png").symlink_to(tmp_path / "nowhere.png")
    out = tmp_path / "out"
    rc = main(["screen", str(model_dir), str(tmp_path / "dangling.png"), str(good),
               "--out", str(out), "--quiet", "--no-report"])
    assert rc == 1
    rows = _by_name(_rows(out))
    assert not rows["good.png"]["error"]
    assert rows["dangling.png"]["decision"] == "error"
    assert "broken symbolic link" in rows["dangling.png"]["error"]
    assert "1 image(s) could not be screened" in capsys.readouterr().err


# ---------------------------------------------------------------- bounded decode memory


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_claiming(width: int, height: int, rows: int = 1) -> bytes:
    """A PNG whose header claims width x height but holds only ``rows`` rows of pixels."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    idat = zlib.compress(b"\x00" * (rows * (3 * width + 1)))
    return (b"\x89PNG\r\n\x1a\n" + _png_chunk(b"IHDR", ihdr) + _png_chunk(b"IDAT", idat)
            + _png_chunk(b"IEND", b""))


@pytest.mark.parametrize("side", [32000, 60000, 200_000])
def test_pixel_budget_is_checked_before_decoding(tiny, tmp_path, side):
    path = tmp_path / f"huge_{side}.png"
    path.write_bytes(_png_claiming(side, side))
    with pytest.raises(ImageReadError, match="larger than the pixel budget") as info:
        read_image(path)
    assert f"{side}x{side}" in info.value.reason and str(path) in str(info.value)
    _, model, _ = tiny
    _screen(model, [path], tmp_path / "out")
    (row,) = _rows(tmp_path / "out")
    assert row["decision"] == "error" and "larger than the pixel budget" in row["error"]


def test_pixel_budget_is_configurable(tiny, tmp_path):
    path = write_image(tmp_path / "a.png", rgb_image(40))
    assert read_image(path, max_pixels=1600).shape == (40, 40, 3)
    with pytest.raises(ImageReadError, match=r"40x40 = 0.0 MP > 0.001599 MP"):
        read_image(path, max_pixels=1599)
    root, _, model_dir = tiny
    out = tmp_path / "out"
    assert main(["screen", str(model_dir), str(path), "--out", str(out), "--quiet", "--no-report",
                 "--max-pixels", "1000"]) == 1
    assert "pixel budget" in _rows(out)[0]["error"]


def test_large_jpeg_decoded_reduced_when_allowed(tmp_path):
    from anomaly_inspect.data import image_io

    img = np.kron(rgb_image(16, seed=2), np.ones((250, 300, 1), np.uint8))  # 4000 x 4800
    path = tmp_path / "big.jpg"
    assert cv2.imwrite(str(path), cv2.cvtColor(img, cv2.COLOR_RGB2BGR))
    assert read_image(path).shape == (4000, 4800, 3)  # no size hint: full size
    small = read_image(path, min_side=640)
    assert small.shape == (500, 600, 3) or small.shape[0] >= 640  # 19 MP > 16 MP: reduced
    assert small.shape[0] < 4000 and min(small.shape[:2]) >= 500
    full = cv2.resize(read_image(path), small.shape[1::-1], interpolation=cv2.INTER_AREA)
    assert np.abs(full.astype(int) - small).mean() < 4
    assert image_io.REDUCE_ABOVE_PIXELS < 4000 * 4800


# ---------------------------------------------------------------- correct reading


def test_png_with_bytes_after_iend_is_read_with_a_warning(tmp_path, caplog):
    img = rgb_image(24, seed=8)
    path = tmp_path / "trailing.png"
    path.write_bytes(cv2.imencode(".png", cv2.cvtColor(img, cv2.COLOR_RGB2BGR))[1].tobytes()
                     + os.urandom(100))
    np.testing.assert_array_equal(read_image(path), img)
    assert "100 bytes after the PNG's end" in caplog.text
    cut = tmp_path / "cut.png"
    cut.write_bytes(path.read_bytes()[:200])
    with pytest.raises(ImageReadError, match="truncated PNG"):
        read_image(cut)


@pytest.mark.parametrize("orientation", range(1, 9))
def test_exif_orientation_applied(tmp_path, orientation):
    # four flat quadrants of distinct colours: JPEG keeps them, any wrong turn moves them
    q = [(250, 10, 10), (10, 250, 10), (10, 10, 250), (250, 250, 10)]
    img = np.zeros((32, 48, 3), np.uint8)
    img[:16, :24], img[:16, 24:], img[16:, :24], img[16:, 24:] = q
    exif = Image.Exif()
    exif[0x0112] = orientation
    path = tmp_path / f"o{orientation}.jpg"
    Image.fromarray(img).save(path, "JPEG", quality=95, exif=exif.tobytes())
    want = np.asarray(ImageOps.exif_transpose(Image.open(path)).convert("RGB")).astype(int)
    got = read_image(path)
    assert got.shape == want.shape
    assert np.abs(got.astype(int) - want).mean() < 3
    if orientation == 6:  # 90 degrees clockwise: the top-left quadrant ends up top-right
        assert got.shape[:2] == (48, 32) and tuple(int(v) for v in got[4, 28]) == pytest.approx(q[0], abs=12)


def _mutations(data: bytes, rng: np.random.Generator) -> list[bytes]:
    out = [data[: int(rng.integers(1, len(data)))] for _ in range(4)]
    for _ in range(6):
        b = bytearray(data)
        for pos in rng.integers(0, len(b), int(rng.integers(1, 8))):
            b[pos] = int(rng.integers(0, 256))
        out.append(bytes(b))
    return out


@pytest.mark.parametrize("fmt", [".png", ".jpg", ".bmp", ".tif", ".webp", ".gif"])
def test_damaged_images_read_or_fail_cleanly(tmp_path, fmt):
    rng = np.random.default_rng(abs(hash(fmt)) % 2**32)
    if fmt == ".gif":
        buf = io.BytesIO()
        Image.fromarray(rgb_image(24)).save(buf, "GIF")
        data = buf.getvalue()
    else:
        data = cv2.imencode(fmt, rgb_image(24))[1].tobytes()
    for k, bad in enumerate(_mutations(data, rng)):
        path = tmp_path / f"m{k}{fmt}"
        path.write_bytes(bad)
        try:
            img = read_image(path)
        except ImageReadError as exc:
            assert exc.reason and str(path) in str(exc)
        else:
            assert img.dtype == np.uint8 and img.ndim == 3 and img.shape[2] == 3


# ---------------------------------------------------------------- arguments


@pytest.mark.parametrize("args, option", [
    (["screen", "M", "x.png", "--out", "o", "--batch-size", "-2"], "--batch-size"),
    (["screen", "M", "x.png", "--out", "o", "--batch-size", "0"], "--batch-size"),
    (["screen", "M", "x.png", "--out", "o", "--max-pixels", "-1"], "--max-pixels"),
    (["fit", "--train", "t", "--out", "m", "--batch-size", "-3"], "--batch-size"),
    (["fit", "--train", "t", "--out", "m", "--image-size", "-5"], "--image-size"),
    (["fit", "--train", "t", "--out", "m", "--image-size", "0"], "--image-size"),
    (["fit", "--train", "t", "--out", "m", "--image-size", "abc"], "--image-size"),
    (["fit", "--train", "t", "--out", "m", "--target-fpr", "0"], "--target-fpr"),
    (["fit", "--train", "t", "--out", "m", "--target-fpr", "1.5"], "--target-fpr"),
    (["fit", "--train", "t", "--out", "m", "--calibration-fraction", "nan"],
     "--calibration-fraction"),
    (["fit", "--train", "t", "--out", "m", "--seed", "-1"], "--seed"),
    (["fit", "--out", "m"], "--train"),
    (["fit", "--train", "t", "--out", "m", "--layers", "a,b"], "--layers"),
    (["bench-backbone", "--rounds", "0"], "--rounds"),
    (["bench-backbone", "--image-size", "-1"], "--image-size"),
    (["bench-backbone", "--batch-size", "0"], "--batch-size"),
    (["demo", "--data-size", "8"], "--data-size"),
])
def test_bad_arguments_fail_with_one_line(args, option, capsys):
    with pytest.raises(SystemExit) as info:
        main(args)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1, err
    assert option in err and "error:" in err


def test_batch_size_checked_in_the_library():
    with pytest.raises(ValueError, match="batch size must be a positive"):
        next(iter_batches([Path("a.png")], TransformConfig(64), batch_size=-2))


# ---------------------------------------------------------------- paths that are not UTF-8


def test_non_utf8_file_name(tiny, tmp_path):
    _, model, _ = tiny
    raw_dir = os.fsencode(tmp_path / "in")
    os.mkdir(raw_dir)
    raw = os.path.join(raw_dir, b"caf\xe9 \xff.png")
    with open(raw, "wb") as fh:
        fh.write(cv2.imencode(".png", rgb_image(40, seed=9))[1].tobytes())
    write_image(tmp_path / "in" / "plain é.png", rgb_image(40, seed=10))
    out = tmp_path / "out"
    s = _screen(model, [tmp_path / "in"], out)
    assert s.n_scored == 2
    rows = _by_name(_rows(out))  # decodes strictly as UTF-8
    odd = rows["caf\\xe9 \\xff.png"]
    assert not odd["error"] and urllib.parse.unquote_to_bytes(odd["raw_path"]) == raw
    assert rows["plain é.png"]["raw_path"] == ""
    again = _screen(model, [tmp_path / "in"], out)  # resume recognises both
    assert again.n_resumed == 2 and again.n_scored == 0 and len(_rows(out)) == 2


def test_fit_on_non_utf8_file_names_saves_a_utf8_model(tmp_path):
    raw_dir = os.fsencode(tmp_path / "train")
    os.mkdir(raw_dir)
    for i in range(5):
        with open(os.path.join(raw_dir, b"img\xff%d.png" % i), "wb") as fh:
            fh.write(cv2.imencode(".png", rgb_image(40, seed=i))[1].tobytes())
    cfg = ModelConfig()
    cfg.backbone.weights = "random"
    cfg.features.image_size = 64
    model = fit([tmp_path / "train"], cfg, calibration_fraction=0.4, progress=False)
    saved = model.save(tmp_path / "m")
    info = json.loads((saved / "model.json").read_bytes().decode("utf-8"))
    assert len(info["train_images"]) == 3 and all("\\xff" in p for p in info["train_images"])
    assert load_model(saved).threshold == model.threshold
    # the raw names are kept too (as results.csv's raw_path): explanations open the files
    from anomaly_inspect.screening.explain import TrainingImages

    raw = [urllib.parse.unquote_to_bytes(r) for r in info["train_images_raw"]]
    assert all(os.path.isfile(r) and b"\xff" in r for r in raw)
    train = TrainingImages(load_model(saved))
    assert [train.note(i) for i in range(3)] == ["", "", ""]


def test_screen_refuses_a_model_directory_as_out_and_labels_without_a_report(tiny, tmp_path,
                                                                              capsys):
    root, _, saved = tiny
    img = write_image(tmp_path / "a.png", rgb_image(40))
    before = sorted(p.name for p in saved.iterdir())
    assert main(["screen", str(saved), str(img), "--out", str(saved), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {saved}: is a model directory; choose another --out (screening "
                   f"writes results.csv, thumbs/ and report.html into it)")
    assert sorted(p.name for p in saved.iterdir()) == before
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\na.png,0\n")
    out = tmp_path / "out"
    assert main(["screen", str(saved), str(img), "--out", str(out), "--no-report",
                 "--labels", str(labels), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --labels: used only by the report") and "\n" not in err
    assert not out.exists()


# ---------------------------------------------------------------- one writer per output folder


def test_second_run_on_a_locked_folder_refuses(tiny, tmp_path):
    _, model, _ = tiny
    img = write_image(tmp_path / "a.png", rgb_image(40))
    out = tmp_path / "out"
    out.mkdir()
    with OutputLock(out), pytest.raises(OutputLockedError) as info:
        _screen(model, [img], out)
    msg = str(info.value)
    assert f"pid {os.getpid()}" in msg and socket.gethostname() in msg and "out_dir" in msg
    assert not (out / "results.csv").exists()  # refused before touching anything
    _screen(model, [img], out)  # released: runs
    assert len(_rows(out)) == 1 and not (out / LOCK_NAME).exists()


def test_lock_of_a_killed_run_is_taken_over(tiny, tmp_path, caplog):
    _, model, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    holder = subprocess.Popen(
        [sys.executable, "-c", textwrap.dedent(f"""
            import sys, time
            from anomaly_inspect.screening.lock import OutputLock
            OutputLock({str(out)!r}).acquire()
            print("locked", flush=True)
            time.sleep(600)
        """)], stdout=subprocess.PIPE, text=True, env={**os.environ, "PYTHONPATH": SRC})
    try:
        assert holder.stdout.readline().strip() == "locked"
        with pytest.raises(OutputLockedError, match=f"pid {holder.pid}"):
            OutputLock(out).acquire()
    finally:
        holder.send_signal(signal.SIGKILL)
        holder.wait()
    assert json.loads((out / LOCK_NAME).read_text())["pid"] == holder.pid  # left behind
    img = write_image(tmp_path / "a.png", rgb_image(40))
    _screen(model, [img], out)
    assert "taking over the lock" in caplog.text and f"pid {holder.pid}" in caplog.text
    assert len(_rows(out)) == 1


def test_lock_from_another_host_is_not_taken_over(tiny, tmp_path):
    _, model, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / LOCK_NAME).write_text(json.dumps({"pid": 1, "host": "elsewhere", "started": "t"}))
    with pytest.raises(OutputLockedError, match="host elsewhere.*delete"):
        _screen(model, [write_image(tmp_path / "a.png", rgb_image(40))], out)


def test_lock_without_flock_falls_back_to_the_pid(tmp_path, monkeypatch):
    import errno

    from anomaly_inspect.screening import lock as lock_mod

    def no_flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(lock_mod.fcntl, "flock", no_flock)
    host = socket.gethostname()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": os.getppid(), "host": host}))
    with pytest.raises(OutputLockedError, match=f"pid {os.getppid()}"):  # alive: refused
        OutputLock(tmp_path).acquire()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    (tmp_path / LOCK_NAME).write_text(json.dumps({"pid": dead.pid, "host": host}))
    with OutputLock(tmp_path):  # its holder is gone: taken over
        assert json.loads((tmp_path / LOCK_NAME).read_text())["pid"] == os.getpid()
    assert not (tmp_path / LOCK_NAME).exists()


def test_concurrent_cli_runs_write_each_image_once(tiny, tmp_path):
    root, _, model_dir = tiny
    for i in range(24):
        write_image(tmp_path / "in" / f"{i:02d}.png", rgb_image(40, seed=100 + i))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "anomaly_inspect.cli", "screen", str(model_dir),
           str(tmp_path / "in"), "--out", str(out), "--quiet", "--no-report", "--batch-size", "2"]
    env = {**os.environ, "PYTHONPATH": SRC}
    procs = [subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True) for _ in range(2)]
    results = [(p.wait(timeout=300), p.stderr.read()) for p in procs]
    for rc, err in results:
        assert rc == 0 or (rc == 1 and "in use by another run" in err), err
    assert any(rc == 0 for rc, _ in results)
    rows = _rows(out)
    assert len(rows) == 24 and len({r["path"] for r in rows}) == 24


def test_resume_drops_repeated_rows(tiny, tmp_path):
    _, model, _ = tiny
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", rgb_image(40, seed=i))
    out = tmp_path / "out"
    _screen(model, [tmp_path / "in"], out)
    text = (out / "results.csv").read_text(encoding="utf-8")
    header, *lines = text.splitlines(keepends=True)
    (out / "results.csv").write_text(header + "".join(lines * 2), encoding="utf-8")  # 6 rows
    s = _screen(model, [tmp_path / "in"], out)
    assert s.n_resumed == 3 and s.n_scored == 0 and len(_rows(out)) == 3


def test_results_of_the_previous_column_layout_resume(tiny, tmp_path):
    _, model, _ = tiny
    img = write_image(tmp_path / "a.png", rgb_image(40))
    out = tmp_path / "out"
    _screen(model, [img], out)
    rows = _rows(out)
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS[:-1], extrasaction="ignore")
        w.writeheader()
        w.writerows(rows)
    s = _screen(model, [img], out)
    assert s.n_resumed == 1 and _rows(out) == rows


def test_results_of_the_oldest_layout_with_raw_names_resume_once(tiny, tmp_path):
    """The layout before raw_path wrote a non-UTF-8 name's raw bytes into path: resumed as the
    same file (not scored again into a second row), and rewritten in the current layout."""
    _, model, _ = tiny
    folder = os.fsencode(tmp_path / "in")
    os.mkdir(folder)
    raw = os.path.join(folder, b"caf\xe9.png")
    with open(raw, "wb") as fh:
        fh.write(cv2.imencode(".png", rgb_image(40, seed=3))[1].tobytes())
    out = tmp_path / "out"
    _screen(model, [tmp_path / "in"], out)
    (row,) = _rows(out)
    old = ",".join(CSV_COLUMNS[:-3]).encode() + b"\n" + b",".join(
        [raw, *(row[c].encode() for c in CSV_COLUMNS[1:-3])]) + b"\n"
    (out / "results.csv").write_bytes(old)
    s = _screen(model, [tmp_path / "in"], out)
    assert (s.n_resumed, s.n_scored) == (1, 0)
    assert _rows(out) == [row] and urllib.parse.unquote_to_bytes(row["raw_path"]) == raw


def _write_rows(out, rows) -> None:
    """Rewrite ``out``'s results.csv with ``rows`` (as a hand edit would)."""
    with open(out / "results.csv", "w", newline="", encoding="utf-8") as fh:
        w = csv.DictWriter(fh, CSV_COLUMNS)
        w.writeheader()
        w.writerows(rows)


@pytest.mark.parametrize(("edit", "message"), [
    ({"score": "abc"}, "score 'abc' is not a number"),
    ({"decision": "maybe"}, "decision 'maybe' is none of normal, anomalous, error"),
    ({"decision": "error"}, "decision 'error' with error ''"),
    ({"p_value": "x"}, "p_value 'x' is not a number"),
])
def test_a_hand_edited_results_row_is_refused_naming_its_line(tiny, tmp_path, edit, message):
    _, model, _ = tiny
    imgs = [write_image(tmp_path / "in" / f"{i}.png", rgb_image(40, seed=i)) for i in range(2)]
    out = tmp_path / "out"
    _screen(model, imgs, out)
    rows = _rows(out)
    rows[1].update(edit)
    _write_rows(out, rows)
    with pytest.raises(ValueError) as info:
        _screen(model, imgs, out)
    assert str(info.value).startswith(f"{out / 'results.csv'}:3: {message}")
    assert "rescore=True" in str(info.value)
    assert _screen(model, imgs, out, rescore=True).n_scored == 2


def test_a_row_with_a_nan_score_as_screen_writes_it_is_resumed(tiny, tmp_path):
    """screen writes a NaN score as an empty field; reading it back is no reason to refuse,
    and the report leaves it out of its charts and metrics (the histogram was drawn at
    x="nan" and the AUROC raised after every image was scored)."""
    _, model, _ = tiny
    imgs = [write_image(tmp_path / "in" / f"{i}.png", rgb_image(40, seed=i)) for i in range(3)]
    out = tmp_path / "out"
    _screen(model, imgs, out)
    rows = _rows(out)
    rows[1]["score"] = ""
    _write_rows(out, rows)
    assert _screen(model, imgs, out).n_resumed == 3
    labels = tmp_path / "labels.csv"
    labels.write_text("path,label\nin/0.png,0\nin/1.png,1\nin/2.png,1\n")
    assert screen(model, imgs, out, progress=False, overlays="none",
                  labels=str(labels)).n_resumed == 3
    html = (out / "report.html").read_text(encoding="utf-8")
    assert "1 image(s) without a finite score" in html and '"nan"' not in html
    assert "AUROC" in html


@pytest.mark.parametrize("left", ["empty", "header", "header, other model"])
def test_results_without_rows_are_a_fresh_start(tiny, tmp_path, left):
    """A run killed before its first row (results.csv written, screen.json not yet), or a
    rescore killed once it started results.csv over (screen.json still the old model's)."""
    _, model, _ = tiny
    img = write_image(tmp_path / "a.png", rgb_image(40))
    out = tmp_path / "out"
    out.mkdir()
    header = ",".join(CSV_COLUMNS) + "\r\n"
    (out / "results.csv").write_text("" if left == "empty" else header, encoding="utf-8")
    if left == "header, other model":
        (out / "screen.json").write_text(json.dumps({"model_id": "another model"}))
    s = _screen(model, [img], out)
    assert (s.n_scored, s.n_resumed) == (1, 0) and len(_rows(out)) == 1
    assert _screen(model, [img], out).n_resumed == 1  # and screen.json names this model now


def test_labels_naming_none_of_the_images_are_refused_before_scoring(tiny, tmp_path):
    _, model, _ = tiny
    img = write_image(tmp_path / "in" / "a.png", rgb_image(40))
    labels = tmp_path / "meta" / "labels.csv"
    labels.parent.mkdir()
    labels.write_text("path,label\nin/a.png,1\n")  # relative to meta/, not to the cwd
    out = tmp_path / "out"
    with pytest.raises(ValueError) as info:
        screen(model, [img], out, progress=False, labels=str(labels))
    assert str(info.value) == (
        f"{labels}: the labels CSV names none of the 1 screened images (its relative paths are "
        f"taken from the CSV's folder, {labels.parent}; e.g. {img} is not in it)")
    assert not out.exists()
    labels.write_text("path,label\n../in/a.png,1\n")
    assert screen(model, [img], out, progress=False, labels=str(labels)).n_scored == 1
    assert "labels CSV" in (out / "report.html").read_text(encoding="utf-8")
    # adding images to the same results: the report covers the earlier rows, which the CSV
    # labels, so an unlabelled new image is no reason to refuse
    other = write_image(tmp_path / "in2" / "b.png", rgb_image(40))
    assert screen(model, [other], out, progress=False, labels=str(labels)).n_scored == 1


# ---------------------------------------------------------------- tamper-evident model directories


def _copy_model(model_dir: Path, dst: Path) -> Path:
    import shutil

    return Path(shutil.copytree(model_dir, dst))


STATE = "scorer/scorer_state.safetensors"


def _saved_before_checksums(m: Path) -> None:
    """``m`` as a model saved before checksums existed: no checksums.json, and no
    train_image_sha256 in its model.json (every save since writes both; the list alone missing
    is refused)."""
    (m / CHECKSUMS_JSON).unlink()
    doc = json.loads((m / "model.json").read_text())
    del doc["train_image_sha256"]
    (m / "model.json").write_text(json.dumps(doc))


def _set_nan(path: Path) -> None:
    state = load_file(str(path))
    key = next(k for k, v in state.items() if v.dtype.kind == "f")
    state[key].flat[0] = np.nan
    save_file(state, str(path))


def _damage(kind: str, path: Path) -> None:
    data = bytearray(path.read_bytes())
    if kind == "flip_data_byte":
        data[-5] ^= 0x01
    elif kind == "damage_header":
        data[12] = ord("#")
    elif kind == "truncate":
        data = data[: len(data) // 2]
    elif kind == "empty":
        data = bytearray()
    if kind == "nan":
        _set_nan(path)
    elif kind == "delete":
        path.unlink()
    else:
        path.write_bytes(bytes(data))


@pytest.mark.parametrize("with_checksums", [True, False])
@pytest.mark.parametrize("kind", ["flip_data_byte", "nan", "damage_header", "truncate", "empty",
                                  "delete"])
def test_damaged_scorer_state_is_refused_in_one_line(tiny, tmp_path, kind, with_checksums, capsys):
    _, _, model_dir = tiny
    m = _copy_model(model_dir, tmp_path / "m")
    if not with_checksums:  # a model saved before checksums existed
        _saved_before_checksums(m)
    _damage(kind, m / STATE)
    rc = main(["screen", str(m), str(model_dir.parent / "train"), "--out", str(tmp_path / "o"),
               "--quiet"])
    err = capsys.readouterr().err
    assert "Traceback" not in err
    if kind == "flip_data_byte" and not with_checksums:
        # a flipped byte that still gives a finite value is only visible to a checksum:
        # such an old model loads (and scores), it must not crash
        assert rc == 0, err
        return
    assert rc == 1
    (line,) = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert STATE.split("/")[-1] in line
    if kind == "nan" and not with_checksums:
        assert "NaN or Inf" in line
    if with_checksums and kind in ("flip_data_byte", "nan"):
        assert "changed since the model was saved" in line
    if with_checksums and kind == "truncate":
        assert "truncated" in line
    assert not (tmp_path / "o" / "results.csv").exists()


@pytest.mark.parametrize("name", ["model.json", "scorer/scorer.json", STATE, CHECKSUMS_JSON])
def test_fuzzed_model_files_never_load_silently_nor_crash(tiny, tmp_path, name):
    _, _, model_dir = tiny
    rng = np.random.default_rng(len(name))
    original = (model_dir / name).read_bytes()
    m = _copy_model(model_dir, tmp_path / "m")
    for mutated in _mutations(original, rng):
        if mutated == original:
            continue
        (m / name).write_bytes(mutated)
        try:
            load_model(m)
        except ValueError as exc:  # ModelFormatError / ScorerFormatError: one line
            assert "\n" not in str(exc)
        else:
            # only a checksum list that still matches every file may load
            assert name == CHECKSUMS_JSON
            json.loads(mutated)  # still valid JSON, and the model files themselves are intact


def test_model_without_checksums_still_loads(tiny, tmp_path, caplog):
    _, model, model_dir = tiny
    m = _copy_model(model_dir, tmp_path / "m")
    _saved_before_checksums(m)
    loaded = load_model(m)
    assert "file integrity not verified" in caplog.text
    assert loaded.threshold == model.threshold


def test_overwrite_removes_only_model_files(tiny, tmp_path):
    _, model, model_dir = tiny
    m = _copy_model(model_dir, tmp_path / "m")
    (m / "notes.txt").write_text("mine")
    (m / "scorer" / "extra.npy").write_bytes(b"mine too")
    (m / "plots").mkdir()
    (m / "plots" / "a.png").write_bytes(b"x")
    model.save(m, overwrite=True)
    assert (m / "notes.txt").read_text() == "mine"
    assert (m / "scorer" / "extra.npy").read_bytes() == b"mine too"
    assert (m / "plots" / "a.png").exists()
    assert load_model(m).threshold == model.threshold  # checksums of the new files verify
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m"]  # no temporary folders left


@pytest.mark.parametrize("content", [None, "[]", "{not json", '{"name": "my project"}'])
def test_overwrite_refuses_a_folder_that_is_not_a_model(tiny, tmp_path, content, capsys):
    root, model, _ = tiny
    d = tmp_path / "d"
    d.mkdir()
    (d / "precious.txt").write_text("x")
    if content is not None:
        (d / "model.json").write_text(content)
    with pytest.raises(FileExistsError, match="not a model directory"):
        save_model_dir(d, model.info, model.scorer, overwrite=True)
    assert main(["fit", "--train", str(root / "train"), "--out", str(d), "--overwrite",
                 "--weights", "random", "--quiet"]) == 1  # refused before fitting
    assert "not a model directory" in capsys.readouterr().err
    assert (d / "precious.txt").read_text() == "x"


def test_load_refuses_model_json_that_is_not_a_model(tmp_path):
    (tmp_path / "model.json").write_text("{}")
    with pytest.raises(ModelFormatError,
                       match=r"model\.json: not a model description \(no format_version\)"):
        load_model(tmp_path)


@pytest.mark.parametrize("edit, message", [
    (lambda d: d["calibration"].update(threshold="high"), "calibration: threshold: expected a number, got 'high'"),
    (lambda d: d.update(backbone=None), "backbone: expected a mapping, got None"),
    (lambda d: d.update(config="foo"), "config: expected a mapping, got 'foo'"),
    (lambda d: d["config"]["features"].update(image_size=-5), "image_size: must be at least 32, got -5"),
    (lambda d: d["config"]["backbone"].update(layers=[9]),
     "model.json: config: backbone: layers: tf_efficientnet_lite0: layer indices [9] out of range"),
])
def test_hand_edited_model_json_is_one_line_naming_the_field(tiny, tmp_path, edit, message, capsys):
    """A model whose checksums were removed (so nothing flags the edit) and whose model.json was
    changed by hand: refused at load in one line naming the file and the field."""
    _, _, model_dir = tiny
    m = _copy_model(model_dir, tmp_path / "m")
    _saved_before_checksums(m)
    doc = json.loads((m / "model.json").read_text())
    edit(doc)
    (m / "model.json").write_text(json.dumps(doc))
    with pytest.raises(ModelFormatError) as info:
        load_model(m)
    assert str(m / "model.json") in str(info.value) and message in str(info.value)
    assert main(["screen", str(m), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"), "--quiet"]) == 1
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and message in err


def test_out_that_is_a_file_is_an_argument_error(tmp_path, capsys):
    (tmp_path / "file.txt").write_text("mine")
    for args in (["fit", "--train", "t"], ["screen", "M", "x.png"], ["explain", "M", "x.png"], ["demo"]):
        with pytest.raises(SystemExit) as info:
            main([*args, "--out", str(tmp_path / "file.txt")])
        assert info.value.code == 2
        err = capsys.readouterr().err
        assert "--out" in err and "is a file, not a folder" in err and len(err.strip().splitlines()) == 1
    assert (tmp_path / "file.txt").read_text() == "mine"


def test_config_that_is_not_utf8_names_the_file(tmp_path):
    from anomaly_inspect.config import ConfigError, load_config

    path = tmp_path / "c.yaml"
    path.write_bytes(b"seed: 1\n# \xff\xfe\n")
    with pytest.raises(ConfigError, match=r"c\.yaml: not UTF-8 text"):
        load_config(path)


# ---------------------------------------------------------------- peak memory (real decodes)


def _valid_huge_png(path: Path, width: int, height: int) -> None:
    """A valid all-black RGB PNG of width x height, written without holding it in memory."""
    comp = zlib.compressobj(9)
    row = b"\x00" * (3 * width + 1)
    with open(path, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n")
        fh.write(_png_chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)))
        parts = [comp.compress(row) for _ in range(height)] + [comp.flush()]
        fh.write(_png_chunk(b"IDAT", b"".join(parts)))
        fh.write(_png_chunk(b"IEND", b""))


@pytest.mark.slow
def test_peak_memory_of_huge_images_stays_bounded(tmp_path):
    _valid_huge_png(tmp_path / "32k.png", 32000, 32000)  # 3 GB of pixels in a few MB
    _valid_huge_png(tmp_path / "10k.png", 10000, 10000)  # at the budget: decoded
    big = np.kron(rgb_image(20, seed=1), np.ones((480, 480, 1), np.uint8))  # 9600 x 9600 JPEG
    assert cv2.imwrite(str(tmp_path / "big.jpg"), big)
    del big
    for name, expect in (("32k.png", "budget"), ("10k.png", (10000, 10000, 3)),
                         ("big.jpg", (1200, 1200, 3))):
        code = textwrap.dedent(f"""
            import sys
            from anomaly_inspect.data.image_io import ImageReadError, read_image

            def peak_mb():  # VmHWM: this process's own peak (ru_maxrss survives exec)
                with open("/proc/self/status") as fh:
                    return next(int(ln.split()[1]) for ln in fh if ln.startswith("VmHWM")) // 1024

            try:
                shape = read_image({str(tmp_path / name)!r}, min_side=640).shape
            except ImageReadError as exc:
                shape = exc.reason
            print(shape, peak_mb())
        """)
        out = subprocess.run([sys.executable, "-c", code], env={**os.environ, "PYTHONPATH": SRC},
                             capture_output=True, text=True, timeout=300, check=True).stdout
        result, peak_mb = out.rsplit(" ", 1)
        assert int(peak_mb) < 3 * 1024, (name, peak_mb)
        if expect == "budget":
            assert "larger than the pixel budget" in result
        else:
            assert result == str(expect), (name, result)


# ---------------------------------------------------------------- work already done is kept


@pytest.mark.parametrize("command", ["fit", "screen", "explain"])
def test_output_json_inside_out_is_refused_before_any_work(tmp_path, command, capsys):
    """``--output-json`` inside the command's ``--out`` could replace a file the command writes
    (a model's model.json, a screen's results.csv): refused in one line, nothing written."""
    out = tmp_path / "out"
    head = {"fit": ["fit", "--train", str(tmp_path / "t")],
            "screen": ["screen", str(tmp_path / "m"), str(tmp_path / "x.png")],
            "explain": ["explain", str(tmp_path / "m"), str(tmp_path / "x.png")]}[command]
    target = {"fit": "model.json", "screen": "results.csv", "explain": "explanations.json"}[command]
    assert main([*head, "--out", str(out), "--output-json", str(out / target)]) == 1
    err = capsys.readouterr().err.strip()
    said = "inside --out" if command == "fit" else f"this command writes {target} in --out"
    assert "\n" not in err and said in err and str(out / target) in err
    assert not out.exists()


def test_write_json_uses_a_temporary_name_of_its_own(tmp_path):
    import threading

    from anomaly_inspect.commands.common import write_json

    target, errors = tmp_path / "r.json", []

    def writer(k):
        try:
            for i in range(100):
                write_json(target, {"writer": k, "i": i})
        except Exception as exc:  # a shared temporary name made one writer's replace fail
            errors.append(exc)

    threads = [threading.Thread(target=writer, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == [] and json.loads(target.read_text())["i"] == 99
    assert [p.name for p in tmp_path.iterdir()] == ["r.json"]
    assert target.stat().st_mode & 0o777 == 0o666 & ~_umask()


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def test_output_json_beside_what_screen_writes_is_allowed(tmp_path):
    from anomaly_inspect.commands.common import check_output_json
    from anomaly_inspect.commands.screen import _outputs

    out = tmp_path / "results"
    check_output_json(out / "summary.json", out, _outputs)  # beside results.csv: fine
    for name in ("results.csv", "screen.json", "report.html", "overlays/x.json"):
        with pytest.raises(ValueError, match="this command writes"):
            check_output_json(out / name, out, _outputs)
    with pytest.raises(ValueError, match="whose files this command writes"):
        check_output_json(out / "summary.json", out)  # a model directory is replaced whole


def test_output_json_that_cannot_be_written_is_refused_before_any_work(tmp_path, capsys):
    (tmp_path / "folder").mkdir()
    (tmp_path / "file.txt").write_text("mine")
    for target, reason in [(tmp_path / "folder", "is a folder"),
                           (tmp_path / "file.txt" / "r.json", "is a file, not a folder")]:
        assert main(["evaluate", "--dataset", "folder", "--train-dir", str(tmp_path / "none"),
                     "--output-json", str(target)]) == 1
        err = capsys.readouterr().err
        assert reason in err and "no such" not in err  # refused before the dataset is read
    assert (tmp_path / "file.txt").read_text() == "mine" and not list(tmp_path.glob("*.tmp"))


def test_results_folder_inside_the_input_is_not_screened(tiny, tmp_path):
    """A second run into a results folder that lies inside the screened folder must not screen
    its own overlays and thumbnails; a file named explicitly is still screened."""
    _, model, _ = tiny
    for i in range(3):
        write_image(tmp_path / "in" / f"{i}.png", rgb_image(40, seed=i))
    out = tmp_path / "in" / "results"
    for _ in range(2):
        s = screen(model, [tmp_path / "in"], out, progress=False, report=True, overlays="all")
        assert s.n_inputs == 3
    assert len(list(out.rglob("*.jpg"))) >= 3  # the outputs were there to be picked up
    own = next(out.rglob("*.jpg"))
    assert expand_inputs([tmp_path / "in", own], exclude=[out]) == sorted(
        (tmp_path / "in").glob("*.png")) + [own.resolve()]


def test_input_inside_the_results_folder_is_screened(tiny, tmp_path, monkeypatch):
    """--out . (or a results folder that holds the input, or is the input) still screens the
    input; the overlays and thumbnails a run wrote there are not screened on the next run."""
    from anomaly_inspect.screening.explain import explain_to_dir

    _, model, _ = tiny
    for i in range(3):
        write_image(tmp_path / "proj" / "imgs" / f"{i}.png", rgb_image(40, seed=i))
    monkeypatch.chdir(tmp_path / "proj")
    assert screen(model, ["imgs"], Path("."), progress=False, report=False).n_inputs == 3
    assert screen(model, ["imgs/*.png"], Path("."), progress=False, report=False).n_inputs == 3
    for _ in range(2):  # the input folder itself as --out
        s = screen(model, ["imgs"], Path("imgs"), progress=False, report=True, overlays="all")
        assert s.n_inputs == 3
    assert len(list(Path("imgs").rglob("*.jpg"))) >= 3  # outputs were there to be picked up
    for _ in range(2):
        assert len(explain_to_dir(model, ["imgs"], Path("imgs"), top=1)) == 3  # not its strips
    entries = json.loads((Path("imgs") / "explanations.json").read_text())
    assert len(entries) == 3 and len({e["model_id"] for e in entries}) == 1
    # a run cut off half-way lists the strips it wrote (explanations.json is written as it stops)
    import anomaly_inspect.screening.explain as ex

    drawn, render = [], ex.render_strip

    def stop_at_the_second(*args):
        if drawn:
            raise KeyboardInterrupt
        drawn.append(1)
        return render(*args)

    for p in Path("imgs").glob("*.jpg"):  # the strips of the runs above
        p.unlink()
    (Path("imgs") / "explanations.json").unlink()
    monkeypatch.setattr(ex, "render_strip", stop_at_the_second)
    with pytest.raises(KeyboardInterrupt):
        explain_to_dir(model, ["imgs"], Path("imgs"), top=1)
    assert len(list(Path("imgs").glob("*.jpg"))) == 1
    monkeypatch.setattr(ex, "render_strip", render)
    assert len(explain_to_dir(model, ["imgs"], Path("imgs"), top=1)) == 3


def test_globs_and_linked_results_folders_do_not_bring_tool_output_back(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    for rel in ("data/a.png", "data/sub/b.png", "data/results/overlays/a_ov.png",
                "data/results/thumbs/a_th.png", "elsewhere/out/overlays/x_ov.png"):
        write_image(Path(rel), rgb_image(20, seed=0))
    inputs = {Path("data/a.png").resolve(), Path("data/sub/b.png").resolve()}
    out = Path("data/results")
    for pattern in ("data/**", "data/*/*", "data", str(tmp_path / "data" / "**" / "*.png"),
                    "./data/**/*.png"):
        found = set(expand_inputs([pattern], exclude=[out]))
        assert found <= inputs and Path("data/sub/b.png").resolve() in found, pattern
    linked = Path("data/linked")
    linked.symlink_to(tmp_path / "elsewhere" / "out")
    assert set(expand_inputs(["data"], exclude=[linked])) == inputs | {
        Path("data/results/overlays/a_ov.png").resolve(), Path("data/results/thumbs/a_th.png").resolve()}


def test_named_folder_without_images_is_refused_before_fitting(tmp_path, capsys):
    from anomaly_inspect.data.folder import load_folders
    from anomaly_inspect.data.layout import DatasetLayoutError

    for i in range(2):
        for split in ("train", "good", "bad"):
            write_image(tmp_path / split / f"{i}.png", rgb_image(40, seed=i))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetLayoutError, match=r"empty: no images in this folder"):
        load_folders([tmp_path / "train"], [tmp_path / "empty"], [tmp_path / "bad"])
    # an empty --mask-dir is a mistake too, not a run without pixel metrics
    with pytest.raises(DatasetLayoutError, match=r"empty: no images in this folder"):
        load_folders([tmp_path / "train"], [tmp_path / "good"], [tmp_path / "bad"],
                     mask_dir=tmp_path / "empty")
    for auto in ([], ["--auto"]):  # refused before tuning too
        assert main(["evaluate", "--dataset", "folder", "--train-dir", str(tmp_path / "train"),
                     "--test-normal-dir", str(tmp_path / "good"), "--quiet", *auto]) == 1
        err = capsys.readouterr().err
        assert "the test split needs normal and anomalous images" in err and "2 normal and 0 anomalous" in err


# ---------------------------------------------------------------- not a regular file


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes here")
def test_a_fifo_or_device_is_refused_unread_not_waited_on(tmp_path, monkeypatch):
    """A FIFO's size is 0 and reading it waits for a writer; a device never ends: both are
    refused by what they are, when named and when a folder walk or a glob brings them in (the
    same inputs either way: one with an image extension is an error row, not left out)."""
    fifo = tmp_path / "in" / "pipe.png"
    fifo.parent.mkdir()
    os.mkfifo(fifo)
    os.mkfifo(tmp_path / "in" / "noext")  # content sniffing must not open it either
    write_image(tmp_path / "in" / "ok.png", rgb_image(8))
    assert [p.name for p in expand_inputs([tmp_path / "in"])] == ["ok.png", "pipe.png"]
    monkeypatch.chdir(tmp_path)
    assert sorted(p.name for p in expand_inputs(["in/*"])) == ["ok.png", "pipe.png"]
    with pytest.raises(ImageReadError, match=r"pipe\.png: not a regular file \(a FIFO"):
        read_image(fifo)
    if os.path.exists("/dev/zero"):
        with pytest.raises(ImageReadError, match=r"/dev/zero: not a regular file \(a character"):
            read_image("/dev/zero")


def test_a_folder_and_a_glob_of_it_bring_in_the_same_unusable_files(tmp_path, monkeypatch):
    """A link in a loop (its stat fails with ELOOP) is an error row whether its folder is walked
    or globbed, as a dangling link is; files that are not images by extension or content stay
    out, and sub-folders are walked as before."""
    d = tmp_path / "in"
    write_image(d / "ok.png", rgb_image(8))
    write_image(d / "sub" / "deep.png", rgb_image(8, 1))
    (d / "self.png").symlink_to("self.png")
    (d / "loop_a.png").symlink_to("loop_b.png")
    (d / "loop_b.png").symlink_to("loop_a.png")
    (d / "notes.txt").write_text("not an image")
    walked = expand_inputs([d])
    assert [p.name for p in walked] == ["loop_a.png", "loop_b.png", "ok.png", "self.png",
                                        "deep.png"]
    monkeypatch.chdir(tmp_path)
    assert sorted(expand_inputs(["in/*", "in/sub/*"])) == sorted(walked)
    assert expand_inputs([d], recursive=False) == walked[:4]
    with pytest.raises(ImageReadError, match=r"self\.png: cannot read file \(Too many levels"):
        read_image(d / "self.png")


def test_links_to_one_file_are_one_input_under_the_file_they_name(tmp_path, monkeypatch):
    """expand_inputs schedules every file once under its canonical path: two links to one image
    and the image itself named directly are one input (the resolved path)."""
    store = tmp_path / "store"
    a = write_image(store / "z_first.png", rgb_image(8, 1))
    b = write_image(store / "a_second.png", rgb_image(8, 2))
    (tmp_path / "test" / "crack").mkdir(parents=True)
    (tmp_path / "test" / "good").mkdir()
    (tmp_path / "test" / "crack" / "001.png").symlink_to(a)
    (tmp_path / "test" / "good" / "002.png").symlink_to(b)
    (tmp_path / "test" / "good" / "003.png").symlink_to(b)  # a second link: once
    got = expand_inputs([tmp_path / "test"])
    assert got == [a.resolve(), b.resolve()]
    monkeypatch.chdir(tmp_path)
    assert expand_inputs(["test/crack/001.png", str(a)]) == [a.resolve()]
    assert expand_inputs(["test/*/*.png"]) == got

"""What screen and explain write is never written through a symbolic link they were not given:
``--output-json`` as a link to a model file or an earlier results file is refused as the file
itself is; a link planted in an ``--out`` folder where the command writes one of its own files
is refused before any work; a replaced file keeps its mode; and screen refuses a
``screen.json`` / ``report.html`` in ``--out`` that it did not write, as it refuses a foreign
``results.csv``.

The model is a tiny one (random backbone weights, 64 px inputs) fitted once per module."""

from __future__ import annotations

import os
import shutil
import stat
from pathlib import Path

import pytest

from anomaly_inspect import files
from anomaly_inspect.cli import main
from anomaly_inspect.screening.explain import explain_to_dir
from anomaly_inspect.screening.runner import image_key, screen
from layout_writer import fit_tiny_model, rgb_image, write_image


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """(fitted model, saved model directory)."""
    return fit_tiny_model(tmp_path_factory.mktemp("tiny"))


@pytest.fixture()
def image(tmp_path) -> Path:
    return write_image(tmp_path / "in" / "part.png", rgb_image(40))


def _screen_cli(saved: Path, image: Path, out: Path, *extra: str) -> int:
    return main(["screen", str(saved), str(image), "--out", str(out), "--quiet",
                 "--overlays", "none", *extra])


def test_output_json_through_a_link_to_a_model_file_is_refused(tiny, tmp_path, image, capsys):
    """A link to MODEL/model.json was written through (the model then failed to load) while
    the file itself was refused; both are refused with the same words, the model unchanged."""
    _, saved = tiny
    model = Path(shutil.copytree(saved, tmp_path / "m"))
    target = model / "model.json"
    before = target.read_bytes()
    link = tmp_path / "summary.json"
    link.symlink_to(target)
    errors = []
    for given in (target, link):
        assert _screen_cli(model, image, tmp_path / "out", "--output-json", str(given)) == 1
        errors.append(capsys.readouterr().err.strip().replace(str(given), "PATH"))
    assert errors[0] == errors[1] == (f"error: --output-json PATH: is a file of model directory "
                                      f"{model.resolve()}; give another path")
    assert target.read_bytes() == before


def test_output_json_through_a_link_to_an_earlier_results_file_is_refused(tiny, tmp_path, image,
                                                                          capsys):
    """A link to an earlier screen's results.csv is refused as that file is; the rows stay."""
    _, saved = tiny
    earlier = tmp_path / "earlier"
    assert _screen_cli(saved, image, earlier) == 0
    target = earlier / "results.csv"
    before = target.read_bytes()
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    errors = []
    for given in (target, link):
        assert _screen_cli(saved, image, tmp_path / "out", "--output-json", str(given)) == 1
        errors.append(capsys.readouterr().err.strip().replace(str(given), "PATH"))
    assert errors[0] == errors[1]
    assert errors[0].startswith("error: --output-json PATH: is the results.csv of an earlier "
                                "screen run in ")
    assert target.read_bytes() == before


def test_output_json_through_a_link_elsewhere_is_still_written_through(tiny, tmp_path, image):
    """The documented write-through stays: a ``latest.json`` link gets the summary in its target."""
    _, saved = tiny
    target = tmp_path / "dated" / "summary.json"
    target.parent.mkdir()
    target.write_text("{}")
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    assert _screen_cli(saved, image, tmp_path / "out", "--output-json", str(link)) == 0
    assert link.is_symlink() and '"n_scored"' in target.read_text()


@pytest.mark.parametrize("planted", ["report.html", "screen.json", "results.csv", "thumbs",
                                     "thumbs/KEY.jpg", ".anomaly-inspect.lock"])
def test_screen_refuses_a_link_planted_where_it_writes_its_own_files(tiny, tmp_path, image,
                                                                     planted):
    """A results folder prepared by someone else with links in it made screen replace (or
    create) files anywhere the user may write; it is refused before any work, naming the link."""
    model, _ = tiny
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "settings.ini").write_text("private")
    out = tmp_path / "out"
    link = out / planted.replace("KEY", image_key(os.path.abspath(image)))
    link.parent.mkdir(parents=True)
    link.symlink_to(victim if planted == "thumbs" else victim / "settings.ini")
    with pytest.raises(ValueError, match=rf"^{link}: is a symbolic link; this command writes "
                                         r"its own files in out_dir, not through links; remove it or "
                                         r"choose another out_dir$"):
        screen(model, [image], out, progress=False)
    assert sorted(p.name for p in victim.iterdir()) == ["settings.ini"]
    assert (victim / "settings.ini").read_text() == "private"
    assert link.is_symlink()


def test_screen_cli_names_the_planted_link(tiny, tmp_path, image, capsys):
    _, saved = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / "report.html").symlink_to(tmp_path / "elsewhere.html")
    assert _screen_cli(saved, image, out) == 1
    assert capsys.readouterr().err.strip() == (
        f"error: {out / 'report.html'}: is a symbolic link; this command writes its own files "
        f"in --out, not through links; remove it or choose another --out")
    assert not (tmp_path / "elsewhere.html").exists()
    assert sorted(p.name for p in out.iterdir()) == ["report.html"]


@pytest.mark.parametrize("planted", ["explanations.json", "KEY.jpg"])
def test_explain_refuses_a_link_planted_where_it_writes_its_own_files(tiny, tmp_path, image,
                                                                      planted):
    model, _ = tiny
    out = tmp_path / "out"
    out.mkdir()
    link = out / planted.replace("KEY", image_key(str(image)))
    link.symlink_to(tmp_path / "created_by_explain")
    with pytest.raises(ValueError, match=rf"^{link}: is a symbolic link; this command writes "
                                         r"its own files in out_dir, not through links"):
        explain_to_dir(model, [image], out)
    assert not (tmp_path / "created_by_explain").exists()


def test_a_link_to_the_out_folder_itself_is_the_users_choice(tiny, tmp_path, image):
    """--out given as a link to a folder is written into, as before: only links inside it
    where the command writes its own files are refused."""
    model, _ = tiny
    real = tmp_path / "real"
    real.mkdir()
    (tmp_path / "out").symlink_to(real)
    assert screen(model, [image], tmp_path / "out", progress=False).n_scored == 1
    assert (real / "results.csv").is_file() and (real / "report.html").is_file()


def test_a_replaced_file_keeps_its_mode(tmp_path):
    """A private (0600) file replaced came out 0644; it stays 0600. A new one gets the umask's."""
    private = tmp_path / "private.json"
    private.write_text("{}")
    private.chmod(0o600)
    files.write_json(private, {"a": 1})
    assert stat.S_IMODE(private.stat().st_mode) == 0o600 and '"a": 1' in private.read_text()
    new = files.write_text(tmp_path / "new.txt", "x")
    assert stat.S_IMODE(new.stat().st_mode) == 0o666 & ~files.current_umask()


def test_a_file_replaced_through_a_link_keeps_the_targets_mode(tmp_path):
    target = tmp_path / "dated.json"
    target.write_text("{}")
    target.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    files.write_json(link, {"b": 2})
    assert link.is_symlink() and stat.S_IMODE(target.stat().st_mode) == 0o640
    assert '"b": 2' in target.read_text()


@pytest.mark.parametrize(("name", "content", "what"), [
    ("screen.json", '{"my": "notes"}', "run record"),
    ("screen.json", "not json at all", "run record"),
    ("report.html", "<html>my hand-written shift report</html>", "report"),
])
def test_screen_refuses_a_screen_json_or_report_it_did_not_write(tiny, tmp_path, image, name,
                                                                  content, what, capsys):
    """A user's own report.html / screen.json in --out was replaced silently, while a foreign
    results.csv is refused; they are refused the same way (rescore starts over, as for it)."""
    model, saved = tiny
    out = tmp_path / "out"
    out.mkdir()
    (out / name).write_text(content)
    with pytest.raises(ValueError, match=rf"^{out / name}: not a {what} of this tool; choose "
                                         r"another out_dir or pass rescore=True$"):
        screen(model, [image], out, progress=False)
    assert _screen_cli(saved, image, out) == 1
    assert capsys.readouterr().err.strip() == (f"error: {out / name}: not a {what} of this tool; "
                                               f"choose another --out or pass --rescore")
    assert (out / name).read_text() == content
    assert sorted(p.name for p in out.iterdir()) == [name]
    assert screen(model, [image], out, rescore=True, progress=False).n_scored == 1


def test_screen_resumes_over_its_own_screen_json_and_report(tiny, tmp_path, image):
    model, _ = tiny
    out = tmp_path / "out"
    assert screen(model, [image], out, progress=False).n_scored == 1
    again = screen(model, [image], out, progress=False)
    assert (again.n_scored, again.n_resumed) == (0, 1)
    no_report = tmp_path / "no_report"
    no_report.mkdir()
    (no_report / "report.html").write_text("mine")  # not written with report=False: kept
    assert screen(model, [image], no_report, report=False, progress=False).n_scored == 1
    assert (no_report / "report.html").read_text() == "mine"

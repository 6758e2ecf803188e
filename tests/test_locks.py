"""Lock files: ``files.flock_file`` / ``files.unlock_file``, the output-folder lock and the save
lock.

``fit --out DIR`` holds DIR's save lock (``.NAME.lock`` beside it) from before any feature
extraction until its save is done: a second fit into the same folder is refused at once, not
after minutes of fitting; a save inside the held lock does not refuse itself; the lock file
is gone afterwards, also after an error or Ctrl-C; a failed fit leaves no empty folders it made
for --out."""

from __future__ import annotations

import errno
import fcntl
import logging
import os
import threading
from types import SimpleNamespace

import pytest

from anomaly_inspect import files
from anomaly_inspect.cli import main
from anomaly_inspect.screening import model_dir
from anomaly_inspect.screening.lock import LOCK_NAME, OutputLock, OutputLockedError
from anomaly_inspect.screening.model_dir import ModelInfo, is_model_dir, save_lock, save_model_dir
from layout_writer import rgb_image, write_image

SMALL = ["--weights", "random", "--image-size", "64", "--quiet"]


def _train(folder, n: int = 5):
    for i in range(n):
        write_image(folder / f"n{i:02d}.png", rgb_image(40, seed=i))
    return folder


def _held(path):
    """An open description of ``path`` holding its ``flock``, as another process's save would."""
    fd = os.open(path, os.O_RDONLY | os.O_CREAT, 0o666)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    return fd


def _no_fit(*args, **kwargs):
    raise AssertionError("the fit started")


def test_a_fit_into_a_folder_another_save_holds_is_refused_before_any_work(tmp_path, monkeypatch,
                                                                           capsys):
    import anomaly_inspect.screening as screening

    train, out, lock = _train(tmp_path / "train"), tmp_path / "m", tmp_path / ".m.lock"
    fd = _held(lock)
    try:
        with monkeypatch.context() as m:
            m.setattr(screening, "fit", _no_fit)
            code = main(["fit", "--train", str(train), "--out", str(out), *SMALL])
        assert code == 1
        assert (f"{out}: another save to it is in progress (it holds {lock}); wait for it to "
                f"finish") in capsys.readouterr().err
        assert lock.exists() and not out.exists()  # the holder's lock stays
    finally:
        os.close(fd)
    # the holder gone: a fit runs, saves and leaves no lock file
    assert main(["fit", "--train", str(train), "--out", str(out), *SMALL]) == 0
    assert is_model_dir(out) and not lock.exists()


def test_a_fit_holds_the_lock_while_it_fits_and_drops_it_on_an_error(tmp_path, monkeypatch, capsys):
    import anomaly_inspect.screening as screening

    train, out, lock = _train(tmp_path / "train", 2), tmp_path / "m", tmp_path / ".m.lock"
    seen = []

    def fit(*args, **kwargs):  # what a second fit into --out meets meanwhile
        with pytest.raises(RuntimeError, match="another save to it is in progress"):
            _lock_in_another_thread(out)
        seen.append(lock.exists())
        raise KeyboardInterrupt

    monkeypatch.setattr(screening, "fit", fit)
    assert main(["fit", "--train", str(train), "--out", str(out), *SMALL]) == 130
    assert seen == [True] and not lock.exists() and not out.exists()
    assert "interrupted" in capsys.readouterr().err


def _lock_in_another_thread(target) -> None:
    """Take and drop ``save_lock(target)`` in another thread (its own open description, as
    another process); its error is raised here."""
    errors = []

    def take():
        try:
            with model_dir.save_lock(target):
                pass
        except Exception as exc:  # noqa: BLE001 - raised in the caller
            errors.append(exc)

    t = threading.Thread(target=take)
    t.start()
    t.join()
    if errors:
        raise errors[0]


def _info():
    return ModelInfo(config={}, backbone={"name": "b"}, calibration={}, train_images=["a.png"],
                     calibration_images=["b.png"])


def _scorer():
    def save(folder):
        folder.mkdir()
        (folder / "scorer.json").write_text("{}")
    return SimpleNamespace(save=save)


def test_a_save_inside_the_held_lock_does_not_refuse_itself(tmp_path):
    target, lock = tmp_path / "sub" / "m", tmp_path / "sub" / ".m.lock"
    with model_dir.save_lock(target):
        assert lock.exists()
        with pytest.raises(RuntimeError, match=f"^{target}: another save to it is in progress"):
            _lock_in_another_thread(target)  # another thread: refused, as another process is
        save_model_dir(target, _info(), _scorer())
        assert lock.exists()  # still held: released when the outer block ends

        class Nested:  # a second save starts while the one in the block writes: refused
            def save(self, folder):
                save_model_dir(target, _info(), _scorer(), overwrite=True)

        with pytest.raises(RuntimeError, match=f"^{target}: another save to it is in progress"):
            save_model_dir(target, _info(), Nested(), overwrite=True)
        with pytest.raises(RuntimeError, match=f"^{target}: another save to it is in progress"), \
                model_dir.save_lock(target):  # nor a second block in this thread
            pass
        save_model_dir(target, _info(), _scorer(), overwrite=True)
    assert is_model_dir(target) and not lock.exists()
    save_model_dir(target, _info(), _scorer(), overwrite=True)  # a plain save locks on its own
    assert not lock.exists()
    with pytest.raises(KeyboardInterrupt), model_dir.save_lock(target):
        raise KeyboardInterrupt
    assert not lock.exists()


# One way to take a lock file (files.flock_file / files.unlock_file), used by the output-folder
# lock (screening/lock) and the save lock (screening/model_dir): the flock held at once or
# refused, a file the holder removed meanwhile re-opened, a file system without flock reported to
# the caller, and the file removed while still held.
class Held(RuntimeError):
    pass


def _no_flock(fd, op):
    raise OSError(errno.ENOLCK, "No locks available")


def test_a_lock_file_is_made_held_refused_to_a_second_opener_and_removed_while_held(tmp_path):
    path = tmp_path / "x.lock"
    fd, refused = files.flock_file(path, held=Held, writable=True)
    try:
        assert refused is None and os.fstat(fd).st_ino == os.stat(path).st_ino
        os.pwrite(fd, b"holder", 0)
        with pytest.raises(Held, match="holder"):  # its content readable by the refusal
            files.flock_file(path, held=lambda fd: Held(os.pread(fd, 100, 0)))
    finally:
        files.unlock_file(path, fd)
    assert not path.exists()
    with pytest.raises(OSError):
        os.fstat(fd)  # closed
    fd, _ = files.flock_file(path, held=Held)  # free again
    files.unlock_file(path, fd)
    files.unlock_file(path, None)  # already gone, no descriptor: nothing to do


def test_the_lock_file_gets_the_permissions_asked_for(tmp_path):
    fd, _ = files.flock_file(tmp_path / "x.lock", held=Held, mode=0o600)
    try:
        assert (tmp_path / "x.lock").stat().st_mode & 0o777 == 0o600
    finally:
        files.unlock_file(tmp_path / "x.lock", fd)


def test_a_file_its_holder_removed_between_open_and_flock_is_opened_again(tmp_path, monkeypatch):
    path = tmp_path / "x.lock"
    real, calls = fcntl.flock, []

    def holder_releases(fd, op):  # the holder unlinks (and a third run makes a new file) first
        calls.append(fd)
        if len(calls) == 1:
            path.unlink()
            path.write_text("")
        real(fd, op)

    monkeypatch.setattr(files.fcntl, "flock", holder_releases)
    fd, refused = files.flock_file(path, held=Held)
    try:
        assert refused is None and len(calls) == 2
        assert os.fstat(fd).st_ino == os.stat(path).st_ino  # the file now at the path
    finally:
        files.unlock_file(path, fd)


def test_a_file_system_without_flock_gives_the_reason_and_an_open_unlocked_file(tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(files.fcntl, "flock", _no_flock)
    fd, refused = files.flock_file(tmp_path / "x.lock", held=Held, writable=True)
    try:
        assert isinstance(refused, OSError) and refused.errno == errno.ENOLCK
        assert os.pwrite(fd, b"pid", 0) == 3  # writable where asked
    finally:
        files.unlock_file(tmp_path / "x.lock", fd)


def test_a_save_on_a_file_system_without_flock_goes_ahead_unlocked(tmp_path, monkeypatch, caplog):
    monkeypatch.setattr(fcntl, "flock", _no_flock)
    target = tmp_path / "m"
    with caplog.at_level(logging.DEBUG, "anomaly_inspect.screening.model_dir"), \
            model_dir.save_lock(target):
        assert model_dir._lock_path(target).exists()
    assert not model_dir._lock_path(target).exists()
    assert "cannot be locked" in caplog.text and "saving unlocked" in caplog.text


def test_output_lock_on_a_file_system_without_flock_warns_and_is_removed(tmp_path, monkeypatch,
                                                                         caplog):
    monkeypatch.setattr(fcntl, "flock", _no_flock)
    with caplog.at_level(logging.WARNING), OutputLock(tmp_path):
        assert (tmp_path / LOCK_NAME).exists()
    assert not (tmp_path / LOCK_NAME).exists()
    assert "cannot lock (No locks available); relying on the pid in the lock file" in caplog.text


def test_output_lock_and_save_lock_each_refuse_a_held_file_with_their_message(tmp_path):
    with OutputLock(tmp_path), pytest.raises(OutputLockedError, match=f"pid {os.getpid()} on host"):
        OutputLock(tmp_path).acquire()
    assert not (tmp_path / LOCK_NAME).exists()
    target = tmp_path / "m"
    refused = pytest.raises(RuntimeError, match=f"^{target}: another save to it is in progress")
    with model_dir.save_lock(target), refused, model_dir.save_lock(target):
        pass


# A failed fit leaves no empty folders it made for --out.
def test_a_refused_fit_leaves_no_empty_folders_it_made_for_out(tmp_path, capsys):
    out = tmp_path / "deep_new" / "a" / "b" / "model"
    assert main(["fit", "--train", str(tmp_path / "nonexistent"), "--out", str(out),
                 "--weights", "random", "--image-size", "64", "--quiet"]) != 0
    assert "nonexistent" in capsys.readouterr().err
    assert sorted(os.listdir(tmp_path)) == []


def test_the_lock_removes_only_the_empty_parents_it_made_and_only_on_an_error(tmp_path):
    (tmp_path / "kept").mkdir()
    with pytest.raises(RuntimeError, match="boom"), save_lock(tmp_path / "kept" / "n" / "m" / "x"):
        (tmp_path / "kept" / "n" / "note.txt").write_text("the user's")
        raise RuntimeError("boom")
    assert sorted(p.relative_to(tmp_path).as_posix() for p in tmp_path.rglob("*")) == [
        "kept", "kept/n", "kept/n/note.txt"]
    with save_lock(tmp_path / "new" / "y" / "z"):
        pass
    assert (tmp_path / "new" / "y").is_dir()

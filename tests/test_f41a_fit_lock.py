"""``fit --out DIR`` holds DIR's save lock (``.NAME.lock`` beside it) from before any feature
extraction until its save is done: a second fit into the same folder is refused at once, not
after minutes of fitting; a save inside the held lock does not refuse itself; the lock file
is gone afterwards, also after an error or Ctrl-C."""

from __future__ import annotations

import fcntl
import os
import threading
from types import SimpleNamespace

import pytest

from anomaly_inspect.cli import main
from anomaly_inspect.screening import model_dir
from anomaly_inspect.screening.model_dir import ModelInfo, is_model_dir, save_model_dir
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


"""One way to take a lock file (``files.flock_file`` / ``files.unlock_file``), used by the
output-folder lock (``screening/lock``) and the save lock (``screening/model_dir``): the
``flock`` held at once or refused, a file the holder removed meanwhile re-opened, a file
system without ``flock`` reported to the caller, and the file removed while still held."""

from __future__ import annotations

import errno
import fcntl
import logging
import os

import pytest

from anomaly_inspect import files
from anomaly_inspect.screening import model_dir
from anomaly_inspect.screening.lock import LOCK_NAME, OutputLock, OutputLockedError


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

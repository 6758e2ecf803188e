"""One writer per output folder: a lock file in the folder naming the writer's pid and host.

The file is held with an advisory ``flock`` for the whole run, so the kernel
releases it when the run dies however it dies (kill -9 included); the pid and
host it contains are for the message a second run prints. A lock file left
behind by a run that was killed is detected (its ``flock`` is free) and taken
over with a warning. A lock naming another host is never taken over
automatically: whether that run is still going cannot be checked from here.
"""

from __future__ import annotations

import datetime as _dt
import json
import logging
import os
import socket
from pathlib import Path

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: the pid check alone, without a warning
    fcntl = None  # type: ignore[assignment]

from ..files import flock_file, unlock_file

log = logging.getLogger(__name__)

LOCK_NAME = ".anomaly-inspect.lock"


class OutputLockedError(RuntimeError):
    """Another run is writing to the same output folder."""


def _describe(holder: dict) -> str:
    return (f"pid {holder.get('pid', '?')} on host {holder.get('host', '?')}, "
            f"started {holder.get('started', '?')}")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    except OSError:
        return False
    return True


class OutputLock:
    """``with OutputLock(folder):`` - refuse (:class:`OutputLockedError`) if another run holds it."""

    def __init__(self, folder: Path | str, purpose: str = "screen"):
        self.folder = Path(folder)
        self.path = self.folder / LOCK_NAME
        self.purpose = purpose
        self._fd: int | None = None

    def _read(self, fd: int) -> dict:
        try:
            raw = os.pread(fd, 4096, 0)
            data = json.loads(raw.decode("utf-8")) if raw.strip() else {}
        except (OSError, ValueError):
            return {"pid": "?", "host": "?", "started": "? (unreadable lock file)"}
        return data if isinstance(data, dict) else {}

    def _refuse(self, holder: dict, why: str) -> OutputLockedError:
        return OutputLockedError(
            f"{self.folder}: in use by another run ({_describe(holder)}){why}; wait for it to "
            f"finish or choose another out_dir")

    def acquire(self) -> OutputLock:
        host = socket.gethostname()
        fd, refused = flock_file(self.path, held=lambda fd: self._refuse(self._read(fd), ""),
                                 writable=True, mode=0o644)
        flocked = refused is None
        if refused is not None and fcntl is not None:  # a file system without flock: the pid check alone
            log.warning("%s: cannot lock (%s); relying on the pid in the lock file",
                        self.path, refused.strerror or refused)
        holder = self._read(fd)
        pid = holder.get("pid")
        if holder and pid != os.getpid():
            if holder.get("host") != host:
                os.close(fd)
                raise self._refuse(holder, f"; it may still be running on that machine - if it "
                                           f"is not, delete {self.path}")
            if not flocked and isinstance(pid, int) and _pid_alive(pid):
                os.close(fd)
                raise self._refuse(holder, "")
            log.warning("%s: taking over the lock of a run that stopped without releasing it (%s)",
                        self.folder, _describe(holder))
        me = {"pid": os.getpid(), "host": host, "purpose": self.purpose,
              "started": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")}
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps(me).encode("utf-8"), 0)  # for messages only: no fsync needed
        self._fd = fd
        return self

    def release(self) -> None:
        if self._fd is None:
            return
        unlock_file(self.path, self._fd)
        self._fd = None

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

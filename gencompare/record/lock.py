"""One process per run dir: an exclusive ``fcntl.flock`` on ``<run dir>/.lock``, held for
the whole life of the run (or the ``eval``) that writes into the dir. Part of
:mod:`gencompare.record`.

The kernel drops a ``flock`` when the process that holds it dies, however it dies (SIGKILL
included), so a lock left by a killed process never blocks the next one; the file stays
and says who held it last (pid, host, command, start time), which is what the refusal of
a second process names. Locks are counted per process: a seed batch that holds its
members' dirs finishes each member through the ordinary run, which locks the dir again.
"""
from __future__ import annotations

import fcntl
import json
import os
import shlex
import socket
import sys
import time
from contextlib import contextmanager
from pathlib import Path

from gencompare.errors import GencompareError

__all__ = ["LOCK_FILE", "RunDirInUse", "lock_run_dir", "run_locks"]

LOCK_FILE = ".lock"

_HELD: dict[str, list[int]] = {}   # resolved run dir -> [fd, times acquired by this process]
_SCOPES: list[list[str]] = []       # run_locks() scopes, innermost last: the dirs each acquired


class RunDirInUse(GencompareError):
    """Another live process holds the run dir's lock. Nothing may be written into the dir
    by the refused process (no ``failed.json``, no removal of an 'empty' dir, no log line)."""


def _holder(lock: Path) -> str:
    """Who holds ``lock``, as its file says: ``pid 123 on host (gencompare train ...)``."""
    try:
        info = json.loads(lock.read_text())
        return (f"pid {info['pid']} on {info['host']} (`{info['command']}`, "
                f"since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(info['since']))})")
    except (OSError, ValueError, KeyError, TypeError):
        return "another process"


def command_line(what: str) -> str:
    """``gencompare <what> <args>`` as typed (quoted for the shell), at most 200 characters."""
    line = " ".join(["gencompare", what, *(shlex.quote(a) for a in sys.argv[1:])])
    return line if len(line) <= 200 else line[:197] + "..."


def lock_run_dir(path: Path | str, what: str) -> None:
    """Take the exclusive lock of run dir ``path`` for this process (``what``: the command,
    for the message another process shows). Released when the innermost :func:`run_locks`
    scope ends, or when the process ends.

    Raises:
        RunDirInUse: another live process holds it, named (pid, host, command).
        GencompareError: the lock file cannot be created (one line, the path).
    """
    path = Path(path)
    key = str(path.resolve())
    if key in _HELD:
        _HELD[key][1] += 1
    else:
        lock = path / LOCK_FILE
        try:
            fd = os.open(lock, os.O_RDWR | os.O_CREAT, 0o644)
        except OSError as exc:
            raise GencompareError(f"cannot create {lock}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise RunDirInUse(f"{path} is in use by {_holder(lock)}; wait for it to end (or stop it) "
                              "before another process writes there") from None
        info = {"pid": os.getpid(), "host": socket.gethostname(), "command": command_line(what), "since": time.time()}
        os.ftruncate(fd, 0)
        os.pwrite(fd, (json.dumps(info) + "\n").encode(), 0)
        _HELD[key] = [fd, 1]
    if _SCOPES:
        _SCOPES[-1].append(key)


def _release(key: str) -> None:
    held = _HELD.get(key)
    if held is None:
        return
    held[1] -= 1
    if held[1] <= 0:
        del _HELD[key]
        os.close(held[0])  # closing the descriptor drops the flock


@contextmanager
def run_locks():
    """Scope for :func:`lock_run_dir`: the locks taken inside are released on exit."""
    _SCOPES.append([])
    try:
        yield
    finally:
        for key in _SCOPES.pop():
            _release(key)


def holds_lock(path: Path | str) -> bool:
    """True when this process holds ``path``'s lock."""
    return str(Path(path).resolve()) in _HELD

"""Files that came from elsewhere (a download, an archive a user was sent, a folder of
batches) are data: reading them must never run code nor write outside their folder.

- :func:`load_data_pickle` reads a pickle of plain data (dicts, lists, tuples, strings,
  bytes, numbers, numpy arrays) with a restricted unpickler: any other global, ``os.system``
  or a class with a ``__reduce__`` of its own, is refused before it is called (the pattern of
  Python's ``pickle`` documentation, "Restricting Globals").
- :func:`extract_tar` unpacks a tar archive only when every member stays inside the target
  folder: no absolute path, no ``..``, no link pointing out, no device or FIFO. Python's
  ``tarfile.data_filter`` (PEP 706) applies the same rules where it exists (3.11.4+, 3.12);
  the explicit check stands on its own for older interpreters and names the bad member.
"""
from __future__ import annotations

import os
import pickle
import tarfile
from pathlib import Path
from typing import Any

from gencompare.errors import GencompareError

__all__ = ["load_data_pickle", "extract_tar", "DATA_PICKLE_GLOBALS"]

#: The only globals a data pickle may name: numpy's array reconstruction (numpy 1 and 2
#: module paths) and ``_codecs.encode``, with which protocol-2 pickles spell bytes.
DATA_PICKLE_GLOBALS = frozenset({
    ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"), ("numpy._core.numeric", "_frombuffer"),  # protocol 5
    ("numpy", "ndarray"), ("numpy", "dtype"), ("_codecs", "encode"),
})


class _DataUnpickler(pickle.Unpickler):
    def __init__(self, file, *, where: Path, **kwargs) -> None:
        super().__init__(file, **kwargs)
        self._where = where

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in DATA_PICKLE_GLOBALS:
            return super().find_class(module, name)
        raise GencompareError(f"refusing to unpickle {module}.{name} from {self._where}: a data file may hold "
                              "only arrays, lists, dicts, strings and numbers (it may have been tampered with)")


def load_data_pickle(path: str | Path, *, encoding: str = "ASCII") -> Any:
    """Unpickle ``path`` allowing plain data only (see the module docstring).

    Args:
        path: the pickle file.
        encoding: how Python 2 ``str`` objects are decoded (CIFAR-10's batches: "latin1").

    Raises:
        GencompareError: the pickle names any other global (nothing of it was called), or
            is not a readable pickle (one line naming the file).
    """
    path = Path(path)
    try:
        with open(path, "rb") as f:
            return _DataUnpickler(f, where=path, encoding=encoding).load()
    except GencompareError:
        raise
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError) as exc:
        raise GencompareError(f"cannot read {path} as a data pickle: {exc}") from None


def _check_member(member: tarfile.TarInfo, dest: Path, archive: Path) -> None:
    target = (dest / member.name).resolve()
    bad = None
    if os.path.isabs(member.name) or ".." in Path(member.name).parts:
        bad = "an absolute path or '..'"
    elif not target.is_relative_to(dest):
        bad = "a path outside the folder"
    elif member.issym() or member.islnk():
        base = target.parent if member.issym() else dest
        link = (base / member.linkname).resolve()
        if os.path.isabs(member.linkname) or not link.is_relative_to(dest):
            bad = f"a link to {member.linkname}, outside the folder"
    elif not (member.isfile() or member.isdir()):
        bad = "a device, FIFO or other special file"
    if bad:
        raise GencompareError(f"refusing to extract {archive}: member {member.name!r} is {bad}; "
                              "nothing was extracted")


def extract_tar(archive: str | Path, dest: str | Path) -> None:
    """Extract the tar archive ``archive`` (any compression tarfile reads) into ``dest``.

    Every member is checked before anything is written, so a refused archive leaves
    ``dest`` as it was.

    Raises:
        GencompareError: a member would land outside ``dest`` or is a special file (the
            member named), or the archive cannot be read.
    """
    archive, dest = Path(archive), Path(dest).resolve()
    dest.mkdir(parents=True, exist_ok=True)
    try:
        with tarfile.open(archive) as tar:
            members = tar.getmembers()
            for member in members:
                _check_member(member, dest, archive)
            if hasattr(tarfile, "data_filter"):
                tar.extractall(dest, members=members, filter="data")
            else:  # pragma: no cover - Python < 3.11.4; every member was checked above
                tar.extractall(dest, members=members)
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise GencompareError(f"cannot extract {archive}: {exc}") from None

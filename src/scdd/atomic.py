"""Write-then-rename helpers so a crash never leaves a truncated artefact."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _umask() -> int:
    """The process umask (reading it means setting it; it is set back at once)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _share_as_umask_allows(path: Path) -> None:
    """Give ``path`` the mode a plain ``open``/``mkdir`` would have given it.

    ``mkstemp``/``mkdtemp`` create private (0600/0700) entries whatever the
    umask; artefacts are meant to be shared like any other file the user
    writes (what is written inside a directory already follows the umask).
    """
    path.chmod((0o777 if path.is_dir() else 0o666) & ~_umask())


@contextlib.contextmanager
def atomic_path(target: Path, *, directory: bool = False) -> Iterator[Path]:
    """Yield a temporary sibling of ``target``; move it into place on success.

    The temporary lives in the same folder so the final ``os.replace`` is a
    rename on one filesystem. On error it is removed and ``target`` is left as
    it was.
    """
    target.parent.mkdir(parents=True, exist_ok=True)
    if directory:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    else:
        fd, name = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
        os.close(fd)
        tmp = Path(name)
    try:
        yield tmp
        _share_as_umask_allows(tmp)
        if directory and target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            os.replace(target, backup)
            os.replace(tmp, target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            os.replace(tmp, target)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)
        raise

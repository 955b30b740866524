import os
import stat
from pathlib import Path

import pytest

from scdd.atomic import atomic_path


@pytest.fixture
def umask_022():
    previous = os.umask(0o022)
    yield
    os.umask(previous)


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_files_and_directories_follow_the_umask(tmp_path: Path, umask_022) -> None:
    with atomic_path(tmp_path / "a.h5ad") as tmp:
        tmp.write_text("x")
    with atomic_path(tmp_path / "model", directory=True) as tmp:
        (tmp / "w.ckpt").write_text("x")
    assert _mode(tmp_path / "a.h5ad") == 0o644
    assert _mode(tmp_path / "model") == 0o755


def test_a_stricter_umask_is_kept(tmp_path: Path) -> None:
    previous = os.umask(0o077)
    try:
        with atomic_path(tmp_path / "a.h5ad") as tmp:
            tmp.write_text("x")
    finally:
        os.umask(previous)
    assert _mode(tmp_path / "a.h5ad") == 0o600


def test_a_failed_write_leaves_nothing_and_keeps_the_old_file(tmp_path: Path) -> None:
    target = tmp_path / "a.h5ad"
    target.write_text("old")
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("killed")
    assert target.read_text() == "old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.h5ad"]

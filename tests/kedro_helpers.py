"""Run pipelines of a throw-away project copy through a real KedroSession."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from kedro.framework.session import KedroSession
from kedro.framework.startup import bootstrap_project


def run_session(
    project: Path,
    pipeline: str,
    runtime_params: dict[str, Any] | None = None,
    **run_kwargs: Any,
) -> None:
    """``kedro run --pipelines <pipeline> --params ...`` inside ``project``."""
    bootstrap_project(project)
    with KedroSession.create(project_path=project, runtime_params=runtime_params) as s:
        s.run(pipeline_names=[pipeline], **run_kwargs)


def data_files(project: Path) -> dict[str, int]:
    """Every file under ``project/data`` with its modification time (ns)."""
    return {
        str(p.relative_to(project)): p.stat().st_mtime_ns
        for p in sorted((project / "data").rglob("*"))
        if p.is_file()
    }

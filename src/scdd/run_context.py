"""The run-wide group (``seed``, ``device``, ``progress``, ``threads``), read
once per run and handed to nodes through a small context.

A node takes its artefacts and its own stage's parameter group; the
run-wide values come from :func:`current_run`, which
:class:`scdd.hooks.RunContextHooks` sets from the run's parameters before
the run starts, and hands down to the worker processes of Kedro's
``ParallelRunner`` however they are started. A script or notebook calling
nodes directly sets it with :func:`using_run`.
Library functions below the nodes still take ``seed``, ``device`` and
``progress`` as arguments: only nodes read the context.
"""

from __future__ import annotations

import os
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import torch
from pydantic import field_validator

from scdd.models.device import resolve_device
from scdd.param_group import NonNegativeInt, ParamGroup, PositiveInt

#: The ``device`` parameter: ``auto``, ``cpu``, ``cuda``, ``cuda:N`` or ``mps``.
_DEVICE = re.compile(r"auto|cpu|mps|cuda(:\d+)?")


class RunParams(ParamGroup):
    """The top-level scalars every pipeline shares."""

    seed: NonNegativeInt = 0
    #: ``auto`` (CUDA when present, else CPU), ``cpu``, ``cuda``, ``cuda:N``,
    #: ``mps``.
    device: str = "auto"
    #: Progress bars in long loops; ``None``: only on a terminal.
    progress: bool | None = None
    #: torch/numba/BLAS threads; ``None``: the CPU cores not busy with other
    #: work, re-checked as the run goes.
    threads: PositiveInt | None = None

    @field_validator("device")
    @classmethod
    def _known_device(cls, value: str) -> str:
        if not _DEVICE.fullmatch(value):
            raise ValueError(
                f"device={value!r}; use 'auto', 'cpu', 'cuda', 'cuda:N' "
                "(N = GPU index) or 'mps'"
            )
        return value

    @property
    def torch_device(self) -> torch.device:
        """``device`` resolved on this machine (``auto``: CUDA when present)."""
        return resolve_device(self.device)

    @property
    def show_progress(self) -> bool:
        """Whether loops draw progress bars: ``progress``, or when it is
        ``None`` only where someone watches (a terminal, not a log file)."""
        return sys.stderr.isatty() if self.progress is None else self.progress

    def kwargs(self) -> dict[str, Any]:
        """``seed``, ``device`` (resolved) and ``progress`` (resolved), as the
        library's long-running functions take them."""
        return {
            "seed": self.seed,
            "device": self.torch_device,
            "progress": self.show_progress,
        }


#: Environment variable that hands the run group to node processes Kedro's
#: ``ParallelRunner`` starts by spawn or forkserver: they import this module
#: afresh and run none of the project's hooks.
RUN_ENV = "SCDD_RUN_PARAMS"

_current: RunParams | None = None


def current_run() -> RunParams:
    """The run-wide group of the run in progress: the one set in this
    process, else the one a parent run handed down (:data:`RUN_ENV`), else
    the defaults."""
    if _current is not None:
        return _current
    inherited = os.environ.get(RUN_ENV)
    return RunParams.model_validate_json(inherited) if inherited else RunParams()


def set_run(run: RunParams | None) -> None:
    """Make ``run`` the group :func:`current_run` returns (``None``: back to
    the inherited or default one)."""
    global _current  # noqa: PLW0603 - one run per process at a time
    _current = run


def hand_down(run: RunParams | None) -> None:
    """Pass ``run`` to the node processes this one starts from now on
    (``None``: stop passing one)."""
    if run is None:
        os.environ.pop(RUN_ENV, None)
    else:
        os.environ[RUN_ENV] = run.model_dump_json()


@contextmanager
def using_run(run: RunParams) -> Iterator[RunParams]:
    """``run`` as the current group inside the block, the previous one after."""
    previous = _current
    set_run(run)
    try:
        yield run
    finally:
        set_run(previous)

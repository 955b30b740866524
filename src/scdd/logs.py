"""Console logging for ``kedro run``: rich on a terminal, plain lines elsewhere.

Kedro builds its handlers from ``conf/logging.yml`` (and allows only its own
and the standard library's classes there); :func:`tidy_console`, run by a
hook once the project is loaded, adjusts them: piped or redirected output
(CI, ``tee``, job schedulers) gets one unwrapped line per record and plain
tracebacks instead of rich's 80-column boxes, the per-parameter "Loading
data from params:..." lines drop to DEBUG, and tracebacks on a terminal
collapse the frames of the libraries that only carried the error. An error
whose message already says what is wrong and how to fix it (a rejected
parameter, a bad input, a stale artefact: :data:`USER_ERRORS`) ends the run
with that message alone; ``SCDD_TRACEBACK=1`` (or a DEBUG log level) shows
the traceback as well.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable
from types import TracebackType

from kedro.validation.exceptions import ParameterValidationError

PLAIN_FORMAT = "%(asctime)s %(levelname)-7s %(name)s: %(message)s"
PLAIN_DATE = "%H:%M:%S"


class ParameterLoadsAtDebug(logging.Filter):
    """Demote Kedro's per-parameter "Loading data from params:..." to DEBUG."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(
            "Loading data from"
        ):
            name = str(record.args[0]) if record.args else str(record.msg)
            if "params:" in name or name.startswith("parameters"):
                record.levelno, record.levelname = logging.DEBUG, "DEBUG"
                return logging.getLogger(record.name).isEnabledFor(logging.DEBUG)
        return True


#: Errors raised with a complete message for the user (pydantic's
#: ``ValidationError`` is a ``ValueError``).
USER_ERRORS = (ValueError, ParameterValidationError)

ExceptHook = Callable[[type[BaseException], BaseException, TracebackType | None], None]


def message_only(fallback: ExceptHook) -> ExceptHook:
    """An excepthook that prints :data:`USER_ERRORS` as their message and a
    hint, and leaves every other error to ``fallback``."""

    def hook(
        kind: type[BaseException], error: BaseException, tb: TracebackType | None
    ) -> None:
        verbose = os.environ.get("SCDD_TRACEBACK") or logging.getLogger().isEnabledFor(
            logging.DEBUG
        )
        if verbose or not issubclass(kind, USER_ERRORS):
            fallback(kind, error, tb)
            return
        sys.stderr.write(
            f"Error: {error}\n(the traceback: SCDD_TRACEBACK=1 kedro run ...)\n"
        )

    hook.message_only = True  # type: ignore[attr-defined]
    return hook


def plain_handler(level: int = logging.INFO) -> logging.Handler:
    """One unwrapped line per record on stdout."""
    handler = logging.StreamHandler(sys.stdout)
    handler.setFormatter(logging.Formatter(PLAIN_FORMAT, PLAIN_DATE))
    handler.setLevel(level)
    return handler


def tidy_console(*, terminal: bool | None = None) -> None:
    """Adjust the root logger's console handlers (see the module docstring)."""
    from kedro.logging import RichHandler

    terminal = sys.stdout.isatty() if terminal is None else terminal
    root = logging.getLogger()
    for current in list(root.handlers):
        handler = current
        if isinstance(current, RichHandler) and not terminal:
            root.removeHandler(current)
            handler = plain_handler(current.level)
            root.addHandler(handler)
            sys.excepthook = sys.__excepthook__  # plain tracebacks, not rich boxes
        if not any(isinstance(f, ParameterLoadsAtDebug) for f in handler.filters):
            handler.addFilter(ParameterLoadsAtDebug())
    if getattr(sys.excepthook, "message_only", False):
        return
    if terminal:
        import click
        import kedro
        import pluggy
        import rich.traceback

        rich.traceback.install(suppress=[kedro, click, pluggy], max_frames=6)
    sys.excepthook = message_only(sys.excepthook)
    # Kedro logs each rejected parameter, then raises them all: say it once.
    logging.getLogger("kedro.validation.parameter_validator").setLevel(logging.CRITICAL)

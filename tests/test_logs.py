import logging
import sys

import pytest
from kedro.logging import RichHandler

from scdd.logs import ParameterLoadsAtDebug, message_only, tidy_console


def _record(msg: str, *args) -> logging.LogRecord:
    return logging.LogRecord(
        "kedro.io.data_catalog", logging.INFO, "", 0, msg, args, None
    )


def test_piped_output_gets_plain_unwrapped_lines() -> None:
    root = logging.getLogger()
    saved, hook = list(root.handlers), sys.excepthook
    rich = RichHandler()
    root.handlers = [rich]
    try:
        tidy_console(terminal=False)
        (handler,) = root.handlers
        assert type(handler) is logging.StreamHandler
        assert any(isinstance(f, ParameterLoadsAtDebug) for f in handler.filters)
        line = handler.format(_record("x" * 300))
        assert "\n" not in line and line.endswith("x" * 300)
    finally:
        root.handlers, sys.excepthook = saved, hook


def test_parameter_loads_are_demoted_to_debug() -> None:
    check = ParameterLoadsAtDebug()
    params = _record("Loading data from %s (%s)...", "params:distill", "MemoryDataset")
    assert not check.filter(params)
    assert params.levelname == "DEBUG"
    data = _record("Loading data from %s (%s)...", "train_adata", "H5ADDataset")
    assert check.filter(data) and data.levelname == "INFO"


def test_user_errors_end_with_their_message_alone(capsys, monkeypatch) -> None:
    shown = []
    hook = message_only(lambda *exc: shown.append(exc[0]))
    monkeypatch.delenv("SCDD_TRACEBACK", raising=False)
    hook(ValueError, ValueError("distill.spc must be >= 1; set it."), None)
    err = capsys.readouterr().err
    assert err.startswith("Error: distill.spc must be >= 1; set it.\n")
    assert "SCDD_TRACEBACK=1" in err and not shown
    hook(KeyError, KeyError("bug"), None)  # not a user error: full traceback
    assert shown == [KeyError]
    monkeypatch.setenv("SCDD_TRACEBACK", "1")
    hook(ValueError, ValueError("x"), None)
    assert shown == [KeyError, ValueError]


@pytest.mark.parametrize("terminal", [True, False])
def test_tidy_console_installs_the_hook_once(terminal) -> None:
    saved, hook = list(logging.getLogger().handlers), sys.excepthook
    try:
        tidy_console(terminal=terminal)
        first = sys.excepthook
        tidy_console(terminal=terminal)
        assert sys.excepthook is first and first.message_only
    finally:
        logging.getLogger().handlers, sys.excepthook = saved, hook

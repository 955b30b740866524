import logging
import sys

from kedro.logging import RichHandler

from scdd.logs import ParameterLoadsAtDebug, tidy_console


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

"""The run-wide group and the context nodes read it from."""

import pytest
import torch
from pydantic import ValidationError

from scdd.run_context import RunParams, current_run, set_run, using_run


@pytest.mark.parametrize("terminal", [True, False])
def test_progress_null_means_bars_only_on_a_terminal(monkeypatch, terminal) -> None:
    monkeypatch.setattr("sys.stderr.isatty", lambda: terminal)
    assert RunParams(progress=None).show_progress is terminal
    assert RunParams(progress=True).show_progress is True
    assert RunParams(progress=False).show_progress is False


def test_kwargs_are_what_library_functions_take() -> None:
    run = RunParams(seed=4, device="cpu", progress=False)
    assert run.kwargs() == {
        "seed": 4,
        "device": torch.device("cpu"),
        "progress": False,
    }


def test_unknown_devices_are_refused() -> None:
    with pytest.raises(ValidationError, match="use 'auto', 'cpu', 'cuda'"):
        RunParams(device="gpu")


def test_using_run_restores_the_previous_group_also_on_error() -> None:
    assert current_run() == RunParams()
    with pytest.raises(RuntimeError), using_run(RunParams(seed=9)):
        assert current_run().seed == 9
        raise RuntimeError
    assert current_run() == RunParams()
    set_run(RunParams(seed=2))
    try:
        assert current_run().seed == 2
    finally:
        set_run(None)


def test_a_process_without_a_run_of_its_own_reads_the_one_handed_down() -> None:
    """What a node process started by spawn sees: no group set in it, the
    parent's in the environment."""
    from scdd.run_context import hand_down

    hand_down(RunParams(seed=5, device="cpu"))
    try:
        assert current_run() == RunParams(seed=5, device="cpu")
        with using_run(RunParams(seed=6)):  # one set here comes first
            assert current_run().seed == 6
    finally:
        hand_down(None)
    assert current_run() == RunParams()

import os

# before scipy/torch load: BLAS threads only add contention on 2 cores; nothing reaches a network
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
os.environ.setdefault("WANDB_MODE", "offline")
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import logging

import pytest
import torch

torch.set_num_threads(1)


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Wall-clock tests (`benchmark`) run only when -m names them: a speed claim fails under load, not on a bug.
    A hook, not `-m 'not benchmark'` in addopts, since any -m on the command line would replace that one."""
    if "benchmark" in config.getoption("markexpr"):
        return
    deselected = [item for item in items if item.get_closest_marker("benchmark")]
    if deselected:
        config.hook.pytest_deselected(items=deselected)
        items[:] = [item for item in items if not item.get_closest_marker("benchmark")]


@pytest.fixture
def one_thread():
    """One torch thread for the test (the CLI's subprocesses run with OMP_NUM_THREADS=1): the same reduction order."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture(autouse=True)
def _drop_handlers_on_closed_streams():
    """In-process Hydra and Lightning runs attach log handlers to a test's captured stream, closed after that test:
    a later test's log line would print a 'Logging error' traceback into its own captured output."""
    loggers = [logging.root, *(g for g in logging.Logger.manager.loggerDict.values() if isinstance(g, logging.Logger))]
    for logger in loggers:
        for handler in logger.handlers[:]:
            if isinstance(handler, logging.StreamHandler) and getattr(handler.stream, "closed", False):
                logger.removeHandler(handler)

"""Fixtures of the reliability suite: the data and the uninterrupted run attempts compare to."""

from __future__ import annotations

import pytest

from tests.reliability.attempts import Run, finish, write_data


@pytest.fixture(scope="session")
def train_inputs(tmp_path_factory):
    """Training and validation Datasets for the train-step attempts (tests/reliability)."""
    return write_data(tmp_path_factory.mktemp("reliability-data"))


@pytest.fixture(scope="session")
def reference(train_inputs, tmp_path_factory) -> tuple[dict, dict]:
    """An uninterrupted run of the train step: its result and its TensorBoard curves."""
    run = Run(tmp_path_factory.mktemp("straight"), train_inputs)
    proc = run.start(0, delay=0.0)
    assert proc.wait(timeout=240) == 0, finish(proc)
    return run.result(0), run.curves()

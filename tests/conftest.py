"""Fixtures shared across test modules (session scope: built once per pytest run).

Only artifacts that the tests read and never write are shared; each module keeps its own
``tmp_path_factory`` folder for what it writes."""

from __future__ import annotations

import pytest


@pytest.fixture(scope="session")
def moons_400_good(tmp_path_factory):
    """Two moons (400 rows, seed 1) ingested and transformed, and a 2-layer MAF trained 20 epochs
    on them: the "good" model of test_evaluate.py and test_blessing.py, built once for both."""
    from tests.artifact_testing import prepared_moons, train_flow_artifact

    root = tmp_path_factory.mktemp("moons_400")
    ex, tg = prepared_moons(root, num_samples=400, seed=1)
    return {"examples": ex, "transform": tg, "good": train_flow_artifact(ex, tg, str(root / "good"), epochs=20)}


@pytest.fixture(scope="session")
def default_run(tmp_path_factory):
    """`tfflows run` with the embedded defaults made tiny (`cli_testing.TINY_RUN`), once per pytest
    run: ``(output folder, the CLI's CompletedProcess)``. For end-to-end tests that only read what
    the run left (the MLflow store, serving/, logs/); a test that writes there or runs again makes
    its own run. The caller asserts the exit status (with the output in the message)."""
    from tests.cli_testing import TINY_RUN, cli

    output = tmp_path_factory.mktemp("default_run") / "tfflows_output"
    return output, cli("run", "--output", str(output), *TINY_RUN)

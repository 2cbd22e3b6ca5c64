"""Fixtures shared across test modules (session scope: built once per pytest run), and how the
suite runs in parallel.

Only artifacts that the tests read and never write are shared; each module keeps its own
``tmp_path_factory`` folder for what it writes.

Parallel runs (pytest-xdist). A plain ``python -m pytest`` runs on ``-n auto`` workers (one per
core, at most ``MAX_WORKERS``) with ``--dist loadfile``, set by ``pytest_cmdline_main`` below
rather than by ``addopts`` so that ``-p no:xdist`` still works; ``-n 0`` (or ``-p no:xdist``,
``--pdb``, ``--trace``) runs everything in this one process, as before, for debugging. An explicit
``-n``/``--dist``/``--tx`` is used as given; a command line that names a single test module (or
tests of one module) runs in one process too, since that module would run on one worker anyway.

``loadfile``: each test module runs whole on one worker, so every module-scoped fixture (a module's
trained model, pipeline run or started server) is still built once; a session-scoped fixture of
this file is built at most once per worker. (``--dist loadgroup`` with ``xdist_group`` marks would
share finer, but with pytest 9.2 and pytest-xdist 3.8.0 it silently groups nothing:
pytest-dev/pytest-xdist#1386.) Modules are handed out costliest first (a slow test counts as
``SLOW_COST`` fast ones), so that no long module starts last while the other worker idles."""

from __future__ import annotations

import pytest

# Workers on a machine with many cores: beyond this the run is bound by its longest module (a few
# minutes), and every worker holds its own TensorFlow (1-2 GB) plus the processes its tests start.
MAX_WORKERS = 8
SLOW_COST = 40  # a slow test takes about as long as 40 fast ones (measured: ~40 s vs ~1 s)


@pytest.hookimpl(tryfirst=True)
def pytest_cmdline_main(config):
    """``-n auto --maxprocesses MAX_WORKERS --dist loadfile`` unless the command line chose."""
    if not config.pluginmanager.hasplugin("xdist") or hasattr(config, "workerinput"):
        return
    option = config.option
    chosen = (option.numprocesses is not None or option.dist != "no" or option.tx
              or getattr(option, "distload", False) or getattr(option, "looponfail", False))
    debugging = option.usepdb or getattr(option, "trace", False) or option.collectonly
    # One module named on the command line would run whole on one worker anyway (loadfile).
    one_module = len({arg.split("::")[0] for arg in config.args}) == 1 and config.args[0].split("::")[0].endswith(".py")
    if chosen or debugging or one_module:
        return
    option.numprocesses = "auto"
    option.maxprocesses = option.maxprocesses or MAX_WORKERS
    option.dist = "loadfile"
    option.loadscopereorder = False  # keep the costliest-first order made below


@pytest.hookimpl(tryfirst=True)
def pytest_collection_modifyitems(config, items):
    """In an xdist worker: the modules costliest first (each module's tests in their own order).
    Every worker collects, so every worker sorts the same way; ``-n 0`` keeps the plain order."""
    if not hasattr(config, "workerinput"):
        return
    modules: dict = {}
    for item in items:
        modules.setdefault(str(item.path), []).append(item)
    cost = {path: sum(SLOW_COST if item.get_closest_marker("slow") else 1 for item in members)
            for path, members in modules.items()}
    items[:] = [item for path in sorted(modules, key=lambda path: -cost[path]) for item in modules[path]]


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

"""Running the `tfflows` CLI as a user would (a subprocess from the repository root), and a script
as a model server would (a fresh Python with nothing of this project)."""

from __future__ import annotations

import os
import subprocess
import sys

TFFLOWS = [sys.executable, "-m", "tfflows.pipeline.cli"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=900, cwd=REPO):
    return subprocess.run([*TFFLOWS, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


def run_without_tfflows(script, *args, cwd):
    """Runs the Python `script` (``python -c``, its arguments `args`) in a fresh process without
    PYTHONPATH, as a server holding only TensorFlow would load a SavedModel; checks that it exits 0
    and imported no module of this project, and returns its standard output's lines."""
    check = "\nimport sys as _sys\nprint(sorted(_sys.modules.keys() & {'tfflows', 'components', 'models'}))\n"
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script + check, *map(str, args)], capture_output=True, text=True,
                          timeout=300, cwd=cwd, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    *lines, imported = proc.stdout.strip().splitlines()
    assert imported == "[]", imported  # nothing of this project: the SavedModel stands alone
    return lines


# `tfflows run` arguments for a smoke run of the embedded default (moons, MAF) in a minute or two:
# a small set and network, two epochs, blessed whatever two epochs reach (it checks plumbing).
TINY_RUN = ["--epochs", "2", "--set", "ingest.num_samples=400", "--set", "train.num_layers=2",
            "--set", "train.hidden_units=[16]", "--set", "train.learning_rate=0.003", "--set", "train.batch_size=50",
            "--set", "evaluate.reference_tolerance=1e6"]

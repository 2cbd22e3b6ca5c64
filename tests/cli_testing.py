"""Running the `tfflows` CLI as a user would: a subprocess from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys

TFFLOWS = [sys.executable, "-m", "tfflows.pipeline.cli"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=900, cwd=REPO):
    return subprocess.run([*TFFLOWS, *args], cwd=cwd, capture_output=True, text=True, timeout=timeout)


# `tfflows run` arguments for a smoke run of the embedded default (moons, MAF) in a minute or two:
# a small set and network, two epochs, blessed whatever two epochs reach (it checks plumbing).
TINY_RUN = ["--epochs", "2", "--set", "ingest.num_samples=400", "--set", "train.num_layers=2",
            "--set", "train.hidden_units=[16]", "--set", "train.learning_rate=0.003", "--set", "train.batch_size=50",
            "--set", "evaluate.reference_tolerance=1e6"]

"""Running the `tfflows` CLI as a user would: a subprocess from the repository root."""

from __future__ import annotations

import os
import subprocess
import sys

TFFLOWS = [sys.executable, "-m", "tfflows.pipeline.cli"]
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def cli(*args, timeout=900):
    return subprocess.run([*TFFLOWS, *args], cwd=REPO, capture_output=True, text=True, timeout=timeout)

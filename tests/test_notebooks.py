"""The notebooks run top to bottom with their small settings (nbclient, a real kernel)."""

from __future__ import annotations

import os
import re

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Library chatter: log levels, absl's and TensorFlow's C++ prefixes (I1206 12:00:00.0), the loggers.
NOISE = re.compile(r"INFO|WARNING|\b[IWE]\d{4} \d\d:|absl|oneDNN|cuda|tensorflow:|apache_beam|mlflow\.(store|tracking)")
MAX_LINES = 30  # the report (about 12 lines), progress every 10 epochs, the anomaly scores


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFFLOWS_NOTEBOOK_OUTPUT", str(tmp_path / "out"))
    notebook = nbformat.read(os.path.join(REPO, "notebooks", "quickstart.ipynb"), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}).execute()
    assert (tmp_path / "out" / "quickstart.png").exists()
    assert (tmp_path / "out" / "serving" / "1" / "saved_model.pb").exists()
    # As quiet as the CLI (`pipeline.terminal.quiet`): the run's report and progress, no TensorFlow,
    # Beam, absl or MLflow lines (the notebook used to print hundreds).
    lines = [line for cell in notebook.cells if cell.cell_type == "code" for output in cell.outputs
             if output.output_type == "stream" for line in output.text.splitlines()]
    assert any(line.startswith("SavedModel: ") for line in lines), lines
    noisy = [line for line in lines if NOISE.search(line)]
    assert not noisy and len(lines) < MAX_LINES, (len(lines), noisy[:20])

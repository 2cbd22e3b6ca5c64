"""The notebooks run top to bottom with their small settings (nbclient, a real kernel)."""

from __future__ import annotations

import os

import nbformat
import pytest
from nbclient import NotebookClient

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.mark.slow
def test_quickstart_notebook_executes(tmp_path, monkeypatch):
    monkeypatch.setenv("TFFLOWS_NOTEBOOK_OUTPUT", str(tmp_path / "out"))
    notebook = nbformat.read(os.path.join(REPO, "notebooks", "quickstart.ipynb"), as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3", resources={"metadata": {"path": REPO}}).execute()
    assert (tmp_path / "out" / "quickstart.png").exists()
    assert (tmp_path / "out" / "serving" / "1" / "saved_model.pb").exists()

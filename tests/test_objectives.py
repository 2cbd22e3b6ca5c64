"""The objective registry and the typed model summary (no training: TensorFlow-free and fast)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from tfflows.components.objectives import OBJECTIVES, Objective, get_objective
from tfflows.components.objectives.vae import VAEDetails
from tfflows.components.summary import SUMMARY_FILE, ModelSummary
from tfflows.components.train.config import TrainConfig

REPO = Path(__file__).resolve().parents[1]

# A summary.json as tfflows wrote it before `ModelSummary` (a VAE run, history shortened).
OLD_VAE_SUMMARY = {
    "objective": "vae", "metric": "elbo", "status": "ok", "epochs_run": 3, "best_epoch": 3,
    "best_val_elbo": -41.5, "final_val_elbo": -41.25, "early_stopped": False,
    "history": [{"epoch": 1, "train_elbo": -60.0, "val_elbo": -55.0, "learning_rate": 0.001,
                 "examples_per_sec": 900.0}],
    "rollbacks": [], "nan_retries": 0, "train_time_s": 1.5, "examples_per_sec": 800.0, "num_parameters": 1234,
    "replicas": 1, "data_fingerprint": "abc", "event_dim": 64, "kind": "vae",
    "train_config": {"objective": "vae", "num_layers": 1, "hidden_units": [8], "epochs": 3},
    "checkpoint_dir": "/tmp/ckpt", "mlflow_run_id": None,
    "vae": {"likelihood": "bernoulli", "latent_dim": 4, "data_dim": 64}, "data_scale": 0.0625,
}


def test_the_registry_lists_the_three_objectives():
    assert list(OBJECTIVES) == ["max_likelihood", "reverse_kl", "vae"]
    for name in OBJECTIVES:
        objective = get_objective(name)
        assert isinstance(objective, Objective) and objective.name == name
    assert get_objective("max_likelihood").data_components == ("ingest", "transform")
    assert get_objective("vae").data_components == ("ingest",)
    assert get_objective("reverse_kl").data_components == ()


def test_an_unknown_objective_is_refused_with_the_known_ones():
    with pytest.raises(ValueError, match=r"unknown objective 'flowpp'; fix: use one of max_likelihood, reverse_kl, vae"):
        get_objective("flowpp")
    with pytest.raises(ValueError, match="`objective` must be one of"):
        TrainConfig(objective="flowpp")


def test_objectives_and_summaries_import_no_tensorflow():
    """The CLI says what it will run (and preflight reads the objective) before TensorFlow loads."""
    code = ("import sys; from tfflows.components.objectives import OBJECTIVES, get_objective; "
            "from tfflows.components.summary import ModelSummary; from tfflows.components.train.config import TrainConfig; "
            "print([get_objective(n).describe(TrainConfig(), 'moons') for n in OBJECTIVES]); "
            "ModelSummary.from_dict({'objective': 'vae', 'data_scale': 0.5}); "
            "print(sorted(m for m in ('tensorflow', 'tfx', 'mlflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip().splitlines()[-1] == "[]"


def test_the_summary_round_trips_through_json():
    summary = ModelSummary.from_dict(OLD_VAE_SUMMARY)
    assert summary.best_val == -41.5 and summary.final_val == -41.25 and summary.kind == "vae"
    assert summary.details == VAEDetails(vae=OLD_VAE_SUMMARY["vae"], data_scale=0.0625) and summary.details.binary
    assert summary.train_config == TrainConfig(objective="vae", num_layers=1, hidden_units=(8,), epochs=3)
    assert ModelSummary.from_json(summary.to_json()) == summary
    written = json.loads(summary.to_json())
    assert written == {**OLD_VAE_SUMMARY, "train_config": json.loads(summary.train_config.to_json()), "context_names": None,
                       "context_categorical_names": None, "categorical_names": None, "feature_names": None}


def test_an_old_summary_file_still_loads(tmp_path):
    """Files of earlier versions: the full format, a partial one (test helpers wrote
    ``{"epochs": 0}``) and none at all read with defaults for what they lack."""
    (tmp_path / "vae").mkdir()
    (tmp_path / "vae" / SUMMARY_FILE).write_text(json.dumps(OLD_VAE_SUMMARY))
    summary = ModelSummary.read(str(tmp_path / "vae"))
    assert summary.objective == "vae" and summary.details.data_scale == 0.0625 and summary.event_dim == 64
    (tmp_path / "partial").mkdir()
    (tmp_path / "partial" / SUMMARY_FILE).write_text(json.dumps({"epochs": 0, "best_val_log_likelihood": -1.5}))
    partial = ModelSummary.read(str(tmp_path / "partial"))
    assert (partial.objective, partial.metric, partial.best_val, partial.status) == (
        "max_likelihood", "log_likelihood", -1.5, "ok")
    assert partial.details is None and partial.event_dim is None and partial.mlflow_run_id is None
    assert ModelSummary.read(str(tmp_path / "none")) == ModelSummary()

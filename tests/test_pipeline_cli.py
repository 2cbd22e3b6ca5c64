"""The run configuration and the `tfflows` CLI, run as a user would (subprocess)."""

from __future__ import annotations

import json
import os
import re
import subprocess

import numpy as np
import pytest

from tests.cli_testing import REPO, TFFLOWS, cli
from tfflows.pipeline.config import ConfigError, RunConfig, load_run_config

TINY = ["--set", "ingest.num_samples=400", "--set", "train.num_layers=2", "--set", "train.hidden_units=[16]",
        "--set", "train.learning_rate=0.003", "--set", "train.batch_size=50"]



def test_defaults_file_and_set_precedence(tmp_path):
    path = tmp_path / "run.yaml"
    path.write_text("train:\n  epochs: 7\n  hidden_units: [32, 32]\ningest:\n  dataset: digits\n")
    config = load_run_config(str(path), {"train": {"epochs": 9}}, ["train.learning_rate=1e-2", "output=/tmp/x"])
    assert isinstance(config, RunConfig)
    assert config.train.epochs == 9 and config.train.hidden_units == (32, 32)
    assert config.train.learning_rate == 0.01 and config.output == "/tmp/x"
    assert config.ingest.dataset == "digits"


@pytest.mark.parametrize("assignment,match", [
    ("train.epoch=3", "unknown field 'train.epoch' (did you mean 'epochs'?); valid fields of train: kind, num_layers"),
    ("trainer.epochs=3", "unknown field 'trainer'"),
    ("train.epochs=-1", "train.epochs must be an int >= 1, but is -1; fix: change train.epochs"),
    ("train.kind=sylvester", "kind"),
    ("noequals", "expected section.field=value"),
])
def test_bad_settings_are_refused_with_the_valid_fields(assignment, match):
    with pytest.raises(ConfigError, match=re.escape(match)):
        load_run_config(None, None, [assignment])


def test_cli_rejects_bad_flags_and_configs(tmp_path):
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("train: [unclosed\n")
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("train:\n  epochz: 3\n")
    for args, expected in [
        (["run", "--config", str(bad_yaml)], "not valid YAML"),
        (["run", "--config", str(unknown)], "unknown field 'train.epochz'"),
        (["run", "--config", str(tmp_path / "missing.yaml")], "cannot read the config file"),
        (["run", "--set", "train.epochs=zero"], "train.epochs: expected an integer, got 'zero'"),
        (["run", "--data", str(tmp_path / "x.weird")], "cannot tell the format"),
        (["sample", "--model", str(tmp_path), "-n", "3", "--out", str(tmp_path / "s.npy")], "no SavedModel here"),
    ]:
        result = cli(*args)
        assert result.returncode != 0, args
        last = result.stderr.strip().splitlines()[-1]
        assert expected in last, (args, result.stderr[-2000:])
    assert cli("run", "--epochs", "x").returncode == 2  # argparse


@pytest.mark.slow
def test_run_evaluate_sample_end_to_end(tmp_path):
    """The whole pipeline from the CLI (with NICE: every kind goes through the same components),
    then the pushed model used as a user would."""
    output = tmp_path / "out"
    result = cli("run", "--dataset", "moons", "--model", "nice", "--epochs", "2", "--output", str(output), *TINY,
                 "--set", "evaluate.reference_tolerance=1e6")  # plumbing, not quality: two epochs of NICE
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "test log-likelihood:" in result.stdout and "MLflow run:" in result.stdout
    # quiet by default: no TensorFlow/absl/MLflow chatter, the whole output fits on one screen, the
    # log file it names holds the rest
    shown = (result.stdout + result.stderr).strip().splitlines()
    assert len(shown) <= 20 and not any(w in result.stdout + result.stderr for w in ("absl", "oneDNN", "cuda")), shown
    log = result.stdout.strip().splitlines()[-1].removeprefix("log: ")
    assert os.path.dirname(log) == str(output / "logs") and "epoch 2" in open(log).read()
    version_dir = output / "serving" / "1"
    assert (version_dir / "saved_model.pb").exists(), result.stdout

    data = np.random.default_rng(0).normal(size=(20, 2)).astype("float32")
    np.save(tmp_path / "rows.npy", data)
    scored = cli("evaluate", "--model", str(output / "serving"), "--data", str(tmp_path / "rows.npy"),
                 "--scores", str(tmp_path / "scores.npy"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    assert "log-likelihood:" in scored.stdout
    assert np.load(tmp_path / "scores.npy").shape == (20,)

    sampled = cli("sample", "--model", str(version_dir), "-n", "5", "--seed", "3", "--out", str(tmp_path / "s.npy"))
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    again = cli("sample", "--model", str(version_dir), "-n", "5", "--seed", "3", "--out", str(tmp_path / "t.npy"))
    assert again.returncode == 0
    np.testing.assert_array_equal(np.load(tmp_path / "s.npy"), np.load(tmp_path / "t.npy"))

    bad = np.array([[1.0, np.nan]], "float32")
    np.save(tmp_path / "bad.npy", bad)
    refused = cli("evaluate", "--model", str(version_dir), "--data", str(tmp_path / "bad.npy"))
    assert refused.returncode == 2 and "row 0, column 1" in refused.stderr


@pytest.mark.slow
def test_pipeline_logs_to_a_real_mlflow_server_over_http(tmp_path):
    """`tfflows run` against a real `mlflow server` on loopback, read back through its REST API."""

    from tests import mlflow_server

    with mlflow_server.MlflowServer(workdir=tmp_path / "server") as server:
        result = cli("run", "--dataset", "moons", "--epochs", "2", "--output", str(tmp_path / "out"), *TINY,
                     "--set", f"tracking.uri={server.url}")
        assert result.returncode == 0, result.stderr[-4000:] + server.log_tail()
        run_id = re.search(r"MLflow run: (\w+)", result.stdout).group(1)
        status, body = mlflow_server.http_get(f"{server.url}/api/2.0/mlflow/runs/get?run_id={run_id}")
        assert status == 200, body[:500]
        data = json.loads(body)["run"]["data"]
        params = {p["key"]: p["value"] for p in data["params"]}
        assert params["train.kind"] == "maf" and params["data.name"] == "moons"
        assert {"val_log_likelihood", "train_log_likelihood", "test_data_log_likelihood"} <= {m["key"] for m in data["metrics"]}
        status, body = mlflow_server.http_get(
            f"{server.url}/api/2.0/mlflow/registered-models/alias?name=tfflows&alias=champion")
        assert status == 200 and json.loads(body)["model_version"]["version"] == "1", body[:500]


@pytest.mark.slow
def test_ui_serves_the_runs_tracking_store(tmp_path):
    import time
    import urllib.request

    from tests.mlflow_server import free_port

    port = free_port()
    process = subprocess.Popen([*TFFLOWS, "ui", "--output", str(tmp_path / "out"), "--port", str(port)], cwd=REPO,
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline, status = time.time() + 180, None
        while time.time() < deadline and status != 200:
            assert process.poll() is None, process.stdout.read().decode()[-3000:]
            try:
                status = urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=5).status
            except OSError:
                time.sleep(2)
        assert status == 200
        assert (tmp_path / "out" / "mlflow.db").exists()
    finally:
        os.killpg(process.pid, 15)
        process.wait(timeout=30)


@pytest.mark.slow
def test_image_data_end_to_end_bits_per_dim_and_sample_grid(tmp_path):
    """Discrete image data (digits) with Real NVP's multi-scale image flow: evaluate reports
    bits/dim, sample draws an image grid."""
    output = tmp_path / "out"
    result = cli("run", "--dataset", "digits", "--model", "realnvp_image", "--epochs", "1", "--output", str(output),
                 "--set", "ingest.max_examples=400", "--set",
                 "train.flow_options={levels: 2, couplings_per_level: 1, residual_blocks: 1, hidden_channels: 8}",
                 # plumbing, not quality: one epoch loses to the Gaussian reference
                 "--set", "evaluate.reference_tolerance=1e6")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "bits/dim:" in result.stdout
    rows = np.random.default_rng(0).integers(0, 17, size=(10, 64)).astype("float32") + 0.5
    np.save(tmp_path / "digits.npy", rows)
    scored = cli("evaluate", "--model", str(output / "serving"), "--data", str(tmp_path / "digits.npy"))
    assert scored.returncode == 0 and "bits/dim:" in scored.stdout, scored.stderr[-3000:]
    os.makedirs(output / "serving" / ".tmp-inflight")  # a push in progress must not confuse readers
    grid = cli("sample", "--model", str(output / "serving"), "-n", "16", "--out", str(tmp_path / "grid.png"))
    assert grid.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 1000, grid.stderr[-3000:]

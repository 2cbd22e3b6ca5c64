"""Glow (with its learnt prior) through the whole pipeline from the CLI on 8x8 digit images: the
image shape comes from the ingest metadata, training initialises ActNorm from data, evaluation reports bits/dim, push exports
the frozen flow; the served SavedModel, scored in a fresh process on flat raw-pixel rows, gives the
trained model's log-density (the flow on the logit transform plus its log-determinant)."""

from __future__ import annotations

import json

import numpy as np
import pytest

from tests.test_pipeline_cli import cli


@pytest.mark.slow
def test_glow_on_digits_trains_evaluates_and_serves_flat_raw_rows(tmp_path):
    output = tmp_path / "out"
    result = cli("run", "--dataset", "digits", "--model", "glow", "--epochs", "2", "--output", str(output),
                 "--set", "ingest.max_examples=400", "--set", "train.batch_size=50",
                 "--set", "train.learning_rate=0.001",
                 "--set", "train.flow_options={levels: 2, steps_per_level: 1, hidden_channels: 8, learnt_prior: true}",
                 # plumbing, not quality: two epochs on 400 images
                 "--set", "evaluate.reference_tolerance=1e6")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "bits/dim:" in result.stdout
    version_dir = output / "serving" / "1"
    assert (version_dir / "saved_model.pb").exists(), result.stdout

    (config_path,) = output.glob("pipeline_root/*/model/*/flow_config.json")  # the train component's output
    config = json.loads(config_path.read_text())
    assert config["kind"] == "glow" and config["image_shape"] == [8, 8] and config["event_dim"] == 64

    rows = np.random.default_rng(0).integers(0, 17, size=(10, 64)).astype("float32") + 0.5
    np.save(tmp_path / "digits.npy", rows)
    scored = cli("evaluate", "--model", str(version_dir), "--data", str(tmp_path / "digits.npy"),
                 "--scores", str(tmp_path / "scores.npy"))
    assert scored.returncode == 0 and "bits/dim:" in scored.stdout, scored.stderr[-3000:]
    served = np.load(tmp_path / "scores.npy")

    from tfflows.components.flow_artifact import load_flow
    from tfflows.components.transform import read_preprocessing

    (preprocessing_path,) = list(output.rglob("preprocessing.json"))
    z, log_det = read_preprocessing(str(preprocessing_path.parent)).forward(rows)
    flow = load_flow(str(config_path.parent))
    assert [type(layer).__name__ for layer in flow.flow_layers].count("LearntPrior") == 1  # the flow option arrived
    expected = flow.log_prob(np.asarray(z, np.float32)).numpy() + np.asarray(log_det)
    assert np.all(np.isfinite(served))
    np.testing.assert_allclose(served, expected, rtol=1e-4, atol=1e-2)

    grid = cli("sample", "--model", str(version_dir), "-n", "16", "--out", str(tmp_path / "grid.png"))
    assert grid.returncode == 0 and (tmp_path / "grid.png").stat().st_size > 1000, grid.stderr[-3000:]


@pytest.mark.slow
def test_quality_benchmark_has_image_flow_rows_on_images_only():
    from benchmarks import quality

    tiny = ["--max-epochs", "1", "--max-examples", "300", "--batch-size", "50"]
    result = quality.main(["--dataset", "digits", "--models", "gaussian", "glow", *tiny], log=lambda *_: None)
    rows = {row["key"]: row for row in result["rows"]}
    assert set(rows) == {"gaussian", "glow"}
    assert np.isfinite(rows["glow"]["bits_per_dim"]) and rows["glow"]["params"] > 0
    assert rows["glow"]["architecture"] == quality.MODELS["glow"]["architecture"]
    moons = quality.main(["--dataset", "moons", "--moons-samples", "300", "--models", "gaussian", "glow", *tiny],
                         log=lambda *_: None)
    assert [row["key"] for row in moons["rows"]] == ["gaussian"]  # no image shape: no image flow

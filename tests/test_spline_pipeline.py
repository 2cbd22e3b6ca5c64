"""A spline flow through the whole pipeline from the CLI: train, evaluate, push (the frozen copy
exported as a SavedModel), then the pushed model scored and sampled in fresh processes."""

from __future__ import annotations

import numpy as np
import pytest

from tests.test_pipeline_cli import TINY, cli


@pytest.mark.slow
def test_spline_maf_with_lu_layers_trains_and_pushes(tmp_path):
    output = tmp_path / "out"
    result = cli("run", "--dataset", "moons", "--model", "maf", "--epochs", "12", "--output", str(output), *TINY,
                 "--set", "train.flow_options={transformer: spline, num_bins: 4, permutation: lu}")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert "test log-likelihood:" in result.stdout
    version_dir = output / "serving" / "1"
    assert (version_dir / "saved_model.pb").exists(), result.stdout

    from sklearn.datasets import make_moons

    moons = make_moons(19, noise=0.05, random_state=1)[0]
    rows = np.concatenate([moons, [[6.0, -6.0]]]).astype("float32")  # 19 data-like rows, one far outlier
    np.save(tmp_path / "rows.npy", rows)
    scored = cli("evaluate", "--model", str(version_dir), "--data", str(tmp_path / "rows.npy"),
                 "--scores", str(tmp_path / "scores.npy"))
    assert scored.returncode == 0, scored.stderr[-3000:]
    scores = np.load(tmp_path / "scores.npy")
    assert scores.shape == (20,) and np.all(np.isfinite(scores))
    assert scores[-1] < scores[:-1].min() - 3.0, scores  # the served spline density learnt the data

    sampled = cli("sample", "--model", str(version_dir), "-n", "50", "--seed", "3", "--out", str(tmp_path / "s.npy"))
    assert sampled.returncode == 0, sampled.stderr[-3000:]
    samples = np.load(tmp_path / "s.npy")
    assert samples.shape == (50, 2) and np.all(np.isfinite(samples))

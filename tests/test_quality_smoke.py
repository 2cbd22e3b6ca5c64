"""Smoke test of benchmarks/quality.py: tiny budgets, table rows, JSON keys, the KL gap's entropy."""

import json
import math

import numpy as np
import pytest

from benchmarks import quality

TINY = ["--max-epochs", "2", "--hidden", "8", "--patience", "5"]
ROW_KEYS = {"model", "key", "architecture", "params", "train_seconds", "epochs", "best_epoch", "stopped",
            "test_ll", "test_ll_2se", "published"}


def _quiet(*_):
    pass


@pytest.mark.slow  # the quality script end to end: three models trained and compared
def test_moons_rows_and_json(tmp_path):
    out = tmp_path / "moons.json"
    result = quality.main(["--dataset", "moons", "--moons-samples", "600", "--models", "gaussian", "maf5",
                           "haf5_50", "--pairs", "haf5_50:maf5", "--out", str(out)] + TINY, log=_quiet)
    saved = json.loads(out.read_text())
    assert saved["dataset"] == "moons" and saved["event_dim"] == 2
    assert [r["key"] for r in saved["rows"]] == ["gaussian", "maf5", "haf5_50"]
    for row in saved["rows"]:
        assert ROW_KEYS <= set(row), ROW_KEYS - set(row)
        assert math.isfinite(row["test_ll"]) and row["test_ll_2se"] > 0
        assert "kl_gap" not in row and "bits_per_dim" not in row  # continuous, no known entropy
    maf, haf = saved["rows"][1], saved["rows"][2]
    assert maf["architecture"] == "5×8" and haf["architecture"] == "5×4"  # HAF at 50 % width
    assert maf["epochs"] <= 2 and maf["params"] > 0
    table = result["table"].splitlines()
    assert len(table) >= 2 + 3 and table[2].startswith("| Gaussian |")
    (pair,) = saved["pairs"]  # the mean of the paired differences is the difference of the means
    assert pair["a"] == "HAF (5) 50%" and pair["b"] == "MAF (5)"
    assert pair["difference"] == pytest.approx(haf["test_ll"] - maf["test_ll"], abs=1e-9)
    assert 0 < pair["difference_2se"] and "| HAF (5) 50% | MAF (5) | " in result["table"]
    with pytest.raises(SystemExit):  # a key that is not trained
        quality.parse_args(["--dataset", "moons", "--models", "maf5", "--pairs", "maf5:nice4"])


def test_gmm_kl_gap_uses_the_true_entropy(tmp_path):
    """Gaussian data: the MLE Gaussian's KL gap is ~0, and the entropy is the closed-form one."""
    args = ["--dataset", "gmm", "--gmm-components", "1", "--gmm-dim", "2", "--gmm-train", "4000",
            "--gmm-test", "4000", "--entropy-samples", "200000", "--models", "gaussian", "made",
            "--out", str(tmp_path / "gmm.json")] + TINY
    result = quality.main(args, log=_quiet)
    sample, log_prob = quality.make_gmm(2, 1, seed=0)
    cov = np.cov(sample(200000, np.random.default_rng(5)), rowvar=False)
    exact = 0.5 * np.linalg.slogdet(2 * math.pi * math.e * cov)[1]
    assert abs(result["entropy"] - exact) < 0.02
    rows = {r["key"]: r for r in result["rows"]}
    assert set(rows) == {"true", "gaussian", "made"}
    gauss, true = rows["gaussian"], rows["true"]
    # Same test set: the fitted Gaussian is within O(D^2 / N) of the truth on it ...
    assert abs(gauss["kl_gap"] - true["kl_gap"]) < 0.01
    # ... and the truth's gap is zero up to the test set's Monte Carlo error.
    assert abs(true["kl_gap"]) < 1.5 * true["kl_gap_2se"] + 0.01
    assert abs(gauss["kl_gap"]) < 0.1
    # The gap is in data space: model-space NLL plus the standardisation's log-determinant.
    assert gauss["kl_gap"] == pytest.approx(gauss["test_nll_data"] - result["entropy"])
    assert math.isfinite(rows["made"]["kl_gap"]) and rows["made"]["kl_gap"] > -0.1

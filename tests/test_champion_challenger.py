"""Champion vs challenger on the same points (paired difference ± 2 s.e.), the drift measurement,
how runs and registry versions are named and described, and which MLflow store `models:/` URIs
use, and a champion that answers another question than the challenger (p(x | machine, load)
against p(x)). Fast: fake scorers, small stores and tiny models (the scheduled-retraining test runs
the real pipeline)."""

from __future__ import annotations

import numpy as np
import pytest

from tfflows.components.evaluate.config import EvaluateConfig
from tfflows.components.drift.executor import measure_drift
from tfflows.components.evaluate.executor import _compare
from tfflows.components.ingest.metadata import DatasetMetadata
from tfflows.components.transform.conversions import mean_and_two_se, paired_difference


class _Scorer:
    """Per-example scores by model URI, as `DataScorer.per_example` keeps them."""

    headline = "data_log_likelihood"

    def __init__(self, scores: dict):
        self.scores = scores

    def per_example(self, model_uri):
        return self.scores.get(model_uri)


def _pair(shift: float, noise: float, n: int = 400, seed: int = 0):
    """Two models' scores on the same points: a large shared spread (the points) and a small
    disagreement of mean ``shift``."""
    rng = np.random.default_rng(seed)
    points = rng.normal(0, 3.0, n)
    return points + shift + rng.normal(0, noise, n), points


def test_paired_error_bar_is_the_disagreements_not_the_points():
    new, old = _pair(-0.05, 0.1)
    difference, two_se = paired_difference(new, old)
    assert difference == pytest.approx(new.mean() - old.mean())
    assert two_se < 0.02 < mean_and_two_se(new)[1]  # the points' spread cancels
    with pytest.raises(ValueError, match="same points"):
        paired_difference(new, old[:-1])


def test_blessing_is_not_worse_beyond_the_noise_by_default():
    new, old = _pair(-0.005, 0.1)  # worse, but within the paired noise: blessed
    scorer = _Scorer({"new": new, "old": old})
    within, part, paired = _compare(scorer, scorer, "new", "old", new.mean(), old.mean(), EvaluateConfig(),
                                    "serving version 2")
    assert within and paired["tolerance"] == paired["difference_2se"] and paired["points"] == 400
    assert "(the champion, serving version 2) on the same 400 points" in part and "paired mean ± 2 s.e." in part and "not worse" in part
    clearly_worse, old2 = _pair(-0.2, 0.1)
    scorer = _Scorer({"new": clearly_worse, "old": old2})
    within, part, _ = _compare(scorer, scorer, "new", "old", 0.0, 0.0, EvaluateConfig(), "serving version 2")
    assert not within and "worse beyond the noise" in part
    # An explicit tolerance replaces the noise.
    within, _, paired = _compare(scorer, scorer, "new", "old", 0.0, 0.0, EvaluateConfig(tolerance=0.5), "v2")
    assert within and paired["tolerance"] == 0.5
    # Without per-example scores (reverse KL's fresh samples): the means, tolerance None = 0.
    within, part, paired = _compare(_Scorer({}), _Scorer({}), "new", "old", 1.0, 1.1, EvaluateConfig(), "v2")
    assert not within and paired is None and "tolerance 0.0 nats" in part


def test_drift_compares_the_champion_with_its_own_record():
    rng = np.random.default_rng(1)
    scores = rng.normal(-5.0, 1.0, 200)  # the champion on the new test split; its own test score: -2 ± 0.1
    drift = measure_drift(scores, -2.0, 0.1, EvaluateConfig(), [3])
    two_se = mean_and_two_se(scores)[1]
    assert drift["delta"] == pytest.approx(scores.mean() + 2.0)
    assert drift["delta_2se"] == pytest.approx(np.hypot(two_se, 0.1))
    assert drift["line"].startswith("data drift: champion scores the new test split -3.")
    assert "nats below its own test split (span 3)" in drift["line"] and not drift["exceeded"]
    warned = measure_drift(scores, -2.0, 0.1, EvaluateConfig(drift_limit=1.0), [3])
    assert warned["exceeded"] and not warned["failed"] and "warning only" in warned["line"]
    failed = measure_drift(scores, -2.0, 0.1, EvaluateConfig(drift_limit=1.0, drift_action="fail"), [3])
    assert failed["failed"] and "stops before training" in failed["line"]
    within = measure_drift(scores, -2.0, 0.1, EvaluateConfig(drift_limit=10.0, drift_action="fail"), [], 2)
    assert not within["exceeded"] and within["line"].endswith("below its own test split")
    assert within["line"].startswith("data drift: champion (serving version 2) scores the new test split")
    with pytest.raises(ValueError, match="drift_action"):
        EvaluateConfig(drift_action="explode")


def _metadata(inputs=None) -> DatasetMetadata:
    return DatasetMetadata(name="csv", event_dim=2, feature_names=["radius", "texture"], discrete=False,
                           num_levels=None, image_shape=None, split_sizes={"train": 8, "eval": 1, "test": 1},
                           fingerprint="f" * 64, source="/data/{SPAN}/cancer.csv", inputs=inputs)


INPUTS = {"pattern": "/data/{SPAN}/cancer.csv", "paths": ["/data/3/cancer.csv"], "spans": [3], "version": None,
          "files": [["/data/3/cancer.csv", 10, "a" * 64]], "digest": "d" * 64, "label": "cancer.csv-span3"}


def test_runs_and_versions_say_what_ran():
    from tfflows.components import run_info

    metadata = _metadata(INPUTS)
    assert run_info.run_name("maf", metadata, now=0) == "maf-cancer.csv-span3-19700101-0000"
    assert run_info.run_name("planar", None, target="U2", now=0) == "planar-target-U2-19700101-0000"
    description = run_info.run_description("maf", "max_likelihood", {"num_layers": 5}, metadata)
    assert "**maf** (num_layers 5)" in description and "`/data/3/cancer.csv`" in description
    assert "span 3 of `/data/{SPAN}/cancer.csv`" in description and "columns radius, texture" in description
    source, digest = run_info.dataset_source(metadata, "/pipeline_root/IngestExamples/examples/1")
    assert source["uri"] == "/data/3/cancer.csv" and digest == "d" * 64 and "pipeline_root" not in str(source)
    bundled, fingerprint = run_info.dataset_source(_metadata(), "/pipeline_root/x")
    assert fingerprint == "f" * 64 and bundled["uri"] == "/data/{SPAN}/cancer.csv"
    identity = run_info.version_identity("maf", metadata, {"reason": "blessed: fine"})
    assert identity["tags"]["kind"] == "maf" and identity["tags"]["data.span"] == "3"
    assert identity["tags"]["blessing"] == "blessed: fine"
    assert identity["description"] == "maf on cancer.csv-span3 (span 3). blessed: fine"


def test_run_names_are_unique_in_the_experiment(tmp_path):
    from tfflows.components.tracking import Tracker
    from tfflows.components.train.config import TrackingConfig

    config = TrackingConfig(uri=f"sqlite:///{tmp_path}/mlflow.db", experiment="names")
    names = []
    for _ in range(3):
        tracker = Tracker(config)
        tracker.start_run("maf-d.csv-20261206-0938")
        names.append(tracker.client.get_run(tracker.run_id).info.run_name)
        tracker.add_to_description("first")
        tracker.add_to_description("second")
    assert names == ["maf-d.csv-20261206-0938", "maf-d.csv-20261206-0938-2", "maf-d.csv-20261206-0938-3"]
    assert tracker.client.get_run(tracker.run_id).data.tags["mlflow.note.content"] == "first\n\nsecond"


def test_registry_uris_follow_the_store(tmp_path):
    from tfflows.pipeline.registry import store_uri

    out = tmp_path / "out"
    assert store_uri("http://mlflow:5000", "sqlite:///env.db", str(out)) == "http://mlflow:5000"
    assert store_uri(None, "sqlite:///env.db", str(out)) == "sqlite:///env.db"
    assert store_uri(None, None, str(out)) == f"sqlite:///{out}/mlflow.db"
    assert store_uri(None, None, None).endswith("/tfflows_output/mlflow.db")


def test_figures_mark_the_best_epoch_and_name_the_columns():
    from tfflows.components.train import plots

    history = [{"epoch": e, "train_log_likelihood": -e, "val_log_likelihood": -abs(e - 2)} for e in (1, 2, 3)]
    curve = plots.loss_curve(history, best_epoch=2)
    assert "best epoch 2 (kept)" in [t.get_text() for t in curve.axes[0].get_legend().get_texts()]
    rng = np.random.default_rng(0)
    figure = plots.samples_figure(rng.normal(size=(50, 3)), data=rng.normal(size=(50, 3)),
                                  names=["radius", "texture", "area"])
    assert [ax.get_title() for ax in figure.axes if ax.get_title()] == ["radius", "texture", "area"]


def test_a_drift_beyond_the_limit_stops_the_run_before_training(tmp_path, monkeypatch):
    """`run_drift` with the champion's scores stubbed (the real scoring runs in the scheduled test)."""
    import json

    from tfflows.components import artifacts
    from tfflows.components.drift import executor
    from tfflows.components.errors import DataError

    champion = {"version": 1, "model_uri": "m", "metrics": {"data_log_likelihood": -2.0, "data_log_likelihood_2se": 0.1}}
    monkeypatch.setattr(executor, "_champion_scores", lambda *args: (np.full(50, -9.0), "data_log_likelihood"))
    monkeypatch.setattr(executor, "read_metadata", lambda uri: _metadata(INPUTS))
    warned = executor.run_drift("ex", "tg", EvaluateConfig(drift_limit=1.0), champion, str(tmp_path / "a"))
    assert warned["exceeded"] and artifacts.read_drift(str(tmp_path / "a")) == json.loads(json.dumps(warned))
    with pytest.raises(DataError, match=r"evaluate.drift_limit: data drift: .* -7.00 ± 0.10 nats below .*\(span 3\)"):
        executor.run_drift("ex", "tg", EvaluateConfig(drift_limit=1.0, drift_action="fail"), champion, str(tmp_path / "b"))
    assert executor.run_drift("ex", "tg", EvaluateConfig(), None, str(tmp_path / "c")) is None
    assert artifacts.read_drift(str(tmp_path / "c")) is None


def test_a_champion_of_another_question_is_not_compared_and_the_challenger_not_blessed(tmp_path):
    """A conditional champion p(temp, vibration | machine, load) and an unconditional challenger
    p(temp, vibration) on the same rows (tiny models, the components' own executors): their
    log-likelihoods are of different densities, so evaluate neither scores the champion nor blesses
    the challenger over it; the one-line reason names both densities and the fix; each way round,
    for a challenger of as many columns named otherwise, and for one whose context column became
    categorical."""
    from tfflows.components.config import IngestConfig, TransformConfig
    from tfflows.components.evaluate.executor import run_evaluate
    from tfflows.components.ingest import run_ingest
    from tfflows.components.train import TrainConfig, run_train
    from tfflows.components.transform import run_transform

    rng = np.random.default_rng(0)
    machine, load = rng.integers(1, 9, 300), rng.uniform(0, 1, 300)
    rows = np.column_stack([3 * load + 0.2 * machine + 0.3 * rng.standard_normal(300), machine,
                            -2 * load + 0.3 * rng.standard_normal(300), load])
    data = tmp_path / "readings.csv"
    np.savetxt(data, rows, delimiter=",", header="temp,machine,vibration,load", comments="", fmt="%.6g")
    tiny = TrainConfig(kind="maf", num_layers=1, hidden_units=(8,), batch_size=50, epochs=1, max_steps_per_epoch=2)
    models = {}
    for name, roles in (("conditional", {"context_columns": ("machine", "load")}),
                        ("unconditional", {"columns": ("temp", "vibration")}),
                        ("renamed", {"columns": ("temp", "load")}),  # as many, named otherwise
                        ("machine-id", {"context_columns": ("machine", "load"), "categorical_columns": ("machine",)})):
        folder = tmp_path / name
        run_ingest(IngestConfig("csv", path=str(data), **roles), str(folder / "examples"))
        run_transform(str(folder / "examples"), TransformConfig(), str(folder / "transform"))
        run_train(str(folder / "examples"), str(folder / "transform"), str(folder / "model"), tiny)
        models[name] = {k: str(folder / k) for k in ("examples", "transform", "model")}
    lenient = EvaluateConfig(reference_tolerance=100.0)  # tiny models: the champion rule alone decides
    for new, old, theirs, ours in (("unconditional", "conditional", "p(temp, vibration | machine, load)",
                                    "p(temp, vibration)"),
                                   ("conditional", "unconditional", "p(temp, vibration)",
                                    "p(temp, vibration | machine, load)"),
                                   ("renamed", "unconditional", "p(temp, vibration)", "p(temp, load)"),
                                   # the same names, the machine now a category (one-hot) instead of a number
                                   ("machine-id", "conditional", "p(temp, vibration | machine, load)",
                                    "p(temp, vibration | machine, load) (categorical context machine against none)")):
        a, b = models[new], models[old]
        result = run_evaluate(a["examples"], a["transform"], a["model"], lenient, str(tmp_path / f"eval-{new}"),
                              baseline_model_uri=b["model"], baseline_transform_graph_uri=b["transform"],
                              baseline_version=3)
        assert not result["blessed"] and result["baseline_metrics"] is None and result["paired"] is None
        assert (tmp_path / f"eval-{new}" / "NOT_BLESSED").exists()
        assert (f"the champion (serving version 3) is not comparable: it models {theirs}, this run {ours}, so no "
                "paired comparison is possible; fix: give it a line of its own (another --output") in result["reason"]
        assert "\n" not in result["reason"] and result["reason"].startswith("not blessed: "), result["reason"]
    # Without a champion the same challenger is blessed (the rule above is the champion's alone).
    a = models["unconditional"]
    assert run_evaluate(a["examples"], a["transform"], a["model"], lenient, str(tmp_path / "alone"))["blessed"]

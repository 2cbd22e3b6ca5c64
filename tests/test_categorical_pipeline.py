"""Categorical columns through the whole pipeline (issue 26, the mixed rows): a table with a string
column trains with ``--set ingest.categorical_columns=[merchant]`` and no encoding by the user, and
every row's score is the exact mixed log-density log P(merchant) + log p(amount, hour | merchant).

The data: ``merchant`` in {grocery, fuel, travel} with probabilities 0.5, 0.3, 0.2, the amount
Gaussian with a mean and spread of its merchant's, the hour uniform on [0, 24). One shared run
(`@pytest.mark.slow`) of ``tfflows run``; the other tests read what it left. The configuration
and model tests at the top need no run.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from tfflows.components.config import ConfigError, IngestConfig
from tfflows.components.errors import DataError
from tests.artifact_testing import registered_pyfunc
from tests.cli_testing import cli, run_without_tfflows

MERCHANTS = ("grocery", "fuel", "travel")
HEADER = ["amount", "merchant", "hour"]
RUN = ["--epochs", "15", "--set", "ingest.categorical_columns=[merchant]", "--set", "train.num_layers=2",
       "--set", "train.hidden_units=[16]", "--set", "train.learning_rate=0.005"]


def _transactions(n: int, seed: int) -> list:
    """Rows (amount, merchant, hour) of the module's known mixed density."""
    rng = np.random.default_rng(seed)
    merchant = rng.choice(3, n, p=[0.5, 0.3, 0.2])
    amount = np.array([3.0, 4.0, 6.0])[merchant] + np.array([0.3, 0.2, 0.8])[merchant] * rng.standard_normal(n)
    return [(float(a), MERCHANTS[m], float(h)) for a, m, h in zip(amount, merchant, rng.uniform(0, 24, n))]


def _write_csv(path, header, rows) -> str:
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        f.writelines(",".join(str(v) for v in row) + "\n" for row in rows)
    return str(path)


# --------------------------------------------------------------------------- configuration (no run)


def _config(*assignments):
    from tfflows.pipeline.config import load_run_config

    return load_run_config(None, None, ["ingest.dataset=csv", "ingest.path=tx.csv", *assignments])


def test_categorical_columns_are_typed_and_roles_derived():
    config = _config("ingest.categorical_columns=[merchant]", "ingest.context_columns=[hour]")
    assert config.ingest.categorical_columns == ("merchant",)
    assert config.ingest.modelled_categorical == ("merchant",) and config.ingest.context_categorical == ()
    assert IngestConfig.from_json(config.ingest.to_json()) == config.ingest


def test_the_plan_line_names_the_density_a_run_models(tmp_path):
    """`tfflows run`'s first line says what a conditional or mixed run models, by column name."""
    from tfflows.pipeline.config import load_run_config
    from tfflows.pipeline.preflight import modelled_density

    path = _write_csv(tmp_path / "tx.csv", ["amount", "merchant", "hour", "load"], [(1.0, "fuel", 3.0, 0.5)])
    assert modelled_density(_config(f"ingest.path={path}", "ingest.categorical_columns=[merchant]",
                                    "ingest.context_columns=[load]")) == \
        "P(merchant | load) p(amount, hour | merchant, load)"
    assert modelled_density(_config(f"ingest.path={path}", "ingest.context_columns=[hour, load]",
                                    "ingest.columns=[amount]")) == "p(amount | hour, load)"
    assert modelled_density(_config(f"ingest.path={path}")) is None  # a density of every column: said as before
    digits = load_run_config(None, None, ["ingest.dataset=digits", "ingest.context=label"])
    assert modelled_density(digits) == "p(x | label_0, label_1, ..., label_9)"  # pixels unnamed before ingest


@pytest.mark.parametrize("assignments, words", [
    (["ingest.categorical_columns=[]"], "ingest.categorical_columns must name one or more columns"),
    (["ingest.categorical_columns=[merchant, merchant]"], "names ['merchant'] more than once"),
    (["ingest.dataset=npy", "ingest.path=x.npy", "ingest.categorical_columns=[x0]"], "which holds numbers only"),
    (["ingest.categorical_columns=[merchant]", "ingest.image_shape=[1, 2]"], "an image_shape"),
    (["ingest.columns=[amount]", "ingest.categorical_columns=[merchant]"], "are not among ingest.columns"),
    (["ingest.columns=[merchant]", "ingest.categorical_columns=[merchant]"], "no numeric column is left to model"),
    (["ingest.categorical_columns=[merchant]", "train.kind=planar"],
     "categorical columns [merchant]: flow kind 'planar' has no conditional version"),
    (["ingest.categorical_columns=[merchant]", "train.objective=vae", "train.kind=made"],
     "categorical columns [merchant]: objective 'vae' fits no conditional density"),
])
def test_bad_categorical_settings_are_one_line_naming_the_fix(assignments, words):
    with pytest.raises(ConfigError) as error:
        _config(*assignments)
    message = str(error.value)
    assert words in message and "fix:" in message and "\n" not in message, message


def test_an_undeclared_string_column_names_the_file_column_and_the_fix(tmp_path):
    from tfflows.components.ingest import run_ingest

    path = _write_csv(tmp_path / "tx.csv", HEADER, _transactions(50, 0))
    with pytest.raises(DataError) as error:
        run_ingest(IngestConfig(dataset="csv", path=path), str(tmp_path / "out"))
    message = str(error.value)
    assert "\n" not in message and path in message and "column 1 (merchant)" in message, message
    assert "is not a number" in message and "--set ingest.categorical_columns=[merchant]" in message, message
    assert not (tmp_path / "out").exists()


def test_mixed_density_round_trips_its_config_weights_and_frozen_copy(tmp_path):
    """`save_flow` / `load_flow` and `frozen` keep a mixed density's scores (and its categories sum to 1)."""
    import tensorflow as tf

    from tfflows.components.flow_artifact import load_flow, save_flow
    from tfflows.models import MixedDensity

    model = MixedDensity(2, [4, 2], "maf", context_dim=1, categorical_hidden_units=[8], num_layers=2,
                         hidden_units=[8], seed=3, oov_probability=0.01)
    for v in model.trainable_variables:  # away from the initial values, so a lost weight shows
        v.assign(v + tf.random.stateless_normal(v.shape, [1, v.shape.num_elements() or 1], 0.1, dtype=v.dtype))
    x = tf.constant([[0.3, -1.0], [1.5, 0.2]])
    codes = tf.constant([[3, 1], [0, 0]])
    context = tf.constant([[0.5], [-2.0]])
    want = model.log_prob(x, codes, context).numpy()
    save_flow(model, str(tmp_path / "m"))
    loaded = load_flow(str(tmp_path / "m"))
    assert isinstance(loaded, MixedDensity) and loaded.get_config() == model.get_config()
    np.testing.assert_allclose(loaded.log_prob(x, codes, context).numpy(), want, atol=1e-5)
    np.testing.assert_allclose(model.frozen().log_prob(x, codes, context).numpy(), want, atol=1e-5)
    every = tf.constant([[a, b] for a in range(4) for b in range(2)])
    total = tf.reduce_sum(tf.exp(loaded.categorical_log_prob(every, tf.fill([8, 1], 0.7))))
    np.testing.assert_allclose(total.numpy(), 1.0, atol=1e-5)


# --------------------------------------------------------------------------- one shared run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("categorical")
    data = _write_csv(root / "tx.csv", HEADER, _transactions(3000, 0))
    out = root / "out"
    done = cli("run", "--data", data, "--output", str(out), *RUN)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    version = str(out / "serving" / "1")
    push = json.loads((out / "serving" / "1" / "assets.extra" / "tfflows_push.json").read_text())
    return {"root": root, "out": out, "stdout": done.stdout, "version": version, "push": push}


def _library_log_prob(push: dict, x: np.ndarray, merchants) -> np.ndarray:
    """log P(merchant) + log p(x | merchant) of the trained library model composed by hand: the codes
    from the recorded vocabulary (an unseen merchant: the out-of-vocabulary code), the numeric
    preprocessing's forward map and log-determinant."""
    from tfflows.components.flow_artifact import load_flow
    from tfflows.components.transform import read_categories, read_preprocessing

    tg = push["transform_graph_uri"]
    vocabulary = read_categories(tg)["merchant"]
    codes = np.array([[vocabulary.index(m) if m in vocabulary else len(vocabulary)] for m in merchants], np.int32)
    z, log_det = read_preprocessing(tg).forward(x.astype(np.float32))
    model = load_flow(push["model_uri"])
    return (model.categorical_log_prob(codes).numpy() + model.numeric_log_prob(z, codes).numpy()
            + log_det.numpy()).astype(np.float64)


@pytest.mark.slow
def test_run_trains_a_mixed_density_of_the_string_column(run):
    from tfflows.components.ingest import read_metadata
    from tfflows.components.transform import read_categories

    assert "tfflows run: csv -> maf flow of P(merchant) p(amount, hour | merchant); ingest," in run["stdout"]
    assert "mixed rows: log P(merchant) + log p(numeric columns | them)" in run["stdout"], run["stdout"]
    assert "blessed: True" in run["stdout"] and "times independent categories" in run["stdout"], run["stdout"]
    metadata = read_metadata(run["push"]["examples_uri"])
    assert (metadata.feature_names, metadata.categorical_names, metadata.event_dim) == (["amount", "hour"],
                                                                                         ["merchant"], 2)
    assert sorted(read_categories(run["push"]["transform_graph_uri"])["merchant"]) == sorted(MERCHANTS)


@pytest.mark.slow
def test_roles_are_in_ml_metadata(run):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(run["out"] / "metadata.sqlite")
    examples = metadata_store.MetadataStore(config).get_artifacts_by_type("Examples")
    assert {a.custom_properties["categorical_names"].string_value for a in examples} == {json.dumps(["merchant"])}


@pytest.mark.slow
def test_served_discrete_part_sums_to_one_and_the_row_density_integrates_to_one(run):
    """Over every merchant and the out-of-vocabulary bucket, P(merchant) of the served SavedModel sums
    to 1; summed over them, its log_prob(x, merchant) integrated over a grid of x is 1 too (the score
    is a density of the mixed row, the preprocessing's log-determinant included)."""
    import tensorflow as tf

    model = tf.saved_model.load(run["version"])
    every = tf.constant([[m] for m in (*MERCHANTS, "never seen")])
    probabilities = np.exp(model.categorical_log_prob(every)["log_prob"].numpy().astype(np.float64))
    np.testing.assert_allclose(probabilities.sum(), 1.0, atol=1e-5)
    # Learnt, not uniform; the bucket, never seen in training, has Laplace's 1 / (n_train + 2).
    assert abs(probabilities[0] - 0.5) < 0.1, probabilities
    n_train = json.loads((run["out"] / "serving" / "1" / "assets.extra" / "tfflows.json").read_text())[
        "dataset"]["split_sizes"]["train"]
    np.testing.assert_allclose(probabilities[3], 1 / (n_train + 2), rtol=1e-5)
    amount, hour = np.linspace(-4.0, 14.0, 361), np.linspace(-12.0, 36.0, 241)
    grid = np.stack(np.meshgrid(amount, hour, indexing="ij"), -1).reshape(-1, 2).astype(np.float32)
    total = 0.0
    for merchant in (*MERCHANTS, "never seen"):
        lp = model.signatures["log_prob"](x=tf.constant(grid), categorical=tf.constant([[merchant]] * len(grid)))
        density = np.exp(lp["log_prob"].numpy().astype(np.float64)).reshape(len(amount), len(hour))
        total += np.trapezoid(np.trapezoid(density, hour, axis=1), amount)
    assert abs(total - 1.0) < 0.02, total


@pytest.mark.slow
def test_cli_evaluate_scores_as_the_library_and_reports_unseen_categories(run, tmp_path):
    from tfflows.pipeline.serving import evaluate_saved_model

    x = np.array([[3.0, 12.0], [3.0, 12.0], [6.0, 1.0], [5.0, 2.0]])
    merchants = ["grocery", "travel", "bakery", "bakery"]
    data = _write_csv(tmp_path / "new.csv", ["hour", "merchant", "amount"],
                      [(h, m, a) for (a, h), m in zip(x, merchants)])  # columns in another order
    summary = evaluate_saved_model(run["version"], data, scores_path=str(tmp_path / "s.csv"))
    assert "matched by name (amount, hour, merchant)" in summary, summary
    lines = [line for line in summary.splitlines() if "unseen categories" in line]
    assert len(lines) == 1 and "merchant: 2 row(s), e.g. 'bakery'" in lines[0], summary
    assert "out-of-vocabulary bucket" in lines[0]
    scores = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)["log_prob"]
    np.testing.assert_allclose(scores, _library_log_prob(run["push"], x, merchants), atol=1e-4)
    assert scores[0] - scores[1] > 2.0, scores  # an amount of 3 is a grocery's, not a journey's


@pytest.mark.slow
def test_beam_scoring_carries_the_categories_and_agrees_with_in_process(run, tmp_path):
    """`tfflows evaluate --beam-args`: the categorical strings travel to the workers, which give the
    in-process scores (and the library's) and the same summary, the unseen-categories line included
    (merged over chunks: the first unseen merchant is in chunk 1, not chunk 0)."""
    from tfflows.pipeline.serving import evaluate_saved_model

    rows = _transactions(23, 5)
    rows[9] = (rows[9][0], "bakery", rows[9][2])
    rows[17] = (rows[17][0], "pharmacy", rows[17][2])
    rows[20] = (rows[20][0], "bakery", rows[20][2])
    data = _write_csv(tmp_path / "new.csv", ["merchant", "hour", "amount"], [(m, h, a) for a, m, h in rows])
    local = evaluate_saved_model(run["version"], data, str(tmp_path / "local_s.csv"), batch_size=3, chunk_rows=7,
                                 threshold="q0.05")
    beam = evaluate_saved_model(run["version"], data, str(tmp_path / "s.csv"), batch_size=3, chunk_rows=7,
                                threshold="q0.05", beam_args=["--runner=DirectRunner"])
    assert beam == local.replace("local_", ""), (beam, local)  # line for line
    assert "unseen categories, scored as the out-of-vocabulary bucket" in beam, beam
    assert "merchant: 3 row(s), e.g. 'bakery'" in beam, beam
    got = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    want = np.genfromtxt(tmp_path / "local_s.csv", delimiter=",", names=True)
    for name in ("log_prob", "percentile", "is_anomaly"):
        np.testing.assert_allclose(got[name], want[name], rtol=0, atol=1e-4, err_msg=name)
    x = np.array([(a, h) for a, _, h in rows])
    np.testing.assert_allclose(got["log_prob"], _library_log_prob(run["push"], x, [m for _, m, _ in rows]), atol=1e-4)
    assert not [n for n in os.listdir(tmp_path) if n.startswith(".")]  # no shard folder left


@pytest.mark.slow
def test_cli_samples_carry_their_merchants_and_score_back_by_name(run, tmp_path):
    from tfflows.pipeline.serving import evaluate_saved_model, sample_saved_model

    sample_saved_model(run["version"], 50, 3, str(tmp_path / "drawn.csv"))
    drawn = np.genfromtxt(tmp_path / "drawn.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert drawn.dtype.names == ("amount", "hour", "merchant") and len(drawn) == 50
    assert set(drawn["merchant"]) <= {*MERCHANTS, "<unseen>"}, set(drawn["merchant"])
    assert "rows: 50 from" in evaluate_saved_model(run["version"], str(tmp_path / "drawn.csv"))


@pytest.mark.slow
def test_fresh_process_signatures_take_and_give_category_strings(run, tmp_path):
    """log_prob(x, categorical), score, score_examples and sample in a process that imports nothing of
    this project: the same scores as the library's, samples with merchant names."""
    x = np.array([[3.0, 12.0], [3.0, 12.0], [6.0, 1.0]], np.float32)
    merchants = ["grocery", "travel", "bakery"]
    script = (
        "import sys, json, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1]); x = np.load(sys.argv[2]); cats = json.loads(sys.argv[3])\n"
        "f = lambda k, v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()])) if k == 'merchant' \\\n"
        "    else tf.train.Feature(float_list=tf.train.FloatList(value=[v]))\n"
        "ex = [tf.train.Example(features=tf.train.Features(feature={k: f(k, v) for k, v in\n"
        "      zip(['amount', 'hour', 'merchant'], [*row, c])})).SerializeToString() for row, c in zip(x, cats)]\n"
        "s, c = m.signatures, tf.constant([[c] for c in cats])\n"
        "drawn = s['sample'](num_samples=tf.constant(400), seed=tf.constant([1, 2]))\n"
        "print(json.dumps({'log_prob': s['log_prob'](x=tf.constant(x), categorical=c)['log_prob'].numpy().tolist(),\n"
        "  'score': s['score'](x=tf.constant(x), categorical=c)['log_prob'].numpy().tolist(),\n"
        "  'examples': s['score_examples'](examples=tf.constant(ex))['log_prob'].numpy().tolist(),\n"
        "  'samples': drawn['samples'].numpy().tolist(),\n"
        "  'categories': [v.decode() for v in drawn['categories'].numpy()[:, 0]]}))\n")
    np.save(tmp_path / "x.npy", x)
    got = json.loads(run_without_tfflows(script, run["version"], tmp_path / "x.npy", json.dumps(merchants),
                                         cwd=tmp_path)[-1])
    want = _library_log_prob(run["push"], x, merchants)
    for key in ("log_prob", "score", "examples"):
        np.testing.assert_allclose(got[key], want, atol=1e-4, err_msg=key)
    samples, categories = np.array(got["samples"]), np.array(got["categories"])
    assert set(categories) <= set(MERCHANTS) | {"<unseen>"} and np.mean(categories == "grocery") > 0.35, categories
    grocery, travel = samples[categories == "grocery", 0], samples[categories == "travel", 0]
    assert abs(grocery.mean() - 3.0) < 0.3 and abs(travel.mean() - 6.0) < 0.6, (grocery.mean(), travel.mean())


@pytest.mark.slow
def test_mlflow_pyfunc_takes_the_categorical_column_as_strings(run):
    import pandas as pd

    with registered_pyfunc(f"sqlite:///{run['out'] / 'mlflow.db'}") as model:
        inputs = model.metadata.get_input_schema().inputs
        assert [(c.name, c.type.name) for c in inputs] == [("amount", "double"), ("hour", "double"),
                                                           ("merchant", "string")], inputs
        frame = pd.DataFrame({"merchant": ["grocery", "travel", "bakery"], "hour": [12.0, 12.0, 1.0],
                              "amount": [3.0, 3.0, 6.0]})
        got = model.predict(frame)["log_prob"].to_numpy()
        drawn = model.predict(frame[:1], params={"signature_name": "sample", "num_samples": 5, "seed": [1, 2]})
    want = _library_log_prob(run["push"], np.array([[3.0, 12.0], [3.0, 12.0], [6.0, 1.0]]),
                             ["grocery", "travel", "bakery"])
    np.testing.assert_allclose(got, want, atol=1e-4)
    assert list(drawn.columns) == ["amount", "hour", "merchant"] and len(drawn) == 5

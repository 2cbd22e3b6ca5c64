"""Conditional densities p(x | context) through the whole pipeline (issue 26, numeric context).

The data have a known conditional density: with ``machine`` in {0, ..., 9} and ``load`` ~ U[0, 1],

    temp | machine, load      ~ N(3 load + 0.2 machine, 0.3^2)
    vibration | machine, load ~ N(-2 load, (0.2 + 0.6 load)^2)

independent given the context. The vibration's spread depends on the load, which the reference (the
full-covariance Gaussian's conditional, linear in the context with one covariance) cannot follow
and a conditional flow can.

One shared run for the module (`@pytest.mark.slow`): ``tfflows run --data readings.csv --set
ingest.context_columns=[machine,load]`` (train, evaluate, push, register), then a second run with
another seed on the same output, which meets the first as its champion (drift, paired comparison).
The other tests inspect what the runs left. The configuration tests at the top need no run.
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

CONTEXT = ["machine", "load"]
FEATURES = ["temp", "vibration"]
RUN = ["--epochs", "30", "--set", "ingest.context_columns=[machine,load]", "--set", "train.num_layers=2",
       "--set", "train.hidden_units=[32]", "--set", "train.learning_rate=0.005"]


def _readings(n: int, seed: int) -> np.ndarray:
    """Rows (temp, machine, vibration, load) of the module's known conditional density."""
    rng = np.random.default_rng(seed)
    machine, load = rng.integers(0, 10, n).astype(float), rng.uniform(0, 1, n)
    temp = 3 * load + 0.2 * machine + 0.3 * rng.standard_normal(n)
    vibration = -2 * load + (0.2 + 0.6 * load) * rng.standard_normal(n)
    return np.column_stack([temp, machine, vibration, load])


def _true_moments(machine: float, load: float):
    """(mean, std) of (temp, vibration) given the context."""
    return np.array([3 * load + 0.2 * machine, -2 * load]), np.array([0.3, 0.2 + 0.6 * load])


def _write_csv(path, header, rows) -> str:
    np.savetxt(path, rows, delimiter=",", header=",".join(header), comments="", fmt="%.9g")
    return str(path)


# --------------------------------------------------------------------------- configuration (no run)


def _config(*assignments):
    from tfflows.pipeline.config import load_run_config

    return load_run_config(None, None, ["ingest.dataset=csv", "ingest.path=readings.csv", *assignments])


def test_context_columns_are_typed_and_recorded():
    config = _config("ingest.context_columns=[machine, load]")
    assert config.ingest.context_columns == ("machine", "load")
    assert IngestConfig.from_json(config.ingest.to_json()) == config.ingest


@pytest.mark.parametrize("assignments, words", [
    (["ingest.context_columns=machine"], "ingest.context_columns: expected a list of strings"),
    (["ingest.context_columns=[]"], "ingest.context_columns must name one or more columns"),
    (["ingest.context_columns=[load, load]"], "ingest.context_columns names ['load'] more than once"),
    (["ingest.columns=[temp, load]", "ingest.context_columns=[load]"], "are also in ingest.columns"),
    (["ingest.dataset=digits", "ingest.path=null", "ingest.context_columns=[load]"], "needs a table with named columns"),
    (["ingest.discrete=true", "ingest.num_levels=4", "ingest.context_columns=[load]"], "discrete data"),
    (["ingest.context_columns=[load]", "train.kind=planar"], "flow kind 'planar' has no conditional version"),
    (["ingest.context_columns=[load]", "train.objective=vae", "train.kind=made"],
     "objective 'vae' fits no conditional density (only max_likelihood does)"),
    (["ingest.context=label"], "ingest.context must be 'label' on a labelled dataset (digits, mnist)"),
    (["ingest.dataset=digits", "ingest.path=null", "ingest.context=class"], "but is 'class' on 'digits'"),
    (["ingest.dataset=digits", "ingest.path=null", "ingest.context=label", "train.kind=glow"],
     "ingest context [label_0, label_1,"),
])
def test_bad_context_settings_are_one_line_naming_the_field_and_the_fix(assignments, words):
    with pytest.raises(ConfigError) as error:
        _config(*assignments)
    message = str(error.value)
    assert words in message and "fix:" in message and "\n" not in message, message


def test_the_label_is_ten_one_hot_context_columns():
    config = _config("ingest.dataset=digits", "ingest.path=null", "ingest.context=label")
    assert config.ingest.context_names == tuple(f"label_{k}" for k in range(10))
    assert _config().ingest.context_names is None


def test_conditional_kinds_are_the_registry_s_word():
    from tfflows.models.kinds import FLOW_KINDS, FlowConfig, get_kind

    conditional = [k for k in FLOW_KINDS if get_kind(k).conditional]
    assert {"made", "made_mog", "maf", "iaf", "realnvp", "haf", "nice"} <= set(conditional)
    assert not {"planar", "glow", "realnvp_image"} & set(conditional)
    with pytest.raises(ValueError, match="'planar' has no conditional version"):
        FlowConfig(kind="planar", event_dim=2, context_dim=2)  # used to be ignored silently


def test_preflight_names_a_context_column_missing_from_the_header(tmp_path):
    path = _write_csv(tmp_path / "readings.csv", ["temp", "machine", "vibration", "load"], _readings(5, 0))
    for context, words in (("[machine, pressure]", "ingest.context_columns ['pressure']: not in the header"),
                           ("[temp, machine, vibration, load]", "names every column: no feature is left")):
        proc = cli("run", "--data", path, "--output", str(tmp_path / "out"), "--set",
                   f"ingest.context_columns={context}", timeout=120)
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0] and "fix:" in lines[0], proc.stderr
        assert not (tmp_path / "out").exists()


def test_conditional_reference_is_the_gaussian_s_conditional():
    """The joint Gaussian of (z, c) over that of c equals the linear-Gaussian model's density."""
    from tfflows.components.objectives.scoring import conditional_gaussian_log_prob

    rng = np.random.default_rng(1)
    c = rng.standard_normal((4000, 2))
    z = c @ np.array([[1.0, -0.5], [0.3, 2.0]]) + rng.standard_normal((4000, 2)) * [0.5, 1.5]
    got = conditional_gaussian_log_prob(z, c, z[:5], c[:5])
    coef, *_ = np.linalg.lstsq(np.hstack([c, np.ones((4000, 1))]), z, rcond=None)
    residual = z - np.hstack([c, np.ones((4000, 1))]) @ coef
    cov = residual.T @ residual / len(z)
    r = residual[:5]
    want = (-0.5 * np.einsum("ni,ij,nj->n", r, np.linalg.inv(cov), r) - 0.5 * np.log(np.linalg.det(cov))
            - np.log(2 * np.pi))
    np.testing.assert_allclose(got, want, atol=1e-4)


# --------------------------------------------------------------------------- one shared run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("conditional")
    data = _write_csv(root / "readings.csv", ["temp", "machine", "vibration", "load"], _readings(3000, 0))
    out = root / "out"
    first = cli("run", "--data", data, "--output", str(out), *RUN)
    assert first.returncode == 0, first.stdout[-2000:] + first.stderr[-3000:]
    # The champion meets a challenger trained with another seed on new rows of the same density.
    new = _write_csv(root / "readings2.csv", ["temp", "machine", "vibration", "load"], _readings(3000, 1))
    second = cli("run", "--data", new, "--output", str(out), *RUN, "--set", "train.seed=1")
    assert second.returncode == 0, second.stdout[-2000:] + second.stderr[-3000:]
    version = str(out / "serving" / "1")
    push = json.loads((out / "serving" / "1" / "assets.extra" / "tfflows_push.json").read_text())
    return {"root": root, "out": out, "first": first.stdout, "second": second.stdout, "version": version,
            "push": push}


def _library_log_prob(push: dict, x: np.ndarray, context: np.ndarray) -> np.ndarray:
    """log p(x | context) of the trained library model composed with the preprocessing by hand: the
    flow's ``log_prob(z, c)`` plus the transform's log-determinant."""
    from tfflows.components.flow_artifact import load_flow
    from tfflows.components.transform import read_context_preprocessing, read_preprocessing

    tg = push["transform_graph_uri"]
    z, log_det = read_preprocessing(tg).forward(x.astype(np.float32))
    c, _ = read_context_preprocessing(tg).forward(context.astype(np.float32))
    return (load_flow(push["model_uri"]).log_prob(z, c).numpy() + log_det.numpy()).astype(np.float64)


@pytest.mark.slow
def test_run_trains_evaluates_and_pushes_a_conditional_model(run):
    from tfflows.components import artifacts
    from tfflows.components.flow_artifact import load_flow
    from tfflows.components.ingest import read_metadata

    assert "tfflows run: csv -> maf flow of p(temp, vibration | machine, load); ingest," in run["first"], run["first"]
    assert "conditioned on the context" in run["first"] and "blessed: True" in run["first"], run["first"]
    assert "test log-likelihood:" in run["first"]
    metadata = read_metadata(run["push"]["examples_uri"])
    assert (metadata.feature_names, metadata.context_names, metadata.event_dim) == (FEATURES, CONTEXT, 2)
    assert load_flow(run["push"]["model_uri"]).config.context_dim == 2
    info = artifacts.read_json(os.path.join(run["version"], artifacts.METADATA_FILE))
    assert info["dataset"]["feature_names"] == FEATURES and info["dataset"]["context_names"] == CONTEXT
    assert info["context_preprocessing"]["method"] == "standardize"


@pytest.mark.slow
def test_roles_are_in_ml_metadata(run):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(run["out"] / "metadata.sqlite")
    examples = metadata_store.MetadataStore(config).get_artifacts_by_type("Examples")
    roles = {(a.custom_properties["feature_names"].string_value, a.custom_properties["context_names"].string_value)
             for a in examples}
    assert roles == {(json.dumps(FEATURES), json.dumps(CONTEXT))}


@pytest.mark.slow
def test_challenger_meets_the_conditional_champion_paired_and_drift(run):
    second = run["second"]
    assert "data drift: champion (serving version 1) scores the new test split" in second, second
    assert "on the same" in second and "paired mean ± 2 s.e." in second, second


@pytest.mark.slow
def test_same_reading_under_two_contexts_scores_as_the_library_model(run, tmp_path):
    from tfflows.pipeline.serving import evaluate_saved_model

    reading = [2.3, -0.6]  # typical at machine 7, load 0.3; far out at machine 2, load 0.9
    contexts = np.array([[7.0, 0.3], [2.0, 0.9]])
    table = np.array([[0.3, -0.6, 2.3, 7.0], [0.9, -0.6, 2.3, 2.0]])  # columns in another order
    data = _write_csv(tmp_path / "two.csv", ["load", "vibration", "temp", "machine"], table)
    summary = evaluate_saved_model(run["version"], data, scores_path=str(tmp_path / "s.csv"))
    assert "matched by name (temp, vibration, machine, load)" in summary, summary
    scores = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)["log_prob"]
    want = _library_log_prob(run["push"], np.array([reading, reading]), contexts)
    np.testing.assert_allclose(scores, want, atol=1e-4)
    assert scores[0] - scores[1] > 2.0, scores  # the context matters, and in the right direction
    # Beam workers read the context columns by name from the same file too.
    evaluate_saved_model(run["version"], data, scores_path=str(tmp_path / "beam.csv"), beam_args=[])
    np.testing.assert_allclose(np.genfromtxt(tmp_path / "beam.csv", delimiter=",", names=True)["log_prob"], scores,
                               atol=1e-6)


@pytest.mark.slow
def test_fresh_process_signatures_agree(run, tmp_path):
    """log_prob(x, context), score, score_examples and sample(num_samples, context, seed) in a process
    that imports nothing of this project."""
    x = np.array([[2.3, -0.6], [2.3, -0.6], [3.0, -1.5]], np.float32)
    context = np.array([[7, 0.3], [2, 0.9], [2, 0.9]], np.float32)
    script = (
        "import sys, json, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1]); x, c = np.load(sys.argv[2]), np.load(sys.argv[3])\n"
        "names = ['temp', 'vibration', 'machine', 'load']\n"
        "ex = [tf.train.Example(features=tf.train.Features(feature={n: tf.train.Feature(float_list=\n"
        "      tf.train.FloatList(value=[v])) for n, v in zip(names, list(a) + list(b))})).SerializeToString()\n"
        "      for a, b in zip(x, c)]\n"
        "s = m.signatures\n"
        "one = s['sample'](num_samples=tf.constant(4), context=tf.constant(c[:1]), seed=tf.constant([1, 2]))\n"
        "each = s['sample'](num_samples=tf.constant(3), context=tf.constant(c), seed=tf.constant([1, 2]))\n"
        "print(json.dumps({'log_prob': s['log_prob'](x=tf.constant(x), context=tf.constant(c))['log_prob'].numpy().tolist(),\n"
        "  'score': s['score'](x=tf.constant(x), context=tf.constant(c))['log_prob'].numpy().tolist(),\n"
        "  'examples': s['score_examples'](examples=tf.constant(ex))['log_prob'].numpy().tolist(),\n"
        "  'one': one['samples'].numpy().tolist(), 'each': each['samples'].numpy().tolist()}))\n")
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "c.npy", context)
    got = json.loads(run_without_tfflows(script, run["version"], tmp_path / "x.npy", tmp_path / "c.npy",
                                         cwd=tmp_path)[-1])
    want = _library_log_prob(run["push"], x, context)
    for key in ("log_prob", "score", "examples"):
        np.testing.assert_allclose(got[key], want, atol=1e-4, err_msg=key)
    assert np.shape(got["one"]) == (4, 2) and np.shape(got["each"]) == (3, 2)


@pytest.mark.slow
def test_samples_follow_their_context_s_known_density(run, tmp_path):
    """2,000 samples at each of two contexts (a file of contexts, n per context): mean and spread of
    each feature within 0.12 and 20 % of the true conditional's (the two contexts' true means differ
    by 0.8 and 1.2, their vibration spreads by a factor 2)."""
    from tfflows.pipeline.serving import sample_saved_model

    contexts = [(7.0, 0.3), (2.0, 0.9)]
    path = _write_csv(tmp_path / "contexts.csv", CONTEXT, np.array(contexts))
    line = sample_saved_model(run["version"], 2000, 3, str(tmp_path / "s.csv"), context=path)
    assert "4000 samples (2000 per context, 2 context(s))" in line, line
    table = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert list(table.dtype.names) == FEATURES + CONTEXT
    for machine, load in contexts:
        rows = table[(table["machine"].astype(np.float32) == np.float32(machine))
                     & (table["load"].astype(np.float32) == np.float32(load))]
        assert len(rows) == 2000
        samples = np.column_stack([rows[name] for name in FEATURES])
        mean, std = _true_moments(machine, load)
        np.testing.assert_allclose(samples.mean(axis=0), mean, atol=0.12, err_msg=f"mean at {machine, load}")
        np.testing.assert_allclose(samples.std(axis=0), std, rtol=0.2, err_msg=f"std at {machine, load}")
    # One context given inline samples as a file holding that one context (same seed, same samples).
    one = _write_csv(tmp_path / "one.csv", CONTEXT, np.array([contexts[0]]))
    sample_saved_model(run["version"], 5, 3, str(tmp_path / "file.npy"), context=one)
    sample_saved_model(run["version"], 5, 3, str(tmp_path / "inline.npy"), context="load=0.3, machine=7")
    np.testing.assert_array_equal(np.load(tmp_path / "file.npy"), np.load(tmp_path / "inline.npy"))


@pytest.mark.slow
def test_mlflow_pyfunc_names_the_context_columns(run):
    import pandas as pd

    with registered_pyfunc(f"sqlite:///{run['out'] / 'mlflow.db'}") as model:
        assert [c.name for c in model.metadata.get_input_schema().inputs] == FEATURES + CONTEXT
        frame = pd.DataFrame({"load": [0.3, 0.9], "machine": [7.0, 2.0], "temp": [2.3, 2.3],
                              "vibration": [-0.6, -0.6]})
        got = model.predict(frame)["log_prob"].to_numpy()
    want = _library_log_prob(run["push"], np.array([[2.3, -0.6]] * 2), np.array([[7.0, 0.3], [2.0, 0.9]]))
    np.testing.assert_allclose(got, want, atol=1e-4)


@pytest.mark.slow
def test_missing_or_unwanted_context_is_one_line(run, tmp_path):
    from tfflows.pipeline.serving import _contexts, evaluate_saved_model

    no_load = _write_csv(tmp_path / "no_load.csv", ["temp", "vibration", "machine"], np.array([[2.3, -0.6, 7.0]]))
    with pytest.raises(DataError, match="no column load"):
        evaluate_saved_model(run["version"], no_load)
    with pytest.raises(DataError, match="the model is unconditional: it takes no context"):
        _contexts("machine=7,load=0.3", {}, "model")
    for spec, words in (("machine=7", "load: not given"), ("machine=7,load=x", "value 'x' is not a number"),
                        ("machine=7,load=0.3,speed=2", "speed: is not a context of the model")):
        with pytest.raises(DataError, match=words):
            _contexts(spec, {"dataset": {"context_names": CONTEXT}}, "model")
    proc = cli("sample", "--model", run["version"], "-n", "3", "--out", str(tmp_path / "s.csv"), timeout=300)
    assert proc.returncode == 2
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "conditioned on machine, load and no context was given" in lines[0], proc.stderr
    assert "--context 'machine=VALUE,load=VALUE'" in lines[0]


@pytest.mark.slow
def test_digits_conditioned_on_their_label(tmp_path):
    """``ingest.context: label``: a class-conditional flow of the 8x8 digits, scored in bits/dim; the
    served density of test images given their own label is the library model's."""
    from tfflows.components.ingest import load_split, read_metadata
    from tfflows.components.ingest.metadata import load_context
    from tfflows.pipeline.serving import sample_saved_model

    out = tmp_path / "out"
    proc = cli("run", "--dataset", "digits", "--output", str(out), "--epochs", "3", "--set", "ingest.context=label",
               "--set", "train.num_layers=2", "--set", "train.hidden_units=[128]", "--set",
               "evaluate.reference_tolerance=1e6")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "bits/dim:" in proc.stdout, proc.stdout
    version = str(out / "serving" / "1")
    push = json.loads((out / "serving" / "1" / "assets.extra" / "tfflows_push.json").read_text())
    metadata = read_metadata(push["examples_uri"])
    assert metadata.event_dim == 64 and metadata.context_names == [f"label_{k}" for k in range(10)]
    x, labels = load_split(push["examples_uri"], "test")[:4], load_context(push["examples_uri"], "test")[:4]
    assert (labels.sum(axis=1) == 1).all()
    import tensorflow as tf

    served = tf.saved_model.load(version).signatures["log_prob"](x=tf.constant(x), context=tf.constant(labels))
    np.testing.assert_allclose(served["log_prob"].numpy(), _library_log_prob(push, x, labels), atol=1e-3, rtol=1e-5)
    three = _write_csv(tmp_path / "three.csv", [f"label_{k}" for k in range(10)], np.eye(10)[[3]])
    line = sample_saved_model(version, 4, 0, str(tmp_path / "threes.npy"), context=three)
    assert np.load(tmp_path / "threes.npy").shape == (4, 64), line


@pytest.mark.slow
@pytest.mark.skipif(not os.path.isfile(os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "..",
                                                    "shared", "data", "mnist", "t10k-labels-idx1-ubyte.gz")),
                    reason="the MNIST test images and labels are not beside the checkout")
def test_mnist_conditioned_on_their_label(tmp_path):
    """``ingest.context: label`` on MNIST (here its 10,000 test images and labels, 1,000 kept): each
    image's one-hot label travels with it through the split."""
    from tfflows.components.ingest import load_split, read_metadata
    from tfflows.components.ingest.metadata import load_context

    out = tmp_path / "out"
    proc = cli("run", "--dataset", "mnist", "--output", str(out), "--epochs", "1", "--set", "ingest.context=label",
               "--set", "ingest.max_examples=1000", "--set", "train.num_layers=1", "--set",
               "train.hidden_units=[800]", "--set", "evaluate.reference_tolerance=1e6")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "bits/dim:" in proc.stdout, proc.stdout
    push = json.loads((out / "serving" / "1" / "assets.extra" / "tfflows_push.json").read_text())
    metadata = read_metadata(push["examples_uri"])
    assert metadata.event_dim == 784 and metadata.context_names == [f"label_{k}" for k in range(10)]
    assert sum(metadata.split_sizes.values()) == 1000
    x, labels = load_split(push["examples_uri"], "test"), load_context(push["examples_uri"], "test")
    assert x.shape[1] == 784 and (labels.sum(axis=1) == 1).all() and len(set(labels.argmax(axis=1))) > 5

"""Categorical context columns through the whole pipeline (issue 26): a machine id conditions the
density like a number does, with no encoding by the user.

The data (a Parquet table with string columns): ``machine`` in {m1, m2, m7}, ``load`` ~ U[0, 1], and

    x | machine, load ~ N(mu_machine + 2 load, sd_machine^2),  mu = -2, 0, 3,  sd = 0.2, 0.6, 0.3

with ``shift`` in {day, night} (0.7 / 0.3) independent of everything: the run conditions on
``[machine, load]`` (machine categorical) and models ``shift`` as a categorical column too, so one
run covers a numeric and a categorical context beside a modelled category (a `models.MixedDensity`
with a context). The spread depends on the machine, which the reference (a linear-Gaussian model
with one covariance) cannot follow. One shared run (`@pytest.mark.slow`); the other tests read what
it left. The configuration test at the top needs no run.
"""

from __future__ import annotations

import json

import numpy as np
import pytest

from tfflows.components.errors import DataError
from tests.artifact_testing import registered_pyfunc
from tests.cli_testing import cli, run_without_tfflows

MEAN, SD = {"m1": -2.0, "m2": 0.0, "m7": 3.0}, {"m1": 0.2, "m2": 0.6, "m7": 0.3}
CONTEXT = ["machine", "load"]
RUN = ["--epochs", "15", "--set", "ingest.context_columns=[machine,load]",
       "--set", "ingest.categorical_columns=[machine,shift]", "--set", "train.num_layers=2",
       "--set", "train.hidden_units=[16]", "--set", "train.learning_rate=0.005"]
# One reading under every machine (m9: never seen in training), all at load 0.3.
MACHINES = ["m1", "m2", "m7", "m9"]


def _write_parquet(path, n: int, seed: int) -> str:
    """``n`` rows (x, machine, load, shift) of the module's known density, as a Parquet table."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    rng = np.random.default_rng(seed)
    machine = rng.choice(list(MEAN), n)
    load = rng.uniform(0, 1, n)
    x = np.array([MEAN[m] for m in machine]) + 2 * load + np.array([SD[m] for m in machine]) * rng.standard_normal(n)
    shift = rng.choice(["day", "night"], n, p=[0.7, 0.3])
    pq.write_table(pa.table({"x": x, "machine": machine, "load": load, "shift": shift}), str(path))
    return str(path)


def _write_csv(path, header, rows) -> str:
    with open(path, "w") as f:
        f.write(",".join(header) + "\n")
        f.writelines(",".join(str(v) for v in row) + "\n" for row in rows)
    return str(path)


def test_a_categorical_context_column_is_accepted_and_its_role_derived():
    from tfflows.pipeline.config import load_run_config

    config = load_run_config(None, None, ["ingest.dataset=parquet", "ingest.path=r.parquet",
                                          "ingest.context_columns=[machine, load]",
                                          "ingest.categorical_columns=[machine, shift]"])
    assert config.ingest.context_categorical == ("machine",) and config.ingest.modelled_categorical == ("shift",)


@pytest.mark.slow
def test_a_context_of_categories_alone_is_ingested_transformed_and_served(tmp_path):
    """Every context column categorical: no float feature ``context`` at all, yet the dataset is
    conditional, the graph's network context is the machine's one-hot, and the exported SavedModel
    (an untrained flow: the plumbing, not the fit) scores and samples given the machine's string."""
    import tensorflow as tf

    from tfflows.components.config import IngestConfig, TransformConfig
    from tfflows.components.ingest import read_metadata, run_ingest
    from tfflows.components.ingest.metadata import load_context_categorical
    from tfflows.components.push.export import export_flow
    from tfflows.components.summary import ModelSummary
    from tfflows.components.transform import load_transform, read_preprocessing, run_transform
    from tfflows.models import build_flow

    ex, tg = str(tmp_path / "examples"), str(tmp_path / "transform")
    run_ingest(IngestConfig("parquet", path=_write_parquet(tmp_path / "r.parquet", 300, 1),
                            columns=("x", "load"), context_columns=("machine",), categorical_columns=("machine",)), ex)
    run_transform(ex, TransformConfig(), tg)
    metadata = read_metadata(ex)
    assert metadata.conditional and metadata.context_dim is None and metadata.context_categorical_names == ["machine"]
    machines = load_context_categorical(ex, "train")[:3, 0].astype(str)
    x = np.array([[0.5, 0.3]] * 3, np.float32)
    z, log_det, context = load_transform(tg)(x, context_categorical=tf.constant([[m] for m in machines]))
    vocabulary = json.loads((tmp_path / "transform" / "preprocessing.json").read_text())["context_categories"]["machine"]
    np.testing.assert_array_equal(context.numpy(), np.eye(4)[[vocabulary.index(m) for m in machines]])
    flow = build_flow("maf", 2, context_dim=4, num_layers=1, hidden_units=[8])
    export_flow(flow, ModelSummary(), tg, metadata, str(tmp_path / "export"), rows=x)
    served = tf.saved_model.load(str(tmp_path / "export"))
    strings = tf.constant([[m] for m in machines])
    got = served.signatures["log_prob"](x=tf.constant(x), context_categorical=strings)["log_prob"].numpy()
    want = flow.log_prob(read_preprocessing(tg).forward(x)[0], context).numpy() + log_det.numpy()
    np.testing.assert_allclose(got, want, atol=1e-4)
    drawn = served.signatures["sample"](num_samples=tf.constant(5), context_categorical=tf.constant([["m7"]]),
                                        seed=tf.constant([1, 2]))["samples"]
    assert drawn.shape == (5, 2)


# --------------------------------------------------------------------------- one shared run


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = tmp_path_factory.mktemp("categorical_context")
    out = root / "out"
    done = cli("run", "--data", _write_parquet(root / "readings.parquet", 3000, 0), "--output", str(out), *RUN)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-3000:]
    push = json.loads((out / "serving" / "1" / "assets.extra" / "tfflows_push.json").read_text())
    return {"root": root, "out": out, "stdout": done.stdout, "version": str(out / "serving" / "1"), "push": push}


def _library_log_prob(push: dict, x, load, machines, shifts) -> np.ndarray:
    """log P(shift | c) + log p(x | shift, c) of the trained library model, its network context c
    composed by hand from ``preprocessing.json``: the standardised load, then the machine's one-hot
    over its vocabulary and the out-of-vocabulary bucket; plus the preprocessing's log-determinant."""
    from tfflows.components.flow_artifact import load_flow
    from tfflows.components.transform import (read_categories, read_context_categories, read_context_preprocessing,
                                              read_preprocessing)

    tg = push["transform_graph_uri"]
    code = lambda vocabulary, value: vocabulary.index(value) if value in vocabulary else len(vocabulary)  # noqa: E731
    known = read_context_categories(tg)["machine"]
    one_hot = np.eye(len(known) + 1, dtype=np.float32)[[code(known, m) for m in machines]]
    standardised = read_context_preprocessing(tg).forward(np.asarray(load, np.float32).reshape(-1, 1))[0].numpy()
    context = np.hstack([standardised, one_hot])
    codes = np.array([[code(read_categories(tg)["shift"], s)] for s in shifts], np.int32)
    z, log_det = read_preprocessing(tg).forward(np.asarray(x, np.float32).reshape(-1, 1))
    return (load_flow(push["model_uri"]).log_prob(z, codes, context).numpy() + log_det.numpy()).astype(np.float64)


@pytest.mark.slow
def test_run_trains_a_conditional_model_of_a_categorical_context(run):
    from tfflows.components.flow_artifact import load_flow
    from tfflows.components.ingest import read_metadata
    from tfflows.components.transform import network_context_dim, read_context_categories

    assert "P(shift | machine, load) p(x | shift, machine, load)" in run["stdout"], run["stdout"]
    assert "conditioned on the context" in run["stdout"] and "blessed: True" in run["stdout"], run["stdout"]
    metadata = read_metadata(run["push"]["examples_uri"])
    assert (metadata.feature_names, metadata.context_names, metadata.context_categorical_names,
            metadata.numeric_context_names, metadata.categorical_names) == (["x"], CONTEXT, ["machine"], ["load"],
                                                                            ["shift"])
    tg = run["push"]["transform_graph_uri"]
    assert sorted(read_context_categories(tg)["machine"]) == sorted(MEAN)
    assert network_context_dim(tg) == 1 + 4 == load_flow(run["push"]["model_uri"]).context_dim  # load, 3 + OOV


@pytest.mark.slow
def test_roles_are_in_ml_metadata(run):
    from ml_metadata.metadata_store import metadata_store
    from ml_metadata.proto import metadata_store_pb2

    config = metadata_store_pb2.ConnectionConfig()
    config.sqlite.filename_uri = str(run["out"] / "metadata.sqlite")
    examples = metadata_store.MetadataStore(config).get_artifacts_by_type("Examples")
    assert {a.custom_properties["context_categorical_names"].string_value for a in examples} == {'["machine"]'}


@pytest.mark.slow
def test_cli_evaluate_and_beam_score_each_machine_as_the_library_and_report_an_unseen_one(run, tmp_path):
    """`tfflows evaluate --data` (in-process and on Beam workers): the same reading under three
    machines scores three different log-densities, each the library's; an unseen machine is scored
    with the out-of-vocabulary one-hot and said in one line."""
    from tfflows.pipeline.serving import evaluate_saved_model

    data = _write_csv(tmp_path / "readings.csv", ["load", "shift", "x", "machine"],  # another column order
                      [(0.3, "day", 0.5, m) for m in MACHINES])
    local = evaluate_saved_model(run["version"], data, str(tmp_path / "local_s.csv"))
    beam = evaluate_saved_model(run["version"], data, str(tmp_path / "s.csv"), beam_args=["--runner=DirectRunner"])
    assert beam == local.replace("local_", ""), (beam, local)
    assert "matched by name (x, load, machine, shift)" in local, local
    lines = [line for line in local.splitlines() if "unseen categories" in line]
    assert len(lines) == 1 and "machine: 1 row(s), e.g. 'm9'" in lines[0], local
    want = _library_log_prob(run["push"], [0.5] * 4, [0.3] * 4, MACHINES, ["day"] * 4)
    for name in ("local_s.csv", "s.csv"):
        scores = np.genfromtxt(tmp_path / name, delimiter=",", names=True)["log_prob"]
        np.testing.assert_allclose(scores, want, atol=1e-4, err_msg=name)
    # x = 0.5 at load 0.3 is near m2's mean (0.6), far from m1's (-1.4, sd 0.2) and m7's (3.6)
    assert scores[1] - scores[0] > 10 and scores[1] - scores[2] > 5, scores


@pytest.mark.slow
def test_fresh_process_signatures_take_the_machine_as_a_string(run, tmp_path):
    """log_prob, score and score_examples (the machine a bytes feature) in a process that imports
    nothing of this project give the library's scores; sample takes the context as strings too."""
    script = (
        "import sys, json, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1]); machines = json.loads(sys.argv[2]); s = m.signatures\n"
        "n = len(machines); x, load = tf.constant([[0.5]] * n), tf.constant([[0.3]] * n)\n"
        "given = dict(context=load, context_categorical=tf.constant([[v] for v in machines]),\n"
        "             categorical=tf.constant([['day']] * n))\n"
        "b = lambda v: tf.train.Feature(bytes_list=tf.train.BytesList(value=[v.encode()]))\n"
        "f = lambda v: tf.train.Feature(float_list=tf.train.FloatList(value=[v]))\n"
        "ex = [tf.train.Example(features=tf.train.Features(feature={'x': f(0.5), 'load': f(0.3), 'machine': b(v),\n"
        "      'shift': b('day')})).SerializeToString() for v in machines]\n"
        "drawn = s['sample'](num_samples=tf.constant(4), context=tf.constant([[0.3]]),\n"
        "                    context_categorical=tf.constant([['m7']]), seed=tf.constant([1, 2]))\n"
        "print(json.dumps({'log_prob': s['log_prob'](x=x, **given)['log_prob'].numpy().tolist(),\n"
        "  'score': s['score'](x=x, **given)['log_prob'].numpy().tolist(),\n"
        "  'examples': s['score_examples'](examples=tf.constant(ex))['log_prob'].numpy().tolist(),\n"
        "  'samples': drawn['samples'].numpy().tolist()}))\n")
    got = json.loads(run_without_tfflows(script, run["version"], json.dumps(MACHINES), cwd=tmp_path)[-1])
    want = _library_log_prob(run["push"], [0.5] * 4, [0.3] * 4, MACHINES, ["day"] * 4)
    for key in ("log_prob", "score", "examples"):
        np.testing.assert_allclose(got[key], want, atol=1e-4, err_msg=key)
    assert np.asarray(got["samples"]).shape == (4, 1)


@pytest.mark.slow
def test_samples_at_each_machine_follow_its_density(run, tmp_path):
    """`tfflows sample --context contexts.csv` (machines as strings): 2,000 samples at each of two
    machines have that machine's mean, within 4 standard errors plus 0.1 for the fit of a 15-epoch
    model; they score back by name; an inline unseen machine is sampled and said in one line."""
    from tfflows.pipeline.serving import evaluate_saved_model, sample_saved_model

    n = 2000
    contexts = _write_csv(tmp_path / "contexts.csv", ["load", "machine"], [(0.3, "m1"), (0.3, "m7")])
    sample_saved_model(run["version"], n, 1, str(tmp_path / "drawn.csv"), context=contexts)
    drawn = np.genfromtxt(tmp_path / "drawn.csv", delimiter=",", names=True, dtype=None, encoding=None)
    assert drawn.dtype.names == ("x", "load", "machine", "shift") and len(drawn) == 2 * n
    for part, machine in zip((drawn[:n], drawn[n:]), ("m1", "m7")):
        assert set(part["machine"]) == {machine}, set(part["machine"])
        mean, tolerance = MEAN[machine] + 0.6, 4 * SD[machine] / np.sqrt(n) + 0.1
        assert abs(part["x"].mean() - mean) < tolerance, (machine, part["x"].mean(), mean)
        assert 0.7 < part["x"].std() / SD[machine] < 1.3, (machine, part["x"].std())
    assert f"rows: {2 * n} from" in evaluate_saved_model(run["version"], str(tmp_path / "drawn.csv"))
    said = sample_saved_model(run["version"], 3, 1, str(tmp_path / "m9.csv"), context="machine=m9,load=0.3")
    assert len([line for line in said.splitlines() if "unseen categories, sampled" in line]) == 1, said


@pytest.mark.slow
def test_a_numeric_context_that_is_not_a_number_is_one_line(run):
    from tfflows.components.artifacts import read_json
    from tfflows.pipeline.serving import _contexts

    info = read_json(f"{run['version']}/assets.extra/tfflows.json")
    with pytest.raises(DataError) as error:
        _contexts("machine=m7,load=heavy", info, "model")
    assert "load: value 'heavy' is not a number" in str(error.value) and "\n" not in str(error.value)
    assert _contexts("machine=m7,load=0.3", info, "model")["context_categorical"].tolist() == [["m7"]]


@pytest.mark.slow
def test_mlflow_pyfunc_takes_the_machine_as_a_string_column(run):
    import pandas as pd

    with registered_pyfunc(f"sqlite:///{run['out'] / 'mlflow.db'}") as model:
        inputs = model.metadata.get_input_schema().inputs
        assert [(c.name, c.type.name) for c in inputs] == [("x", "double"), ("load", "double"),
                                                           ("machine", "string"), ("shift", "string")], inputs
        frame = pd.DataFrame({"machine": MACHINES, "shift": ["day"] * 4, "load": [0.3] * 4, "x": [0.5] * 4})
        got = model.predict(frame)["log_prob"].to_numpy()
        drawn = model.predict(frame[2:3], params={"signature_name": "sample", "num_samples": 5, "seed": [1, 2]})
    np.testing.assert_allclose(got, _library_log_prob(run["push"], [0.5] * 4, [0.3] * 4, MACHINES, ["day"] * 4),
                               atol=1e-4)
    assert list(drawn.columns) == ["x", "shift", "load", "machine"] and set(drawn["machine"]) == {"m7"}

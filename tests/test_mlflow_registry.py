"""Registry workflow: `tfflows promote --version N` / `tfflows rollback` move the champion alias and
TF Serving's stable label together; the KServe InferenceService and the TF Serving label config."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tfflows.components.push.registry import write_serving_config
from tfflows.components.tracking import Tracker
from tfflows.components.train.config import TrackingConfig

REPO = Path(__file__).resolve().parents[1]
KSERVE = REPO / "infra" / "k8s" / "kserve"


@pytest.fixture()
def registry(tmp_path):
    """A run output with three registered versions (serving versions 1..3), champion on 3: made with
    MLflow's client directly (what a push leaves: version tags and the alias), no TensorFlow."""
    out = tmp_path / "out"
    tracking = TrackingConfig(uri=f"sqlite:///{out}/mlflow.db", registered_model_name="tfflows")
    tracker = Tracker(tracking)
    client = tracker.client
    client.create_registered_model("tfflows")
    for v in (1, 2, 3):
        (out / "serving" / str(v)).mkdir(parents=True)
        client.create_model_version("tfflows", str(out / "serving" / str(v)), tags={"serving_version": str(v)})
    client.set_registered_model_alias("tfflows", "champion", "3")
    write_serving_config(str(out), "tfflows", 3)
    return out, client


def _cli(*args):
    return subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", *args], capture_output=True, text=True,
                          timeout=300, cwd=str(REPO))


def test_rollback_then_promote_move_alias_and_stable_label(registry):
    out, client = registry
    back = _cli("rollback", "--output", str(out))
    assert back.returncode == 0, back.stderr[-2000:]
    assert "tfflows@champion -> version 2" in back.stdout
    assert client.get_model_version_by_alias("tfflows", "champion").version in ("2", 2)
    config = (out / "models.config").read_text()
    assert 'key: "stable" value: 2' in config and 'key: "canary" value: 3' in config
    forward = _cli("promote", "--version", "3", "--output", str(out))
    assert forward.returncode == 0, forward.stderr[-2000:]
    assert str(client.get_model_version_by_alias("tfflows", "champion").version) == "3"
    config = (out / "models.config").read_text()
    assert 'key: "stable" value: 3' in config and "canary" not in config


def test_promote_unknown_version_and_rollback_past_the_first_are_one_line_errors(registry):
    out, client = registry
    missing = _cli("promote", "--version", "9", "--output", str(out))
    assert missing.returncode == 2 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    client.set_registered_model_alias("tfflows", "champion", "1")
    first = _cli("rollback", "--output", str(out))
    assert first.returncode == 2 and "no older version" in first.stderr
    assert str(client.get_model_version_by_alias("tfflows", "champion").version) == "1"


def test_serving_config_is_a_model_server_config_proto(tmp_path):
    from google.protobuf import text_format
    from tensorflow_serving.config import model_server_config_pb2

    for text in (Path(write_serving_config(str(tmp_path), "tfflows", 2, canary=3)).read_text(),
                 (REPO / "infra" / "serving" / "models.config").read_text()):
        config = text_format.Parse(text, model_server_config_pb2.ModelServerConfig())
        (model,) = config.model_config_list.config
        assert dict(model.version_labels) == {"stable": 2, "canary": 3}
        assert sorted(model.model_version_policy.specific.versions) == [2, 3]


def test_kserve_inference_service_renders_and_its_pod_parts_validate():
    import kubernetes_validate

    rendered = subprocess.run(["kubectl", "kustomize", str(KSERVE)], capture_output=True, text=True, timeout=60)
    assert rendered.returncode == 0, rendered.stderr
    (doc,) = [d for d in yaml.safe_load_all(rendered.stdout) if d]
    assert doc["apiVersion"] == "serving.kserve.io/v1beta1" and doc["kind"] == "InferenceService"
    assert doc["metadata"]["namespace"] == "tfflows"
    predictor = doc["spec"]["predictor"]
    model = predictor["model"]
    assert model["modelFormat"] == {"name": "tensorflow"} and model["protocolVersion"] == "v1"
    # The push base's serving folder on the claim the pipeline writes (../storage.yaml).
    storage = yaml.safe_load((REPO / "infra" / "k8s" / "storage.yaml").read_text())
    assert model["storageUri"] == f"pvc://{storage['metadata']['name']}/serving"
    # KServe inlines a PodSpec in the predictor and a Container in the model: validate those parts
    # strictly against the Kubernetes schemas as the pod KServe creates.
    container = {k: v for k, v in model.items() if k not in ("modelFormat", "protocolVersion", "storageUri", "runtime")}
    pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "tfflows-predictor"},
           "spec": {"securityContext": predictor["securityContext"],
                    "containers": [{"name": "kserve-container", "image": "tensorflow/serving:2.19.1", **container}]}}
    kubernetes_validate.validate(pod, "1.32", strict=True)
    assert pod["spec"]["securityContext"]["runAsNonRoot"] is True

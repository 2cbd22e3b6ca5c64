"""Kubernetes manifests (infra/k8s): structure, secrets, strict schema validation, pod security,
NetworkPolicies evaluated on every pair of pods, and the Kubeflow spec `tfflows compile` writes.

No cluster is needed: `kubectl kustomize` renders the manifests (kubectl is on the machine image)
and `kubernetes-validate --strict` checks them against the Kubernetes 1.32 schemas.
"""

from __future__ import annotations

import json
import os
import re
import runpy
import shutil
import subprocess
import sys
import textwrap
import types
from pathlib import Path

import pytest
import yaml

from tests.test_infra import (K8S, README, REPO, SECRET_NAME, _check_cron_fields, _containers,
                              _k8s_docs, _literal_secrets, _pod_specs, _pod_templates)

# ------------------------------------------------------------------------------------------
# Kubernetes
# ------------------------------------------------------------------------------------------


def test_k8s_docs_have_identity():
    docs = _k8s_docs()
    assert len(docs) >= 10
    for path, doc in docs:
        assert doc.get("apiVersion") and doc.get("kind"), path
        assert doc.get("metadata", {}).get("name"), f"{path}: {doc.get('kind')} without a name"


def test_k8s_kustomization_lists_every_manifest():
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    listed = set(kustomization["resources"])
    present = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    assert listed == present
    assert kustomization["namespace"] == "tfflows"


def test_k8s_expected_workloads():
    kinds = {(doc["kind"], doc["metadata"]["name"]) for _, doc in _k8s_docs()}
    for expected in [
        ("StatefulSet", "postgres"), ("Service", "postgres"),
        ("Deployment", "minio"), ("Service", "minio"), ("Job", "minio-create-bucket"),
        ("Deployment", "mlflow"), ("Service", "mlflow"),
        ("Deployment", "tf-serving"), ("Service", "tf-serving"),
        ("CronJob", "tfflows-pipeline"), ("PersistentVolumeClaim", "tfflows-output"),
    ]:
        assert expected in kinds, expected


def test_k8s_images_pinned():
    for path, doc in _k8s_docs():
        for container in _containers(doc):
            image = container["image"]
            assert "@sha256:" in image or (":" in image and not image.endswith(":latest")), (
                f"{path}: {container['name']} image {image!r} is not pinned to a tag"
            )


def test_k8s_secrets_only_through_secret_key_refs():
    referenced = set()
    for path, doc in _k8s_docs():
        for container in _containers(doc):
            defined = set()
            for var in container.get("env", []):
                name = var["name"]
                if "valueFrom" in var:
                    ref = var["valueFrom"].get("secretKeyRef")
                    if ref:
                        referenced.add(ref["name"])
                        assert ref.get("key"), f"{path}: {name} secretKeyRef without key"
                elif SECRET_NAME.search(name):
                    pytest.fail(f"{path}: {container['name']} sets {name} without secretKeyRef")
                else:
                    value = str(var.get("value", ""))
                    # $(VAR) may only use variables defined earlier in the same list.
                    for used in re.findall(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)", value):
                        assert used in defined, f"{path}: {name} uses $({used}) before it is set"
                    assert not _literal_secrets(f"{name}={value}"), f"{path}: {name}"
                defined.add(name)
    assert {"tfflows-postgres", "tfflows-minio", "tfflows-mlflow",
            "tfflows-pipeline-mlflow"} <= referenced
    readme = README.read_text()
    for secret in referenced:
        assert re.search(rf"kubectl (-n \S+ )?create secret generic {secret}\b", readme), (
            f"README.md must show how to create secret {secret}"
        )


def test_k8s_services_select_their_pods():
    docs = [doc for _, doc in _k8s_docs()]
    pod_labels = [
        doc["spec"]["template"]["metadata"]["labels"] for doc in docs
        if doc["kind"] in {"Deployment", "StatefulSet"}
    ]
    for doc in docs:
        if doc["kind"] == "Service":
            selector = doc["spec"]["selector"]
            assert any(selector.items() <= labels.items() for labels in pod_labels), (
                f"Service {doc['metadata']['name']} selects no pod"
            )
    for doc in docs:
        if doc["kind"] in {"Deployment", "StatefulSet"}:
            assert doc["spec"]["selector"]["matchLabels"].items() <= (
                doc["spec"]["template"]["metadata"]["labels"].items()
            )


def test_k8s_mlflow_and_serving():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _k8s_docs()}
    (mlflow,) = _containers(docs["Deployment", "mlflow"])
    assert "--app-name=basic-auth" in mlflow["args"]
    env = {v["name"]: v for v in mlflow["env"]}
    assert env["MLFLOW_BACKEND_STORE_URI"]["value"].startswith("postgresql+psycopg://$(DB_USER)")
    (serving,) = _containers(docs["Deployment", "tf-serving"])
    assert serving["image"].startswith("tensorflow/serving:")
    assert {"name": "MODEL_NAME", "value": "tfflows"} in serving["env"]
    (mount,) = [m for m in serving["volumeMounts"] if m["name"] == "output"]
    assert (mount["mountPath"], mount["subPath"], mount["readOnly"]) == (
        "/models/tfflows", "serving", True)
    assert 8501 in [p["containerPort"] for p in serving["ports"]]


def test_k8s_cronjob_runs_the_cli():
    cron = next(d for _, d in _k8s_docs() if d["kind"] == "CronJob")
    _check_cron_fields(cron["spec"]["schedule"].split())
    assert cron["spec"]["concurrencyPolicy"] == "Forbid"
    (container,) = _containers(cron)
    argv = container["command"] + container["args"]
    assert argv[:2] == ["tfflows", "run"]
    assert any(a.startswith("--config=") for a in argv)
    assert "tracking.uri=http://mlflow:5000" in argv


def test_kubeflow_recurring_run_with_stub_client(tmp_path):
    module = runpy.run_path(str(K8S / "kubeflow" / "recurring_run.py"))
    calls = []

    class StubClient:
        def get_experiment(self, experiment_name):
            calls.append(("get_experiment", experiment_name))
            raise ValueError("no such experiment")

        def create_experiment(self, name):
            calls.append(("create_experiment", name))
            return types.SimpleNamespace(experiment_id="exp-1")

        def create_recurring_run(self, **kwargs):
            calls.append(("create_recurring_run", kwargs))
            return types.SimpleNamespace(recurring_run_id="rr-1")

    run = module["schedule_recurring_run"](
        StubClient(), package_path="spec.json", experiment_name="tfflows",
        job_name="tfflows-daily", cron="0 30 2 * * *", params={"a": "1"},
    )
    assert run.recurring_run_id == "rr-1"
    kwargs = calls[-1][1]
    assert kwargs["experiment_id"] == "exp-1" and kwargs["max_concurrency"] == 1
    assert kwargs["pipeline_package_path"] == "spec.json" and kwargs["no_catchup"] is True
    with pytest.raises(ValueError, match="6 fields"):
        module["check_kfp_cron"]("30 2 * * *")
    # The keyword arguments exist on the installed kfp.Client.
    kfp = pytest.importorskip("kfp")
    import inspect

    accepted = inspect.signature(kfp.Client.create_recurring_run).parameters
    assert set(kwargs) <= set(accepted)




# ------------------------------------------------------------------------------------------
# Strict schema validation of the rendered manifests
# ------------------------------------------------------------------------------------------


def _kustomize() -> str:
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (it is on the project's machine image)")
    done = subprocess.run(["kubectl", "kustomize", str(K8S)], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_k8s_manifests_validate_strictly(tmp_path):
    rendered = tmp_path / "rendered.yaml"
    rendered.write_text(_kustomize())
    validate = Path(sys.executable).parent / "kubernetes-validate"
    assert validate.exists(), "kubernetes-validate (requirements.lock) is not installed"
    done = subprocess.run([str(validate), "--strict", "--quiet", "-k", "1.32.0", str(rendered)],
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr
    kinds = [d["kind"] for d in yaml.safe_load_all(rendered.read_text()) if d]
    assert kinds.count("NetworkPolicy") >= 5
    # The validator does reject what it should: an unknown field in a pod's securityContext.
    broken = tmp_path / "broken.yaml"
    broken.write_text(rendered.read_text().replace("runAsNonRoot: true",
                                                   "runAsNonRoot: true\n        runAsRoot: false", 1))
    refused = subprocess.run([str(validate), "--strict", "--quiet", "-k", "1.32.0", str(broken)],
                             capture_output=True, text=True, timeout=300)
    assert refused.returncode != 0 and "runAsRoot" in refused.stdout + refused.stderr


# ------------------------------------------------------------------------------------------
# Multi-worker training manifests (infra/k8s/training): the TFJob and the Vertex AI custom job
# ------------------------------------------------------------------------------------------

TRAINING = K8S / "training"

# What the Training Operator's CRD (kubeflow/training-operator, manifests/base/crds/
# kubeflow.org_tfjobs.yaml, kubeflow.org/v1) declares around the pod templates, closed to unknown
# fields as `kubectl apply --validate=strict` is; the replica types, restart and clean-pod policies
# are the operator's API constants. Each template is a core PodTemplateSpec, validated strictly
# as a Pod by kubernetes-validate.
_TFJOB_SCHEMA = {
    "type": "object", "required": ["apiVersion", "kind", "metadata", "spec"], "additionalProperties": False,
    "properties": {
        "apiVersion": {"const": "kubeflow.org/v1"}, "kind": {"const": "TFJob"}, "metadata": {"type": "object"},
        "spec": {"type": "object", "required": ["tfReplicaSpecs"], "additionalProperties": False, "properties": {
            "enableDynamicWorker": {"type": "boolean"}, "successPolicy": {"type": "string"},
            "runPolicy": {"type": "object", "additionalProperties": False, "properties": {
                "activeDeadlineSeconds": {"type": "integer"}, "backoffLimit": {"type": "integer"},
                "cleanPodPolicy": {"enum": ["All", "Running", "None"]}, "schedulingPolicy": {"type": "object"},
                "suspend": {"type": "boolean"}, "ttlSecondsAfterFinished": {"type": "integer"}}},
            "tfReplicaSpecs": {
                "type": "object", "minProperties": 1,
                "propertyNames": {"enum": ["Chief", "Master", "PS", "Worker", "Evaluator"]},
                "additionalProperties": {
                    "type": "object", "required": ["template"], "additionalProperties": False, "properties": {
                        "replicas": {"type": "integer", "minimum": 1},
                        "restartPolicy": {"enum": ["Always", "OnFailure", "Never", "ExitCode"]},
                        "template": {"type": "object", "required": ["spec"], "additionalProperties": False,
                                     "properties": {"metadata": {"type": "object"}, "spec": {"type": "object"}}}}}}}}}}


def _training_docs() -> dict:
    """The rendered training kustomization, by kind."""
    if shutil.which("kubectl") is None:
        pytest.skip("kubectl is not installed (it is on the project's machine image)")
    done = subprocess.run(["kubectl", "kustomize", str(TRAINING)], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    return {d["kind"]: d for d in yaml.safe_load_all(done.stdout) if d}


def _tfjob_problems(tfjob: dict) -> list:
    """Every way `tfjob` breaks the CRD's fields or, in a pod template, the Kubernetes 1.32 schemas."""
    import jsonschema
    import kubernetes_validate

    problems = [e.message for e in jsonschema.Draft7Validator(_TFJOB_SCHEMA).iter_errors(tfjob)]
    for kind, replica in tfjob["spec"]["tfReplicaSpecs"].items():
        template = replica["template"]
        pod = {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": f"tfflows-train-{kind.lower()}-0",
                                                               **template.get("metadata", {})},
               "spec": template["spec"]}
        try:
            kubernetes_validate.validate(pod, "1.32", strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{kind}: {error}")
    return problems


def test_tfjob_validates_against_its_crd_and_the_pod_schema():
    docs = _training_docs()
    assert set(docs) == {"TFJob", "NetworkPolicy"}
    tfjob = docs["TFJob"]
    assert tfjob["metadata"]["namespace"] == "tfflows" and not _tfjob_problems(tfjob), _tfjob_problems(tfjob)
    (worker,) = tfjob["spec"]["tfReplicaSpecs"].values()
    (container,) = worker["template"]["spec"]["containers"]
    assert container["name"] == "tensorflow"  # the container the operator gives TF_CONFIG and its port
    assert {"name": "tfjob-port", "containerPort": 2222} in container["ports"]
    import kubernetes_validate

    kubernetes_validate.validate(docs["NetworkPolicy"], "1.32", strict=True)
    # The checks bite: a misspelt replica field and an unknown field in the pod template.
    broken = json.loads(json.dumps(tfjob))
    broken["spec"]["tfReplicaSpecs"]["Worker"]["replica"] = 2
    broken["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"][0]["imagePolicy"] = "Always"
    problems = _tfjob_problems(broken)
    assert len(problems) == 2 and "'replica' was unexpected" in problems[0] and "imagePolicy" in problems[1], problems


def test_vertex_custom_job_is_a_custom_job_spec_with_a_chief_and_a_worker():
    """`gcloud ai custom-jobs create --config` takes a CustomJobSpec: parsed with aiplatform v1's own
    message, which refuses unknown fields. Pool 0 is the chief (one replica), pool 1 the workers,
    running the same command as the TFJob."""
    from google.cloud.aiplatform_v1.types import CustomJobSpec
    from google.protobuf import json_format

    text = (TRAINING / "vertex-custom-job.json").read_text()
    spec = json_format.Parse(text, CustomJobSpec.pb(CustomJobSpec()))
    pools = spec.worker_pool_specs
    assert len(pools) == 2 and pools[0].replica_count == 1 and pools[1].replica_count >= 1
    assert pools[0].container_spec == pools[1].container_spec
    tfjob = yaml.safe_load((TRAINING / "tfjob.yaml").read_text())
    (container,) = tfjob["spec"]["tfReplicaSpecs"]["Worker"]["template"]["spec"]["containers"]
    assert list(pools[0].container_spec.command) == container["command"]
    assert [a.split("=")[0] for a in pools[0].container_spec.args] == [a.split("=")[0] for a in container["args"]]
    with pytest.raises(json_format.ParseError, match="replicasCount"):
        json_format.Parse(text.replace('"replicaCount"', '"replicasCount"', 1), CustomJobSpec.pb(CustomJobSpec()))


# ------------------------------------------------------------------------------------------
# Pod security
# ------------------------------------------------------------------------------------------


def test_k8s_pods_run_as_non_root_with_read_only_root():
    checked = 0
    for path, doc in _k8s_docs():
        for spec in _pod_specs(doc):
            pod = spec.get("securityContext", {})
            name = f"{path.name}: {doc['metadata']['name']}"
            assert pod.get("runAsNonRoot") is True and pod.get("runAsUser", 0) > 0, name
            assert pod.get("seccompProfile") == {"type": "RuntimeDefault"}, name
            empty_dirs = {v["name"] for v in spec.get("volumes", []) if "emptyDir" in v}
            for container in spec["containers"] + spec.get("initContainers", []):
                security = container.get("securityContext", {})
                assert security.get("readOnlyRootFilesystem") is True, name
                assert security.get("allowPrivilegeEscalation") is False, name
                assert security.get("capabilities") == {"drop": ["ALL"]}, name
                tmp = [m for m in container.get("volumeMounts", []) if m["mountPath"] == "/tmp"]
                assert tmp and tmp[0]["name"] in empty_dirs, f"{name}: /tmp is not an emptyDir"
                checked += 1
    assert checked == 7  # six workloads of infra/k8s and the TFJob of training/


# ------------------------------------------------------------------------------------------
# NetworkPolicies, evaluated on every pair of the namespace's pods
# ------------------------------------------------------------------------------------------

_NAMESPACE = {"kubernetes.io/metadata.name": "tfflows"}
_OTHER_NAMESPACE = {"kubernetes.io/metadata.name": "apps"}
_KUBE_SYSTEM = {"kubernetes.io/metadata.name": "kube-system"}


def _selects(selector: dict | None, labels: dict) -> bool:
    return selector is not None and selector.get("matchLabels", {}).items() <= labels.items()


def _peer_matches(peer: dict, pod: dict, namespace: dict) -> bool:
    if "namespaceSelector" in peer:
        if not _selects(peer["namespaceSelector"], namespace):
            return False
        return "podSelector" not in peer or _selects(peer["podSelector"], pod)
    return namespace == _NAMESPACE and _selects(peer["podSelector"], pod)


def _allowed(policies: list[dict], direction: str, pod: dict, peer: dict, peer_ns: dict,
             port: int, protocol: str = "TCP") -> bool:
    """NetworkPolicy semantics: a pod selected for a direction allows only what a rule lists."""
    key, peers_key = ("ingress", "from") if direction == "Ingress" else ("egress", "to")
    selecting = [p for p in policies
                 if _selects(p["spec"]["podSelector"], pod)
                 and direction in p["spec"]["policyTypes"]]
    if not selecting:
        return True
    for policy in selecting:
        for rule in policy["spec"].get(key, []):
            ports = rule.get("ports")
            if ports and not any(p["port"] == port and p.get("protocol", "TCP") == protocol
                                 for p in ports):
                continue
            if any(_peer_matches(peer_spec, peer, peer_ns) for peer_spec in rule[peers_key]):
                return True
    return False


def _connects(policies, src: dict, dst: dict, port: int, src_ns=_NAMESPACE, dst_ns=_NAMESPACE,
              protocol="TCP") -> bool:
    egress = src_ns != _NAMESPACE or _allowed(policies, "Egress", src, dst, dst_ns, port, protocol)
    ingress = dst_ns != _NAMESPACE or _allowed(policies, "Ingress", dst, src, src_ns, port,
                                               protocol)
    return egress and ingress


def test_k8s_network_policies_allow_only_what_each_service_needs():
    docs = [doc for _, doc in _k8s_docs()]
    policies = [d for d in docs if d["kind"] == "NetworkPolicy"]
    deny = [p for p in policies if p["spec"]["podSelector"] == {}
            and set(p["spec"]["policyTypes"]) == {"Ingress", "Egress"}
            and not p["spec"].get("ingress") and not p["spec"].get("egress")]
    assert deny, "no default-deny NetworkPolicy"
    pods = {}
    for doc in docs:
        for template in _pod_templates(doc):
            pods[doc["metadata"]["name"]] = template["metadata"]["labels"]
    assert set(pods) == {"postgres", "minio", "minio-create-bucket", "mlflow", "tf-serving",
                         "tfflows-pipeline", "tfflows-train"}
    needed = {("mlflow", "postgres", 5432), ("mlflow", "minio", 9000),
              ("minio-create-bucket", "minio", 9000), ("tfflows-pipeline", "mlflow", 5000),
              ("tfflows-train", "tfflows-train", 2222)}  # the TFJob's workers meet (training/)
    ports = {"postgres": [5432], "minio": [9000, 9001], "mlflow": [5000],
             "tf-serving": [8500, 8501], "minio-create-bucket": [], "tfflows-pipeline": [],
             "tfflows-train": [2222]}
    for src in pods:
        for dst in pods:
            for port in ports[dst]:
                want = (src, dst, port) in needed
                got = _connects(policies, pods[src], pods[dst], port)
                assert got == want, f"{src} -> {dst}:{port} allowed={got}, expected {want}"
    # DNS for every pod; nothing else leaves the namespace.
    dns = {"k8s-app": "kube-dns"}
    for name, labels in pods.items():
        assert _connects(policies, labels, dns, 53, dst_ns=_KUBE_SYSTEM, protocol="UDP"), name
        assert not _connects(policies, labels, {"app": "web"}, 443, dst_ns=_OTHER_NAMESPACE), name
    # Clients elsewhere reach MLflow and TF Serving only when labelled as such.
    client = {"app": "scorer"}
    for dst, port, label in [("tf-serving", 8501, "tfflows.io/serving-client"),
                             ("mlflow", 5000, "tfflows.io/mlflow-client")]:
        assert not _connects(policies, client, pods[dst], port, src_ns=_OTHER_NAMESPACE)
        assert _connects(policies, client | {label: "true"}, pods[dst], port,
                         src_ns=_OTHER_NAMESPACE)
        assert not _connects(policies, client | {label: "true"}, pods["postgres"], 5432,
                             src_ns=_OTHER_NAMESPACE)


# ------------------------------------------------------------------------------------------
# MLflow's own MinIO user
# ------------------------------------------------------------------------------------------


def test_mlflow_uses_a_dedicated_minio_user():
    docs = {(d["kind"], d["metadata"]["name"]): d for _, d in _k8s_docs()}
    root_readers = set()
    for (kind, name), doc in docs.items():
        for container in _containers(doc):
            for var in container.get("env", []):
                ref = var.get("valueFrom", {}).get("secretKeyRef", {})
                if ref.get("name") == "tfflows-minio":
                    root_readers.add(name)
    assert root_readers == {"minio", "minio-create-bucket"}
    (mlflow,) = _containers(docs["Deployment", "mlflow"])
    env = {v["name"]: v.get("valueFrom", {}).get("secretKeyRef") for v in mlflow["env"]}
    assert env["AWS_ACCESS_KEY_ID"] == {"name": "tfflows-minio-mlflow", "key": "access-key"}
    assert env["AWS_SECRET_ACCESS_KEY"] == {"name": "tfflows-minio-mlflow", "key": "secret-key"}
    (job,) = _containers(docs["Job", "minio-create-bucket"])
    assert job["command"] == ["/bin/sh", "/scripts/minio-setup.sh"]
    job_env = {v["name"]: v for v in job["env"]}
    assert job_env["MLFLOW_S3_ACCESS_KEY"]["valueFrom"]["secretKeyRef"] == env["AWS_ACCESS_KEY_ID"]
    bucket = job_env["MLFLOW_BUCKET"]["value"]
    assert "--artifacts-destination=s3://" + bucket in mlflow["args"]
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    assert {"name": "minio-setup", "files": ["minio-setup.sh"]} in kustomization[
        "configMapGenerator"]


def _fake_mc(tmp_path: Path, attached: bool) -> Path:
    """An `mc` that records its arguments (and the policy file's content) in mc.log."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir(exist_ok=True)
    mc = bin_dir / "mc"
    mc.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        printf '%s\\n' "$*" >> {tmp_path}/mc.log
        case "$*" in
          "admin policy create "*) cat "$6" > {tmp_path}/policy.json ;;
          "admin user info "*) {"echo 'PolicyName: mlflow-artifacts'" if attached else "echo 'PolicyName:'"} ;;
        esac
        """))
    mc.chmod(0o755)
    return bin_dir


@pytest.mark.parametrize("attached", [False, True])
def test_minio_setup_script_creates_a_user_limited_to_the_bucket(tmp_path, attached):
    bin_dir = _fake_mc(tmp_path, attached)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "MINIO_ROOT_USER": "root", "MINIO_ROOT_PASSWORD":
           "rootpw12", "MLFLOW_S3_ACCESS_KEY": "mlflow-user", "MLFLOW_S3_SECRET_KEY": "s3cr3t-key",
           "MLFLOW_BUCKET": "art", "TMPDIR": str(tmp_path)}
    done = subprocess.run(["sh", str(K8S / "minio-setup.sh")], env=env, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    calls = (tmp_path / "mc.log").read_text().splitlines()
    policy_file = calls[3].split()[-1]
    expected = [
        "alias set tfflows http://minio:9000 root rootpw12", "mb --ignore-existing tfflows/art",
        "anonymous set none tfflows/art", f"admin policy create tfflows mlflow-artifacts {policy_file}",
        "admin user add tfflows mlflow-user s3cr3t-key", "admin user info tfflows mlflow-user"]
    if not attached:  # attach only once: mc refuses to attach an attached policy
        expected.append("admin policy attach tfflows mlflow-artifacts --user mlflow-user")
    assert calls == expected
    policy = json.loads((tmp_path / "policy.json").read_text())
    assert {r for s in policy["Statement"] for r in s["Resource"]} == {
        "arn:aws:s3:::art", "arn:aws:s3:::art/*"}
    assert all(a.startswith("s3:") and "*" not in a
               for s in policy["Statement"] for a in s["Action"])
    assert not Path(policy_file).exists(), "the policy file is removed"
    missing = {k: v for k, v in env.items() if k != "MLFLOW_S3_SECRET_KEY"}
    refused = subprocess.run(["sh", str(K8S / "minio-setup.sh")], env=missing,
                             capture_output=True, text=True, timeout=60)
    assert refused.returncode != 0 and "MLFLOW_S3_SECRET_KEY must be set" in refused.stderr


# ------------------------------------------------------------------------------------------
# `tfflows compile`: the image the manifests deploy, and a spec kfp itself loads
# ------------------------------------------------------------------------------------------


def _deployed_tfflows_tag() -> str:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    (entry,) = [i for i in kustomization["images"] if i["name"] == "tfflows"]
    return entry["newTag"]


def test_compile_default_image_is_the_deployed_tag():
    from importlib.metadata import version

    tag = _deployed_tfflows_tag()
    assert tag == version("tfflows"), "kustomization.yaml's tfflows tag must be the package version"
    dockerfile = (REPO / "infra" / "docker" / "tfflows" / "Dockerfile").read_text()
    assert f"-t tfflows:{tag} ." in dockerfile
    cron = next(d for _, d in _k8s_docs() if d["kind"] == "CronJob")
    assert [c["image"] for c in _containers(cron)] == [f"tfflows:{tag}"]


# What `tfflows compile` needs to name nothing of the compiling machine (`runner.check_cluster`).
_CLUSTER_FLAGS = ["--pipeline-root", "s3://tfflows/pipeline_root", "--push-base", "s3://tfflows/push",
                  "--tracking-uri", "http://mlflow:5000"]


@pytest.mark.parametrize("image", ["tfflows:latest", "tfflows", "registry.local:5000/tfflows"])
def test_compile_refuses_a_moving_image(image, capsys, tmp_path):
    from tfflows.pipeline.cli import main

    status = main(["compile", "--target", "kubeflow", "--image", image, *_CLUSTER_FLAGS,
                   "--out", str(tmp_path / "spec.json")])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and f"cluster.image {image}: needs a fixed tag" in err[0], err
    assert not (tmp_path / "spec.json").exists()


@pytest.mark.parametrize("flags, named", [
    ({"--pipeline-root": None}, "cluster.pipeline_root: unset, and the cluster's steps need a bucket"),
    ({"--pipeline-root": "/srv/pipeline_root"}, "cluster.pipeline_root /srv/pipeline_root: not a bucket"),
    ({"--tracking-uri": None}, "tracking.uri sqlite:///{out}/mlflow.db: a path of this machine"),
    ({"--tracking-uri": "sqlite:////srv/mlflow.db"}, "tracking.uri sqlite:////srv/mlflow.db: a path"),
    ({"--tracking-uri": "mlruns"}, "tracking.uri mlruns: a path"),
    ({"--push-base": None}, "push.push_base unset (the output, {out}): a path of this machine"),
    ({"--push-base": "/srv/push"}, "push.push_base /srv/push: a path"),
    ({"--set": "ingest.path=/srv/rows.csv"}, "ingest.path /srv/rows.csv: a path"),
])
def test_compile_refuses_a_path_of_this_machine(flags, named, capsys, tmp_path):
    """A cluster's pods would track, push or write artifacts into their own scratch disk: one line,
    exit 2, nothing written (no spec, no log folder)."""
    from tfflows.pipeline.cli import main

    values = dict(zip(_CLUSTER_FLAGS[::2], _CLUSTER_FLAGS[1::2])) | flags
    argv = [part for flag, value in values.items() if value is not None for part in (flag, value)]
    if "--set" in flags:
        argv += ["--set", "ingest.dataset=csv"]
    out = tmp_path / "out"
    status = main(["compile", "--target", "vertex", "--set", f"output={out}", *argv])
    err = capsys.readouterr().err.strip().splitlines()
    assert status == 2 and len(err) == 1 and named.format(out=out) in err[0], err
    assert "fix: " in err[0] and not out.exists()


# Compiles as the CLI does (both targets, the values infra/k8s deploys; once with tracking off), then
# with `check_cluster` bypassed and no cluster values: the old path, whose spec names this machine's folders.
_COMPILE = """
import sys
from tfflows.pipeline import cli, runner
from tfflows.pipeline.config import load_run_config
config, out, flags = sys.argv[1], sys.argv[2], sys.argv[3:]
for target in ("kubeflow", "vertex"):
    assert cli.main(["compile", "--target", target, "--config", config, "--out", f"{out}/{target}.json", *flags]) == 0
untracked = [*flags[:flags.index("--tracking-uri")], *flags[flags.index("--tracking-uri") + 2:]]
assert cli.main(["compile", "--target", "vertex", "--config", config, "--out", f"{out}/untracked.json", *untracked,
                 "--set", "tracking.enabled=false"]) == 0
runner.check_cluster = lambda config: None
unchecked = load_run_config(config, {"cluster": {"pipeline_root": "gs://CHANGE-ME/tfflows"}})
runner.compile_for_cluster(unchecked, "vertex", f"{out}/unchecked.json")
"""


def _local_paths(text: str, *folders: Path) -> list:
    """Every place `text` names a folder of this machine (the output, the repository, the working
    folder, home, the temporary folder) or a local MLflow store."""
    import tempfile

    roots = {str(f) for f in folders} | {str(REPO), os.getcwd(), os.path.expanduser("~"), tempfile.gettempdir()}
    return [m.group() for m in re.finditer("|".join(map(re.escape, sorted(roots, key=len, reverse=True)))
                                           + r"|sqlite:|file:/", text)]


@pytest.mark.slow
@pytest.mark.timeout(900)
def test_compiled_specs_name_no_path_of_this_machine_and_load_with_kfp(tmp_path):
    from google.protobuf import json_format
    from kfp import components

    config = tmp_path / "tiny.yaml"
    config.write_text(f"ingest: {{dataset: moons, num_samples: 300}}\ntrain: {{epochs: 1}}\n"
                      f"output: {tmp_path / 'out'}\n")
    cron = next(d for _, d in _k8s_docs() if d["kind"] == "CronJob")
    (uri,) = [a.split("=", 1)[1] for a in _containers(cron)[0]["args"] if a.startswith("tracking.uri=")]
    flags = [*_CLUSTER_FLAGS[:-1], uri, "--cpu", "2", "--memory-gb", "8"]
    done = subprocess.run([sys.executable, "-c", _COMPILE, str(config), str(tmp_path), *flags],
                          capture_output=True, text=True, timeout=800, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    for target in ("kubeflow", "vertex"):
        text = (tmp_path / f"{target}.json").read_text()
        assert not _local_paths(text, tmp_path), f"{target}: {_local_paths(text, tmp_path)}"
        job = json.loads(text)
        assert job["runtimeConfig"]["gcsOutputDirectory"] == "s3://tfflows/pipeline_root"
        assert "s3://tfflows/push" in text and uri in text
        # kfp's own loader parses the pipeline spec (a YamlComponent backed by its PipelineSpec).
        component = components.load_component_from_text(json.dumps(job["pipelineSpec"]))
        spec = json_format.MessageToDict(component.pipeline_spec)
        containers = [e["container"] for e in spec["deploymentSpec"]["executors"].values()]
        assert {c["image"] for c in containers} == {f"tfflows:{_deployed_tfflows_tag()}"}
        assert all(c["resources"] == {"cpuLimit": 2.0, "memoryLimit": 8.0} for c in containers)
        assert set(spec["root"]["dag"]["tasks"]) == {"IngestExamplesComponent", "TransformDataComponent", "DriftCheck",
                                                     "TrainFlowComponent", "EvaluateFlow", "PushFlow"}
    untracked = (tmp_path / "untracked.json").read_text()  # tracking off: no store named at all
    assert not _local_paths(untracked, tmp_path) and uri not in untracked, _local_paths(untracked, tmp_path)
    # The check bites: the unchecked spec tracks into and pushes to the compiling machine's output.
    found = _local_paths((tmp_path / "unchecked.json").read_text(), tmp_path)
    assert f"{tmp_path}" in found and "sqlite:" in found, found

"""The artifact layer the components share: serving layout, version claims, blessing files and
atomic output folders, on local (POSIX) paths and on object stores (``s3://``, ``gs://``).

Serving layout (what TF Serving watches)::

    <push_base>/serving/<integer version>/saved_model.pb, variables/, assets.extra/...

Claiming a version without overwriting one, and without readers seeing half a model:

- POSIX: the SavedModel is written to ``serving/.tmp-<uuid>`` (not an integer: TF Serving
  ignores it) and ``os.rename``-d to ``max version + 1``. Renaming onto an existing non-empty
  folder fails, so the rename is the claim; a push that loses a race retries the next number.
- Object stores have no atomic rename. A version is claimed by creating the marker object
  ``serving/.tfflows-versions/<v>.json`` only if it is absent (S3 ``If-None-Match: *``, GCS
  ``ifGenerationMatch=0``): the store refuses the second creation, so two pushes never share
  ``v``. The owner then uploads the files under ``serving/<v>/`` with ``saved_model.pb`` last
  and rewrites its marker to ``{"state": "complete"}``. `list_versions` and the readers below
  list only complete versions; an abandoned claim leaves a gap in the numbers, never a model
  that is read half-written. (TF Serving lists integer prefixes itself: it may see ``<v>/``
  while variables are uploading, but a SavedModel without its ``saved_model.pb`` fails to load
  and is retried by the server, and ``saved_model.pb`` lands only after every other file.)

Object-store clients: boto3 for ``s3://`` (endpoint and credentials from the standard AWS
variables, e.g. ``AWS_ENDPOINT_URL`` for MinIO) and google-cloud-storage for ``gs://``
(application default credentials; ``STORAGE_EMULATOR_HOST`` for an emulator). Both are
imported only when such a URI is used; a missing endpoint or missing credentials is one
`ConfigError` line naming the variable to set.
"""

from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import socket
import tempfile
import time
import uuid
from typing import Any, Optional

from tfflows.components.config import ConfigError

__all__ = ["BLESSED_FILE", "DRIFT_FILE", "EVALUATION_FILE", "METADATA_FILE", "NOT_BLESSED_FILE", "PUSH_INFO",
           "SERVING_CONFIG_FILE", "SERVING_DIR", "bucket_exists", "categorical_names", "champion_push_info",
           "context_categorical_names", "context_names", "feature_names", "input_columns", "input_vocabularies",
           "is_object_store", "join", "list_versions", "local_copy", "local_export_dir", "local_model_dir",
           "numeric_context_names", "pinned_champion", "publish_dir", "publish_version", "read_blessing", "read_drift",
           "read_evaluation", "read_json", "remove_dead_exports", "resolve_version", "staging_dir", "upload_file",
           "version_of_model", "withdrawn_on_failure", "write_blessing", "write_drift", "write_evaluation",
           "write_json", "write_serving_config"]

SERVING_DIR = "serving"
CLAIMS_DIR = ".tfflows-versions"  # not an integer: TF Serving ignores it
METADATA_FILE = "assets.extra/tfflows.json"  # dataset metadata and preprocessing, beside the SavedModel
PUSH_INFO = "assets.extra/tfflows_push.json"  # which trained model a version was pushed from
SAVED_MODEL_FILE = "saved_model.pb"
SERVING_CONFIG_FILE = "models.config"  # TF Serving's model config, beside serving/
EVALUATION_FILE = "evaluation.json"
DRIFT_FILE = "drift.json"
BLESSED_FILE = "BLESSED"
NOT_BLESSED_FILE = "NOT_BLESSED"
_SCHEMES = ("s3://", "gs://")
_STABLE_LABEL = re.compile(r'version_labels \{ key: "stable" value: (\d+) \}')


def is_object_store(uri: str) -> bool:
    return str(uri).startswith(_SCHEMES)


def join(uri: str, *parts: str) -> str:
    """``os.path.join`` for local paths, ``/``-joined keys for object-store URIs."""
    if is_object_store(uri):
        return "/".join([uri.rstrip("/"), *(p.strip("/") for p in parts)])
    return os.path.join(uri, *parts)


class _Store:
    """The few object-store operations the layer needs, on one bucket."""

    def create(self, key: str, data: bytes) -> bool:
        """Writes ``key`` only if it does not exist; False when it already does."""
        raise NotImplementedError

    def put(self, key: str, data: bytes) -> None:
        raise NotImplementedError

    def upload(self, path: str, key: str) -> None:
        raise NotImplementedError

    def get(self, key: str) -> Optional[bytes]:
        """The object's bytes, or None when it does not exist."""
        raise NotImplementedError

    def exists(self, key: str) -> bool:
        raise NotImplementedError

    def children(self, prefix: str) -> list:
        """Names directly under ``prefix/`` (objects and sub-prefixes, without the prefix)."""
        raise NotImplementedError

    def keys(self, prefix: str) -> list:
        """Every object key under ``prefix/``."""
        raise NotImplementedError

    def download(self, key: str, path: str) -> None:
        raise NotImplementedError

    def delete(self, key: str) -> None:
        raise NotImplementedError

    def bucket_exists(self) -> bool:
        raise NotImplementedError


class _S3(_Store):
    def __init__(self, bucket: str):
        # boto3 is no dependency of tfflows (only s3:// URIs need it) and this module is on the CLI's
        # configuration path: imported at the first s3:// store.
        import boto3
        from botocore.exceptions import ClientError

        self.bucket, self.client, self.ClientError = bucket, boto3.client("s3"), ClientError

    def create(self, key, data):
        try:
            self.client.put_object(Bucket=self.bucket, Key=key, Body=data, IfNoneMatch="*")
            return True
        except self.ClientError as error:
            # 412: the key exists; 409: a concurrent conditional write to it is in flight.
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (409, 412):
                return False
            raise

    def put(self, key, data):
        self.client.put_object(Bucket=self.bucket, Key=key, Body=data)

    def upload(self, path, key):
        self.client.upload_file(path, self.bucket, key)

    def get(self, key):
        try:
            return self.client.get_object(Bucket=self.bucket, Key=key)["Body"].read()
        except self.ClientError as error:
            if error.response.get("Error", {}).get("Code") in ("NoSuchKey", "404"):
                return None
            raise

    def exists(self, key):
        try:
            self.client.head_object(Bucket=self.bucket, Key=key)
            return True
        except self.ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") == 404:
                return False
            raise

    def _list(self, prefix, delimiter):
        pages = self.client.get_paginator("list_objects_v2").paginate(
            Bucket=self.bucket, Prefix=prefix.rstrip("/") + "/", Delimiter=delimiter)
        for page in pages:
            yield from (o["Key"] for o in page.get("Contents", []))
            yield from (p["Prefix"] for p in page.get("CommonPrefixes", []))

    def children(self, prefix):
        start = len(prefix.rstrip("/")) + 1
        return [k[start:].rstrip("/") for k in self._list(prefix, "/")]

    def keys(self, prefix):
        return list(self._list(prefix, ""))

    def download(self, key, path):
        self.client.download_file(self.bucket, key, path)

    def delete(self, key):
        self.client.delete_object(Bucket=self.bucket, Key=key)

    def bucket_exists(self):
        try:
            self.client.head_bucket(Bucket=self.bucket)
            return True
        except self.ClientError as error:
            if error.response.get("ResponseMetadata", {}).get("HTTPStatusCode") in (403, 404):
                return False
            raise


class _GCS(_Store):
    def __init__(self, bucket: str):
        # google-cloud-storage is no dependency of tfflows (only gs:// URIs need it) and this module is
        # on the CLI's configuration path: imported at the first gs:// store.
        from google.api_core import exceptions
        from google.cloud import storage

        self.bucket, self.errors = storage.Client().bucket(bucket), exceptions

    def create(self, key, data):
        try:
            self.bucket.blob(key).upload_from_string(data, if_generation_match=0)
            return True
        except self.errors.PreconditionFailed:
            return False

    def put(self, key, data):
        self.bucket.blob(key).upload_from_string(data)

    def upload(self, path, key):
        self.bucket.blob(key).upload_from_filename(path)

    def get(self, key):
        try:
            return self.bucket.blob(key).download_as_bytes()
        except self.errors.NotFound:
            return None

    def exists(self, key):
        return self.bucket.blob(key).exists()

    def children(self, prefix):
        prefix = prefix.rstrip("/") + "/"
        blobs = self.bucket.client.list_blobs(self.bucket, prefix=prefix, delimiter="/")
        names = [b.name[len(prefix):] for b in blobs]  # consumes the pages, which fills .prefixes
        return names + [p[len(prefix):].rstrip("/") for p in blobs.prefixes]

    def keys(self, prefix):
        return [b.name for b in self.bucket.client.list_blobs(self.bucket, prefix=prefix.rstrip("/") + "/")]

    def download(self, key, path):
        self.bucket.blob(key).download_to_filename(path)

    def delete(self, key):
        self.bucket.blob(key).delete()

    def bucket_exists(self):
        try:
            return self.bucket.exists()
        except self.errors.Forbidden:
            return False


# (scheme, error class name) -> why and what to set, for a store with no endpoint or credentials.
_UNREACHABLE = {
    ("s3", "NoCredentialsError"): "no S3 credentials; fix: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY "
                                  "(or AWS_PROFILE)",
    ("s3", "PartialCredentialsError"): "incomplete S3 credentials; fix: set both AWS_ACCESS_KEY_ID and "
                                       "AWS_SECRET_ACCESS_KEY",
    ("s3", "EndpointConnectionError"): "cannot reach S3 at {endpoint_url}; fix: set AWS_ENDPOINT_URL to your "
                                       "S3-compatible server (e.g. http://minio:9000), or check the network",
    ("gs", "DefaultCredentialsError"): "no Google Cloud credentials; fix: set GOOGLE_APPLICATION_CREDENTIALS to a "
                                       "service-account key file (or STORAGE_EMULATOR_HOST for an emulator)",
}


@contextlib.contextmanager
def _reported(uri: str):
    """Turns a store's missing endpoint or credentials (`_UNREACHABLE`) into one `ConfigError` line
    naming ``uri`` and the variable to set; boto3 and google-cloud-storage would surface them as
    internal errors of whatever command touched the bucket."""
    try:
        yield
    except Exception as error:
        why = _UNREACHABLE.get((uri.split("://", 1)[0], type(error).__name__))
        if why is None:
            raise
        raise ConfigError(f"{uri}: {why.format_map(getattr(error, 'kwargs', None) or {})}") from error


class _Reporting:
    """A `_Store` whose calls (and construction) go through `_reported`."""

    def __init__(self, uri: str, make):
        self._uri = uri
        with _reported(uri):
            self._store = make()

    def __getattr__(self, name):
        method = getattr(self._store, name)

        def call(*args, **kwargs):
            with _reported(self._uri):
                return method(*args, **kwargs)
        return call


def _store(uri: str):
    """(store, key) of an object-store URI."""
    scheme, rest = uri.split("://", 1)
    bucket, _, key = rest.partition("/")
    return _Reporting(uri, lambda: (_S3 if scheme == "s3" else _GCS)(bucket)), key.rstrip("/")


def bucket_exists(uri: str) -> bool:
    """Whether the bucket of the object-store ``uri`` exists and can be reached (a missing endpoint
    or missing credentials: one `ConfigError` line naming the variable to set)."""
    store, _ = _store(uri)
    return store.bucket_exists()


def _exists(uri: str) -> bool:
    if is_object_store(uri):
        store, key = _store(uri)
        return store.exists(key)
    return os.path.exists(uri)


def _read(uri: str) -> Optional[bytes]:
    if is_object_store(uri):
        store, key = _store(uri)
        return store.get(key)
    if not os.path.isfile(uri):
        return None
    with open(uri, "rb") as f:
        return f.read()


def read_json(uri: str) -> Optional[dict]:
    """The JSON object in the file (local or object store), or None when it does not exist."""
    data = _read(uri)
    return None if data is None else json.loads(data)


def write_json(uri: str, value) -> None:
    """Writes ``value`` as indented JSON to the file ``uri`` (local or object store)."""
    _write(uri, json.dumps(value, indent=2, default=str).encode())


def upload_file(path: str, uri: str) -> None:
    """Copies the local file ``path`` to ``uri`` (local or object store)."""
    if is_object_store(uri):
        store, key = _store(uri)
        store.upload(path, key)
    else:
        os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
        shutil.copyfile(path, uri)


def _write(uri: str, data: bytes) -> None:
    if is_object_store(uri):
        store, key = _store(uri)
        store.put(key, data)
    else:
        os.makedirs(os.path.dirname(uri) or ".", exist_ok=True)
        with open(uri, "wb") as f:
            f.write(data)


def _remove(uri: str) -> None:
    if is_object_store(uri):
        store, key = _store(uri)
        if store.exists(key):
            store.delete(key)
    elif os.path.exists(uri):
        os.remove(uri)


# --- serving layout -------------------------------------------------------------------------


def _claims(serving_dir: str) -> dict:
    """Object store: {version: marker state} of every claimed version."""
    store, key = _store(serving_dir)
    out = {}
    for name in store.children(f"{key}/{CLAIMS_DIR}"):
        stem = name[:-len(".json")] if name.endswith(".json") else ""
        if stem.isdigit():
            marker = store.get(f"{key}/{CLAIMS_DIR}/{name}")
            out[int(stem)] = json.loads(marker).get("state") if marker else None
    return out


def list_versions(serving_dir: str) -> list:
    """The complete integer versions under ``serving_dir``, ascending.

    POSIX: integer folders (published by rename, so complete); object store: versions whose
    marker says complete. In-flight pushes and abandoned claims are never listed.
    """
    if is_object_store(serving_dir):
        return sorted(v for v, state in _claims(serving_dir).items() if state == "complete")
    if not os.path.isdir(serving_dir):
        return []
    return sorted(int(n) for n in os.listdir(serving_dir)
                  if n.isdigit() and os.path.isdir(os.path.join(serving_dir, n)))


def _next_version(serving_dir: str) -> int:
    """One more than any version taken (claimed or present), complete or not."""
    if is_object_store(serving_dir):
        store, key = _store(serving_dir)
        taken = set(_claims(serving_dir)) | {int(n) for n in store.children(key) if n.isdigit()}
    else:
        taken = set(list_versions(serving_dir))
    return max(taken, default=0) + 1


def _upload_tree(local_dir: str, store: _Store, prefix: str) -> None:
    """Uploads every file of ``local_dir`` under ``prefix/``, ``saved_model.pb`` last."""
    files = sorted(os.path.relpath(os.path.join(root, name), local_dir)
                   for root, _, names in os.walk(local_dir) for name in names)
    for rel in sorted(files, key=lambda r: r == SAVED_MODEL_FILE):
        store.upload(os.path.join(local_dir, rel), f"{prefix}/{rel.replace(os.sep, '/')}")


def publish_version(tmp_dir: str, serving_dir: str, max_attempts: int = 100) -> int:
    """Publishes the SavedModel folder ``tmp_dir`` as the next free version of ``serving_dir``.

    POSIX: ``tmp_dir`` must be inside ``serving_dir`` and is renamed (then gone). Object store:
    ``tmp_dir`` is a local folder, uploaded after the version is claimed (left in place).
    Returns the version; raises RuntimeError after ``max_attempts`` claims lost to other pushes.
    """
    for _ in range(max_attempts):
        version = _next_version(serving_dir)
        if is_object_store(serving_dir):
            store, key = _store(serving_dir)
            marker = f"{key}/{CLAIMS_DIR}/{version}.json"
            owner = uuid.uuid4().hex
            if not store.create(marker, json.dumps({"state": "claimed", "owner": owner}).encode()):
                continue
            _upload_tree(tmp_dir, store, f"{key}/{version}")
            store.put(marker, json.dumps({"state": "complete", "owner": owner}).encode())
            return version
        try:
            os.rename(tmp_dir, os.path.join(serving_dir, str(version)))
            return version
        except OSError as err:
            if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
                raise
    raise RuntimeError(f"{serving_dir}: could not claim a version in {max_attempts} attempts")


def write_serving_config(push_base: str, model_name: str, stable: int, canary: Optional[int] = None) -> str:
    """Writes ``<push_base>/models.config``: TF Serving's model config (text protobuf) serving the
    ``stable`` version (and ``canary`` when given) of ``<push_base>/serving`` under those labels.

    TF Serving re-reads it with ``--model_config_file_poll_wait_seconds``; clients pick a version
    with ``/v1/models/<name>/labels/stable:predict``. The server never reads half a file: locally it
    is written to a temporary file and renamed; on an object store it is one object, replaced whole
    (``base_path`` is then the bucket's ``serving/``, which TF Serving reads through TensorFlow's
    file systems, as it reads the config itself)."""
    base = push_base if is_object_store(push_base) else os.path.abspath(push_base)
    versions = [stable] + ([canary] if canary and canary != stable else [])
    labels = "\n".join(f'    version_labels {{ key: "{label}" value: {v} }}'
                       for label, v in zip(("stable", "canary"), versions))
    specific = "\n".join(f"        versions: {v}" for v in versions)
    text = (f"# Written by tfflows (push, promote, rollback) at {time.strftime('%Y-%m-%dT%H:%M:%SZ', time.gmtime())}.\n"
            "model_config_list {\n  config {\n"
            f'    name: "{model_name}"\n    base_path: "{join(base, SERVING_DIR)}"\n'
            '    model_platform: "tensorflow"\n'
            f"    model_version_policy {{\n      specific {{\n{specific}\n      }}\n    }}\n{labels}\n  }}\n}}\n")
    path = join(push_base, SERVING_CONFIG_FILE)
    if is_object_store(path):
        _write(path, text.encode())
        return path
    tmp = f"{path}.tmp-{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)
    return path


def resolve_version(path: str) -> str:
    """A version folder as given, or the newest complete version inside a serving/ folder."""
    if _exists(join(path, SAVED_MODEL_FILE)):
        return path
    versions = list_versions(path)
    if not versions:
        raise FileNotFoundError(f"{path}: no SavedModel here; pass serving/<version> or the serving/ "
                                f"folder of a run")
    return join(path, str(versions[-1]))


def local_model_dir(version_dir: str, cache_dir: str) -> str:
    """A local folder holding the SavedModel ``version_dir`` (downloaded into ``cache_dir`` from an
    object store: TensorFlow 2.21 reads neither s3:// nor, without credentials, gs://)."""
    if not is_object_store(version_dir):
        return version_dir
    return local_copy(version_dir, cache_dir)


def local_copy(uri: str, cache_dir: str) -> str:
    """The object-store file or folder ``uri`` downloaded into ``cache_dir`` (as its last name);
    the folder markers (``key/``) TensorFlow's ``gs://`` file system leaves are skipped."""
    store, key = _store(uri)
    target = os.path.join(cache_dir, os.path.basename(key))
    names = [name for name in store.keys(key) if not name.endswith("/")]
    if not names and store.exists(key):  # a file
        os.makedirs(cache_dir, exist_ok=True)
        store.download(key, target)
        return target
    for name in names:
        path = os.path.join(target, *name[len(key) + 1:].split("/"))
        os.makedirs(os.path.dirname(path), exist_ok=True)
        store.download(name, path)
    return target


def _stable_version(push_base: str) -> Optional[int]:
    """The version ``models.config``'s ``stable`` label names (`write_serving_config`), or None."""
    data = _read(join(push_base, SERVING_CONFIG_FILE))
    found = _STABLE_LABEL.search(data.decode()) if data is not None else None
    return int(found.group(1)) if found else None


def champion_push_info(push_base: str) -> Optional[dict]:
    """The push record (``PUSH_INFO``: model, transform graph and examples URIs, the evaluation's
    metrics, ``version``) of the champion under ``push_base``: the version ``models.config``'s
    ``stable`` label names (a push, `tfflows promote` or `tfflows rollback` wrote it), else (no
    label, or its version is gone) the highest pushed version; None when nothing is pushed."""
    serving_dir = join(push_base, SERVING_DIR)
    versions = list_versions(serving_dir)
    stable = _stable_version(push_base)
    for version in ([stable] if stable in versions else []) + versions[::-1]:
        info = read_json(join(serving_dir, str(version), PUSH_INFO))
        if info is not None:
            return {**info, "version": version}
    return None


def version_of_model(push_base: str, model_uri: str) -> Optional[int]:
    """The pushed version whose push record names the trained model ``model_uri``, or None."""
    serving_dir = join(push_base, SERVING_DIR)
    return next((v for v in list_versions(serving_dir)
                 if (read_json(join(serving_dir, str(v), PUSH_INFO)) or {}).get("model_uri") == model_uri), None)


def pinned_champion(pinned: Optional[str], push_base: Optional[str]) -> Optional[dict]:
    """The champion a drift, evaluate or push step works with: ``pinned``, its execution property
    (the champion's push record as JSON, ``null`` for none), fixed when the pipeline was built so
    that a new champion changes the step's cache key; when empty (a cluster spec, compiled once and
    run many times) the champion under ``push_base`` now."""
    if pinned:
        return json.loads(pinned)
    return champion_push_info(push_base) if push_base else None


# --- blessing -------------------------------------------------------------------------------


def write_blessing(blessing_uri: str, blessed: bool) -> None:
    """Writes the empty ``BLESSED`` or ``NOT_BLESSED`` file (the stock Evaluator's layout)."""
    for name in (BLESSED_FILE, NOT_BLESSED_FILE):
        _remove(join(blessing_uri, name))
    _write(join(blessing_uri, BLESSED_FILE if blessed else NOT_BLESSED_FILE), b"")


def read_blessing(blessing_uri: str) -> bool:
    """True iff ``blessing_uri`` holds ``BLESSED`` (and not ``NOT_BLESSED``)."""
    return _exists(join(blessing_uri, BLESSED_FILE)) and not _exists(join(blessing_uri, NOT_BLESSED_FILE))


def write_evaluation(folder: str, result: dict) -> None:
    _write(join(folder, EVALUATION_FILE), json.dumps(result, indent=2, sort_keys=True).encode())


def read_evaluation(folder: str) -> Optional[dict]:
    """``evaluation.json`` of an evaluation or blessing folder, or None."""
    return read_json(join(folder, EVALUATION_FILE))


def write_drift(folder: str, drift: Optional[dict], note: Optional[str]) -> None:
    """``drift.json`` of a drift report: the drift measured before training (`components.drift`),
    or None and why none was."""
    _write(join(folder, DRIFT_FILE), json.dumps({"drift": drift, "note": note}, indent=2).encode())


def read_drift(folder: Optional[str]) -> Optional[dict]:
    """The drift in ``folder``'s ``drift.json`` (None: none measured, no file, or no folder)."""
    return (read_json(join(folder, DRIFT_FILE)) or {}).get("drift") if folder else None


# --- atomic output folders ------------------------------------------------------------------


def staging_dir(output_uri: str) -> str:
    """A fresh folder to write into before `publish_dir` moves it in place: a sibling of a local
    ``output_uri`` (not created: the rename stays on one file system), or for an object store a
    new local temporary folder (created; uploaded by `publish_dir`), so that Beam's sinks and plain
    ``open`` write local files and the bucket sees only whole outputs."""
    if is_object_store(output_uri):
        return tempfile.mkdtemp(prefix=_LOCAL_STAGING_PREFIX)
    base = output_uri.rstrip("/")
    parent = os.path.dirname(base if "://" in base else os.path.abspath(base))
    return f"{parent}/.{os.path.basename(base)}.tmp-{uuid.uuid4().hex}"


_LOCAL_STAGING_PREFIX = "tfflows-stage-"


class _LocalFiles:
    """The `tf.io.gfile` calls of `publish_dir`, on local paths."""

    exists, listdir, rename, rmtree = staticmethod(os.path.exists), staticmethod(os.listdir), \
        staticmethod(os.rename), staticmethod(shutil.rmtree)

    @staticmethod
    def makedirs(path: str) -> None:
        os.makedirs(path, exist_ok=True)


def publish_dir(tmp_dir: str, output_uri: str) -> None:
    """Moves every entry of ``tmp_dir`` into ``output_uri`` (created if absent), then removes it.
    Object store: every file is uploaded (``saved_model.pb`` last), then the local folder removed."""
    if is_object_store(output_uri):
        store, key = _store(output_uri)
        if [k for k in store.keys(key) if not k.endswith("/")]:  # TFX's `makedirs` leaves a `key/` marker
            raise FileExistsError(f"output_uri {output_uri!r} is not empty; pass a new folder")
        _upload_tree(tmp_dir, store, key)
        shutil.rmtree(tmp_dir, ignore_errors=True)
        return
    if "://" in output_uri:
        # Another file system (hdfs://, ...) only TensorFlow's gfile writes; this module is on the
        # CLI's configuration path (`pipeline.config`), so TensorFlow is not imported at its top.
        import tensorflow as tf

        files: Any = tf.io.gfile
    else:
        files = _LocalFiles
    if files.exists(output_uri) and files.listdir(output_uri):
        raise FileExistsError(f"output_uri {output_uri!r} is not empty; pass a new folder")
    files.makedirs(output_uri)
    for name in files.listdir(tmp_dir):
        name = name.rstrip("/")
        files.rename(os.path.join(tmp_dir, name), os.path.join(output_uri, name))
    files.rmtree(tmp_dir)


def local_export_dir(serving_dir: str) -> str:
    """An empty local folder for a push's SavedModel before `publish_version`: inside
    ``serving_dir`` on POSIX (the rename stays on one file system), a temporary folder for an
    object store. The caller removes it afterwards (a published POSIX one is gone already).
    Folders that dead pushes left there are removed first (`remove_dead_exports`)."""
    if is_object_store(serving_dir):
        folder, prefix = tempfile.gettempdir(), _LOCAL_EXPORT_PREFIX
    else:
        folder, prefix = serving_dir, _EXPORT_PREFIX
        os.makedirs(serving_dir, exist_ok=True)
    remove_dead_exports(folder, prefix)
    path = os.path.join(folder, _export_name(prefix))
    os.mkdir(path)
    return path


# --- leftovers of dead pushes, and pushes rolled back ---------------------------------------

_EXPORT_PREFIX = ".tmp-"  # not an integer: TF Serving ignores it
_LOCAL_EXPORT_PREFIX = "tfflows-push-"  # an object-store push's local export, in the temporary folder
# A folder older than this is a dead push's whatever its name says: one written on another machine
# (a shared file system, where its pid means nothing here) or before folders were named after
# their process. No push takes this long to export a SavedModel.
STALE_EXPORT_AGE_S = 24 * 3600


def _export_name(prefix: str) -> str:
    """``<prefix><pid>@<host>.<uuid>``: the owner, so that a later push can tell a dead push's
    folder from a live one's."""
    return f"{prefix}{os.getpid()}@{socket.gethostname()}.{uuid.uuid4().hex}"


def _owner_is_dead(name: str, prefix: str) -> bool:
    """Whether the export folder ``name`` was made on this machine by a process that is gone."""

    owner = name[len(prefix):].rpartition(".")[0]
    pid, _, host = owner.partition("@")
    if not pid.isdigit() or host != socket.gethostname():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:  # alive, another user's
        return False
    return False


def remove_dead_exports(folder: str, prefix: str = _EXPORT_PREFIX, max_age_s: float = STALE_EXPORT_AGE_S) -> list:
    """Removes the export folders (``<prefix>...``) in ``folder`` that pushes killed mid-export
    (SIGKILL, a crash, a power cut) left behind: their owner process is gone, or they are older
    than ``max_age_s``. A live concurrent push's folder is never removed. Returns the removed paths."""
    removed = []
    names = os.listdir(folder) if os.path.isdir(folder) else []
    for name in (n for n in names if n.startswith(prefix)):
        path = os.path.join(folder, name)
        try:
            stale = _owner_is_dead(name, prefix) or time.time() - os.path.getmtime(path) > max_age_s
        except OSError:  # removed meanwhile (its push published it)
            continue
        if stale and os.path.isdir(path):
            shutil.rmtree(path, ignore_errors=True)
            removed.append(path)
    return removed


def _withdraw(serving_dir: str, version: int) -> None:
    """Removes a published version. POSIX: renamed out of the integer names first, so readers and
    TF Serving stop seeing it at once; object store: its marker first (no longer listed), then
    its files."""
    if is_object_store(serving_dir):
        store, key = _store(serving_dir)
        store.delete(f"{key}/{CLAIMS_DIR}/{version}.json")
        for name in store.keys(f"{key}/{version}"):
            store.delete(name)
        return
    doomed = os.path.join(serving_dir, _export_name(_EXPORT_PREFIX))
    os.rename(os.path.join(serving_dir, str(version)), doomed)
    shutil.rmtree(doomed, ignore_errors=True)


@contextlib.contextmanager
def withdrawn_on_failure(push_base: str, version: int):
    """Runs the block that makes a just-published ``version`` known (TF Serving's config, the
    registry). If it fails (a full disk, a store that cannot be written), the version is removed
    and ``models.config`` put back as it was, so the serving folder and the registry keep agreeing;
    the error gets a note saying so, for its failure line."""
    config_path = join(push_base, SERVING_CONFIG_FILE)
    before = _read(config_path)
    try:
        yield
    except BaseException as error:
        _withdraw(join(push_base, SERVING_DIR), version)  # first: it frees the space the rest needs
        if before is None:
            _remove(config_path)
        else:
            _write(config_path, before)
        error.add_note(f"serving version {version} was rolled back (removed)")
        raise


def feature_names(info: dict, dim: int) -> list:
    """The names of the D input columns of a model with metadata ``info`` (`METADATA_FILE`): the
    dataset's, or ``x0 .. x{D-1}`` for a flow fitted to a target (the names `.npy` ingestion gives)."""
    return list((info.get("dataset") or {}).get("feature_names") or [f"x{i}" for i in range(dim)])


def context_names(info: dict) -> list:
    """The names of all context columns of a conditional model with metadata ``info`` (numeric and
    categorical, in the run's ``context_columns`` order); empty for an unconditional one."""
    return list((info.get("dataset") or {}).get("context_names") or [])


def context_categorical_names(info: dict) -> list:
    """The names of the Sc categorical context columns of a conditional model with metadata ``info``
    (its ``context_categorical`` input, strings, in order); empty when its context is numeric."""
    return list((info.get("dataset") or {}).get("context_categorical_names") or [])


def numeric_context_names(info: dict) -> list:
    """The names of the C numeric context columns of a conditional model with metadata ``info`` (its
    ``context`` input, in order)."""
    return [c for c in context_names(info) if c not in context_categorical_names(info)]


def input_columns(info: dict, dim: int) -> tuple:
    """(numeric columns, string columns) a pushed model with metadata ``info`` and D = ``dim``
    features reads by name: its features, then its numeric context; its categorical context
    columns, then a mixed density's categorical columns (the order of its signatures' inputs)."""
    return (feature_names(info, dim) + numeric_context_names(info),
            context_categorical_names(info) + categorical_names(info))


def input_vocabularies(info: dict) -> dict:
    """``{column: vocabulary}`` of the string columns of `input_columns`, in its order."""
    return {**(info.get("context_categories") or {}), **(info.get("categories") or {})}


def categorical_names(info: dict) -> list:
    """The names of the S categorical columns of a mixed density with metadata ``info`` (its
    ``categorical`` input, strings, in order); empty for a model of numeric columns."""
    return list((info.get("dataset") or {}).get("categorical_names") or [])

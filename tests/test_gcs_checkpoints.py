"""Checkpoints and the trained model on ``gs://`` through TensorFlow's own GCS file system,
against fake-gcs-server on loopback.

TensorFlow's GCS client has no endpoint setting: it always calls https://www.googleapis.com and
https://storage.googleapis.com. It does honour libcurl's ``HTTPS_PROXY`` and ``CURL_CA_BUNDLE``
and takes a fixed token from ``GOOGLE_AUTH_TOKEN_FOR_TESTING``, so the test answers both hosts
itself: a proxy on 127.0.0.1 accepts every CONNECT, speaks TLS with a certificate for those hosts
from a CA made here, and forwards each request over plain HTTP to fake-gcs-server. It drops one
header on the way: curl's ``Transfer-Encoding`` (``identity`` for empty uploads, which Go's HTTP
server refuses; ``chunked`` beside a Content-Length, decoded here), and makes the resumable-upload
``Location`` https again (the fake builds it from its own http scheme).
"""

from __future__ import annotations

import datetime
import http.client
import http.server
import json
import os
import socketserver
import ssl
import subprocess
import sys
import threading

import numpy as np
import pytest

from tests.gcs_testing import start_fake_gcs

HOSTS = ("www.googleapis.com", "storage.googleapis.com")
BUCKET = "tfflows-ckpt"


def _certificates(folder) -> tuple[str, str, str]:
    """(CA certificate, server certificate, server key) paths: a test CA and a cert for HOSTS."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    now = datetime.datetime.now(datetime.timezone.utc)

    def cert(subject, issuer, public_key, signing_key, ca: bool, sans=()):
        builder = (x509.CertificateBuilder().subject_name(subject).issuer_name(issuer).public_key(public_key)
                   .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(hours=1))
                   .not_valid_after(now + datetime.timedelta(days=1))
                   .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
        if sans:
            builder = builder.add_extension(x509.SubjectAlternativeName([x509.DNSName(h) for h in sans]),
                                            critical=False)
        return builder.sign(signing_key, hashes.SHA256())

    ca_key, key = ec.generate_private_key(ec.SECP256R1()), ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "tfflows test CA")])
    ca = cert(ca_name, ca_name, ca_key.public_key(), ca_key, True)
    server = cert(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOSTS[0])]), ca_name, key.public_key(),
                  ca_key, False, HOSTS)
    paths = [os.path.join(folder, name) for name in ("ca.pem", "server.pem", "server.key")]
    for path, data in zip(paths, (ca.public_bytes(serialization.Encoding.PEM),
                                  server.public_bytes(serialization.Encoding.PEM),
                                  key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                    serialization.NoEncryption()))):
        with open(path, "wb") as f:
            f.write(data)
    return tuple(paths)


def _proxy(fake_port: int, cert: str, key: str) -> socketserver.BaseServer:
    """The TLS-terminating proxy of the module docstring, serving on a free port in a thread."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(cert, key)

    class Handler(http.server.BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"  # keep-alive, and `Expect: 100-continue` answered

        def log_message(self, *args):
            pass

        def do_CONNECT(self):
            self.send_response(200, "Connection established")
            self.end_headers()
            self.connection = context.wrap_socket(self.connection, server_side=True)
            self.rfile = self.connection.makefile("rb", self.rbufsize)
            self.wfile = self.connection.makefile("wb", 0)
            self.close_connection = False
            while not self.close_connection:
                self.handle_one_request()

        def _body(self) -> bytes:
            if "chunked" in (self.headers.get("Transfer-Encoding") or ""):
                body = b""
                while size := int(self.rfile.readline().split(b";")[0], 16):
                    body += self.rfile.read(size)
                    self.rfile.readline()
                self.rfile.readline()
                return body
            return self.rfile.read(int(self.headers.get("Content-Length") or 0))

        def forward(self):
            body = self._body()
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() not in ("transfer-encoding", "content-length", "expect", "connection",
                                            "proxy-connection")}
            headers["Content-Length"] = str(len(body))
            upstream = http.client.HTTPConnection("127.0.0.1", fake_port, timeout=60)
            try:
                upstream.request(self.command, self.path, body=body, headers=headers)
                response = upstream.getresponse()
                data = response.read()
            finally:
                upstream.close()
            self.send_response(response.status, response.reason)
            for name, value in response.getheaders():
                if name.lower() == "location":
                    value = value.replace("http://", "https://", 1)
                if name.lower() not in ("transfer-encoding", "connection", "content-length"):
                    self.send_header(name, value)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        do_GET = do_HEAD = do_PUT = do_POST = do_PATCH = do_DELETE = forward

    class Server(socketserver.ThreadingMixIn, http.server.HTTPServer):
        daemon_threads = True

    server = Server(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


@pytest.fixture(scope="module")
def gcs_for_tensorflow(tmp_path_factory):
    """(the environment under which TensorFlow's gs:// reaches a fake-gcs-server holding BUCKET,
    a google-cloud-storage client of that server)."""
    folder = tmp_path_factory.mktemp("gcs")
    ca, cert, key = _certificates(str(folder))
    fake = start_fake_gcs()
    proxy = _proxy(fake.port, cert, key)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(credentials=AnonymousCredentials(), project="test",
                                client_options={"api_endpoint": fake.url})
        client.create_bucket(BUCKET)
        yield {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}", "CURL_CA_BUNDLE": ca,
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "NO_PROXY": "", "no_proxy": ""}, client
    finally:
        proxy.shutdown()
        fake.stop()


# Trains one epoch with checkpoints and the model on gs://, then a second run to two epochs
# resumes from the bucket's checkpoint; prints the log lines and the final log-probs.
TRAIN = """
import json, logging, sys
from tfflows.components.flow_artifact import load_flow
from tfflows.components.train import TrainConfig, run_train
examples, graph, model, ckpt, config = sys.argv[1:]
logging.basicConfig(level=logging.INFO, format="%(message)s")
config = json.loads(config)
run_train(examples, graph, model, TrainConfig(**{**config, "epochs": 1}), checkpoint_dir=ckpt)
run_train(examples, graph, model, TrainConfig(**config), checkpoint_dir=ckpt)
flow = load_flow(model)
print("WEIGHTS", json.dumps([v.numpy().ravel().tolist() for v in flow.variables]))
"""


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_checkpoints_and_model_on_gs_resume_like_local(gcs_for_tensorflow, tmp_path):
    from tfflows.components.config import IngestConfig, TransformConfig
    from tfflows.components.ingest import run_ingest
    from tfflows.components.transform import run_transform

    examples, graph = str(tmp_path / "examples"), str(tmp_path / "transform")
    run_ingest(IngestConfig("moons", num_samples=300, seed=1), examples)
    run_transform(examples, TransformConfig(), graph)
    config = ('{"kind": "maf", "num_layers": 2, "hidden_units": [8], "batch_size": 50, "epochs": 2, '
              '"max_steps_per_epoch": 3, "seed": 3}')

    def train(model, ckpt, env):
        proc = subprocess.run([sys.executable, "-c", TRAIN, examples, graph, model, ckpt, config],
                              capture_output=True, text=True, timeout=500, cwd=tmp_path,
                              env=dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", **env))
        assert proc.returncode == 0, proc.stderr[-4000:]
        line = [ln for ln in proc.stdout.splitlines() if ln.startswith("WEIGHTS ")][-1]
        return proc.stderr, [np.asarray(w) for w in json.loads(line.split(" ", 1)[1])]

    env, client = gcs_for_tensorflow
    log, on_gcs = train(f"gs://{BUCKET}/run/model", f"gs://{BUCKET}/run/ckpt", env)
    assert f"resumed from gs://{BUCKET}/run/ckpt/ckpt-1 (epoch 1 done)" in log, log[-3000:]
    assert "epoch 2: train" in log and f"to gs://{BUCKET}/run/model" in log
    _, local = train(str(tmp_path / "model"), str(tmp_path / "ckpt"), {})
    for a, b in zip(on_gcs, local):
        np.testing.assert_array_equal(a, b)
    names = {b.name for b in client.list_blobs(BUCKET)}  # what the bucket holds, seen by another client
    assert {"run/ckpt/ckpt-2.index", "run/ckpt/checkpoint", "run/model/summary.json"} <= names, sorted(names)

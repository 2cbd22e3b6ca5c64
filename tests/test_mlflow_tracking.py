"""MLflow never decides a run's outcome: outages cost seconds, half-created stores are replaced,
concurrent runs into one output both keep their runs (issue 18, items 1, 2 and 5).

Everything is real: MLflow's sqlite store, loopback sockets and HTTP servers that misbehave on
purpose, separate processes racing for one store, and (as root) a full tmpfs.
"""

from __future__ import annotations

import http.server
import logging
import os
import socket
import sqlite3
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from tfflows.components.tracking import Tracker, prepare_store
from tfflows.components.train.config import TrackingConfig

REPO = Path(__file__).resolve().parents[1]


def _warnings(caplog):
    return [r.getMessage() for r in caplog.records
            if r.name.startswith("tfflows") and r.levelno >= logging.WARNING]


def _sqlite(path: Path, **kwargs) -> TrackingConfig:
    return TrackingConfig(uri=f"sqlite:///{path}", experiment="t", **kwargs)


def test_nothing_listening_costs_one_line_and_milliseconds(caplog):
    with socket.socket() as s:  # a port that was free a moment ago: nothing listens there
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    start = time.perf_counter()
    tracker = Tracker(TrackingConfig(uri=f"http://127.0.0.1:{port}", timeout_s=2), what="evaluation")
    assert tracker.start_run() is None
    tracker.log_metrics({"a": 1.0})
    tracker.set_tags({"b": "c"})
    tracker.end()
    assert time.perf_counter() - start < 5
    lines = _warnings(caplog)
    assert len(lines) == 2, lines  # what was not logged and why; then the count of what was skipped
    assert "unreachable" in lines[0] and "NOT logged" in lines[0]
    assert "metrics of step 0" in lines[1] and "tag b" in lines[1]


def test_a_server_that_never_answers_costs_the_timeout_only(caplog):
    with socket.socket() as server:  # accepts connections (backlog) but never answers
        server.bind(("127.0.0.1", 0))
        server.listen(8)
        start = time.perf_counter()
        tracker = Tracker(TrackingConfig(uri=f"http://127.0.0.1:{server.getsockname()[1]}", timeout_s=1))
        assert tracker.start_run() is None
        elapsed = time.perf_counter() - start
    assert elapsed < 4, elapsed
    assert any("timed out" in line for line in _warnings(caplog))


class _Unavailable(http.server.BaseHTTPRequestHandler):
    """Healthy on /health, 503 on every MLflow API call (a server whose database is down)."""

    calls = 0

    def _answer(self):
        if self.path.startswith("/health"):
            self.send_response(200)
            self.end_headers()
            self.wfile.write(b"OK")
            return
        type(self).calls += 1
        self.send_response(503)
        self.end_headers()

    do_GET = do_POST = _answer

    def log_message(self, *args):
        pass


def test_failing_server_retries_are_bounded(caplog):
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unavailable)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    import mlflow.tracking  # noqa: F401 - timed below: the retries, not MLflow's import

    try:
        start = time.perf_counter()
        tracker = Tracker(TrackingConfig(uri=f"http://127.0.0.1:{server.server_address[1]}", timeout_s=2))
        assert tracker.start_run() is None
        tracker.log_params({"a": 1})
        tracker.end()
        elapsed = time.perf_counter() - start
    finally:
        server.shutdown()
        server.server_close()
    # MlflowClient's defaults retry for minutes; the budget (2 retries, 1 s and 2 s apart) is seconds.
    assert elapsed < 12, elapsed
    assert 1 <= _Unavailable.calls <= 1 + TrackingConfig().max_retries
    lines = _warnings(caplog)
    assert len(lines) == 2 and "NOT logged" in lines[0], lines


def test_default_experiment_artifact_root_beside_the_store(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    out = tmp_path / "out"
    tracker = Tracker(_sqlite(out / "mlflow.db"))
    assert tracker.start_run("r")
    for experiment in tracker.client.search_experiments():
        assert experiment.artifact_location.replace("file://", "").startswith(str(out / "mlartifacts")), experiment
    assert not (tmp_path / "mlruns").exists()


def test_leftover_migration_table_is_moved_aside_and_replaced(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    config = _sqlite(db)
    prepare_store(config)
    with sqlite3.connect(db) as conn:  # what a migration interrupted by a full disk leaves behind
        conn.execute("CREATE TABLE _alembic_tmp_experiments (experiment_id INTEGER)")
    tracker = Tracker(config)
    assert tracker.start_run("after repair")
    broken = [p.name for p in tmp_path.iterdir() if p.name.startswith("mlflow.db.broken-")]
    assert len(broken) == 1
    (line,) = [m for m in _warnings(caplog) if "half-created" in m]
    assert "_alembic_tmp_experiments" in line and broken[0] in line


def test_garbage_file_is_moved_aside_and_replaced(tmp_path, caplog):
    db = tmp_path / "mlflow.db"
    db.write_bytes(b"SQLite format 3\x00" + b"\x00" * 20)  # a header and nothing else (disk full)
    tracker = Tracker(_sqlite(db))
    assert tracker.start_run("fresh")
    assert any("half-created" in m for m in _warnings(caplog))


def _mount_tmpfs(path: Path, size: str) -> bool:
    path.mkdir(exist_ok=True)
    return subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                          capture_output=True).returncode == 0


@pytest.mark.skipif(os.geteuid() != 0, reason="mounting a small tmpfs (a disk that fills up) needs root")
def test_store_created_on_a_full_disk_is_replaced_once_there_is_room(tmp_path, caplog):
    mount = tmp_path / "disk"
    if not _mount_tmpfs(mount, "160k"):
        pytest.skip("mount -t tmpfs is not permitted in this container")
    try:
        config = _sqlite(mount / "out" / "mlflow.db")
        assert Tracker(config).start_run() is None  # disk full while MLflow creates its tables
        assert any("NOT logged" in m for m in _warnings(caplog))
        db = mount / "out" / "mlflow.db"
        assert db.exists()  # half a store stays behind
        subprocess.run(["mount", "-o", "remount,size=64m", str(mount)], check=True)
        # Without the repair, MLflow itself cannot use what is left (the reported crash).
        probe = subprocess.run([sys.executable, "-c", "import sys; from mlflow.tracking import MlflowClient; "
                                "MlflowClient(sys.argv[1]).search_experiments()", config.uri],
                               capture_output=True, text=True, timeout=120)
        assert probe.returncode != 0
        caplog.clear()
        tracker = Tracker(config)
        assert tracker.start_run("after the disk was enlarged")
        assert any("half-created" in m and "moved it to" in m for m in _warnings(caplog))
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


_RACER = """
import sys, time
from tfflows.components.tracking import Tracker
from tfflows.components.train.config import TrackingConfig
start_at = float(sys.argv[2])
time.sleep(max(0.0, start_at - time.time()))
tracker = Tracker(TrackingConfig(uri=sys.argv[1], experiment="race"))
print(tracker.start_run(sys.argv[3]))
"""


@pytest.mark.slow  # two fresh processes released together 8 s after their start
def test_two_runs_creating_one_store_at_once_both_keep_their_runs(tmp_path):
    uri = f"sqlite:///{tmp_path / 'out' / 'mlflow.db'}"
    start_at = str(time.time() + 8)  # both past their imports, then released together
    procs = [subprocess.Popen([sys.executable, "-c", _RACER, uri, start_at, f"run{i}"], cwd=str(REPO),
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for i in range(2)]
    outs = [p.communicate(timeout=180) for p in procs]
    run_ids = [out.strip().splitlines()[-1] if out.strip() else "" for out, _ in outs]
    assert all(len(r) == 32 for r in run_ids), [err[-2000:] for _, err in outs]
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=uri)
    (experiment,) = [e for e in client.search_experiments() if e.name == "race"]
    names = sorted(r.info.run_name for r in client.search_runs([experiment.experiment_id]))
    assert names == ["run0", "run1"]

"""Hostile input to `tfflows`, run as a user would (subprocess): every mistake ends in exit 2 (3
for a diverged training) and one line on stderr, never a traceback; tracebacks go to the log file
that line names; a failed run writes no `metadata.sqlite` or `pipeline_root/` (issue 18, items 3,
7, 8). The fast cases stop before TensorFlow loads; the pipeline cases are marked slow."""

from __future__ import annotations

import concurrent.futures
import os
import re
import subprocess

import pytest

from tests.cli_testing import cli

TINY = ["--set", "train.num_layers=1", "--set", "train.hidden_units=[8]", "--set", "train.batch_size=50",
        "--set", "train.jit_compile=false", "--set", "ingest.num_samples=300"]



def one_line(result, status: int) -> str:
    """The single stderr line of a failed command (asserting there is nothing else on stderr)."""
    assert result.returncode == status, (result.returncode, result.stdout[-2000:], result.stderr[-4000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in result.stderr + result.stdout, result.stderr[-4000:]
    assert lines[0].startswith("tfflows ")
    return lines[0]


def assert_nothing_run(output):
    assert not (output / "metadata.sqlite").exists() and not (output / "pipeline_root").exists()


# ----- found before anything is written (no TensorFlow) -------------------------------------------


def test_missing_data_file_is_refused_before_anything_is_written(tmp_path):
    output = tmp_path / "out"
    line = one_line(cli("run", "--data", str(tmp_path / "missing.csv"), "--output", str(output)), 2)
    assert "missing.csv: ingest.path: no such file or folder; fix:" in line
    assert not output.exists()
    line = one_line(cli("run", "--dataset", "csv", "--output", str(output)), 2)
    assert "no input file given; fix: pass --data PATH" in line and not output.exists()
    line = one_line(cli("run", "--data", str(tmp_path / "x.weird"), "--output", str(output)), 2)
    assert "cannot tell the format from the name; fix: add --dataset" in line


def test_read_only_output_is_refused_in_one_line(tmp_path):
    mount = tmp_path / "ro"
    mount.mkdir()
    if os.geteuid() != 0 or subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", str(mount)],
                                           capture_output=True).returncode != 0:
        pytest.skip("needs root and mount to make a read-only file system")
    try:
        line = one_line(cli("run", "--output", str(mount / "out")), 2)
        assert "is on a read-only file system); fix: choose a writable --output" in line
    finally:
        subprocess.run(["umount", str(mount)], check=True)


def test_pipeline_name_cannot_leave_the_output(tmp_path):
    line = one_line(cli("run", "--output", str(tmp_path / "out"), "--set", "pipeline_name=../.."), 2)
    assert "pipeline_name '../..' is not a plain name" in line
    assert not (tmp_path / "out").exists()


# ----- found inside the pipeline (slow: TensorFlow, TFX, Beam) -------------------------------------

BAD_CSV = [
    ("nan", "x,y\n1,2\n3,nan\n", "line 3 row '3,nan', column 1 (y): value nan is not finite"),
    ("inf", "x,y\n1,2\n3,4\ninf,1\n", "line 4 row 'inf,1', column 0 (x): value inf is not finite"),
    ("text", "x,y\n1,2\n3,four\n", "line 3 row '3,four', column 1 (y): value 'four' is not a number"),
    ("ragged", "x,y\n1,2\n3,4,5\n", "line 3 row '3,4,5': has 3 fields, the header has 2"),
]


@pytest.mark.slow
def test_bad_csv_rows_and_a_latin1_header_are_one_line_naming_the_line(tmp_path):
    """Before: Beam logged a 19-line traceback before the line, rows were quoted without their line
    number, a latin-1 header was a UnicodeDecodeError traceback (exit 1), and every failed run left
    metadata.sqlite and pipeline_root/ behind."""
    cases = [(name, text.encode(), expected) for name, text, expected in BAD_CSV]
    cases.append(("latin1", "größe,y\n1,2\n".encode("latin-1"), "line 1 (header): is not UTF-8 text"))
    for name, data, _ in cases:
        (tmp_path / f"{name}.csv").write_bytes(data)
    # Two at a time (each is a fresh process spending most of its time importing): CI time.
    with concurrent.futures.ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda case: cli("run", "--data", str(tmp_path / f"{case[0]}.csv"), "--output",
                                                 str(tmp_path / f"out_{case[0]}"), *TINY), cases))
    for (name, _, expected), result in zip(cases, results):
        path, output = tmp_path / f"{name}.csv", tmp_path / f"out_{name}"
        line = one_line(result, 2)
        assert expected in line and str(path) in line, (name, line)
        log = re.search(r"\(log: (.+)\)$", line).group(1)
        assert os.path.dirname(log) == str(output / "logs") and os.path.getsize(log) > 0
        assert_nothing_run(output)


@pytest.mark.slow
def test_divergence_ends_with_exit_3_and_one_line(tmp_path):
    """`train.learning_rate=1e4`: before, an uncaught TrainingDivergedError traceback with exit 1
    (and the line counted one rollback more than were made)."""
    result = cli("run", "--dataset", "moons", "--epochs", "3", "--output", str(tmp_path / "out"), *TINY,
                 "--set", "train.learning_rate=1e4", "--set", "train.max_nan_retries=2")
    assert result.returncode == 3, result.stderr[-4000:]
    assert "Traceback" not in result.stderr + result.stdout, result.stderr[-4000:]
    last = result.stderr.strip().splitlines()[-1]
    assert last.startswith("tfflows run: training diverged") and "(2 rollback(s))" in last, result.stderr
    # the rollbacks were shown as they happened: one warning line each, nothing else
    warnings = [x for x in result.stderr.strip().splitlines()[:-1]]
    assert all(x.startswith(("warning: ", "error: ")) for x in warnings) and len(warnings) <= 3, warnings


def test_training_progress_is_a_line_every_n_epochs_or_a_bar():
    """The trainer's per-epoch records (extra epoch/epochs) on the terminal: 200 epochs used to
    print 200 lines; now a line every N epochs (and the first and last), or one bar rewritten."""
    import io
    import logging

    from tfflows.pipeline.terminal import _Progress

    logger = logging.getLogger("tfflows.test_progress")
    logger.propagate, logger.level = False, logging.INFO
    for mode, check in (("lines", lambda text: text.splitlines() == ["epoch 1", "epoch 10", "epoch 20", "epoch 25"]),
                        ("bar", lambda text: text.count("\r") == 25 and text.count("\n") == 1 and "ETA" in text)):
        stream = io.StringIO()
        handler = _Progress(stream, mode, every=10)
        logger.addHandler(handler)
        try:
            for epoch in range(1, 26):
                logger.info("epoch %d", epoch, extra={"epoch": epoch, "epochs": 25})
                logger.info("step lines stay in the log")
        finally:
            logger.removeHandler(handler)
            handler.close()
        assert check(stream.getvalue()), (mode, stream.getvalue()[-500:])

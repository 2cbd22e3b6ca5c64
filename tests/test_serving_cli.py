"""`tfflows evaluate --scores`: streamed scoring in bounded memory, exact output paths, refusals."""

from __future__ import annotations

import os
import subprocess
import sys
import tracemalloc

import numpy as np
import pytest
import tensorflow as tf

from tfflows.components.errors import DataError
from tfflows.pipeline.serving import evaluate_saved_model, iter_row_chunks, match_columns
from tests.artifact_testing import export_tiny_flow

D = 3


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return export_tiny_flow(tmp_path_factory.mktemp("serving"), D)[1]


def _direct(model, rows):
    return tf.saved_model.load(model).signatures["log_prob"](x=tf.constant(rows))["log_prob"].numpy()


def test_scores_stream_in_order_to_exactly_the_given_path(model, tmp_path):
    rows = np.random.default_rng(0).normal(size=(53, D)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    lines = ["x0,x1,x2", *(",".join(f"{v:.9g}" for v in r) for r in rows[:20]), "", *(",".join(f"{v:.9g}" for v in r) for r in rows[20:])]
    (tmp_path / "rows.csv").write_text("\n".join(lines) + "\n")
    expected = _direct(model, rows)
    for data, scores in (("rows.npy", "s.npy"), ("rows.csv", "s.csv")):
        # chunks of 7 rows scored in batches of 5: every boundary case of the streaming loop
        report = evaluate_saved_model(model, str(tmp_path / data), str(tmp_path / scores), batch_size=5, chunk_rows=7)
        out = tmp_path / scores
        if scores.endswith(".csv"):  # an uncalibrated model: row and log_prob, no percentile
            assert out.read_text().splitlines()[:2] == ["row,log_prob", f"0,{expected[0]:.9g}"]
        got = np.load(out) if scores.endswith(".npy") else np.genfromtxt(out, delimiter=",", names=True)["log_prob"]
        np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
        assert f"per-row scores: {out}" in report and "rows: 53 from" in report
        mean = f"{expected.astype(np.float64).mean():.4f}"
        assert f"log-likelihood: {mean} ± " in report, report
    assert sorted(os.listdir(tmp_path)) == ["rows.csv", "rows.npy", "s.csv", "s.npy"]  # no temp files left


def test_refusals_are_one_line_and_write_nothing(model, tmp_path):
    rows = np.random.default_rng(1).normal(size=(5, D)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    before = (tmp_path / "rows.npy").read_bytes()
    with pytest.raises(DataError, match="is the input file given to --data; fix: write the scores to a new file"):
        evaluate_saved_model(model, str(tmp_path / "rows.npy"), str(tmp_path / "rows.npy"))
    assert (tmp_path / "rows.npy").read_bytes() == before
    with pytest.raises(DataError, match="s.txt: --scores: unknown file extension; fix: name the scores file .npy or .csv"):
        evaluate_saved_model(model, str(tmp_path / "rows.npy"), str(tmp_path / "s.txt"))
    cases = {
        "empty.csv": ("", "line 1 (header): file is empty or has no header line; fix: write a header line"),
        "header.csv": ("x0,x1,x2\n", "rows: has no data rows (only a header, or nothing); fix: add rows of values"),
        "text.csv": ("x0,x1,x2\n1,2,3\n\n4,x,6\n", "line 4 row '4,x,6', column 1 (x1): value 'x' is not a number"),
        "ragged.csv": ("x0,x1,x2\n1,2,3\n4,5\n", "line 3 row '4,5': has 2 fields, the header has 3"),
        "nan.csv": ("x0,x1,x2\n1,2,3\n\n4,5,6\n7,nan,9\n", "line 5 row '7,nan,9', column 1 (x1): value nan is not finite"),
        "wide.csv": ("1,2\n", "2 values per row but the model takes 3 (x0, x1, x2)"),
        "names.csv": ("a,b\n1,2\n", "line 1 (header): no column x0, x1, x2"),
    }
    for name, (text, message) in cases.items():
        (tmp_path / name).write_text(text)
        with pytest.raises(DataError, match=message.replace("(", r"\(").replace(")", r"\)")) as info:
            evaluate_saved_model(model, str(tmp_path / name), str(tmp_path / "scores.npy"), chunk_rows=2)
        assert "\n" not in str(info.value)
    bad = np.concatenate([rows, [[1.0, np.inf, 0.0]]]).astype(np.float32)
    np.save(tmp_path / "bad.npy", bad)
    with pytest.raises(DataError, match=r"row 5, column 1 \(x1\): value inf is not finite"):
        evaluate_saved_model(model, str(tmp_path / "bad.npy"), str(tmp_path / "scores.npy"), chunk_rows=2)
    # the bad row came after two chunks had been scored: still no (partial) scores file
    assert sorted(os.listdir(tmp_path)) == sorted(["rows.npy", "bad.npy", *cases])


def test_a_truncated_saved_model_is_one_line_naming_the_folder(model, tmp_path):
    import shutil

    broken = tmp_path / "serving" / "1"
    shutil.copytree(model, broken)
    with open(broken / "saved_model.pb", "r+b") as f:
        f.truncate(100)
    np.save(tmp_path / "rows.npy", np.zeros((2, D), np.float32))
    with pytest.raises(DataError, match=r"1: saved_model.pb: not a readable SavedModel \(.*; fix: point --model at "
                                        r"a complete version folder") as info:
        evaluate_saved_model(str(broken), str(tmp_path / "rows.npy"), str(tmp_path / "s.csv"))
    assert "\n" not in str(info.value) and not (tmp_path / "s.csv").exists()


def test_cli_refusal_exit_2_one_line(tmp_path):
    np.save(tmp_path / "rows.npy", np.zeros((2, D), np.float32))
    proc = subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", "evaluate", "--model", str(tmp_path),
                           "--data", str(tmp_path / "rows.npy"), "--scores", str(tmp_path / "s.txt")],
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr[-2000:]
    [line] = proc.stderr.strip().splitlines()
    assert line.startswith(f"tfflows evaluate: {tmp_path / 's.txt'}: --scores: unknown file extension; "
                           "fix: name the scores file .npy or .csv"), line
    assert not (tmp_path / "s.txt").exists() and not (tmp_path / "s.txt.npy").exists()


def test_reader_holds_one_chunk_of_a_large_npy_and_csv(tmp_path):
    rows = np.random.default_rng(2).normal(size=(200_000, 43)).astype(np.float32)  # 34 MB
    np.save(tmp_path / "big.npy", rows)
    with open(tmp_path / "big.csv", "w") as f:
        f.write(",".join(f"c{i}" for i in range(43)) + "\n")
        np.savetxt(f, rows[:40_000], fmt="%.6g", delimiter=",")  # ~10 MB of text, 6.9 MB as float32
    del rows
    chunk_bytes = 1000 * 43 * 4
    for name, n in (("big.npy", 200_000), ("big.csv", 40_000)):
        tracemalloc.start()
        try:
            seen = 0
            columns = match_columns(str(tmp_path / name), [f"c{i}" for i in range(43)])
            for start, chunk in iter_row_chunks(str(tmp_path / name), columns, chunk_rows=1000):
                # a .csv chunk is the byte range of about 1000 rows (sized by a sample of its rows)
                assert start == seen and chunk.shape[1] == 43 and len(chunk) <= 1100
                seen += len(chunk)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert seen == n
        # a few chunk-sized buffers (parsing, float conversion), never the whole table (20 chunks
        # is half the CSV's floats; tracemalloc also counts other threads of a long-lived test worker)
        assert peak < 20 * chunk_bytes, (name, peak)


def _traced_peak(model, data, scores, **kwargs):
    tracemalloc.start()
    try:
        report = evaluate_saved_model(model, data, scores, **kwargs)
        return report, tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()


def test_scoring_a_table_larger_than_the_memory_budget(model, tmp_path):
    """End to end: 4M rows (48 MB) scored with ~1 MB chunks: NumPy memory grows by a few chunks only.

    Loading the SavedModel alone peaks near 20 MB of traced Python memory, so the budget is checked
    as the growth over scoring a 1,000-row file the same way.
    """
    n, chunk_rows = 4_000_000, 80_000
    table = np.lib.format.open_memmap(tmp_path / "big.npy", mode="w+", dtype=np.float32, shape=(n, D))
    for s in range(0, n, 500_000):
        table[s:s + 500_000] = np.random.default_rng(s).normal(size=(min(500_000, n - s), D))
    table.flush()
    del table
    np.save(tmp_path / "small.npy", np.load(tmp_path / "big.npy", mmap_mode="r")[:1000])
    kwargs = {"batch_size": 20_000, "chunk_rows": chunk_rows}
    _, base = _traced_peak(model, str(tmp_path / "small.npy"), str(tmp_path / "small_s.npy"), **kwargs)
    report, peak = _traced_peak(model, str(tmp_path / "big.npy"), str(tmp_path / "s.npy"), **kwargs)
    assert f"rows: {n} from" in report
    # 48 MB of rows and 16 MB of scores never in memory: at most a few 0.96 MB chunks more
    assert peak - base < 8 * chunk_rows * D * 4, (peak, base)
    scores = np.load(tmp_path / "s.npy", mmap_mode="r")
    assert scores.shape == (n,)
    tail = np.load(tmp_path / "big.npy", mmap_mode="r")[-1000:]
    np.testing.assert_allclose(scores[-1000:], _direct(model, np.asarray(tail)), rtol=1e-5, atol=1e-5)


def test_uncalibrated_model_takes_log_density_thresholds_only(model, tmp_path):
    """A model without held-out quantiles (pushed before they existed, or fitted to a target): no
    percentile; a `q` threshold is refused in one line, a log-density threshold flags rows."""
    rows = np.random.default_rng(3).normal(size=(40, D)).astype(np.float32)
    np.save(tmp_path / "rows.npy", rows)
    with pytest.raises(DataError, match=r"--threshold: q0.01 needs the model's held-out quantiles, and it carries "
                                        r"none .*; fix: give a log-density instead"):
        evaluate_saved_model(model, str(tmp_path / "rows.npy"), str(tmp_path / "s.csv"), threshold="q0.01")
    cut = float(np.median(_direct(model, rows)))
    report = evaluate_saved_model(model, str(tmp_path / "rows.npy"), str(tmp_path / "s.csv"), threshold=str(cut))
    scores = np.genfromtxt(tmp_path / "s.csv", delimiter=",", names=True)
    assert scores.dtype.names == ("row", "log_prob", "is_anomaly")
    np.testing.assert_array_equal(scores["is_anomaly"].astype(bool), _direct(model, rows) < cut)
    assert f"anomalies (log_prob < {cut:g}): 20 of 40 rows (50.00%)" in report
    assert "percentile: not available (the model carries no held-out quantiles)" in report

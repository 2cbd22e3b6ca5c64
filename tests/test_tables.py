"""The one table reader (`components.tables`): CSV, .npy, .npz and Parquet read into named columns
with one set of checks, chunk by chunk; and Parquet, added as a format module and one registry line,
working through every reader of a table: ingest (Beam), evaluate and --scores (in-process and
Beam), the preflight width check and the command line."""

from __future__ import annotations

import os
import pathlib
import re
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from tfflows.components.errors import DataError
from tfflows.components.tables import FORMATS, STREAMED_FORMATS, format_of
from tfflows.components.tables.reader import iter_blocks, open_table, plan, read_all, read_chunk, select

ROOT = pathlib.Path(__file__).resolve().parents[1]
NAMES = ["a", "b", "c"]


def _rows(n=23, seed=0):
    return np.round(np.random.default_rng(seed).normal(size=(n, 3)), 4)


def _write(folder, rows, names=NAMES, stem="t", blank_line_at=None):
    """The same rows as .csv (optionally with a blank line), .npy, .npz and .parquet (row groups of 5)."""
    lines = [",".join(names)] + [",".join(repr(float(v)) for v in r) for r in rows]
    if blank_line_at is not None:
        lines.insert(blank_line_at, "")
    (folder / f"{stem}.csv").write_text("\n".join(lines) + "\n")
    np.save(folder / f"{stem}.npy", rows)
    np.savez(folder / f"{stem}.npz", x=rows)
    pq.write_table(pa.table({n: rows[:, i] for i, n in enumerate(names)}), folder / f"{stem}.parquet",
                   row_group_size=5)
    return {ending: str(folder / f"{stem}{ending}") for ending in (".csv", ".npy", ".npz", ".parquet")}


def _refused(path, match, names=None, text=(), header=True):
    with pytest.raises(DataError) as raised:
        table = open_table(str(path), header=header)
        read_all(table, select(table, names, text))
    message = str(raised.value)
    assert re.search(match, message) and "\n" not in message and "; fix: " in message, message
    return message


# --------------------------------------------------------------------------- the registry


def test_every_format_is_registered_once_with_its_module():
    assert set(FORMATS) == {"csv", "npy", "npz", "parquet"}
    assert set(STREAMED_FORMATS) == {"csv", "parquet"}
    endings = [e for f in FORMATS.values() for e in f.endings]
    assert len(endings) == len(set(endings))
    for f in FORMATS.values():
        assert (ROOT / "components" / "tables" / f"{f.module}.py").is_file()
        assert all(format_of(f"x{e.upper()}") is f for e in f.endings)
    assert format_of("x.txt") is None


def test_the_configuration_and_the_cli_take_their_formats_from_the_registry():
    from tfflows.components.config import FILE_FORMATS, IngestConfig
    from tfflows.pipeline.cli import _dataset_for

    assert set(FORMATS) <= set(FILE_FORMATS)
    assert IngestConfig("parquet", path="x.parquet").dataset == "parquet"
    assert _dataset_for("data/x.parquet") == "parquet" and _dataset_for("x.CSV") == "csv"


def test_parquet_is_named_only_by_the_reader_module_and_its_registration():
    """Issue 27's proof: adding Parquet touched the reader module, its registry line and tests."""
    named = sorted(str(p.relative_to(ROOT)) for folder in ("components", "pipeline", "models")
                   for p in (ROOT / folder).rglob("*.py") if re.search(r"parquet|pyarrow", p.read_text(), re.I))
    assert named == ["components/tables/__init__.py", "components/tables/parquet.py"], named
    registry = (ROOT / "components" / "tables" / "__init__.py").read_text()
    assert len([line for line in registry.splitlines() if "parquet" in line.lower()]) == 1


# --------------------------------------------------------------------------- reading


def test_every_format_reads_the_same_rows_in_any_chunking(tmp_path):
    rows = _rows()
    paths = _write(tmp_path, rows, blank_line_at=9)
    for ending, path in paths.items():
        table = open_table(path)
        assert table.format == format_of(path).name
        assert table.columns == (tuple(NAMES) if table.named else ("x0", "x1", "x2")), ending
        names = ["c", "a"] if table.named else ["x2", "x0"]
        selection = select(table, names)
        for chunk_rows in (1, 2, 3, 7, 1000):
            blocks = list(iter_blocks(table, selection, chunk_rows))
            got = np.concatenate([b.numbers for b in blocks])
            np.testing.assert_array_equal(got, rows[:, [2, 0]], err_msg=f"{ending} {chunk_rows}")
            if ending in (".npy", ".parquet"):  # a .csv chunk is a byte range, an .npz member one chunk
                assert all(len(b) <= chunk_rows for b in blocks), ending


def test_csv_chunks_are_byte_ranges_that_split_no_row(tmp_path):
    """Every row lands in exactly one chunk, whatever the chunk boundaries: long and short lines,
    CRLF line ends, blank lines, a last line without a newline, a byte-order mark."""
    rng = np.random.default_rng(3)
    lines = ["\ufeffid,x,y"]
    for i in range(200):
        lines += [f"r{i},{rng.normal():.{rng.integers(1, 15)}f},{i}"] + ([""] * int(i % 17 == 0))
    (tmp_path / "t.csv").write_bytes("\r\n".join(lines).encode())
    table = open_table(str(tmp_path / "t.csv"))
    assert table.columns == ("id", "x", "y")
    for chunk_rows in (1, 3, 10, 64):
        chunks = plan(table, chunk_rows)
        assert chunks[0].start == table.data_offset and chunks[-1].stop == os.path.getsize(tmp_path / "t.csv")
        got = np.concatenate([read_chunk(table, c, select(table, ["y"])).numbers[:, 0] for c in chunks])
        np.testing.assert_array_equal(got, np.arange(200))


def test_string_valued_columns_come_back_as_str(tmp_path):
    (tmp_path / "t.csv").write_text('machine,load,ok\n" m1 ",0.5,yes\nm2,1.5,no\n')
    pq.write_table(pa.table({"machine": ["m1", "m2"], "load": [0.5, 1.5], "ok": ["yes", "no"]}), tmp_path / "t.parquet")
    for name in ("t.csv", "t.parquet"):
        table = open_table(str(tmp_path / name))
        block = read_all(table, select(table, ["load", "machine"], text=["machine"]))
        assert block.numbers.tolist() == [[0.5], [1.5]], name
        assert block.text.tolist() == [["m1"], ["m2"]] and all(type(v) is str for v in block.text[:, 0]), name
    _refused(tmp_path / "t.csv", r"line 2 row '\" m1 \",0.5,yes', column 2 \(ok\): value 'yes' is not a number",
             ["load", "ok"])
    _refused(tmp_path / "t.parquet", r"column 2 \(ok\): type string is not numeric; fix: store the column as "
             r"numbers", ["load", "ok"])


def test_a_header_less_csv_is_read_by_position_when_allowed(tmp_path):
    (tmp_path / "t.csv").write_text("1,2\n3,4\n")
    table = open_table(str(tmp_path / "t.csv"), header=None)
    assert not table.named and table.columns == ("x0", "x1")
    assert read_all(table, select(table)).numbers.tolist() == [[1, 2], [3, 4]]
    assert open_table(str(tmp_path / "t.csv")).columns == ("1", "2")  # header=True: the first line names


# --------------------------------------------------------------------------- one set of checks


def test_bad_cells_are_one_line_naming_file_line_or_row_and_column(tmp_path):
    cases = {
        "nan.csv": ("a,b\n1,2\n3,nan\n", r"nan.csv: line 3 row '3,nan', column 1 \(b\): value nan is not finite"),
        "inf.csv": ("a,b\n1,2\n\n-inf,4\n", r"line 4 row '-inf,4', column 0 \(a\): value -inf is not finite"),
        "huge.csv": ("a,b\n3e300,4\n", r"line 2 row '3e300,4', column 0 \(a\): value 3e\+300 is too large for float32"),
        "text.csv": ("a,b\n1,2\n3,four\n", r"line 3 row '3,four', column 1 \(b\): value 'four' is not a number"),
        "ragged.csv": ("a,b\n1,2\n3,4,5\n", r"line 3 row '3,4,5': has 3 fields, the header has 2; fix: make every row"),
        "empty.csv": ("", r"empty.csv: line 1 \(header\): file is empty or has no header line"),
        "header.csv": ("a,b\n\n", r"header.csv: rows: has no data rows \(only a header, or nothing\)"),
    }
    for name, (text, match) in cases.items():
        (tmp_path / name).write_text(text)
        _refused(tmp_path / name, match)
    (tmp_path / "latin1.csv").write_bytes("a,b\n1,2\n3,größe\n".encode("latin-1"))
    _refused(tmp_path / "latin1.csv", r"line 3: is not UTF-8 text \(byte b'\\xf6' at column 5\); fix: save the file "
             r"as UTF-8")
    (tmp_path / "latin1h.csv").write_bytes("größe,b\n1,2\n".encode("latin-1"))
    _refused(tmp_path / "latin1h.csv", r"line 1 \(header\): is not UTF-8 text")
    _refused(tmp_path / "header.csv", r"line 1 \(header\): no column z; fix: name the columns in the file "
             r"\(it has a, b\)", ["z"])
    (tmp_path / "twice.csv").write_text("a,b,a\n1,2,3\n")
    _refused(tmp_path / "twice.csv", "column a appears more than once", ["a"])


def test_arrays_and_parquet_are_checked_alike(tmp_path):
    rows = _rows()
    rows[17, 2] = np.inf
    paths = _write(tmp_path, rows)
    for ending in (".npy", ".npz"):
        _refused(paths[ending], r"row 17, column 2 \(x2\): value inf is not finite; fix: remove or impute")
    _refused(paths[".parquet"], r"t.parquet: row 17, column 2 \(c\): value inf is not finite; fix: remove or impute")
    pq.write_table(pa.table({"a": pa.array([1.0, None, 3.0]), "b": [1, 2, 3]}), tmp_path / "null.parquet")
    _refused(tmp_path / "null.parquet", r"row 1, column 0 \(a\): value nan is not finite")
    _refused(paths[".parquet"], r"t.parquet: columns: no column z", ["a", "z"])
    raw = pathlib.Path(paths[".parquet"]).read_bytes()
    (tmp_path / "cut.parquet").write_bytes(raw[:len(raw) // 2])
    _refused(tmp_path / "cut.parquet", r"cut.parquet: cannot read as Parquet \(.*\); fix: write the file again")
    for name in ("empty.parquet", "empty.npy"):
        (tmp_path / name).write_bytes(b"")
        _refused(tmp_path / name, f"{name}: file is empty")
    pq.write_table(pa.table({"a": pa.array([], pa.float64())}), tmp_path / "norows.parquet")
    _refused(tmp_path / "norows.parquet", "norows.parquet: rows: has no data rows")
    np.save(tmp_path / "norows.npy", np.zeros((0, 3)))
    _refused(tmp_path / "norows.npy", "norows.npy: rows: has no data rows")
    (tmp_path / "cut.npy").write_bytes(pathlib.Path(paths[".npy"]).read_bytes()[:-40])
    _refused(tmp_path / "cut.npy", r"cut.npy: cannot read as .npy/.npz")
    pq.write_table(pa.table({"when": pa.array([1, 2], pa.timestamp("s")), "v": [1.0, 2.0]}), tmp_path / "t2.parquet")
    _refused(tmp_path / "t2.parquet", r"column 0 \(when\): type timestamp\[\w+\] is not numeric")
    _refused(tmp_path / "t.txt", "t.txt: file name: unsupported format; fix: give a table file: .csv, .npy")


# --------------------------------------------------------------------------- Parquet through every reader


@pytest.fixture(scope="module")
def parquet_ingest(tmp_path_factory):
    """The same 300 rows ingested from a CSV and from a Parquet file (Beam, streamed)."""
    from tfflows.components.config import IngestConfig
    from tfflows.components.ingest import run_ingest

    root = tmp_path_factory.mktemp("parquet_ingest")
    rows = _rows(300, seed=4)
    paths = _write(root, rows)
    runs = {}
    for dataset in ("csv", "parquet"):
        config = IngestConfig(dataset, path=paths[f".{dataset}"], columns=("c", "a"), eval_fraction=0.2, seed=3)
        out = str(root / f"examples_{dataset}")
        runs[dataset] = (run_ingest(config, out), out)
    return rows, runs


def test_parquet_ingests_the_rows_and_splits_of_the_same_csv(parquet_ingest):
    from tfflows.components.ingest import load_split

    rows, runs = parquet_ingest
    (csv_meta, csv_out), (pq_meta, pq_out) = runs["csv"], runs["parquet"]
    assert pq_meta.feature_names == ["c", "a"] and pq_meta.event_dim == 2
    assert pq_meta.split_sizes == csv_meta.split_sizes and sum(pq_meta.split_sizes.values()) == 300
    assert pq_meta.fingerprint == csv_meta.fingerprint  # a row's split is a hash of its values, whatever the format
    for split in ("train", "eval", "test"):
        got, expected = load_split(pq_out, split), load_split(csv_out, split)
        np.testing.assert_array_equal(got[np.lexsort(got.T)], expected[np.lexsort(expected.T)])


def test_parquet_ingest_refuses_bad_rows_and_columns_in_one_line(tmp_path):
    from tfflows.components.config import IngestConfig
    from tfflows.components.ingest import run_ingest

    rows = _rows(40)
    rows[31, 1] = np.nan
    paths = _write(tmp_path, rows)
    cases = [(dict(), r"t.parquet: row 31, column 1 \(b\): value nan is not finite"),
             (dict(columns=("a", "z")), r"t.parquet: columns: no column z; fix: name columns of the file in "
                                         r"ingest.columns \(it has a, b, c\)"),
             (dict(discrete=True, num_levels=4), r"row \d+, column \d \([abc]\): value .* is not an integer level")]
    for settings, match in cases:
        out = tmp_path / "out"
        with pytest.raises(DataError, match=match):
            run_ingest(IngestConfig("parquet", path=paths[".parquet"], **settings), str(out))
        assert not out.exists()


def test_preflight_reads_a_parquet_width_from_its_schema(tmp_path):
    from tfflows.components.config import IngestConfig
    from tfflows.pipeline.preflight import _peek_width

    paths = _write(tmp_path, _rows())
    for ending, dataset in ((".parquet", "parquet"), (".csv", "csv"), (".npy", "npy"), (".npz", "npz")):
        assert _peek_width(IngestConfig(dataset, path=paths[ending])) == 3, ending
    assert _peek_width(IngestConfig("parquet", path=paths[".parquet"], columns=("a",))) == 1


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    from tests.artifact_testing import export_tiny_flow

    return export_tiny_flow(tmp_path_factory.mktemp("tables_model"), 3)[1]


def test_evaluate_and_scores_read_parquet_by_name_in_process_and_on_beam(model, tmp_path):
    from tfflows.pipeline.serving import evaluate_saved_model

    rows = _rows(31).astype(np.float32)
    _write(tmp_path, rows, names=["x0", "x1", "x2"])
    pq.write_table(pa.table({"id": [f"r{i}" for i in range(31)], "x2": rows[:, 2], "x0": rows[:, 0],
                             "x1": rows[:, 1]}), tmp_path / "named.parquet", row_group_size=4)
    reference = evaluate_saved_model(model, str(tmp_path / "t.npy"), str(tmp_path / "s_ref.npy"), chunk_rows=7)
    report = evaluate_saved_model(model, str(tmp_path / "named.parquet"), str(tmp_path / "s.npy"), chunk_rows=7)
    assert "columns: matched by name (x0, x1, x2); ignored, not in the model: id" in report.splitlines()
    np.testing.assert_allclose(np.load(tmp_path / "s.npy"), np.load(tmp_path / "s_ref.npy"), atol=1e-6)
    assert report.splitlines()[2:] == [line.replace("s_ref.npy", "s.npy").replace("t.npy", "named.parquet")
                                       for line in reference.splitlines()[2:]]
    beam = evaluate_saved_model(model, str(tmp_path / "named.parquet"), str(tmp_path / "s_beam.npy"), chunk_rows=7,
                                beam_args=["--runner=DirectRunner"])
    assert beam == report.replace("s.npy", "s_beam.npy")
    np.testing.assert_allclose(np.load(tmp_path / "s_beam.npy"), np.load(tmp_path / "s.npy"), atol=1e-6)
    bad = rows.copy()
    bad[9, 1] = np.nan
    pq.write_table(pa.table({"x0": bad[:, 0], "x1": bad[:, 1], "x2": bad[:, 2]}), tmp_path / "bad.parquet")
    pq.write_table(pa.table({"x0": rows[:, 0], "x1": rows[:, 1]}), tmp_path / "short.parquet")
    for name, message in (("bad.parquet", r"bad.parquet: row 9, column 1 \(x1\): value nan is not finite"),
                          ("short.parquet", r"short.parquet: columns: no column x2; fix: name the model's columns")):
        for beam_args in (None, ["--runner=DirectRunner"]):
            with pytest.raises(DataError, match=message):
                evaluate_saved_model(model, str(tmp_path / name), str(tmp_path / "s_bad.csv"), beam_args=beam_args)
    assert not (tmp_path / "s_bad.csv").exists()


def test_cli_evaluate_with_a_parquet_table(model, tmp_path):
    rows = _rows(12).astype(np.float32)
    pq.write_table(pa.table({"x1": rows[:, 1], "x0": rows[:, 0], "x2": rows[:, 2]}), tmp_path / "rows.parquet")
    proc = subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", "evaluate", "--model", model, "--data",
                           str(tmp_path / "rows.parquet"), "--scores", str(tmp_path / "s.csv")],
                          capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "columns: matched by name (x0, x1, x2)" in proc.stdout and "rows: 12 from" in proc.stdout
    assert len((tmp_path / "s.csv").read_text().splitlines()) == 13


@pytest.mark.slow
def test_cli_run_on_a_parquet_file(tmp_path):
    """`tfflows run --data x.parquet`: ingest, transform, train, evaluate and push by column name."""
    rows = np.random.default_rng(5).normal(size=(300, 2))
    pq.write_table(pa.table({"u": rows[:, 0], "v": rows[:, 1], "label": ["k"] * 300}), tmp_path / "x.parquet")
    proc = subprocess.run([sys.executable, "-m", "tfflows.pipeline.cli", "run", "--data", str(tmp_path / "x.parquet"),
                           "--output", str(tmp_path / "out"), "--epochs", "2", "--set", "ingest.columns=[v, u]",
                           "--set", "train.num_layers=1", "--set", "train.hidden_units=[8]",
                           "--set", "train.jit_compile=false"], capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "SavedModel:" in proc.stdout, proc.stdout[-3000:]
    from tfflows.components.ingest import read_metadata

    [examples] = [p for p in (tmp_path / "out").rglob("dataset_metadata.json")]
    assert read_metadata(str(examples.parent)).feature_names == ["v", "u"]

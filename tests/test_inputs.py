"""What a run consumes (`components.inputs`): content fingerprints of files, folders and globs, and
TFX-style {SPAN}/{VERSION} patterns (the newest span as TFX's own helper picks it, span windows).
Fast: no pipeline runs (the scheduled-retraining test runs them)."""

from __future__ import annotations

import os

import pytest

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.inputs import effective_paths, file_sha256, snapshot_inputs


def _write(path, text: str) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path, "w") as f:
        f.write(text)
    return str(path)


def _csv(path) -> IngestConfig:
    return IngestConfig(dataset="csv", path=str(path))


def test_the_digest_follows_the_content_not_the_time(tmp_path):
    path = _write(tmp_path / "d.csv", "a,b\n1,2\n")
    first = snapshot_inputs(_csv(path))
    assert first.files == ((path, 8, file_sha256(path)),) and first.label == "d.csv" and first.spans == ()
    os.utime(path, (1, 1))  # same bytes, another mtime: the same inputs
    assert snapshot_inputs(_csv(path)).digest == first.digest
    _write(path, "a,b\n1,3\n")  # same size, same path, other bytes
    os.utime(path, (1, 1))
    assert snapshot_inputs(_csv(path)).digest != first.digest


def test_folders_and_globs_cover_every_file(tmp_path):
    _write(tmp_path / "d" / "x.csv", "a\n1\n")
    _write(tmp_path / "d" / "sub" / "y.csv", "a\n2\n")
    folder = snapshot_inputs(IngestConfig(dataset="images", path=str(tmp_path / "d")))
    assert [os.path.basename(f[0]) for f in folder.files] == ["y.csv", "x.csv"] and folder.label == "d"
    pattern = snapshot_inputs(_csv(tmp_path / "d" / "*.csv"))
    assert len(pattern.files) == 1
    _write(tmp_path / "d" / "z.csv", "a\n3\n")  # a new file matching the glob changes the digest
    assert snapshot_inputs(_csv(tmp_path / "d" / "*.csv")).digest != pattern.digest
    assert snapshot_inputs(IngestConfig(dataset="images", path=str(tmp_path / "d"))).digest != folder.digest


def test_sources_without_files_have_no_snapshot(tmp_path):
    assert snapshot_inputs(IngestConfig(dataset="moons")) is None
    assert snapshot_inputs(_csv(tmp_path / "missing.csv")) is None  # the reader says what is missing
    assert snapshot_inputs(_csv("gs://bucket/d.csv")) is None


def _spans(root, names):
    for name in names:
        _write(root / name / "part.csv", f"a,b\n{name},1\n")
    return str(root / "{SPAN}" / "*.csv")


def test_newest_span_is_the_one_tfx_picks(tmp_path):
    from tfx.components.example_gen.utils import calculate_splits_fingerprint_span_and_version
    from tfx.proto import example_gen_pb2

    pattern = _spans(tmp_path, ["0001", "0002", "0010"])
    snapshot = snapshot_inputs(_csv(pattern))
    split = example_gen_pb2.Input.Split(name="single_split", pattern="{SPAN}/*.csv")
    _, tfx_span, tfx_version = calculate_splits_fingerprint_span_and_version(str(tmp_path), [split])
    assert snapshot.spans == (tfx_span,) == (10,) and snapshot.version is tfx_version is None
    assert snapshot.paths == (str(tmp_path / "0010" / "*.csv"),) and snapshot.label == "part.csv-span10"
    window = snapshot_inputs(IngestConfig(dataset="csv", path=pattern, span_window=2))
    assert window.spans == (2, 10) and len(window.files) == 2
    config, paths = effective_paths(IngestConfig(dataset="csv", path=pattern, span_window=2), window)
    assert paths == window.paths and config.path == window.paths[-1]


def test_versions_take_the_newest_of_each_span(tmp_path):
    for span, version in (("1", "1"), ("1", "2"), ("2", "1")):
        _write(tmp_path / f"span-{span}" / f"v{version}.npy", "x")
    pattern = str(tmp_path / "span-{SPAN}" / "v{VERSION}.npy")
    snapshot = snapshot_inputs(IngestConfig(dataset="npy", path=pattern, span_window=2))
    assert snapshot.spans == (1, 2) and snapshot.version == 1
    assert snapshot.paths == (str(tmp_path / "span-1" / "v2.npy"), str(tmp_path / "span-2" / "v1.npy"))
    with pytest.raises(DataError, match="cannot be read together"):  # npy is read whole: one span at a time
        effective_paths(IngestConfig(dataset="npy", path=pattern, span_window=2), snapshot)


def test_span_mistakes_are_one_line_errors(tmp_path):
    with pytest.raises(DataError, match="no span matches"):
        snapshot_inputs(_csv(tmp_path / "{SPAN}" / "*.csv"))
    path = _write(tmp_path / "d.csv", "a\n1\n")
    with pytest.raises(DataError, match="has no {SPAN}"):
        snapshot_inputs(IngestConfig(dataset="csv", path=path, span_window=2))
    from tfflows.components.config import ConfigError, build_config

    with pytest.raises(ConfigError, match="span_window"):
        build_config(IngestConfig, {"dataset": "csv", "span_window": 0})

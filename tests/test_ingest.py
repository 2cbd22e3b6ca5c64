"""Ingestion: loaders (plain functions), Beam executor, bad input, runner selection."""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import pickle

import numpy as np
import pytest

from tfflows.components.config import ConfigError, IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest import load_split, read_metadata, run_ingest
from tfflows.components.ingest import executor as ingest_executor
from tfflows.components.ingest import loaders
from tfflows.components.ingest.runner import DEFAULT_BEAM_ARGS, beam_args, runner_name


# --------------------------------------------------------------------------- helpers


def write_idx(path, array):
    array = np.asarray(array, dtype=np.uint8)
    header = bytes([0, 0, 0x08, array.ndim]) + b"".join(
        int(s).to_bytes(4, "big") for s in array.shape)
    opener = gzip.open if str(path).endswith(".gz") else open
    with opener(path, "wb") as f:
        f.write(header + array.tobytes())


def assert_refused(path, dataset, match, **settings):
    """Loading ``path`` as ``dataset`` (in memory) raises a `DataError` matching ``match``."""
    with pytest.raises(DataError, match=match):
        loaders.load_in_memory(IngestConfig(dataset, path=str(path), **settings))


def sort_rows(x):
    x = np.asarray(x)
    return x[np.lexsort(x.T[::-1])]


def assert_nothing_written(out):
    assert not os.path.exists(out)
    parent = os.path.dirname(out)
    assert not [n for n in os.listdir(parent) if ".tmp-" in n]


def expected_fingerprint(splits, d):
    stats = {}
    for name, x in splits.items():
        x = np.asarray(x, np.float32)
        digests = [int.from_bytes(hashlib.sha256(r.astype("<f4").tobytes()).digest()[:16],
                                  "little") for r in x]
        stats[name] = (len(x), sum(digests))
    return ingest_executor.fingerprint(stats, d)


# --------------------------------------------------------------------------- Beam runs


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("digits") / "examples")
    config = IngestConfig("digits", seed=7, eval_fraction=0.2, test_count=100)
    return config, run_ingest(config, out), out


def test_digits_metadata_and_splits(digits_run):
    config, meta, out = digits_run
    assert read_metadata(out) == meta
    with open(os.path.join(out, "dataset_metadata.json")) as f:
        on_disk = json.load(f)
    assert set(on_disk) == {"name", "event_dim", "feature_names", "discrete", "num_levels",
                            "image_shape", "split_sizes", "fingerprint", "source", "inputs", "context_names",
                            "categorical_names", "context_categorical_names"}
    assert meta.inputs is None  # a bundled dataset has no input files
    assert meta.context_names is None  # no context columns: an unconditional dataset
    assert (meta.name, meta.event_dim, meta.discrete, meta.num_levels, meta.image_shape) == (
        "digits", 64, True, 17, [8, 8])
    assert len(meta.feature_names) == 64
    assert meta.split_sizes == {"train": 1358, "eval": 339, "test": 100}
    expected = loaders.load_in_memory(config).splits
    for split in ("train", "eval", "test"):
        got = load_split(out, split)
        assert got.dtype == np.float32 and got.shape == (meta.split_sizes[split], 64)
        np.testing.assert_array_equal(sort_rows(got), sort_rows(expected[split]))
        files = os.listdir(os.path.join(out, f"Split-{split}"))
        assert files and all(f.endswith(".gz") for f in files)
    assert meta.fingerprint == expected_fingerprint(expected, 64)
    assert meta.fingerprint != expected_fingerprint(
        loaders.load_in_memory(IngestConfig("digits", seed=8, eval_fraction=0.2,
                                            test_count=100)).splits, 64)


@pytest.fixture(scope="module")
def csv_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("csv")
    rng = np.random.RandomState(0)
    data = np.round(rng.normal(size=(300, 3)), 4)
    test = np.round(rng.normal(size=(40, 3)), 4)
    for name, rows in (("train.csv", data), ("test.csv", test)):
        with open(root / name, "w") as f:
            f.write("a, b ,label\n")
            f.writelines(",".join(repr(float(v)) for v in r) + "\n" for r in rows)
    config = IngestConfig("csv", path=str(root / "train.csv"), test_path=str(root / "test.csv"),
                          columns=("label", "a"), eval_fraction=0.25, seed=1)
    out = str(root / "examples")
    return data, test, config, run_ingest(config, out), out


def test_csv_columns_and_hash_split(csv_run):
    data, test, config, meta, out = csv_run
    assert meta.feature_names == ["label", "a"] and meta.event_dim == 2 and not meta.discrete
    assert meta.split_sizes["test"] == 40
    assert meta.split_sizes["train"] + meta.split_sizes["eval"] == 300
    assert 40 <= meta.split_sizes["eval"] <= 110  # about 25% of 300
    np.testing.assert_array_equal(sort_rows(load_split(out, "test")),
                                  sort_rows(test[:, [2, 0]].astype(np.float32)))
    both = np.concatenate([load_split(out, "train"), load_split(out, "eval")])
    np.testing.assert_array_equal(sort_rows(both), sort_rows(data[:, [2, 0]].astype(np.float32)))


@pytest.mark.parametrize("body, fragment", [
    ("a,b\n1,2\n3,x\n", "column 1 (b): value 'x' is not a number"),
    ("a,b\n1,2\n3,4,5\n", "has 3 fields, the header has 2"),
    ("a,b\n1,2\n3,nan\n", "column 1 (b): value nan is not finite"),
])
def test_csv_bad_rows(tmp_path, body, fragment):
    (tmp_path / "d.csv").write_text(body)
    out = str(tmp_path / "out")
    with pytest.raises(DataError) as err:
        run_ingest(IngestConfig("csv", path=str(tmp_path / "d.csv")), out)
    message = str(err.value)
    assert "\n" not in message and str(tmp_path / "d.csv") in message and fragment in message
    assert "fix:" in message
    assert_nothing_written(out)


@pytest.mark.parametrize("settings", [
    dict(discrete=True, num_levels=4),  # a value that is not a level, found while Beam parses
    dict(discrete=True),  # no number of levels
    dict(image_shape=(3,)),  # a shape that does not hold the row
])
def test_streamed_and_in_memory_sources_refuse_alike(tmp_path, settings):
    """A CSV (streamed) and a .npy (in memory) of the same rows fail one check, word for word."""
    rows = np.tile([[1.0, 2.0]], (20, 1))
    rows[13, 1] = 2.5
    np.save(tmp_path / "d.npy", rows)
    (tmp_path / "d.csv").write_text("a,b\n" + "".join(f"{a},{b}\n" for a, b in rows))
    errors = []
    with pytest.raises(DataError) as err:
        loaders.load_in_memory(IngestConfig("npy", path=str(tmp_path / "d.npy"), **settings))
    errors.append(err.value)
    with pytest.raises(DataError) as err:
        run_ingest(IngestConfig("csv", path=str(tmp_path / "d.csv"), **settings), str(tmp_path / "o"))
    errors.append(err.value)
    assert errors[0].problem == errors[1].problem and errors[0].fix == errors[1].fix
    if "num_levels" in settings:
        assert errors[1].problem == "value 2.5 is not an integer level in [0, 3]"
        assert errors[1].where.endswith("column 1 (b)") and errors[0].where.endswith("column 1 (x1)")
    assert_nothing_written(str(tmp_path / "o"))


def test_csv_bad_header_and_columns(tmp_path):
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(DataError, match="empty or has no header"):
        run_ingest(IngestConfig("csv", path=str(tmp_path / "empty.csv")), str(tmp_path / "o"))
    (tmp_path / "d.csv").write_text("a,b\n1,2\n")
    with pytest.raises(DataError, match=r"d\.csv: line 1 \(header\): no column c; fix: name columns of the file in "
                                        r"ingest\.columns \(it has a, b\)"):
        run_ingest(IngestConfig("csv", path=str(tmp_path / "d.csv"), columns=("c",)),
                   str(tmp_path / "o"))
    (tmp_path / "t.csv").write_text("a,b,c\n1,2,3\n")
    with pytest.raises(DataError, match="differs"):
        run_ingest(IngestConfig("csv", path=str(tmp_path / "d.csv"),
                                test_path=str(tmp_path / "t.csv")), str(tmp_path / "o"))
    assert_nothing_written(str(tmp_path / "o"))


def _write_tfrecord(path, rows, key="x"):
    import tensorflow as tf

    with tf.io.TFRecordWriter(str(path), options="GZIP" if str(path).endswith(".gz") else "") as w:
        for r in rows:
            ex = tf.train.Example(features=tf.train.Features(feature={
                key: tf.train.Feature(float_list=tf.train.FloatList(value=list(r)))}))
            w.write(ex.SerializeToString())


def test_tfrecord_source_and_dimension_mismatch(tmp_path):
    rng = np.random.RandomState(1)
    rows = rng.normal(size=(60, 3)).astype(np.float32)
    _write_tfrecord(tmp_path / "a.tfrecord.gz", rows[:30], key="feat")
    _write_tfrecord(tmp_path / "b.tfrecord.gz", rows[30:], key="feat")
    out = str(tmp_path / "out")
    meta = run_ingest(IngestConfig("tfrecord", path=str(tmp_path / "*.tfrecord.gz"),
                                   feature_key="feat", eval_fraction=0.2, test_fraction=0.2),
                      out)
    assert meta.event_dim == 3 and sum(meta.split_sizes.values()) == 60
    got = np.concatenate([load_split(out, s) for s in ("train", "eval", "test")])
    np.testing.assert_array_equal(sort_rows(got), sort_rows(rows))
    _write_tfrecord(tmp_path / "c.tfrecord", rng.normal(size=(5, 4)), key="feat")
    out2 = str(tmp_path / "out2")
    with pytest.raises(DataError, match=r"c\.tfrecord: feature 'feat': a record has 4 values"):
        run_ingest(IngestConfig("tfrecord", path=str(tmp_path / "*.tfrecord*"),
                                feature_key="feat"), out2)
    assert_nothing_written(out2)


# --------------------------------------------------------------------------- loaders


def test_moons_deterministic_and_split_counts():
    a = loaders.load_in_memory(IngestConfig("moons", num_samples=500, seed=3))
    b = loaders.load_in_memory(IngestConfig("moons", num_samples=500, seed=3))
    c = loaders.load_in_memory(IngestConfig("moons", num_samples=500, seed=4))
    assert {k: len(v) for k, v in a.splits.items()} == {"train": 405, "eval": 45, "test": 50}
    for k in a.splits:
        np.testing.assert_array_equal(a.splits[k], b.splits[k])
    assert not np.array_equal(a.splits["train"], c.splits["train"])
    d = loaders.load_in_memory(IngestConfig("moons", num_samples=500, eval_count=7,
                                            test_count=11))
    assert {k: len(v) for k, v in d.splits.items()} == {"train": 482, "eval": 7, "test": 11}
    assert a.feature_names == ["x0", "x1"] and not a.discrete


def test_unshuffled_split_takes_tail(tmp_path):
    x = np.arange(100, dtype=np.float64).reshape(50, 2)
    np.save(tmp_path / "x.npy", x)
    data = loaders.load_in_memory(IngestConfig("npy", path=str(tmp_path / "x.npy"),
                                               shuffle=False, test_count=5, eval_count=3))
    np.testing.assert_array_equal(data.splits["test"], x[45:])
    np.testing.assert_array_equal(data.splits["eval"], x[42:45])
    np.testing.assert_array_equal(data.splits["train"], x[:42])


def test_mnist_default_path_and_real_idx():
    assert loaders.default_mnist_dir() == (
        __import__("pathlib").Path(__file__).resolve().parents[1] / ".." / "shared" / "data"
        / "mnist").resolve()
    if not loaders.default_mnist_dir().is_dir():  # CI and the project's machines have it
        pytest.skip(f"{loaders.default_mnist_dir()} is absent: the checkout has no shared/ beside it")
    data = loaders.load_in_memory(IngestConfig("mnist", max_examples=300))
    assert data.num_levels == 256 and data.discrete and data.image_shape == [28, 28]
    assert sum(len(v) for v in data.splits.values()) == 300
    assert data.splits["train"].shape[1] == 784 and data.splits["train"].max() <= 255


def test_idx_roundtrip_and_bad_files(tmp_path):
    images = np.random.RandomState(0).randint(0, 256, size=(40, 4, 5))
    write_idx(tmp_path / "train-images-idx3-ubyte.gz", images)
    write_idx(tmp_path / "t10k-images-idx3-ubyte", images[:10])
    np.testing.assert_array_equal(loaders.read_idx(str(tmp_path / "train-images-idx3-ubyte.gz")),
                                  images)
    data = loaders.load_in_memory(IngestConfig("mnist", path=str(tmp_path)))
    assert data.image_shape == [4, 5] and len(data.splits["test"]) == 10
    np.testing.assert_array_equal(data.splits["eval"], images[36:].reshape(4, 20))  # last 10%
    raw = (tmp_path / "t10k-images-idx3-ubyte").read_bytes()
    (tmp_path / "trunc-idx3-ubyte").write_bytes(raw[:-7])
    assert_refused(tmp_path / "trunc-idx3-ubyte", "idx",
                   "trunc-idx3-ubyte: data: expected 200 data bytes")
    (tmp_path / "junk-idx3-ubyte").write_bytes(b"\x01\x02")
    with pytest.raises(DataError, match="bad magic"):
        loaders.read_idx(str(tmp_path / "junk-idx3-ubyte"))
    write_idx(tmp_path / "other-idx3-ubyte", images[:5, :, :4])
    assert_refused(tmp_path / "t10k-images-idx3-ubyte", "idx", r"example shape \[4, 4\] differs",
                   test_path=str(tmp_path / "other-idx3-ubyte"))


def test_npy_bad_inputs(tmp_path):
    x = np.random.RandomState(0).normal(size=(30, 3))
    np.save(tmp_path / "ok.npy", x)
    raw = (tmp_path / "ok.npy").read_bytes()
    (tmp_path / "trunc.npy").write_bytes(raw[:-40])
    assert_refused(tmp_path / "trunc.npy", "npy", "trunc.npy: cannot read as .npy")
    (tmp_path / "empty.npy").write_bytes(b"")
    assert_refused(tmp_path / "empty.npy", "npy", "empty.npy: file is empty")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object), allow_pickle=True)
    assert_refused(tmp_path / "obj.npy", "npy", "obj.npy: cannot read")
    bad = x.copy()
    bad[17, 2] = np.inf
    np.save(tmp_path / "inf.npy", bad)
    assert_refused(tmp_path / "inf.npy", "npy", r"inf.npy: row 17, column 2 \(x2\): value inf")
    np.save(tmp_path / "test4.npy", np.zeros((5, 4)))
    assert_refused(tmp_path / "ok.npy", "npy", "test4.npy: test file has 4 features",
                   test_path=str(tmp_path / "test4.npy"))
    np.savez(tmp_path / "arr.npz", data=x)
    data = loaders.load_in_memory(IngestConfig("npz", path=str(tmp_path / "arr.npz")))
    assert data.splits["train"].shape[1] == 3
    assert_refused(tmp_path / "ok.npy", "npy", "discrete data needs a number of levels", discrete=True)
    assert_refused(tmp_path / "ok.npy", "npy", "not an integer level", discrete=True, num_levels=4)


def test_bad_input_writes_nothing(tmp_path):
    x = np.ones((20, 2))
    x[3, 1] = np.nan
    np.save(tmp_path / "nan.npy", x)
    out = str(tmp_path / "out")
    with pytest.raises(DataError, match="row 3, column 1"):
        run_ingest(IngestConfig("npy", path=str(tmp_path / "nan.npy")), out)
    assert_nothing_written(out)


def test_images_folder(tmp_path):
    from PIL import Image

    rng = np.random.RandomState(0)
    imgs = rng.randint(0, 256, size=(12, 3, 4, 3)).astype(np.uint8)
    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, a in enumerate(imgs):
        Image.fromarray(a).save(folder / f"im{i:02d}.png")
    data = loaders.load_in_memory(IngestConfig("images", path=str(folder), shuffle=False,
                                               test_count=2, eval_count=2, flip_augment=True))
    assert data.image_shape == [3, 4, 3] and data.num_levels == 256
    assert len(data.splits["train"]) == 16  # 8 + their flips
    np.testing.assert_array_equal(data.splits["train"][:8], imgs[:8].reshape(8, -1))
    np.testing.assert_array_equal(data.splits["train"][8:], imgs[:8, :, ::-1].reshape(8, -1))
    Image.fromarray(imgs[0, :, :3]).save(folder / "zz_wrong.png")
    with pytest.raises(DataError, match=r"zz_wrong.png: image size \[3, 3, 3\] differs"):
        loaders.load_in_memory(IngestConfig("images", path=str(folder)))


def test_unknown_dataset_and_one_line_error():
    with pytest.raises(ConfigError, match="`dataset` 'mnits' is not a dataset name; fix: use one of") as err:
        IngestConfig("mnits")
    assert "\n" not in str(err.value) and "moons" in str(err.value)
    assert isinstance(err.value, ValueError)
    assert str(DataError("f.csv", "row 2,\ncolumn 3", "bad", "fix it")).count("\n") == 0


# --------------------------------------------------------------------------- benchmarks


def test_power_paper_preprocessing(tmp_path):
    rng = np.random.RandomState(5)
    raw = np.column_stack([rng.uniform(0, 5, 200), rng.uniform(0, 1, 200),
                           rng.uniform(230, 250, 200), rng.uniform(0, 20, 200),
                           rng.randint(0, 40, (200, 3)), rng.randint(0, 1440, 200)])
    (tmp_path / "power").mkdir()
    np.save(tmp_path / "power" / "data.npy", raw)
    data = loaders.load_in_memory(IngestConfig("power", path=str(tmp_path)))
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 162, "eval": 18, "test": 20}
    assert data.feature_names[0] == "global_active_power" and len(data.feature_names) == 6
    shuffled = raw.copy()
    np.random.RandomState(42).shuffle(shuffled)
    clean = shuffled[:, [0, 2, 4, 5, 6, 7]]  # reactive power (1) and intensity (3) dropped
    got = np.concatenate([data.splits["train"], data.splits["eval"], data.splits["test"]])
    noise = got - clean
    assert np.all(noise >= 0)
    for col, eps in enumerate([0.001, 0.01, 1.0, 1.0, 1.0, 0.0]):
        assert noise[:, col].max() <= eps
        assert eps == 0 or noise[:, col].max() > 0.5 * eps
    np.testing.assert_array_equal(noise[:, 5], 0.0)


def test_gas_needs_allow_pickle_and_drops_columns(tmp_path):
    import pandas as pd

    rng = np.random.RandomState(0)
    base = rng.normal(size=(100, 3))
    frame = pd.DataFrame({"Time": np.arange(100.0), "Meth": rng.normal(size=100),
                          "Eth": rng.normal(size=100), "s1": base[:, 0],
                          "s2": base[:, 0] * 2 + 1e-4 * rng.normal(size=100),  # corr > 0.98
                          "s3": base[:, 1], "s4": base[:, 2]})
    (tmp_path / "gas").mkdir()
    frame.to_pickle(tmp_path / "gas" / "ethylene_CO.pickle")
    with pytest.raises(DataError, match="allow_pickle=True"):
        loaders.load_in_memory(IngestConfig("gas", path=str(tmp_path)))
    data = loaders.load_in_memory(IngestConfig("gas", path=str(tmp_path), allow_pickle=True))
    assert data.feature_names == ["s2", "s3", "s4"]  # the first of a correlated pair goes
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 81, "eval": 9, "test": 10}
    np.testing.assert_array_equal(data.splits["test"], frame[["s2", "s3", "s4"]].to_numpy()[90:])


def test_hepmass_paper_preprocessing(tmp_path):
    rng = np.random.RandomState(0)
    n = 60

    def table(extra):
        f = rng.normal(size=(n, 4))
        f[:20, 2] = -5.0  # feature 2: its smallest value repeats 10 times in signal rows
        label = np.array([1, 0] * (n // 2))
        cols = [label[:, None], f] + ([np.full((n, 1), 1000.0)] if extra else [])
        return np.hstack(cols)

    folder = tmp_path / "hepmass"
    folder.mkdir()
    train, test = table(False), table(True)
    header = "# label,f0,f1,f2,f3"
    np.savetxt(folder / "1000_train.csv", train, delimiter=",", header=header[2:], comments="")
    np.savetxt(folder / "1000_test.csv", test, delimiter=",", header=header[2:] + ",mass",
               comments="")
    data = loaders.load_in_memory(IngestConfig("hepmass", path=str(tmp_path)))
    assert data.feature_names == ["f0", "f1", "f3"]
    signal = train[train[:, 0] == 1][:, [1, 2, 4]]
    np.testing.assert_allclose(data.splits["train"], signal[:27], rtol=1e-12)
    np.testing.assert_allclose(data.splits["eval"], signal[27:], rtol=1e-12)  # last 10% of train
    np.testing.assert_allclose(data.splits["test"], test[test[:, 0] == 1][:, [1, 2, 4]],
                               rtol=1e-12)


def test_miniboone_and_bsds300(tmp_path):
    import h5py

    x = np.random.RandomState(0).normal(size=(100, 43))
    np.save(tmp_path / "data.npy", x)
    data = loaders.load_in_memory(IngestConfig("miniboone", path=str(tmp_path / "data.npy")))
    np.testing.assert_array_equal(data.splits["test"], x[90:])
    np.testing.assert_array_equal(data.splits["eval"], x[81:90])
    with h5py.File(tmp_path / "BSDS300.hdf5", "w") as f:
        for name, size in (("train", 20), ("validation", 5), ("test", 6)):
            f[name] = np.random.RandomState(size).uniform(-0.5, 0.5, size=(size, 63))
    data = loaders.load_in_memory(IngestConfig("bsds300", path=str(tmp_path)))
    assert {k: v.shape for k, v in data.splits.items()} == {
        "train": (20, 63), "eval": (5, 63), "test": (6, 63)}
    with h5py.File(tmp_path / "BSDS300.hdf5", "a") as f:
        del f["test"]
        f["test"] = np.zeros((3, 62))
    with pytest.raises(DataError, match="feature counts differ between splits"):
        loaders.load_in_memory(IngestConfig("bsds300", path=str(tmp_path)))


def test_cifar10_binary_and_pickled_batches(tmp_path):
    rng = np.random.RandomState(0)
    batches = {}
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        pixels = rng.randint(0, 256, size=(4, 3072)).astype(np.uint8)
        labels = rng.randint(0, 10, size=(4, 1)).astype(np.uint8)
        batches[name] = pixels
        (tmp_path / f"{name}.bin").write_bytes(np.hstack([labels, pixels]).tobytes())
    data = loaders.load_in_memory(IngestConfig("cifar10", path=str(tmp_path), flip_augment=True))
    assert data.image_shape == [32, 32, 3] and data.num_levels == 256
    assert {k: len(v) for k, v in data.splits.items()} == {"train": 36, "eval": 2, "test": 4}
    first = batches["data_batch_1"][0].reshape(3, 32, 32)  # CHW in the file
    np.testing.assert_array_equal(data.splits["train"][0].reshape(32, 32, 3),
                                  first.transpose(1, 2, 0))
    np.testing.assert_array_equal(data.splits["train"][18].reshape(32, 32, 3),
                                  first.transpose(1, 2, 0)[:, ::-1])
    (tmp_path / "test_batch.bin").write_bytes(b"\x00" * 3000)
    with pytest.raises(DataError, match="test_batch.bin: 3000 bytes is not a whole number"):
        loaders.load_in_memory(IngestConfig("cifar10", path=str(tmp_path)))
    py = tmp_path / "py"
    py.mkdir()
    for name, pixels in batches.items():
        with open(py / name, "wb") as f:
            pickle.dump({"data": pixels, "labels": [0] * 4}, f)
    with pytest.raises(DataError, match="allow_pickle=True"):
        loaders.load_in_memory(IngestConfig("cifar10", path=str(py)))
    data = loaders.load_in_memory(IngestConfig("cifar10", path=str(py), allow_pickle=True))
    np.testing.assert_array_equal(data.splits["test"][0].reshape(32, 32, 3),
                                  batches["test_batch"][0].reshape(3, 32, 32).transpose(1, 2, 0))


# --------------------------------------------------------------------------- runners


def test_runner_selected_by_arguments_only():
    assert runner_name() == "FnApiRunner"
    assert beam_args(["--direct_num_workers=2"])[0] == "--runner=FnApiRunner"
    assert list(DEFAULT_BEAM_ARGS) == beam_args(None)
    assert runner_name(["--runner=DataflowRunner", "--project=p", "--region=europe-west1",
                        "--temp_location=gs://bucket/tmp"]) == "DataflowRunner"
    assert runner_name(["--runner=FlinkRunner", "--flink_master=localhost:8081"]) == "FlinkRunner"
    assert runner_name(["--runner=SparkRunner", "--spark_master_url=spark://h:7077"]) == (
        "SparkRunner")


def test_config_json_roundtrip():
    config = IngestConfig("csv", path="a.csv", columns=["x", "y"], image_shape=[1, 2])
    assert IngestConfig.from_json(config.to_json()) == config
    assert config.columns == ("x", "y")
    with pytest.raises(ValueError, match="eval_fraction"):
        IngestConfig("moons", eval_fraction=1.5)

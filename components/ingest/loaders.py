"""In-memory loaders: bundled datasets, NumPy/IDX/image files and the MAF paper benchmarks.

Every loader returns a `LoadedData`: the rows already split into ``train``/``eval``/``test``
(float32 ``[N, D]`` arrays in the raw feature space) plus what the metadata needs. Splitting
follows `split_rows` for generic sources and the paper's own rules for the benchmarks
(`gpapamak/maf`, ``datasets/*.py``): test = the last 10% of the rows, eval = the last 10% of
the rest, after a ``RandomState(42)`` shuffle for POWER only.

Streamed sources (CSV, TFRecord) live in `components.ingest.streaming`.
"""

from __future__ import annotations

import dataclasses
import glob
import gzip
import os
import pathlib
import pickle
from collections import Counter
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError

__all__ = [
    "LoadedData",
    "SPLITS",
    "check_finite",
    "default_mnist_dir",
    "load_in_memory",
    "read_idx",
    "split_rows",
    "tail_split",
]

SPLITS = ("train", "eval", "test")


@dataclasses.dataclass
class LoadedData:
    """Rows of one dataset, split, with what `DatasetMetadata` records about them."""

    splits: Dict[str, np.ndarray]
    feature_names: List[str]
    discrete: bool
    num_levels: Optional[int]
    image_shape: Optional[List[int]]
    source: str


# --------------------------------------------------------------------------- helpers


def default_mnist_dir() -> pathlib.Path:
    """``<repo>/../shared/data/mnist``: where the project keeps the offline MNIST IDX files."""
    repo = pathlib.Path(__file__).resolve().parents[2]
    return (repo / ".." / "shared" / "data" / "mnist").resolve()


def check_finite(x: np.ndarray, source: str, feature_names: Optional[Sequence[str]] = None,
                 row_offset: int = 0) -> None:
    """Raises `DataError` naming the first row and column holding NaN or +-inf."""
    bad = ~np.isfinite(x)
    if bad.any():
        row, col = (int(i) for i in np.argwhere(bad)[0])
        name = feature_names[col] if feature_names is not None else str(col)
        raise DataError(
            source, f"row {row + row_offset}, column {col} ({name})",
            f"value {float(x[row, col])!r} is not finite",
            "remove or impute NaN/inf values before ingesting")


def _as_2d(x: np.ndarray, source: str) -> Tuple[np.ndarray, Optional[List[int]]]:
    if x.ndim == 0 or x.shape[0] == 0:
        raise DataError(source, "", f"no rows (array shape {x.shape})",
                        "pass a file holding at least one example")
    if x.dtype.kind not in "biuf":
        raise DataError(source, "", f"array dtype {x.dtype} is not numeric",
                        "save a numeric (int or float) array")
    if x.ndim == 1:
        return x[:, None], None
    if x.ndim == 2:
        return x, None
    return x.reshape(x.shape[0], -1), [int(s) for s in x.shape[1:]]


def _split_counts(n: int, config: IngestConfig, has_test: bool) -> Tuple[int, int]:
    n_test = 0 if has_test else (
        config.test_count if config.test_count is not None else int(config.test_fraction * n))
    rest = n - n_test
    n_eval = config.eval_count if config.eval_count is not None else int(config.eval_fraction * rest)
    return n_test, n_eval


def tail_split(x: np.ndarray, n_test: int, n_eval: int) -> Dict[str, np.ndarray]:
    """The paper's rule: test = last ``n_test`` rows, eval = last ``n_eval`` of the rest."""
    test = x[len(x) - n_test:]
    rest = x[:len(x) - n_test]
    return {"train": rest[:len(rest) - n_eval], "eval": rest[len(rest) - n_eval:], "test": test}


def split_rows(x: np.ndarray, config: IngestConfig, source: str,
               x_test: Optional[np.ndarray] = None) -> Dict[str, np.ndarray]:
    """Generic split: optional seeded shuffle, then test and eval rows from the end.

    With ``x_test`` given, it is the test split and only eval is cut from ``x``.
    """
    n_test, n_eval = _split_counts(len(x), config, x_test is not None)
    if n_test + n_eval >= len(x):
        raise DataError(source, "splits", f"{len(x)} rows leave no train rows with "
                        f"{n_eval} eval and {n_test} test rows",
                        "lower eval/test counts or fractions or ingest more rows")
    if config.shuffle:
        x = x[np.random.RandomState(config.seed).permutation(len(x))]
    splits = tail_split(x, n_test, n_eval)
    if x_test is not None:
        splits["test"] = x_test
    return splits


def _resolve(path: Optional[str], *candidates: str, what: str) -> str:
    """First existing file among ``path`` itself and ``path/candidate``."""
    if path is None:
        raise DataError(what, "IngestConfig.path", "no path given",
                        "set IngestConfig.path to the file or folder holding the data")
    if os.path.isfile(path):
        return path
    for candidate in candidates:
        full = os.path.join(path, candidate)
        if os.path.isfile(full):
            return full
    raise DataError(path, "", f"no {what} file found (looked for {', '.join(candidates)})",
                    "point IngestConfig.path at the file or at the folder that holds it")


def _load_npy(path: str, key: Optional[str] = None) -> np.ndarray:
    """np.load with allow_pickle=False always; truncated or object files become DataError."""
    if not os.path.isfile(path):
        raise DataError(path, "", "file not found", "check IngestConfig.path")
    if os.path.getsize(path) == 0:
        raise DataError(path, "", "file is empty", "re-create the file")
    try:
        loaded = np.load(path, allow_pickle=False)
        if isinstance(loaded, np.lib.npyio.NpzFile):
            with loaded:
                names = list(loaded.files)
                if key is None:
                    key = names[0] if len(names) == 1 else "x"
                if key not in names:
                    raise DataError(path, f"array {key!r}", f"not in the archive (has {names})",
                                    "set IngestConfig.feature_key to one of the array names")
                return loaded[key]
        return np.asarray(loaded)
    except DataError:
        raise
    except (ValueError, EOFError, OSError) as err:
        reason = str(err).splitlines()[0] if str(err) else type(err).__name__
        raise DataError(path, "", f"cannot read as .npy/.npz ({reason})",
                        "re-save it with numpy.save of a numeric array (truncated or "
                        "pickled object arrays are refused)") from None


# --------------------------------------------------------------------------- IDX


def read_idx(path: str) -> np.ndarray:
    """Reads an IDX file (``*-idx3-ubyte``, optionally gzipped) into an array of its shape."""
    if not os.path.isfile(path):
        raise DataError(path, "", "file not found", "check the IDX path")
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError) as err:
        raise DataError(path, "", f"cannot read ({err})",
                        "re-download or re-compress the file (it looks truncated)") from None
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DataError(path, "header", "not an IDX file (bad magic number)",
                        "pass an IDX file such as t10k-images-idx3-ubyte.gz")
    dtypes = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}
    if raw[2] not in dtypes:
        raise DataError(path, "header", f"unknown IDX type code {raw[2]:#x}",
                        "pass an IDX file of a standard type")
    ndim = raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(path, "header", "file ends inside the header",
                        "re-download the file (it is truncated)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    expected = int(np.prod(shape)) * dtype.itemsize
    if len(raw) - header != expected:
        raise DataError(path, "data", f"expected {expected} data bytes for shape {shape}, "
                        f"found {len(raw) - header}",
                        "re-download the file (it is truncated or padded)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def _idx_rows(path: str) -> Tuple[np.ndarray, List[int]]:
    images = read_idx(path)
    if images.ndim < 2 or images.shape[0] == 0:
        raise DataError(path, "header", f"shape {images.shape} holds no examples",
                        "pass an IDX file of examples (first dimension = count)")
    shape = [int(s) for s in images.shape[1:]] or [1]
    return images.reshape(images.shape[0], -1), shape


# --------------------------------------------------------------------------- bundled


def _load_moons(config: IngestConfig) -> LoadedData:
    from sklearn.datasets import make_moons

    x, _ = make_moons(n_samples=config.num_samples, noise=config.noise,
                      random_state=config.seed)
    return LoadedData(split_rows(x, config, "moons"), ["x0", "x1"], False, None, None,
                      "sklearn.datasets.make_moons")


def _load_digits(config: IngestConfig) -> LoadedData:
    from sklearn.datasets import load_digits

    x = _limit(load_digits().data, config)
    names = [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    return LoadedData(split_rows(x, config, "digits"), names, True, 17, [8, 8],
                      "sklearn.datasets.load_digits")


def _image_names(shape: Sequence[int]) -> List[str]:
    return ["pixel_" + "_".join(str(i) for i in idx) for idx in np.ndindex(*shape)]


def _load_mnist(config: IngestConfig) -> LoadedData:
    folder = config.path or str(default_mnist_dir())
    if os.path.isfile(folder):
        return _load_idx(config, folder)
    find = lambda stem: next((os.path.join(folder, stem + ext) for ext in (".gz", "")  # noqa: E731
                              if os.path.isfile(os.path.join(folder, stem + ext))), None)
    train, test = find("train-images-idx3-ubyte"), find("t10k-images-idx3-ubyte")
    if train is None and test is None:
        raise DataError(folder, "", "no train-images-idx3-ubyte[.gz] or "
                        "t10k-images-idx3-ubyte[.gz] found",
                        "set IngestConfig.path to the folder holding the MNIST IDX files")
    if train is None:  # Only the test set is available offline: split it like any file.
        return _load_idx(config, test)
    x_train, shape = _idx_rows(train)
    x_test, test_shape = _idx_rows(test) if test else (None, shape)
    if test_shape != shape:
        raise DataError(test, "", f"image shape {test_shape} differs from train {shape}",
                        "use train and test files of the same dataset")
    x_train = _limit(x_train, config)
    # The paper's split: the last 10,000 train images are the validation set (50k/10k/10k).
    n_eval = config.eval_count if config.eval_count is not None else (
        10000 if len(x_train) == 60000 else int(config.eval_fraction * len(x_train)))
    splits = tail_split(x_train, 0, n_eval)
    if x_test is not None:
        splits["test"] = x_test
    else:
        splits = split_rows(x_train, dataclasses.replace(config, shuffle=False), train)
    return LoadedData(splits, _image_names(shape), True, 256, shape, folder)


# --------------------------------------------------------------------------- user files


def _limit(x: np.ndarray, config: IngestConfig) -> np.ndarray:
    return x if config.max_examples is None else x[:config.max_examples]


def _user_meta(config: IngestConfig, d: int, shape: Optional[List[int]], source: str,
               default_discrete: bool, default_levels: Optional[int]):
    discrete = default_discrete if config.discrete is None else config.discrete
    levels = config.num_levels if config.num_levels is not None else (
        default_levels if discrete else None)
    if discrete and not levels:
        raise DataError(source, "IngestConfig.num_levels", "discrete data needs a number of "
                        "levels", "set IngestConfig.num_levels (e.g. 256 for 8-bit images)")
    image_shape = list(config.image_shape) if config.image_shape else shape
    if image_shape is not None and int(np.prod(image_shape)) != d:
        raise DataError(source, "IngestConfig.image_shape",
                        f"shape {image_shape} does not hold {d} features",
                        "give an image_shape whose product is the number of features")
    return discrete, (int(levels) if discrete else None), image_shape


def _check_levels(splits: Dict[str, np.ndarray], levels: Optional[int], source: str) -> None:
    if levels is None:
        return
    for name, x in splits.items():
        bad = (x < 0) | (x > levels - 1) | (x != np.floor(x))
        if bad.any():
            row, col = (int(i) for i in np.argwhere(bad)[0])
            raise DataError(source, f"{name} row {row}, column {col}",
                            f"value {float(x[row, col])!r} is not an integer level in "
                            f"[0, {levels - 1}]",
                            "declare the data continuous (discrete=False) or fix num_levels")


def _finish_user(config: IngestConfig, x: np.ndarray, shape: Optional[List[int]], source: str,
                 x_test: Optional[np.ndarray] = None, default_discrete: bool = False,
                 default_levels: Optional[int] = None,
                 names: Optional[List[str]] = None) -> LoadedData:
    x = _limit(x, config)
    d = x.shape[1]
    discrete, levels, image_shape = _user_meta(config, d, shape, source, default_discrete,
                                               default_levels)
    names = names or (_image_names(image_shape) if image_shape else [f"x{i}" for i in range(d)])
    check_finite(x, source, names)
    if x_test is not None:
        if x_test.shape[1] != d:
            raise DataError(config.test_path, "", f"test file has {x_test.shape[1]} features, "
                            f"{source} has {d}", "use train and test files of the same dimension")
        check_finite(x_test, config.test_path, names)
    splits = split_rows(x, config, source, x_test)
    if config.flip_augment:
        splits["train"] = _with_flips(splits["train"], image_shape, source)
    _check_levels(splits, levels, source)
    return LoadedData(splits, names, discrete, levels, image_shape, source)


def _with_flips(x: np.ndarray, image_shape: Optional[List[int]], source: str) -> np.ndarray:
    if not image_shape or len(image_shape) not in (2, 3):
        raise DataError(source, "IngestConfig.flip_augment", "horizontal flips need images",
                        "set image_shape (H, W) or (H, W, C), or turn flip_augment off")
    flipped = x.reshape([-1] + list(image_shape))[:, :, ::-1].reshape(x.shape)
    return np.concatenate([x, flipped], axis=0)


def _load_npy_source(config: IngestConfig) -> LoadedData:
    path = config.path
    x, shape = _as_2d(_load_npy(path, config.feature_key), path)
    x_test = None
    if config.test_path:
        x_test, test_shape = _as_2d(_load_npy(config.test_path, config.feature_key),
                                    config.test_path)
        if test_shape != shape:
            raise DataError(config.test_path, "", f"example shape {test_shape} differs "
                            f"from {shape} in {path}", "use files of the same dimension")
    return _finish_user(config, x.astype(np.float64), shape, path, x_test)


def _load_idx(config: IngestConfig, path: Optional[str] = None) -> LoadedData:
    path = path or config.path
    x, shape = _idx_rows(path)
    x_test = None
    if config.test_path:
        x_test, test_shape = _idx_rows(config.test_path)
        if test_shape != shape:
            raise DataError(config.test_path, "", f"example shape {test_shape} differs from "
                            f"{shape} in {path}", "use IDX files of the same image size")
    levels = 256 if x.dtype == np.uint8 else None
    return _finish_user(config, x.astype(np.float64), shape, path, x_test,
                        default_discrete=levels is not None, default_levels=levels)


def _load_images(config: IngestConfig) -> LoadedData:
    from PIL import Image

    folder = config.path
    if not folder or not os.path.isdir(folder):
        raise DataError(folder, "", "not a folder", "set IngestConfig.path to a folder of images")
    files = sorted(f for f in glob.glob(os.path.join(folder, "*"))
                   if f.lower().endswith((".png", ".jpg", ".jpeg")))
    if not files:
        raise DataError(folder, "", "no .png/.jpg/.jpeg files", "put the images in this folder")
    rows, shape = [], None
    for f in files:
        try:
            with Image.open(f) as img:
                if img.mode not in ("L", "RGB"):
                    raise DataError(f, "", f"image mode {img.mode} is not 8-bit grey or RGB",
                                    "convert the images to 8-bit greyscale (L) or RGB")
                a = np.asarray(img, dtype=np.uint8)
        except DataError:
            raise
        except OSError as err:
            raise DataError(f, "", f"cannot decode image ({err})",
                            "remove or re-save the file") from None
        if shape is None:
            shape = list(a.shape)
        elif list(a.shape) != shape:
            raise DataError(f, "", f"image size {list(a.shape)} differs from {shape} of "
                            f"{os.path.basename(files[0])}",
                            "resize all images to one size (and one colour mode)")
        rows.append(a.reshape(-1))
    return _finish_user(config, np.stack(rows).astype(np.float64), shape, folder,
                        default_discrete=True, default_levels=256)


# --------------------------------------------------------------------------- benchmarks


def _paper_split(x: np.ndarray) -> Dict[str, np.ndarray]:
    n_test = int(0.1 * x.shape[0])
    n_eval = int(0.1 * (x.shape[0] - n_test))
    return tail_split(x, n_test, n_eval)


def _require_columns(x: np.ndarray, n: int, path: str, what: str) -> None:
    if x.ndim != 2 or x.shape[1] != n:
        raise DataError(path, "", f"expected a 2-D array with {n} columns ({what}), "
                        f"got shape {x.shape}", f"pass the original {what} file")


POWER_COLUMNS = ["global_active_power", "voltage", "sub_metering_1", "sub_metering_2",
                 "sub_metering_3", "time"]


def _load_power(config: IngestConfig) -> LoadedData:
    """POWER: shuffle (seed 42), drop reactive power and intensity, add noise, tail splits."""
    path = _resolve(config.path, "power/data.npy", "data.npy", what="POWER data.npy")
    data = _load_npy(path).astype(np.float64)
    _require_columns(data, 8, path, "POWER data.npy (7 measurements + minute of day)")
    check_finite(data, path)
    rng = np.random.RandomState(42)
    rng.shuffle(data)
    n = data.shape[0]
    data = np.delete(data, 3, axis=1)  # global intensity
    data = np.delete(data, 1, axis=1)  # global reactive power
    voltage_noise = 0.01 * rng.rand(n, 1)  # draw order as in the paper's code
    gap_noise = 0.001 * rng.rand(n, 1)
    sm_noise = rng.rand(n, 3)
    time_noise = np.zeros((n, 1))
    data = data + np.hstack((gap_noise, voltage_noise, sm_noise, time_noise))
    return LoadedData(_paper_split(_limit(data, config)), POWER_COLUMNS, False, None, None, path)


def _load_gas(config: IngestConfig) -> LoadedData:
    """GAS: pandas pickle; drop Meth, Eth, Time, then columns correlated > 0.98; tail splits."""
    path = _resolve(config.path, "gas/ethylene_CO.pickle", "ethylene_CO.pickle",
                    what="GAS ethylene_CO.pickle")
    if not config.allow_pickle:
        raise DataError(path, "", "GAS is a pandas pickle, which can run code when read",
                        "set IngestConfig.allow_pickle=True if you trust this file")
    import pandas as pd

    try:
        data = pd.read_pickle(path)
    except Exception as err:  # pickle raises many types on a bad file
        raise DataError(path, "", f"cannot unpickle ({type(err).__name__})",
                        "pass the original ethylene_CO.pickle") from None
    missing = [c for c in ("Meth", "Eth", "Time") if c not in data.columns]
    if missing:
        raise DataError(path, f"columns {missing}", "missing from the GAS table",
                        "pass the original ethylene_CO.pickle")
    data = data.drop(columns=["Meth", "Eth", "Time"])
    while True:
        counts = (data.corr() > 0.98).to_numpy().sum(axis=1)
        if not np.any(counts > 1):
            break
        data = data.drop(columns=data.columns[int(np.where(counts > 1)[0][0])])
    x = data.to_numpy(dtype=np.float64)
    check_finite(x, path, [str(c) for c in data.columns])
    return LoadedData(_paper_split(_limit(x, config)), [str(c) for c in data.columns], False,
                      None, None, path)


def _hepmass_drop_features(x: np.ndarray) -> List[int]:
    """Features the paper drops: the count of the feature's *smallest* value exceeds 5.

    This is what the paper's code computes (``sorted(Counter(f).items())[0]``): the count of
    the lowest value, which for HEPMASS flags the features with a spike at their minimum.
    """
    drop = []
    for j in range(x.shape[1]):
        smallest_count = sorted(Counter(x[:, j].tolist()).items())[0][1]
        if smallest_count > 5:
            drop.append(j)
    return drop


def _load_hepmass(config: IngestConfig) -> LoadedData:
    """HEPMASS: signal rows of 1000_train/1000_test, drop label (+ test's extra column)."""
    import pandas as pd

    folder = config.path
    if folder and os.path.isdir(os.path.join(folder, "hepmass")):
        folder = os.path.join(folder, "hepmass")
    train_path = _resolve(folder, "1000_train.csv", what="HEPMASS 1000_train.csv")
    test_path = _resolve(folder, "1000_test.csv", what="HEPMASS 1000_test.csv")
    frames = []
    for path in (train_path, test_path):
        try:
            frame = pd.read_csv(path, index_col=False)
        except Exception as err:
            raise DataError(path, "", f"cannot parse CSV ({str(err).splitlines()[0]})",
                            "pass the original HEPMASS CSV file") from None
        bad = [c for c in frame.columns if frame[c].dtype.kind not in "biuf"]
        if bad:
            col = bad[0]
            row = int(pd.to_numeric(frame[col], errors="coerce").isna().to_numpy().argmax())
            raise DataError(path, f"row {row + 2}, column {col!r}",
                            f"value {frame[col].iloc[row]!r} is not numeric",
                            "fix or remove that row")
        frames.append(frame)
    train, test = frames
    train = train[train[train.columns[0]] == 1].drop(columns=train.columns[0])
    test = test[test[test.columns[0]] == 1].drop(columns=test.columns[0])
    test = test.drop(columns=test.columns[-1])  # the test file has one extra last column
    if train.shape[1] != test.shape[1]:
        raise DataError(test_path, "", f"{test.shape[1]} features after dropping the label "
                        f"and last column, train has {train.shape[1]}",
                        "pass the original 1000_test.csv (it has one extra column)")
    x_train = train.to_numpy(dtype=np.float64)
    x_test = test.to_numpy(dtype=np.float64)
    names = [str(c).strip() for c in train.columns]
    check_finite(x_train, train_path, names)
    check_finite(x_test, test_path, names)
    drop = _hepmass_drop_features(x_train)
    keep = [j for j in range(x_train.shape[1]) if j not in drop]
    x_train, x_test = _limit(x_train[:, keep], config), x_test[:, keep]
    n_eval = int(0.1 * x_train.shape[0])
    splits = tail_split(x_train, 0, n_eval)
    splits["test"] = x_test
    return LoadedData(splits, [names[j] for j in keep], False, None, None, folder)


def _load_miniboone(config: IngestConfig) -> LoadedData:
    """MINIBOONE: the cleaned data.npy (N x 43); tail splits."""
    path = _resolve(config.path, "miniboone/data.npy", "data.npy", what="MINIBOONE data.npy")
    x, _ = _as_2d(_load_npy(path), path)
    check_finite(x, path)
    names = [f"x{i}" for i in range(x.shape[1])]
    return LoadedData(_paper_split(_limit(x.astype(np.float64), config)), names, False, None,
                      None, path)


def _load_bsds300(config: IngestConfig) -> LoadedData:
    """BSDS300: the hdf5 file's train/validation/test datasets, used as stored (D = 63)."""
    import h5py

    path = _resolve(config.path, "BSDS300/BSDS300.hdf5", "BSDS300.hdf5", what="BSDS300.hdf5")
    splits = {}
    try:
        with h5py.File(path, "r") as f:
            for ours, theirs in (("train", "train"), ("eval", "validation"), ("test", "test")):
                if theirs not in f:
                    raise DataError(path, f"dataset {theirs!r}", "missing from the file",
                                    "pass the original BSDS300.hdf5")
                splits[ours] = np.asarray(f[theirs], dtype=np.float64)
    except DataError:
        raise
    except OSError as err:
        raise DataError(path, "", f"cannot read HDF5 ({err})",
                        "pass the original BSDS300.hdf5 (it looks truncated)") from None
    dims = {k: v.shape[1] if v.ndim == 2 else None for k, v in splits.items()}
    if len(set(dims.values())) != 1 or None in dims.values():
        raise DataError(path, "splits", f"feature counts differ between splits {dims}",
                        "pass the original BSDS300.hdf5")
    splits["train"] = _limit(splits["train"], config)
    for name, x in splits.items():
        check_finite(x, f"{path}[{name}]")
    d = splits["train"].shape[1]
    return LoadedData(splits, [f"pixel_{i}" for i in range(d)], False, None, None, path)


def _cifar_batches(folder: str, allow_pickle: bool) -> Tuple[np.ndarray, np.ndarray, str]:
    """Train (50k) and test (10k) rows, channels last, from binary or python batches."""
    for sub in ("", "cifar10", "cifar-10-batches-bin", "cifar-10-batches-py"):
        base = os.path.join(folder, sub)
        if os.path.isfile(os.path.join(base, "data_batch_1.bin")):
            return (np.concatenate([_cifar_bin(os.path.join(base, f"data_batch_{i}.bin"))
                                    for i in range(1, 6)]),
                    _cifar_bin(os.path.join(base, "test_batch.bin")), base)
        if os.path.isfile(os.path.join(base, "data_batch_1")):
            if not allow_pickle:
                raise DataError(os.path.join(base, "data_batch_1"), "",
                                "CIFAR-10 python batches are pickles, which can run code",
                                "set IngestConfig.allow_pickle=True if you trust them, or use "
                                "the binary batches (data_batch_1.bin ...)")
            return (np.concatenate([_cifar_py(os.path.join(base, f"data_batch_{i}"))
                                    for i in range(1, 6)]),
                    _cifar_py(os.path.join(base, "test_batch")), base)
    raise DataError(folder, "", "no CIFAR-10 batches (data_batch_1.bin or data_batch_1)",
                    "set IngestConfig.path to the folder of the CIFAR-10 batches")


def _chw_to_hwc(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1).reshape(-1, 3072)


def _cifar_bin(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(path, "", "file not found", "put all six CIFAR-10 batches in the folder")
    raw = np.fromfile(path, dtype=np.uint8)
    if raw.size == 0 or raw.size % 3073:
        raise DataError(path, "", f"{raw.size} bytes is not a whole number of 3073-byte "
                        "records", "re-download the batch (it is truncated)")
    return _chw_to_hwc(raw.reshape(-1, 3073)[:, 1:])


def _cifar_py(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise DataError(path, "", "file not found", "put all six CIFAR-10 batches in the folder")
    try:
        with open(path, "rb") as f:
            batch = pickle.load(f, encoding="latin1")
        data = np.asarray(batch["data"], dtype=np.uint8)
    except Exception as err:
        raise DataError(path, "", f"cannot unpickle CIFAR-10 batch ({type(err).__name__})",
                        "re-download the batch") from None
    if data.ndim != 2 or data.shape[1] != 3072:
        raise DataError(path, "field 'data'", f"shape {data.shape} is not [N, 3072]",
                        "pass an original CIFAR-10 python batch")
    return _chw_to_hwc(data)


def _load_cifar10(config: IngestConfig) -> LoadedData:
    """CIFAR-10: last 10% of train for eval; optional horizontal flips of train (paper)."""
    x_train, x_test, base = _cifar_batches(config.path or ".", config.allow_pickle)
    x_train = _limit(x_train.astype(np.float64), config)
    splits = tail_split(x_train, 0, len(x_train) - int(0.9 * len(x_train)))
    splits["test"] = x_test.astype(np.float64)
    if config.flip_augment:
        splits["train"] = _with_flips(splits["train"], [32, 32, 3], base)
    return LoadedData(splits, _image_names([32, 32, 3]), True, 256, [32, 32, 3], base)


_IN_MEMORY: Dict[str, Callable[[IngestConfig], LoadedData]] = {
    "moons": _load_moons,
    "digits": _load_digits,
    "mnist": _load_mnist,
    "npy": _load_npy_source,
    "npz": _load_npy_source,
    "idx": _load_idx,
    "images": _load_images,
    "power": _load_power,
    "gas": _load_gas,
    "hepmass": _load_hepmass,
    "miniboone": _load_miniboone,
    "bsds300": _load_bsds300,
    "cifar10": _load_cifar10,
}


def load_in_memory(config: IngestConfig) -> LoadedData:
    """Loads and splits an in-memory source; raises `DataError` on bad input."""
    if config.dataset not in _IN_MEMORY:
        raise DataError(f"dataset {config.dataset!r}", "", "not an in-memory source",
                        f"use one of {', '.join(_IN_MEMORY)}")
    if config.dataset in ("npy", "npz", "idx", "images") and not config.path:
        raise DataError(config.dataset, "IngestConfig.path", "no path given",
                        "set IngestConfig.path to the input file or folder")
    data = _IN_MEMORY[config.dataset](config)
    for name in SPLITS:
        if len(data.splits[name]) == 0:
            raise DataError(data.source, f"split {name!r}", "is empty",
                            "ingest more rows or raise the eval/test fraction or count")
    return data

"""The MAF paper's six benchmarks, read with the paper's preprocessing and split rules.

Following `gpapamak/maf` (``datasets/*.py``): test = the last 10% of the rows, eval = the last 10%
of the rest (`_paper_split`), after a ``RandomState(42)`` shuffle for POWER only; HEPMASS, BSDS300
and CIFAR-10 come with their own test (and BSDS300 eval) rows.
"""

from __future__ import annotations

import os
import pickle
from collections import Counter
from typing import Callable, Dict, List, Optional, Tuple

import h5py
import numpy as np
import pandas as pd

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest.sources.files import check_finite, image_names, read_array, with_flips
from tfflows.components.ingest.sources.splits import LoadedData, limit_rows, tail_split
from tfflows.components.tables.reader import open_table, read_all, select

__all__ = ["LOADERS", "POWER_COLUMNS"]


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


def _paper_split(x: np.ndarray) -> Dict[str, np.ndarray]:
    """Test = the last 10% of the rows, eval = the last 10% of the rest."""
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
    data, _ = read_array(path)
    _require_columns(data, 8, path, "POWER data.npy (7 measurements + minute of day)")
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
    return LoadedData(_paper_split(limit_rows(data, config)), POWER_COLUMNS, False, None, None, path)


def _load_gas(config: IngestConfig) -> LoadedData:
    """GAS: pandas pickle; drop Meth, Eth, Time, then columns correlated > 0.98; tail splits."""
    path = _resolve(config.path, "gas/ethylene_CO.pickle", "ethylene_CO.pickle",
                    what="GAS ethylene_CO.pickle")
    if not config.allow_pickle:
        raise DataError(path, "", "GAS is a pandas pickle, which can run code when read",
                        "set IngestConfig.allow_pickle=True if you trust this file")
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
    return LoadedData(_paper_split(limit_rows(x, config)), [str(c) for c in data.columns], False,
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
    folder = config.path
    if folder and os.path.isdir(os.path.join(folder, "hepmass")):
        folder = os.path.join(folder, "hepmass")
    train_path = _resolve(folder, "1000_train.csv", what="HEPMASS 1000_train.csv")
    test_path = _resolve(folder, "1000_test.csv", what="HEPMASS 1000_test.csv")
    assert folder is not None  # _resolve refuses a missing path
    tables = [open_table(path) for path in (train_path, test_path)]
    x_train, x_test = (read_all(table, select(table)).numbers for table in tables)  # checked: numbers, finite
    x_train = x_train[x_train[:, 0] == 1][:, 1:]  # signal rows, without the label
    x_test = x_test[x_test[:, 0] == 1][:, 1:-1]  # the test file has one extra last column
    if x_train.shape[1] != x_test.shape[1]:
        raise DataError(test_path, "", f"{x_test.shape[1]} features after dropping the label "
                        f"and last column, train has {x_train.shape[1]}",
                        "pass the original 1000_test.csv (it has one extra column)")
    names = list(tables[0].columns[1:])
    drop = _hepmass_drop_features(x_train)
    keep = [j for j in range(x_train.shape[1]) if j not in drop]
    x_train, x_test = limit_rows(x_train[:, keep], config), x_test[:, keep]
    n_eval = int(0.1 * x_train.shape[0])
    splits = tail_split(x_train, 0, n_eval)
    splits["test"] = x_test
    return LoadedData(splits, [names[j] for j in keep], False, None, None, folder)


def _load_miniboone(config: IngestConfig) -> LoadedData:
    """MINIBOONE: the cleaned data.npy (N x 43); tail splits."""
    path = _resolve(config.path, "miniboone/data.npy", "data.npy", what="MINIBOONE data.npy")
    x, _ = read_array(path)
    names = [f"x{i}" for i in range(x.shape[1])]
    return LoadedData(_paper_split(limit_rows(x, config)), names, False, None,
                      None, path)


def _load_bsds300(config: IngestConfig) -> LoadedData:
    """BSDS300: the hdf5 file's train/validation/test datasets, used as stored (D = 63)."""
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
    splits["train"] = limit_rows(splits["train"], config)
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
    x_train = limit_rows(x_train.astype(np.float64), config)
    splits = tail_split(x_train, 0, len(x_train) - int(0.9 * len(x_train)))
    splits["test"] = x_test.astype(np.float64)
    if config.flip_augment:
        splits["train"] = with_flips(splits["train"], [32, 32, 3], base)
    return LoadedData(splits, image_names([32, 32, 3]), True, 256, [32, 32, 3], base)


LOADERS: Dict[str, Callable[[IngestConfig], LoadedData]] = {
    "power": _load_power,
    "gas": _load_gas,
    "hepmass": _load_hepmass,
    "miniboone": _load_miniboone,
    "bsds300": _load_bsds300,
    "cifar10": _load_cifar10,
}

"""Offline datasets: sklearn's two moons and 8x8 digits, and MNIST from the shared data folder."""

from __future__ import annotations

import dataclasses
import os
import pathlib
from typing import Callable, Dict

import numpy as np
from sklearn.datasets import load_digits, make_moons

from tfflows.components.config import LABEL_COLUMNS, IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest.sources.files import idx_rows, image_names, load_idx, read_idx
from tfflows.components.ingest.sources.splits import LoadedData, limit_rows, split_rows, tail_split

__all__ = ["LOADERS", "default_mnist_dir"]


def default_mnist_dir() -> pathlib.Path:
    """``<repo>/../shared/data/mnist``: where the project keeps the offline MNIST IDX files."""
    repo = pathlib.Path(__file__).resolve().parents[3]
    return (repo / ".." / "shared" / "data" / "mnist").resolve()


def _load_moons(config: IngestConfig) -> LoadedData:
    x, _ = make_moons(n_samples=config.num_samples, noise=config.noise,
                      random_state=config.seed)
    return LoadedData(split_rows(x, config, "moons"), ["x0", "x1"], False, None, None,
                      "sklearn.datasets.make_moons")


def _load_digits(config: IngestConfig) -> LoadedData:
    digits = load_digits()
    x, names = digits.data, [f"pixel_{r}_{c}" for r in range(8) for c in range(8)]
    if config.context == "label":  # the one-hot label rides along in each row, so it splits with its image
        x, names = np.hstack([x, np.eye(len(LABEL_COLUMNS))[digits.target]]), names + list(LABEL_COLUMNS)
    return LoadedData(split_rows(limit_rows(x, config), config, "digits"), names, True, 17, [8, 8],
                      "sklearn.datasets.load_digits")


def _with_labels(x: np.ndarray, images: str) -> np.ndarray:
    """The rows ``x`` of the IDX file ``images`` with their one-hot labels appended (`LABEL_COLUMNS`),
    read from the labels file beside it (``*-labels-idx1-ubyte[.gz]``)."""
    path = images.replace("images-idx3", "labels-idx1")
    if path == images or not os.path.isfile(path):
        raise DataError(images, "ingest.context", "label: no labels file beside the images",
                        "put the *-labels-idx1-ubyte[.gz] file next to it, or drop ingest.context")
    labels = read_idx(path).reshape(-1).astype(int)
    if len(labels) != len(x) or labels.min() < 0 or labels.max() >= len(LABEL_COLUMNS):
        raise DataError(path, "labels", f"{len(labels)} labels in 0..{labels.max()} for {len(x)} images",
                        "use the labels file of the same images (labels 0-9)")
    return np.hstack([x.astype(np.float64), np.eye(len(LABEL_COLUMNS))[labels]])


def _load_mnist(config: IngestConfig) -> LoadedData:
    folder = config.path or str(default_mnist_dir())
    labelled = config.context == "label"  # the one-hot label rides along in each row through the split
    if os.path.isfile(folder) and not labelled:
        return load_idx(config, folder)
    find = lambda stem: next((os.path.join(folder, stem + ext) for ext in (".gz", "")  # noqa: E731
                              if os.path.isfile(os.path.join(folder, stem + ext))), None)
    train, test = ((None, folder) if os.path.isfile(folder) else
                   (find("train-images-idx3-ubyte"), find("t10k-images-idx3-ubyte")))
    if train is None and test is None:
        raise DataError(folder, "", "no train-images-idx3-ubyte[.gz] or "
                        "t10k-images-idx3-ubyte[.gz] found",
                        "set IngestConfig.path to the folder holding the MNIST IDX files")
    names = lambda shape: image_names(shape) + (list(LABEL_COLUMNS) if labelled else [])  # noqa: E731
    if train is None and test is not None and labelled:  # the test images and labels: split like any file
        x, shape = idx_rows(test)
        x = limit_rows(_with_labels(x, test), config)
        return LoadedData(split_rows(x, config, test), names(shape), True, 256, shape, folder)
    if train is None:  # Only the test set is available offline: split it like any file.
        return load_idx(config, test)
    x_train, shape = idx_rows(train)
    x_test, test_shape = idx_rows(test) if test else (None, shape)
    if test_shape != shape:
        raise DataError(test, "", f"image shape {test_shape} differs from train {shape}",
                        "use train and test files of the same dataset")
    if labelled:
        x_train = _with_labels(x_train, train)
        x_test = _with_labels(x_test, test) if x_test is not None and test else None
    x_train = limit_rows(x_train, config)
    # The paper's split: the last 10,000 train images are the validation set (50k/10k/10k).
    n_eval = config.eval_count if config.eval_count is not None else (
        10000 if len(x_train) == 60000 else int(config.eval_fraction * len(x_train)))
    splits = tail_split(x_train, 0, n_eval)
    if x_test is not None:
        splits["test"] = x_test
    else:
        splits = split_rows(x_train, dataclasses.replace(config, shuffle=False), train)
    return LoadedData(splits, names(shape), True, 256, shape, folder)


LOADERS: Dict[str, Callable[[IngestConfig], LoadedData]] = {
    "moons": _load_moons,
    "digits": _load_digits,
    "mnist": _load_mnist,
}

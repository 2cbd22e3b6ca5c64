"""User files read whole: the table formats read in memory (``.npy``/``.npz``, through
`components.tables`), IDX (optionally gzipped) and a folder of images.

Also the checks every user source shares with the streamed ones (`components.ingest.streaming`):
`check_finite` (the table reader's), `check_levels` and `user_meta` (discrete or not, levels,
image shape).
"""

from __future__ import annotations

import glob
import gzip
import math
import os
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest.sources.splits import LoadedData, limit_rows, split_rows
from tfflows.components.tables import WHOLE_FORMATS
from tfflows.components.tables.reader import check_finite, open_table, read_all, refuse_first, select

__all__ = ["LOADERS", "check_finite", "check_levels", "idx_rows", "image_names", "load_idx", "read_array",
           "read_idx", "user_meta", "with_flips"]


# --------------------------------------------------------------------------- checks


def check_levels(x: np.ndarray, levels: int, source: str, names: Optional[Sequence[str]] = None,
                 row_label: Callable[[int], str] = lambda row: f"row {row}",
                 positions: Optional[Sequence[int]] = None) -> None:
    """Raises `DataError` at the first value of ``x`` that is not an integer in [0, levels - 1]
    (``positions``: the file's column of each of ``x``'s)."""
    refuse_first((x < 0) | (x > levels - 1) | (x != np.floor(x)), x, source, names, row_label,
                 f"is not an integer level in [0, {levels - 1}]",
                 "declare the data continuous (discrete=False) or fix num_levels", positions)


def user_meta(config: IngestConfig, d: int, shape: Optional[List[int]], source: str,
              default_discrete: bool = False, default_levels: Optional[int] = None
              ) -> Tuple[bool, Optional[int], Optional[List[int]]]:
    """(discrete, num_levels, image_shape) of a user source of ``d`` features.

    The config's values win over the file's (``shape``: the array's example shape, if any, and
    the defaults a format implies, e.g. 256 levels for 8-bit images).
    """
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
    return discrete, (int(levels) if discrete and levels else None), image_shape  # discrete: levels set


# --------------------------------------------------------------------------- readers


def read_array(path: str, key: Optional[str] = None, columns: Optional[Sequence[str]] = None
               ) -> Tuple[np.ndarray, Optional[List[int]]]:
    """float64 ``[N, D]`` rows of a .npy/.npz (``key``: the .npz array; ``columns``: the columns
    kept, by their names ``x0, x1, ...``), checked by the table reader (`components.tables.reader`),
    and its example shape when it had more than 2 axes and every column is kept."""
    table = open_table(path, key=key)
    rows = read_all(table, select(table, columns, fix="name columns of the file in ingest.columns")).numbers
    return rows, list(table.shape) if table.shape and columns is None else None


_IDX_MAX_DIMS = 4  # examples of vectors, grey images or colour images: (N, D), (N, H, W), (N, H, W, C)


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
    if not 1 <= ndim <= _IDX_MAX_DIMS:  # a 4th magic byte of 255 read 255 sizes into a 3 kB message
        raise DataError(path, "header", f"not an IDX file of examples (magic number {raw[:4].hex()} "
                        f"declares {ndim} dimensions)", "pass an IDX file such as t10k-images-idx3-ubyte.gz")
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(path, "header", "file ends inside the header",
                        "re-download the file (it is truncated)")
    shape = tuple(int.from_bytes(raw[4 + 4 * i:8 + 4 * i], "big") for i in range(ndim))
    dtype = np.dtype(dtypes[raw[2]])
    expected = math.prod(shape) * dtype.itemsize  # Python ints: np.prod wraps around
    if len(raw) - header != expected:
        raise DataError(path, "data", f"expected {expected} data bytes for shape {shape}, "
                        f"found {len(raw) - header}",
                        "re-download the file (it is truncated or padded)")
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)


def idx_rows(path: str) -> Tuple[np.ndarray, List[int]]:
    """``[N, D]`` rows of an IDX file of examples and the shape of one example."""
    images = read_idx(path)
    if images.ndim < 2 or images.shape[0] == 0:
        raise DataError(path, "header", f"shape {images.shape} holds no examples",
                        "pass an IDX file of examples (first dimension = count)")
    shape = [int(s) for s in images.shape[1:]] or [1]
    return images.reshape(images.shape[0], -1), shape


def image_names(shape: Sequence[int]) -> List[str]:
    """Feature names of a flattened image: ``pixel_<row>_<col>[_<channel>]``."""
    return ["pixel_" + "_".join(str(i) for i in idx) for idx in np.ndindex(*shape)]


def with_flips(x: np.ndarray, image_shape: Optional[List[int]], source: str) -> np.ndarray:
    """``x`` followed by its horizontally flipped images (the paper's CIFAR-10 augmentation)."""
    if not image_shape or len(image_shape) not in (2, 3):
        raise DataError(source, "IngestConfig.flip_augment", "horizontal flips need images",
                        "set image_shape (H, W) or (H, W, C), or turn flip_augment off")
    flipped = x.reshape([-1] + list(image_shape))[:, :, ::-1].reshape(x.shape)
    return np.concatenate([x, flipped], axis=0)


# --------------------------------------------------------------------------- loaders


def _finish_user(config: IngestConfig, x: np.ndarray, shape: Optional[List[int]], source: str,
                 x_test: Optional[np.ndarray] = None, default_discrete: bool = False,
                 default_levels: Optional[int] = None, columns: Optional[Sequence[str]] = None) -> LoadedData:
    """Checks, splits (and flips) the rows of a user file (finite already: the table reader's
    check, or 8-bit pixels); the config's metadata wins."""
    x = limit_rows(x, config)
    d = x.shape[1]
    discrete, levels, image_shape = user_meta(config, d, shape, source, default_discrete,
                                              default_levels)
    names = image_names(image_shape) if image_shape else list(columns or (f"x{i}" for i in range(d)))
    if x_test is not None:
        test_source = config.test_path or source  # the callers read x_test from config.test_path
        if x_test.shape[1] != d:
            raise DataError(test_source, "", f"test file has {x_test.shape[1]} features, "
                            f"{source} has {d}", "use train and test files of the same dimension")
    splits = split_rows(x, config, source, x_test)
    if config.flip_augment:
        splits["train"] = with_flips(splits["train"], image_shape, source)
    if levels is not None:
        for split, rows in splits.items():
            check_levels(rows, levels, source, names, row_label=lambda row: f"{split} row {row}")
    return LoadedData(splits, names, discrete, levels, image_shape, source)


def _load_array_source(config: IngestConfig) -> LoadedData:
    path = config.path
    if not path:  # load_in_memory refuses this first
        raise DataError(config.dataset, "IngestConfig.path", "no path given",
                        "set IngestConfig.path to the input file or folder")
    x, shape = read_array(path, config.feature_key, config.columns)
    x_test = None
    if config.test_path:
        x_test, test_shape = read_array(config.test_path, config.feature_key, config.columns)
        if test_shape != shape:
            raise DataError(config.test_path, "", f"example shape {test_shape} differs "
                            f"from {shape} in {path}", "use files of the same dimension")
    return _finish_user(config, x, shape, path, x_test, columns=config.columns)


def load_idx(config: IngestConfig, path: Optional[str] = None) -> LoadedData:
    """An IDX file (``path``, default ``config.path``) split like any user file; uint8 is 256 levels."""
    path = path or config.path
    if not path:  # load_in_memory refuses this first
        raise DataError(config.dataset, "IngestConfig.path", "no path given",
                        "set IngestConfig.path to the input file or folder")
    x, shape = idx_rows(path)
    x_test = None
    if config.test_path:
        x_test, test_shape = idx_rows(config.test_path)
        if test_shape != shape:
            raise DataError(config.test_path, "", f"example shape {test_shape} differs from "
                            f"{shape} in {path}", "use IDX files of the same image size")
    levels = 256 if x.dtype == np.uint8 else None
    return _finish_user(config, x.astype(np.float64), shape, path, x_test,
                        default_discrete=levels is not None, default_levels=levels)


def _load_images(config: IngestConfig) -> LoadedData:
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


LOADERS: Dict[str, Callable[[IngestConfig], LoadedData]] = {
    **{name: _load_array_source for name in WHOLE_FORMATS},
    "idx": load_idx,
    "images": _load_images,
}

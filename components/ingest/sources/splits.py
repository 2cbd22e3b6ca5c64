"""`LoadedData` and the split rules shared by every in-memory source.

Generic sources follow `split_rows` (optional seeded shuffle, then test and eval rows from the
end); the benchmarks use `tail_split` with the paper's own counts (`gpapamak/maf`,
``datasets/*.py``).
"""

from __future__ import annotations

import dataclasses
from typing import Dict, List, Optional, Tuple

import numpy as np

from tfflows.components.config import STREAMED_DATASETS, IngestConfig
from tfflows.components.errors import DataError

__all__ = ["SPLITS", "LoadedData", "check_split_sizes", "limit_rows", "split_rows",
           "tail_split"]

SPLITS = ("train", "eval", "test")


@dataclasses.dataclass
class LoadedData:
    """Rows of one dataset, split, with what `DatasetMetadata` records about them.

    ``splits`` maps each of `SPLITS` to a ``[N, D]`` array in the raw feature space.
    """

    splits: Dict[str, np.ndarray]
    feature_names: List[str]
    discrete: bool
    num_levels: Optional[int]
    image_shape: Optional[List[int]]
    source: str


def limit_rows(x: np.ndarray, config: IngestConfig) -> np.ndarray:
    """The first ``config.max_examples`` rows (all of them when it is None)."""
    return x if config.max_examples is None else x[:config.max_examples]


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


# A split expected to get this many distinct rows misses all of them with probability < e**-20.
_SURE_SHARE = 20


def _expected_share(split: str, config: IngestConfig) -> float:
    """The fraction of the rows the hash split sends to `split`."""
    test = 0.0 if config.test_path else config.test_fraction
    return {"train": (1 - test) * (1 - config.eval_fraction), "eval": (1 - test) * config.eval_fraction,
            "test": test}[split]


def check_split_sizes(sizes: Dict[str, int], config: IngestConfig, source: str) -> None:
    """Refuses an empty split with its real reason: no rows at all (a header-only CSV), rows that
    repeat (a hash split sends copies of a row to one split, so 400 identical rows all went to
    train; they would have no variance to model anyway), or too few rows for the fractions."""
    empty = [split for split in SPLITS if sizes.get(split, 0) == 0]
    if not empty:
        return
    total = sum(sizes.values())
    if total == 0:
        raise DataError(source, "rows", "has no data rows (only a header, or nothing)",
                        "add rows of values below the header")
    expected = _expected_share(empty[0], config) * total
    if config.dataset in STREAMED_DATASETS and expected >= _SURE_SHARE:
        raise DataError(source, f"split {empty[0]!r}", f"received none of {total} rows (about {expected:.0f} "
                        "expected): the split hashes each row, so the rows repeat (identical rows have no "
                        "variance to model)", "remove the duplicate rows")
    raise DataError(source, f"split {empty[0]!r}", f"received none of {total} rows",
                    "ingest more rows or raise the eval/test fraction")


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

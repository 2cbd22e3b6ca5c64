"""In-memory loaders: one registry from dataset name to loader, and `load_in_memory`.

Every loader returns a `LoadedData`: the rows already split into ``train``/``eval``/``test``
(float ``[N, D]`` arrays in the raw feature space) plus what the metadata needs. The loaders live
by kind of source in `components.ingest.sources`: `splits` (the split rules), `files` (user
files), `bundled` (moons, digits, MNIST) and `benchmarks` (the MAF paper's six). Streamed sources
(CSV, TFRecord) live in `components.ingest.streaming`.
"""

from __future__ import annotations

from typing import Callable, Dict

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError
from tfflows.components.ingest.sources import benchmarks, bundled, files
from tfflows.components.ingest.sources.bundled import default_mnist_dir
from tfflows.components.ingest.sources.files import check_finite, read_idx
from tfflows.components.ingest.sources.splits import SPLITS, LoadedData, split_rows, tail_split

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

_IN_MEMORY: Dict[str, Callable[[IngestConfig], LoadedData]] = {
    **bundled.LOADERS, **files.LOADERS, **benchmarks.LOADERS}


def load_in_memory(config: IngestConfig) -> LoadedData:
    """Loads and splits an in-memory source; raises `DataError` on bad input."""
    if config.dataset not in _IN_MEMORY:
        raise DataError(f"dataset {config.dataset!r}", "", "not an in-memory source",
                        f"use one of {', '.join(_IN_MEMORY)}")
    if config.dataset in files.LOADERS and not config.path:
        raise DataError(config.dataset, "IngestConfig.path", "no path given",
                        "set IngestConfig.path to the input file or folder")
    data = _IN_MEMORY[config.dataset](config)
    for name in SPLITS:
        if len(data.splits[name]) == 0:
            raise DataError(data.source, f"split {name!r}", "is empty",
                            "ingest more rows or raise the eval/test fraction or count")
    return data

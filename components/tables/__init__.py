"""One reader per table format (`FORMATS` below: CSV, ``.npy`` / ``.npz``, ...) read into named columns with
one set of checks (`components.tables.reader`), for ingest (chunks of a file on Beam workers),
evaluate, sample, ``--scores``, Beam scoring and the preflight width check.

This file is the registry and nothing else (no NumPy, so that the configuration's path can name
the formats): a format's name, the file endings that mean it, the module under
`components.tables` that reads it (it defines ``Reader``, see `components.tables.reader.Reader`)
and whether ingest streams it through Beam or reads it whole. Adding a format is its module and
one line here.
"""

from __future__ import annotations

import dataclasses
from typing import Dict, Optional, Tuple

__all__ = ["FORMATS", "Format", "format_of", "STREAMED_FORMATS", "WHOLE_FORMATS"]


@dataclasses.dataclass(frozen=True)
class Format:
    """A table format.

    Attributes:
      name: the format's name, also the ``ingest.dataset`` that reads it.
      endings: file name endings that mean it (lower case), the first the usual one.
      module: the module of `components.tables` that reads it.
      streamed: ingest reads it in chunks on Beam workers and splits rows by a seeded hash; False:
        read whole in memory (exact split counts, unshuffled tail splits, image shapes from the
        array's axes).
    """

    name: str
    endings: Tuple[str, ...]
    module: str
    streamed: bool


FORMATS: Dict[str, Format] = {f.name: f for f in (
    Format("csv", (".csv",), "delimited", streamed=True),
    Format("npy", (".npy",), "arrays", streamed=False),
    Format("npz", (".npz",), "arrays", streamed=False),
    Format("parquet", (".parquet", ".pq"), "parquet", streamed=True),
)}

STREAMED_FORMATS = tuple(name for name, f in FORMATS.items() if f.streamed)
WHOLE_FORMATS = tuple(name for name, f in FORMATS.items() if not f.streamed)


def format_of(path: str) -> Optional[Format]:
    """The format a file name's ending means, or None."""
    name = path.lower()
    return next((f for f in FORMATS.values() if name.endswith(f.endings)), None)

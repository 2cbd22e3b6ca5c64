"""The pipeline's components (one folder each) and the pieces they share."""

import importlib
from typing import Callable, Dict


def lazy_exports(package: str, exports: Dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` that imports each of ``exports`` (name -> module) on first use.

    Executors import TensorFlow; a component package's configuration must stay readable without
    it (the CLI checks the whole configuration before TensorFlow loads).
    """

    def __getattr__(name: str):
        if name in exports:
            return getattr(importlib.import_module(exports[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__

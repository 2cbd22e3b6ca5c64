"""Which optional extra each `tfflows` command needs, checked before anything heavy is imported.

`pip install tfflows` is the flow library alone; the commands need the `[pipeline]` extra
(`compile` also `[kubeflow]`). Without it the CLI would die on an ImportError deep inside the
pipeline; `missing_extra` turns that into one line naming the extra to install.
"""

from __future__ import annotations

import importlib.util

# Distribution name -> the module it installs, for each extra (the distributions are those of
# pyproject.toml's optional dependencies; tests/test_packaging.py checks they match).
PIPELINE = {
    "tfx": "tfx",
    "tensorflow-transform": "tensorflow_transform",
    "apache-beam": "apache_beam",
    "mlflow": "mlflow",
    "tensorflow-serving-api": "tensorflow_serving",
    "pyyaml": "yaml",
    "matplotlib": "matplotlib",
    "scikit-learn": "sklearn",
}
KUBEFLOW = {"kfp": "kfp"}

EXTRAS = {"pipeline": PIPELINE, "kubeflow": KUBEFLOW}
COMMAND_EXTRAS = {
    "run": ("pipeline",),
    "evaluate": ("pipeline",),
    "sample": ("pipeline",),
    "ui": ("pipeline",),
    "compile": ("pipeline", "kubeflow"),
    "promote": ("pipeline",),
    "rollback": ("pipeline",),
}


def missing_extra(command: str) -> str | None:
    """None when `command` can run, else a one-line message naming the extra to install."""
    for extra in COMMAND_EXTRAS[command]:
        missing = [name for name, module in EXTRAS[extra].items() if importlib.util.find_spec(module) is None]
        if missing:
            return (f"tfflows {command}: needs the [{extra}] extra (missing: {', '.join(missing)}); fix: "
                    f"pip install 'tfflows[{extra}]' (README, Installing: the ml-metadata override)")
    return None

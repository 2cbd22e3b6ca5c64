"""The distribution: package list, namespace, extras, and the wheel installed alone in a clean venv."""

from __future__ import annotations

import argparse
import email
import os
import pathlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest
from packaging.requirements import Requirement

from tests.cli_testing import TINY_RUN
from tfflows.pipeline.cli import build_parser
from tfflows.pipeline.extras import COMMAND_EXTRAS, EXTRAS

REPO = pathlib.Path(__file__).resolve().parent.parent
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
PIPELINE_MODULES = ("tfx", "apache_beam", "mlflow", "tensorflow_transform")


def test_every_package_folder_is_listed():
    setuptools = PYPROJECT["tool"]["setuptools"]
    on_disk = set()
    for name, folder in setuptools["package-dir"].items():
        for init in (REPO / folder).rglob("__init__.py"):
            relative = init.parent.relative_to(REPO / folder).parts
            on_disk.add(".".join((name, *relative)))
    listed = set(setuptools["packages"])
    assert on_disk - listed == set(), f"add to pyproject.toml's packages: {sorted(on_disk - listed)}"
    assert listed - on_disk == set(), f"listed without a folder holding __init__.py: {sorted(listed - on_disk)}"


def test_namespace_imports_outside_the_repository(tmp_path):
    def python(code):
        return subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)

    for generic in ("models", "components", "pipeline"):
        result = python(f"import {generic}")
        assert result.returncode != 0 and f"No module named '{generic}'" in result.stderr, generic
    # (tfflows.models itself is imported from outside the repository by the next test; here its
    # location is enough, without paying for TensorFlow's import.)
    result = python("import importlib.util, tfflows.components, tfflows.pipeline.extras; "
                    "print(importlib.util.find_spec('tfflows.models').origin)")
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == str(REPO / "models" / "__init__.py")


def test_the_flow_library_imports_no_pipeline_dependency(tmp_path):
    """Every module of tfflows.models, imported in a fresh interpreter, leaves TFX, Beam,
    tf.Transform and MLflow out of sys.modules (they are installed here, so this is not vacuous)."""
    code = (
        "import pkgutil, importlib, sys, tfflows.models\n"
        "for info in pkgutil.walk_packages(tfflows.models.__path__, 'tfflows.models.'):\n"
        "    importlib.import_module(info.name)\n"
        f"print(sorted(m for m in {PIPELINE_MODULES!r} if m in sys.modules))\n"
        f"import tfflows.pipeline.cli\n"
        f"print(sorted(m for m in {PIPELINE_MODULES!r} if m in sys.modules))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.split() == ["[]", "[]"]


def test_cli_extras_match_pyproject():
    optional = PYPROJECT["project"]["optional-dependencies"]
    for extra, modules in EXTRAS.items():
        names = {Requirement(line).name for line in optional[extra] if not line.startswith("tfflows[")}
        assert set(modules) == names, extra
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    assert set(COMMAND_EXTRAS) == set(commands)


def test_base_dependencies_are_the_library_pins():
    requirements = {Requirement(line).name: str(Requirement(line).specifier)
                    for line in (REPO / "requirements.txt").read_text().splitlines()
                    if line.strip() and not line.startswith("#")}
    base = [Requirement(line) for line in PYPROJECT["project"]["dependencies"]]
    assert [r.name for r in base] == ["tensorflow", "tf-keras", "tensorflow-probability"]
    assert all(str(r.specifier) == requirements[r.name] for r in base)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """sdist and wheel built from the checkout (once per module); the wheel's path.

    Built from a copy of the checkout's sources: setuptools writes ``build/`` and
    ``tfflows.egg-info/`` next to them, and in the checkout that metadata is what
    ``importlib.metadata.version("tfflows")`` reads (its folder is on ``sys.path``) in the tests
    that other pytest-xdist workers run meanwhile."""
    dist = tmp_path_factory.mktemp("dist")
    source = tmp_path_factory.mktemp("source") / "tfflows"
    shutil.copytree(REPO, source, symlinks=True, ignore=shutil.ignore_patterns(
        ".git", ".venv*", "*_cache", "__pycache__", "*.egg-info", "build", "dist", "site", "tfflows_output"))
    build = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(source)],
                           capture_output=True, text=True, timeout=600)
    assert build.returncode == 0, build.stdout[-3000:] + build.stderr[-3000:]
    (sdist,) = dist.glob("tfflows-*.tar.gz")
    assert sdist.stat().st_size > 0
    (built,) = dist.glob("tfflows-*.whl")
    return built


def _clean_venv(path: pathlib.Path) -> tuple[str, pathlib.Path]:
    """(uv, the python of a new empty venv at `path`). uv's default cache is the one infra/setup.sh
    fills, so the pinned wheels are linked from it rather than downloaded again."""
    uv = shutil.which("uv")
    assert uv, "uv is not on PATH (infra/setup.sh installs it)"
    subprocess.run([uv, "venv", "--quiet", "-p", "python3.11", str(path)], check=True, timeout=300)
    return uv, path / "bin" / "python"


def _outside_env() -> dict:
    """The environment of a user's shell, not of this venv or checkout."""
    return {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}


@pytest.mark.slow
def test_wheel_installs_alone_and_runs_the_library(wheel, tmp_path):
    """The wheel installed into a clean venv with its base dependencies only (no TFX, Beam, MLflow:
    their absence is checked); the flow library's smoke test runs there from outside the
    repository, and the CLI names the missing extra."""

    with zipfile.ZipFile(wheel) as archive:
        files = set(archive.namelist())
        metadata = email.message_from_bytes(archive.read(next(f for f in files if f.endswith(".dist-info/METADATA"))))
    assert "tfflows/models/py.typed" in files and "tfflows/models/flows.py" in files
    assert not [f for f in files if f.split("/")[0] in ("models", "components", "pipeline")]
    assert metadata["License-Expression"] == "MIT" and any(f.endswith("licenses/LICENSE") for f in files)
    unconditional = [r for r in metadata.get_all("Requires-Dist") if "extra ==" not in r]
    assert sorted(unconditional) == ["tensorflow-probability==0.25.0", "tensorflow==2.21.0", "tf-keras==2.21.0"]
    assert {"pipeline", "kubeflow", "docs", "dev"} <= set(metadata.get_all("Provides-Extra"))

    venv = tmp_path / "venv"
    uv, python = _clean_venv(venv)
    # The lock pins the base dependencies' own dependencies, as CI tests them; nothing else is added.
    install = subprocess.run([uv, "pip", "install", "--quiet", "-p", str(python), "-c", str(REPO / "requirements.lock"),
                              str(wheel)], capture_output=True, text=True, timeout=900)
    assert install.returncode == 0, install.stderr[-3000:]

    work = tmp_path / "work"
    work.mkdir()
    env = _outside_env()
    absent = subprocess.run([str(python), "-c", "import importlib.util as u; print([m for m in "
                             f"{PIPELINE_MODULES + ('yaml', 'pytest')!r} if u.find_spec(m)])"],
                            cwd=work, env=env, capture_output=True, text=True, timeout=300)
    assert absent.stdout.strip() == "[]", absent.stdout + absent.stderr

    # Copied out, so that the checkout is not on the smoke test's sys.path (a script's folder is).
    script = shutil.copy(REPO / "tests" / "smoke_library.py", work)
    smoke = subprocess.run([str(python), script, str(work)],
                           cwd=work, env=env, capture_output=True, text=True, timeout=900)
    assert smoke.returncode == 0, smoke.stderr[-4000:]
    assert "smoke ok" in smoke.stdout

    cli = subprocess.run([str(venv / "bin" / "tfflows"), "run"], cwd=work, env=env, capture_output=True,
                         text=True, timeout=300)
    assert cli.returncode == 2, cli.stderr
    (line,) = cli.stderr.strip().splitlines()
    assert line.startswith("tfflows run: needs the [pipeline] extra (missing: tfx, tensorflow-transform")
    assert "pip install 'tfflows[pipeline]'" in line


@pytest.mark.slow
def test_wheel_with_the_pipeline_extra_runs_tfflows_run(wheel, tmp_path):
    """`<wheel>[pipeline]` installed as the README documents it (the resolver override of
    overrides.txt; the lock as constraints, as infra/setup.sh pins the stack) into a clean venv;
    its `tfflows run`, a tiny default run from outside the repository, trains and pushes version 1."""
    venv = tmp_path / "venv"
    uv, python = _clean_venv(venv)
    install = subprocess.run([uv, "pip", "install", "--quiet", "-p", str(python), "--override", str(REPO / "overrides.txt"),
                              "-c", str(REPO / "requirements.lock"), f"{wheel}[pipeline]"],
                             capture_output=True, text=True, timeout=1200)
    assert install.returncode == 0, install.stderr[-3000:]

    work = tmp_path / "work"
    work.mkdir()
    run = subprocess.run([str(venv / "bin" / "tfflows"), "run", "--output", "out", *TINY_RUN], cwd=work,
                         env=_outside_env(), capture_output=True, text=True, timeout=1800)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "test log-likelihood:" in run.stdout and "MLflow run:" in run.stdout
    assert (work / "out" / "serving" / "1" / "saved_model.pb").exists(), run.stdout
    # the installed package ran, not the checkout
    origin = subprocess.run([str(python), "-c", "import tfflows.pipeline.cli as c; print(c.__file__)"], cwd=work,
                            env=_outside_env(), capture_output=True, text=True, timeout=300)
    assert origin.stdout.strip().startswith(str(venv)), origin.stdout + origin.stderr

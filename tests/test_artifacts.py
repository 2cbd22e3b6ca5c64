"""The shared artifact layer on POSIX paths (object stores: tests/test_object_store.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from tfflows.components import artifacts

REPO = Path(__file__).resolve().parents[1]


def test_serving_layout_lists_and_resolves_complete_versions(tmp_path):
    serving = tmp_path / "serving"
    with pytest.raises(FileNotFoundError, match="no SavedModel here; pass serving/<version>"):
        artifacts.resolve_version(str(serving))
    for version, model_uri in ((1, "models/a"), (3, "models/b")):
        (serving / str(version) / "assets.extra").mkdir(parents=True)
        (serving / str(version) / "saved_model.pb").write_text("pb")
        (serving / str(version) / artifacts.PUSH_INFO).write_text(json.dumps({"model_uri": model_uri}))
    (serving / ".tmp-inflight").mkdir()  # a push in progress
    (serving / "10").write_text("a file, not a version")
    assert artifacts.list_versions(str(serving)) == [1, 3]
    assert artifacts.resolve_version(str(serving)) == str(serving / "3")
    assert artifacts.resolve_version(str(serving / "1")) == str(serving / "1")
    assert artifacts.champion_push_info(str(tmp_path)) == {"model_uri": "models/b", "version": 3}
    (serving / "3" / artifacts.PUSH_INFO).unlink()  # pushed by something else: the next one down
    assert artifacts.champion_push_info(str(tmp_path))["model_uri"] == "models/a"
    assert artifacts.champion_push_info(str(tmp_path / "nothing")) is None


def test_the_champion_is_the_version_labelled_stable_else_the_highest(tmp_path):
    """After `tfflows rollback` (``stable`` 2, ``canary`` 3) the champion is version 2, not the
    newest; without a label, or with one naming a version that is gone, the highest version."""
    for version in (1, 2, 3):
        (tmp_path / "serving" / str(version) / "assets.extra").mkdir(parents=True)
        (tmp_path / "serving" / str(version) / artifacts.PUSH_INFO).write_text(json.dumps({"model_uri": f"m{version}"}))
    base = str(tmp_path)
    assert artifacts.champion_push_info(base)["version"] == 3  # no models.config
    artifacts.write_serving_config(base, "tfflows", stable=2, canary=3)
    assert artifacts.champion_push_info(base) == {"model_uri": "m2", "version": 2}
    artifacts.write_serving_config(base, "tfflows", stable=1)
    assert artifacts.champion_push_info(base)["version"] == 1
    artifacts.write_serving_config(base, "tfflows", stable=7)  # a label of a version that is gone
    assert artifacts.champion_push_info(base)["version"] == 3
    # Pinned when the pipeline is built (JSON; "null": none), else (a cluster spec) resolved now.
    assert artifacts.pinned_champion('{"model_uri": "m1", "version": 1}', base)["version"] == 1
    assert artifacts.pinned_champion("null", base) is None
    assert artifacts.pinned_champion("", base)["version"] == 3
    assert artifacts.pinned_champion("", None) is None


def test_publish_version_renames_and_never_overwrites(tmp_path):
    serving = str(tmp_path / "serving")
    first = artifacts.local_export_dir(serving)
    Path(first, "saved_model.pb").write_text("one")
    assert artifacts.publish_version(first, serving) == 1 and not Path(first).exists()
    (tmp_path / "serving" / "2").mkdir()
    Path(tmp_path / "serving" / "2" / "keep").write_text("someone else's")
    second = artifacts.local_export_dir(serving)
    Path(second, "saved_model.pb").write_text("two")
    assert artifacts.publish_version(second, serving) == 3
    assert (tmp_path / "serving" / "2" / "keep").read_text() == "someone else's"
    assert (tmp_path / "serving" / "3" / "saved_model.pb").read_text() == "two"


def test_blessing_files(tmp_path):
    folder = str(tmp_path / "blessing")
    assert not artifacts.read_blessing(folder) and artifacts.read_evaluation(folder) is None
    artifacts.write_blessing(folder, True)
    assert sorted(p.name for p in Path(folder).iterdir()) == ["BLESSED"]
    assert artifacts.read_blessing(folder)
    artifacts.write_blessing(folder, False)
    assert sorted(p.name for p in Path(folder).iterdir()) == ["NOT_BLESSED"]
    assert not artifacts.read_blessing(folder)
    artifacts.write_evaluation(folder, {"blessed": False})
    assert artifacts.read_evaluation(folder) == {"blessed": False}


def test_atomic_output_dir(tmp_path):
    out = tmp_path / "out"
    tmp = Path(artifacts.staging_dir(str(out)))
    assert tmp.parent == tmp_path and tmp.name.startswith(".out.tmp-")
    (tmp / "sub").mkdir(parents=True)
    (tmp / "sub" / "f").write_text("x")
    artifacts.publish_dir(str(tmp), str(out))
    assert (out / "sub" / "f").read_text() == "x" and not tmp.exists()
    again = Path(artifacts.staging_dir(str(out)))
    again.mkdir()
    with pytest.raises(FileExistsError, match="is not empty; pass a new folder"):
        artifacts.publish_dir(str(again), str(out))


def test_no_component_imports_another_components_executor():
    pattern = re.compile(r"tfflows\.components\.(\w+)\.executor")
    offenders = []
    for path in sorted((REPO / "components").rglob("*.py")):
        own = path.relative_to(REPO / "components").parts[0]
        for line in path.read_text().splitlines():
            if line.lstrip().startswith(("import ", "from ")):
                offenders += [f"{path.relative_to(REPO)}: {line.strip()}"
                              for name in pattern.findall(line) if name != own]
    assert not offenders, offenders

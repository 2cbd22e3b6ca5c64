"""Every field of `RunConfig`, nested sections included, is honoured or refused up front (issue 27,
scope 1): a bad value is one `ConfigError` line naming the field's path from `load_run_config`,
before TensorFlow is imported, and a valid non-default value reaches the configuration the
component's executor receives (through the JSON round trip of the TFX wrappers) unchanged.

The tables below must name exactly the fields there are: a field added later without a bad value
(its check) and a good value (where it goes) fails `test_the_tables_name_every_field`.
"""

from __future__ import annotations

import dataclasses
import json
import subprocess
import sys
import typing

import pytest

from tfflows.pipeline.config import RunConfig

# field path -> a value its checks must refuse (in the default configuration, or with the extra
# settings given as the second item of a pair).
BAD = {
    "pipeline_name": "../..",
    "output": "",
    "metadata": 12,
    "beam_pipeline_args": "--runner=FnApiRunner",
    "enable_cache": "maybe",
    "progress": "sometimes",
    "progress_every_epochs": 0,
    "ingest.dataset": "mnits",
    "ingest.path": ("rows.csv", {"ingest.dataset": "moons"}),
    "ingest.test_path": ("test.csv", {"ingest.dataset": "moons"}),
    "ingest.columns": ([], {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.context_columns": ([], {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.categorical_columns": (["merchant"], {"ingest.dataset": "npy", "ingest.path": "x.npy"}),
    "ingest.context": "colour",
    "ingest.feature_key": ("x", {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.eval_fraction": 1.5,
    "ingest.test_fraction": -0.1,
    "ingest.eval_count": -1,
    "ingest.test_count": (10, {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.seed": "seven",
    "ingest.shuffle": "maybe",
    "ingest.max_examples": (100, {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.num_samples": 0,
    "ingest.noise": -0.1,
    "ingest.discrete": "maybe",
    "ingest.num_levels": -1,
    "ingest.image_shape": [0, 4],
    "ingest.allow_pickle": "maybe",
    "ingest.flip_augment": (True, {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.name": 12,
    "ingest.span_window": 0,
    "transform.method": "log",
    "transform.logit_lambda": 0.7,
    "transform.analyze_splits": ["train", "holdout"],
    "transform.min_std": -1.0,
    "train.kind": "sylvester",
    "train.num_layers": 0,
    "train.hidden_units": [0],
    "train.batch_norm": "maybe",
    "train.num_components": 0,
    "train.l2": -1.0,
    "train.flow_options": {"order": "sideways"},
    "train.objective": "max_fun",
    "train.target": "U2",
    "train.target_dim": 3,
    "train.target_box": 2.0,
    "train.anneal_epochs": 5,
    "train.vae_options": {"latent_dim": 8},
    "train.epochs": 0,
    "train.batch_size": 0,
    "train.learning_rate": 0.0,
    "train.lr_schedule": "step",
    "train.lr_decay_rate": 0.0,
    "train.lr_min_fraction": 2.0,
    "train.patience": 0,
    "train.max_steps_per_epoch": 0,
    "train.eval_batch_size": 0,
    "train.shuffle_buffer": 0,
    "train.seed": "seven",
    "train.mixed_precision": True,
    "train.jit_compile": "maybe",
    "train.resume": "maybe",
    "train.max_nan_retries": -1,
    "train.log_every_steps": 0,
    "train.num_plot_samples": -1,
    "tracking.uri": 12,
    "tracking.experiment": "",
    "tracking.run_name": 12,
    "tracking.enabled": "maybe",
    "tracking.artifact_location": 12,
    "tracking.timeout_s": 0,
    "tracking.max_retries": -1,
    "tracking.registry_uri": 12,
    "tracking.registered_model_name": "",
    "tracking.alias": "",
    "evaluate.split": "holdout",
    "evaluate.tolerance": "small",
    "evaluate.drift_limit": -1.0,
    "evaluate.drift_action": "panic",
    "evaluate.reference_tolerance": "small",
    "evaluate.dequantization_seed": "seven",
    "evaluate.batch_size": 0,
    "evaluate.num_samples": 0,
    "evaluate.importance_samples": 0,
    "evaluate.sample_seed": "seven",
    "push.push_base": "",
    "push.model_name": "flows",
    "push.importance_samples": 0,
    "push.max_version_attempts": 0,
    "cluster.pipeline_root": "local/folder",
    "cluster.image": "tfflows:latest",
    "cluster.cpu": 0,
    "cluster.memory_gb": -1,
}

# field path -> a valid value other than the default (or a pair: the value and the settings it
# needs), that must reach the component's configuration as it is.
GOOD = {
    "pipeline_name": "nightly",
    "output": "elsewhere",
    "metadata": "stores/metadata.sqlite",
    "beam_pipeline_args": ["--runner=DirectRunner"],
    "enable_cache": False,
    "progress": "lines",
    "progress_every_epochs": 3,
    "ingest.dataset": "digits",
    "ingest.path": ("rows.csv", {"ingest.dataset": "csv"}),
    "ingest.test_path": ("test.csv", {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.columns": (["b", "a"], {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.context_columns": (["c"], {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.categorical_columns": (["merchant"], {"ingest.dataset": "csv", "ingest.path": "x.csv"}),
    "ingest.context": ("label", {"ingest.dataset": "digits"}),
    "ingest.feature_key": ("feat", {"ingest.dataset": "tfrecord", "ingest.path": "x.tfrecord"}),
    "ingest.eval_fraction": 0.25,
    "ingest.test_fraction": 0.2,
    "ingest.eval_count": 7,
    "ingest.test_count": 9,
    "ingest.seed": 7,
    "ingest.shuffle": False,
    "ingest.max_examples": 100,
    "ingest.num_samples": 500,
    "ingest.noise": 0.2,
    "ingest.discrete": (True, {"ingest.dataset": "npy", "ingest.path": "x.npy", "ingest.num_levels": 4}),
    "ingest.num_levels": (4, {"ingest.dataset": "npy", "ingest.path": "x.npy", "ingest.discrete": True}),
    "ingest.image_shape": ([2, 2], {"ingest.dataset": "npy", "ingest.path": "x.npy"}),
    "ingest.allow_pickle": (True, {"ingest.dataset": "gas", "ingest.path": "data"}),
    "ingest.flip_augment": (True, {"ingest.dataset": "images", "ingest.path": "images"}),
    "ingest.name": "measurements",
    "ingest.span_window": 3,
    "transform.method": "identity",
    "transform.logit_lambda": 0.01,
    "transform.analyze_splits": ["train", "eval"],
    "transform.min_std": 1e-6,
    "train.kind": "realnvp",
    "train.num_layers": 3,
    "train.hidden_units": [32, 16],
    "train.batch_norm": True,
    "train.num_components": (3, {"train.kind": "made_mog"}),
    "train.l2": 1e-4,
    "train.flow_options": {"order": "random"},
    "train.objective": ("reverse_kl", {"train.kind": "planar", "train.target": "U1"}),
    "train.target": ("U2", {"train.objective": "reverse_kl", "train.kind": "planar"}),
    "train.target_dim": (3, {"train.objective": "reverse_kl", "train.kind": "planar",
                             "train.target": "tests.vi_targets:shifted_gaussian"}),
    "train.target_box": (2.0, {"train.objective": "reverse_kl", "train.kind": "planar", "train.target": "U2"}),
    "train.anneal_epochs": (5, {"train.objective": "reverse_kl", "train.kind": "planar", "train.target": "U1"}),
    "train.vae_options": ({"latent_dim": 8}, {"train.objective": "vae", "ingest.dataset": "digits"}),
    "train.epochs": 7,
    "train.batch_size": 64,
    "train.learning_rate": 0.01,
    "train.lr_schedule": "cosine",
    "train.lr_decay_rate": 0.5,
    "train.lr_min_fraction": 0.1,
    "train.patience": 4,
    "train.max_steps_per_epoch": 11,
    "train.eval_batch_size": 123,
    "train.shuffle_buffer": 99,
    "train.seed": 5,
    "train.mixed_precision": None,  # no valid value but the default: True is refused (float32 only)
    "train.jit_compile": False,
    "train.resume": False,
    "train.max_nan_retries": 1,
    "train.log_every_steps": 7,
    "train.num_plot_samples": 16,
    "tracking.uri": "http://127.0.0.1:5999",
    "tracking.experiment": "nightly-exp",
    "tracking.run_name": "first",
    "tracking.enabled": False,
    "tracking.artifact_location": "/tmp/artifacts",
    "tracking.timeout_s": 2.5,
    "tracking.max_retries": 0,
    "tracking.registry_uri": "sqlite:////tmp/registry.db",
    "tracking.registered_model_name": "flows",
    "tracking.alias": "stable",
    "evaluate.split": "eval",
    "evaluate.tolerance": 0.5,
    "evaluate.drift_limit": 1.0,
    "evaluate.drift_action": "fail",
    "evaluate.reference_tolerance": 0.25,
    "evaluate.dequantization_seed": 3,
    "evaluate.batch_size": 250,
    "evaluate.num_samples": 500,
    "evaluate.importance_samples": 16,
    "evaluate.sample_seed": 9,
    "push.push_base": "/tmp/push_base",
    "push.model_name": None,  # set by the pipeline from pipeline_name (`resolved_sections`); any other is refused
    "push.importance_samples": 32,
    "push.max_version_attempts": 5,
    "cluster.pipeline_root": "gs://bucket/root",
    "cluster.image": "tfflows:1.2.3",
    "cluster.cpu": 2.0,
    "cluster.memory_gb": 8.0,
}


def field_paths(cls=RunConfig, prefix: str = "") -> list:
    """The dotted path of every field of ``cls``, into nested dataclass sections."""
    hints = typing.get_type_hints(cls)
    paths = []
    for f in dataclasses.fields(cls):
        if dataclasses.is_dataclass(hints[f.name]):
            paths += field_paths(hints[f.name], f"{prefix}{f.name}.")
        else:
            paths.append(prefix + f.name)
    return paths


def _split(entry):
    return entry if isinstance(entry, tuple) else (entry, {})


def _nested(settings: dict) -> dict:
    """{"a.b": v} -> {"a": {"b": v}} (`load_run_config`'s overrides)."""
    nested: dict = {}
    for path, value in settings.items():
        *sections, name = path.split(".")
        cursor = nested
        for section in sections:
            cursor = cursor.setdefault(section, {})
        cursor[name] = value
    return nested


def test_the_tables_name_every_field():
    paths = field_paths()
    assert len(paths) == len(set(paths))
    assert set(BAD) == set(paths), f"give these fields a bad value: {sorted(set(paths) - set(BAD))}; stale: " \
                                   f"{sorted(set(BAD) - set(paths))}"
    assert set(GOOD) == set(paths), f"give these fields a good value: {sorted(set(paths) - set(GOOD))}; stale: " \
                                    f"{sorted(set(GOOD) - set(paths))}"


_REFUSALS = r"""
import json, sys, time
from tfflows.components.config import ConfigError
from tfflows.pipeline.config import load_run_config
cases = json.loads(sys.argv[1])
start = time.perf_counter()
load_run_config()  # the cold first call: the checks' own lazy imports (flow kinds, objectives)
cold = time.perf_counter() - start
results = {}
for path, value, settings in cases:
    overrides = {}
    for key, v in list(settings.items()) + [(path, value)]:
        *sections, name = key.split(".")
        cursor = overrides
        for section in sections:
            cursor = cursor.setdefault(section, {})
        cursor[name] = v
    start = time.perf_counter()
    try:
        load_run_config(None, overrides)
        results[path] = ["accepted", "", 0.0]
    except Exception as error:
        results[path] = [type(error).__name__, str(error), time.perf_counter() - start]
heavy = sorted(m for m in ("tensorflow", "tfx", "apache_beam", "mlflow") if m in sys.modules)
print(json.dumps({"results": results, "heavy": heavy, "cold": cold}))
"""


def test_a_bad_value_of_every_field_is_one_config_error_line_naming_it_before_tensorflow():
    cases = [[path, *_split(entry)] for path, entry in BAD.items()]
    proc = subprocess.run([sys.executable, "-c", _REFUSALS, json.dumps(cases)], capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout)
    assert out["heavy"] == [], out["heavy"]
    assert out["cold"] < 2.0, out["cold"]
    wrong = {}
    for path, (kind, message, seconds) in out["results"].items():
        if kind != "ConfigError" or path not in message or "\n" in message or seconds > 0.5:
            wrong[path] = (kind, message[:200], round(seconds, 3))
    assert not wrong, json.dumps(wrong, indent=1)


def _component_configs(config):
    """What each component's executor receives: the sections as `pipeline.pipeline.create_pipeline`
    hands them to the TFX wrappers (tracking and push resolved), through their JSON round trip."""
    from tfflows.pipeline.config import tracking_uri
    from tfflows.pipeline.pipeline import resolved_sections

    tracking, push = resolved_sections(config, tracking_uri(config))
    sections = {"ingest": config.ingest, "transform": config.transform, "train": config.train,
                "tracking": tracking, "evaluate": config.evaluate, "push": push}
    return {name: type(section).from_json(section.to_json()) for name, section in sections.items()}


def _conformed(value):
    return tuple(_conformed(v) for v in value) if isinstance(value, list) else value


@pytest.mark.parametrize("path", sorted(GOOD))
def test_a_good_value_of_every_field_reaches_its_component(path):
    from tfflows.pipeline.config import load_run_config

    value, settings = _split(GOOD[path])
    if value is None:
        pytest.skip(f"{path}: no valid value other than the default")
    config = load_run_config(None, _nested({**settings, path: value}))
    section, _, name = path.rpartition(".")
    if section in ("", "cluster"):  # read by the runner and `compile` from the RunConfig itself
        holder = config if not section else config.cluster
    else:
        holder = _component_configs(config)[section]
    got = getattr(holder, name)
    expected = _conformed(value)
    assert got == expected or (isinstance(expected, float) and got == pytest.approx(expected)), (path, got, expected)

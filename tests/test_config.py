"""Strict configuration: every mistake is one line naming the field path, what it expects and the
fix, reported before TensorFlow is imported (no TensorFlow in these tests: they take seconds)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

import pytest

from tfflows.components.config import ConfigError, build_config
from tfflows.components.train.config import TrainConfig
from tfflows.pipeline.config import RunConfig, load_run_config

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# (--set assignment, what the one line must say): issue 16 item 8 and issue 18 item 7.
BAD_SETTINGS = [
    ("enable_cache=maybe", "enable_cache: expected true or false, got 'maybe'"),
    ("tracking.uri=12", "tracking.uri: expected a string or null, got 12 (int)"),
    ("train.hidden_units=5", "train.hidden_units: expected a list of integers, got 5 (int)"),
    ("train.hidden_units=[0]", "train.hidden_units must be widths >= 1"),
    ("train.hidden_units=[a]", "train.hidden_units: expected a list of integers, got ['a']"),
    ("train.num_layers=0", "train.num_layers must be an int >= 1, but is 0"),
    ("train.learning_rate=fast", "train.learning_rate: expected a number, got 'fast'"),
    ("train.epochs=2.5", "train.epochs: expected an integer, got 2.5"),
    ("train.kind=sylvester", "train.kind must be one of"),
    ("train.epoch=3", "unknown field 'train.epoch' (did you mean 'epochs'?)"),
    ("trainer.epochs=3", "unknown field 'trainer' (did you mean 'train'?)"),
    ("train=5", "train: expected a mapping of fields, got 5"),
    ("ingest.columns=[a, 1]", "ingest.columns: expected a list of strings or null"),
    ("train.flow_options={bogus: 1}", "train.flow_options has unknown option(s) ['bogus']"),
    # issue 27: a bad value of the kind's own option (was found only in the trainer, after ingest), and
    # an option that is a field of train (was accepted and ignored: the model got the default width)
    ("train.flow_options={order: sideways}", "train.flow_options.order must be 'natural', 'reversed' or 'random', "
                                             "but is 'sideways'; fix: change train.flow_options.order"),
    ("train.flow_options={hidden_units: [8]}", "train.flow_options.hidden_units repeats the field "
                                               "train.hidden_units; fix: set train.hidden_units instead"),
    ("train.flow_options={transformer: cubic}", "train.flow_options.transformer must be one of ('affine', 'spline')"),
    ("pipeline_name=../..", "pipeline_name '../..' is not a plain name"),
    ("progress=loud", "progress: expected one of auto, bar, lines, off"),
]


@pytest.mark.parametrize("assignment,expected", BAD_SETTINGS)
def test_a_bad_setting_is_one_line_with_the_field_path_and_the_fix(assignment, expected):
    with pytest.raises(ConfigError) as raised:
        load_run_config(None, None, [assignment])
    message = str(raised.value)
    assert expected in message
    assert "\n" not in message and ("fix:" in message or "valid fields" in message)


def test_values_are_conformed_to_their_type_hints():
    config = load_run_config(None, None, ["train.learning_rate=1", "train.hidden_units=[8, 8]",
                                          "beam_pipeline_args=[--runner=FnApiRunner]", "train.patience=null"])
    assert config.train.learning_rate == 1.0 and isinstance(config.train.learning_rate, float)
    assert config.train.hidden_units == (8, 8) and config.beam_pipeline_args == ("--runner=FnApiRunner",)
    assert config.train.patience is None
    # YAML 1.1 reads `1e-4` (no dot) as a string: a float field takes it as the number it means.
    assert build_config(TrainConfig, {"learning_rate": "1e-4"}).learning_rate == 1e-4
    with pytest.raises(ConfigError, match="mixed_precision: expected true or false, got 1"):
        build_config(TrainConfig, {"mixed_precision": 1})  # an int is not a bool, nor a bool an int
    with pytest.raises(ConfigError, match="epochs: expected an integer, got True"):
        build_config(TrainConfig, {"epochs": True})


def test_the_defaults_and_a_flow_config_need_no_tensorflow():
    """The check of a valid configuration (flow options included), and the CLI module, do not import
    TensorFlow, TFX, Beam or MLflow (the boundary of `pipeline/cli.py`'s docstring)."""
    code = ("import sys; import tfflows.pipeline.cli; from tfflows.pipeline.config import load_run_config; "
            "load_run_config(None, None, ['train.flow_options={transformer: spline}', 'train.kind=realnvp']); "
            "print(sorted(m for m in ('tensorflow', 'tfx', 'apache_beam', 'mlflow') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert result.stdout.strip() == "[]"


@pytest.mark.parametrize("args", [
    ["--set", "enable_cache=maybe"], ["--set", "tracking.uri=12"], ["--set", "train.hidden_units=5"],
    ["--set", "train.num_layers=0"], ["--set", "train.hidden_units=[0]"], ["--set", "train.epochz=3"],
    ["--model", "sylvester"], ["--set", "pipeline_name=../.."],
    ["--set", "train.flow_options={order: sideways}"], ["--set", "train.flow_options={hidden_units: [8]}"],
])
def test_cli_reports_a_bad_config_in_one_line_within_2_seconds_without_tensorflow(tmp_path, args):
    """Before: ~16 s (TensorFlow was imported first), and some of these passed or crashed."""
    code = ("import sys; from tfflows.pipeline.cli import main; status = main(sys.argv[1:]); "
            "assert 'tensorflow' not in sys.modules, 'tensorflow was imported'; sys.exit(status)")
    output = tmp_path / "out"
    start = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", code, "run", "--output", str(output), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    elapsed = time.perf_counter() - start
    assert result.returncode == 2, result.stderr[-3000:]
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("tfflows run: ") and "Traceback" not in result.stderr, lines
    assert result.stdout == ""
    assert elapsed < 2.0, f"{elapsed:.2f} s"
    assert not output.exists()  # nothing written for a configuration mistake


def test_run_config_defaults_validate():
    assert load_run_config() == RunConfig()


def test_the_narrowest_made_width_is_what_a_made_accepts():
    """`models.kinds.narrowest_hidden_width`, which `tfflows run` checks against the data's width
    before ingest (issue 28, item 4), agrees with the MADE's own rule (`masks.hidden_degrees`)."""
    from tfflows.models.kinds import narrowest_hidden_width
    from tfflows.models.masks import hidden_degrees

    for kind, d, made_inputs in (("maf", 9, 9), ("made_mog", 9, 9), ("iaf", 9, 9), ("haf", 9, 5), ("realnvp", 9, 0)):
        need = narrowest_hidden_width(kind, d)
        assert need == max(made_inputs - 1, 0), kind
        if need:
            hidden_degrees(need, made_inputs)
            with pytest.raises(ValueError, match="hidden_units"):
                hidden_degrees(need - 1, made_inputs)

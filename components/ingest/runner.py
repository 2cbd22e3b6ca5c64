"""Beam pipeline options shared by the ingest and transform executors.

The same code runs locally and on a production runner: only the arguments change, e.g.
``['--runner=DataflowRunner', '--project=...', '--region=...', '--temp_location=gs://...']``,
``['--runner=FlinkRunner', '--flink_master=host:8081']`` or ``['--runner=SparkRunner', ...]``.
`check_runner` refuses runners known to lose written data before anything runs.
"""

from __future__ import annotations

from typing import List, Optional, Sequence

from apache_beam.options.pipeline_options import PipelineOptions, StandardOptions

from tfflows.components.errors import DataError

__all__ = ["DEFAULT_BEAM_ARGS", "beam_args", "check_runner", "executor_beam_args", "pipeline_options",
           "runner_name"]

# Since Beam 2.68 the default DirectRunner first tries to download the Prism runner, which
# fails offline: pin the in-process FnApiRunner for local runs.
DEFAULT_BEAM_ARGS = ("--runner=FnApiRunner", "--direct_num_workers=1")


def beam_args(args: Optional[Sequence[str]] = None) -> List[str]:
    """``args`` as a list, with ``--runner=FnApiRunner`` added when no runner is named."""
    if args is None:
        return list(DEFAULT_BEAM_ARGS)
    args = [str(a) for a in args]
    if not any(a == "--runner" or a.startswith("--runner=") for a in args):
        args.insert(0, "--runner=FnApiRunner")
    return args


def pipeline_options(args: Optional[Sequence[str]] = None) -> PipelineOptions:
    """`PipelineOptions` from Beam command-line arguments (see `beam_args`)."""
    return PipelineOptions(beam_args(args))


def runner_name(args: Optional[Sequence[str]] = None) -> str:
    """The runner the arguments select, e.g. ``"FnApiRunner"`` or ``"DataflowRunner"`` (a runner
    given by its module path, ``apache_beam.runners.dask.dask_runner.DaskRunner``, by its class
    name)."""
    return str(pipeline_options(args).view_as(StandardOptions).runner).rsplit(".", 1)[-1]


# Runners whose file sinks lose data while the job reports success (checked on a real
# dask.distributed LocalCluster: WriteToText wrote an empty file, WriteToTFRecord nothing;
# tests/test_runners.py re-checks it so that the refusal is lifted once Beam fixes it).
_LOSSY_RUNNERS = {
    "DaskRunner": "Beam 2.77's DaskRunner loses file-sink output (WriteToTFRecord writes no "
                  "files while the job reports success)",
}


def check_runner(args: Optional[Sequence[str]] = None) -> str:
    """The runner's name (see `runner_name`); `DataError` for a runner known to lose data."""
    name = runner_name(args)
    if name in _LOSSY_RUNNERS:
        raise DataError("beam_pipeline_args", f"--runner={name}", _LOSSY_RUNNERS[name],
                        "use --runner=PortableRunner (Flink, Spark or a local job service) or "
                        "DataflowRunner, or FnApiRunner on one machine (README 'Scale-out')")
    return name


def executor_beam_args(args: Optional[Sequence[object]]) -> Optional[List[str]]:
    """A TFX Beam executor's ``_beam_pipeline_args`` (None when empty). TFX types them
    ``str | Placeholder``, as a pipeline declares them; the orchestrator resolves the placeholders
    before ``Do`` runs, so one left is refused."""
    if not args:
        return None
    resolved = [a for a in args if isinstance(a, str)]
    if len(resolved) != len(args):
        raise TypeError(f"unresolved Beam pipeline arguments: {[a for a in args if not isinstance(a, str)]!r}")
    return resolved

"""The base of the Beam components' executors (ingest, transform).

TFX's `BaseBeamExecutor` builds, for every executor run with Beam arguments, an sdist of the
installed TFX for remote workers: it copies the whole ``tfx`` package (42 MB) into a new temporary
folder that it never removes and runs ``setup.py sdist`` there (about 2 s). Workers of an
in-process runner import TFX from this installation, so for them the package is only cost and
litter: a full test suite left 19 GB of such folders in /tmp. Other runners keep TFX's behaviour
(their workers may be remote).
"""

from __future__ import annotations

from tfx.dsl.components.base import base_beam_executor

from tfflows.components.ingest.runner import executor_beam_args, runner_name

__all__ = ["BeamExecutor"]

# Runners whose workers are this process or its children (FnApiRunner's multi_processing mode).
_IN_PROCESS_RUNNERS = frozenset({"FnApiRunner", "DirectRunner", "BundleBasedDirectRunner"})


class BeamExecutor(base_beam_executor.BaseBeamExecutor):
    """`BaseBeamExecutor` without TFX's package for remote workers when the runner is in-process."""

    def __init__(self, context=None):
        args = getattr(context, "beam_pipeline_args", None)
        if not args or runner_name(executor_beam_args(args)) not in _IN_PROCESS_RUNNERS:
            super().__init__(context)
            return
        context.beam_pipeline_args = []  # TFX adds its package only to non-empty arguments
        try:
            super().__init__(context)
        finally:
            context.beam_pipeline_args = args
        self._beam_pipeline_args = list(args)

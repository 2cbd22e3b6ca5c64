"""What each step of a local run did, read back from ML Metadata after the run.

LocalDagRunner records every node of a run as an execution in the run's ``pipeline_run`` context:
COMPLETE when it ran, CACHED when its cache key (its execution properties, the content
fingerprint of the inputs among them, and its input artifacts) matched an earlier execution, whose
output artifacts it then reuses. `run_steps` turns that into one `Step` per node: what its outputs
are (cached or not: the artifacts this run consumed), and for a reused step, which earlier run
produced them and when. The runner reads the summary's model, evaluation and push from these
outputs, never from "the newest artifact of a type" (which after a partly cached run belongs to
another run).
"""

from __future__ import annotations

import dataclasses
import time
from typing import Dict, List, Optional

from ml_metadata.proto import metadata_store_pb2 as mlmd

__all__ = ["Step", "run_steps"]



@dataclasses.dataclass(frozen=True)
class Step:
    """One node of a run: its name, output URIs by output key, and where reused outputs came from."""

    name: str
    outputs: Dict[str, str]
    reused_run: Optional[str] = None
    reused_at: Optional[str] = None

    @property
    def reused(self) -> bool:
        return self.reused_run is not None

    def line(self) -> str:
        if not self.reused:
            return f"{self.name}: ran"
        return f"{self.name}: reused (inputs unchanged since run {self.reused_run}, {self.reused_at})"


def _utc(ms: int) -> str:
    return time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime(ms / 1000))


def _outputs(store, execution_id: int) -> Dict[str, str]:
    events = [e for e in store.get_events_by_execution_ids([execution_id]) if e.type == mlmd.Event.OUTPUT]
    uris = {a.id: a.uri for a in store.get_artifacts_by_id([e.artifact_id for e in events])}
    return {e.path.steps[0].key: uris[e.artifact_id] for e in events if e.path.steps}


def _context(store, execution_id: int, type_name: str):
    return next((c for c in store.get_contexts_by_execution(execution_id) if c.type == type_name), None)


def _origin(store, execution) -> tuple:
    """(run id, date) of the COMPLETE execution whose outputs a CACHED one reuses."""
    cache = _context(store, execution.id, "execution_cache")
    done = [e for e in (store.get_executions_by_context(cache.id) if cache else [])
            if e.last_known_state == mlmd.Execution.COMPLETE and e.id < execution.id]
    if not done:
        return "unknown", "unknown date"
    origin = max(done, key=lambda e: e.id)
    run = _context(store, origin.id, "pipeline_run")
    return (run.name, _utc(run.create_time_since_epoch)) if run else ("unknown", _utc(origin.create_time_since_epoch))


def run_steps(store, node_names: Dict[str, str], since_ms: int) -> List[Step]:
    """The steps of the newest run started at or after ``since_ms`` (ms since the epoch), in the
    order of ``node_names`` (node id -> step name); empty when there is none."""
    runs = [c for c in store.get_contexts_by_type("pipeline_run") if c.create_time_since_epoch >= since_ms]
    if not runs:
        return []
    run = max(runs, key=lambda c: c.id)
    steps = {}
    for execution in store.get_executions_by_context(run.id):
        node = _context(store, execution.id, "node")
        name = next((n for node_id, n in node_names.items() if node and node.name.endswith("." + node_id)), None)
        if name is None:
            continue
        origin = _origin(store, execution) if execution.last_known_state == mlmd.Execution.CACHED else (None, None)
        steps[name] = Step(name, _outputs(store, execution.id), *origin)
    return [steps[name] for name in node_names.values() if name in steps]

"""How a training run is identified in MLflow: its name, description, tags and dataset source.

A run is named after what ran (``maf-cancer.csv-20261206-0938``: model kind, the data's short
name, UTC minute; `components.tracking.Tracker` makes it unique in the experiment), so a list of
runs reads as a history instead of MLflow's random names. The description (the ``mlflow.note.content``
tag the UI shows) names the data file, its columns and span, the flow kind and its options; evaluate
and push append the blessing and the push. The dataset inputs point at the user's file (path and
content digest, `components.inputs`), not at the pipeline's internal Examples folder.
"""

from __future__ import annotations

import time
from typing import Any, Dict, Optional, Tuple

__all__ = ["dataset_source", "run_description", "run_name", "run_tags"]


def _inputs(metadata) -> dict:
    return (metadata.inputs or {}) if metadata is not None else {}


def _label(metadata, target: Optional[str]) -> str:
    if metadata is None:
        return f"target-{(target or 'custom').rsplit(':', 1)[-1]}"
    return _inputs(metadata).get("label") or metadata.name


def run_name(kind: str, metadata, target: Optional[str] = None, now: Optional[float] = None) -> str:
    """``<kind>-<data>-<YYYYMMDD-HHMM>`` (UTC)."""
    return f"{kind}-{_label(metadata, target)}-{time.strftime('%Y%m%d-%H%M', time.gmtime(now))}"


def _spans(metadata) -> str:
    spans = _inputs(metadata).get("spans") or []
    return ", ".join(str(s) for s in spans)


def run_tags(metadata, target: Optional[str] = None) -> Dict[str, str]:
    """``data`` (short name), ``data.span``, ``data.digest``, ``data.files`` of the run."""
    inputs = _inputs(metadata)
    tags = {"data": _label(metadata, target)}
    if inputs:
        tags.update({"data.span": _spans(metadata) or "none", "data.digest": inputs["digest"],
                     "data.files": ", ".join(f[0] for f in inputs["files"])})
    return tags


def run_description(kind: str, objective: str, flow_options: Dict[str, Any], metadata,
                    target: Optional[str] = None) -> str:
    """Markdown paragraphs: the model and its options, then the data (file, digest, span,
    columns, split sizes)."""
    options = ", ".join(f"{k} {v}" for k, v in flow_options.items())
    lines = [f"**{kind}** ({options}), objective {objective}."]
    if metadata is None:
        lines.append(f"Target: {target}.")
        return "\n\n".join(lines)
    inputs = _inputs(metadata)
    files = [f"`{path}` (sha256 {digest[:12]}…)" for path, _, digest in inputs.get("files", [])]
    sizes = ", ".join(f"{split} {n}" for split, n in metadata.split_sizes.items())
    data = f"Data: {', '.join(files[:5]) or metadata.source}{' …' if len(files) > 5 else ''}"
    if inputs.get("spans"):
        data += f"; span {_spans(metadata)} of `{inputs['pattern']}`"
    columns = ", ".join(metadata.feature_names[:20]) + (" …" if len(metadata.feature_names) > 20 else "")
    if metadata.context_names:  # p(columns | context)
        columns += f" given context {', '.join(metadata.context_names)}"
    lines.append(f"{data}; columns {columns}; rows {sizes}.")
    return "\n\n".join(lines)


def dataset_source(metadata, examples_uri: str) -> Tuple[dict, str]:
    """(source, digest) of the run's dataset inputs: the user's file (or span pattern) and the
    content digest; a bundled dataset (no files): its name and the ingested rows' fingerprint."""
    inputs = _inputs(metadata)
    if not inputs:
        return {"uri": metadata.source, "examples": examples_uri}, metadata.fingerprint
    files = [f[0] for f in inputs["files"]]
    uri = files[0] if len(files) == 1 else inputs["pattern"]
    return {"uri": uri, "files": files[:100], "digest": inputs["digest"], "spans": inputs["spans"]}, inputs["digest"]


def version_identity(kind: Optional[str], metadata, evaluation: Optional[dict], target: Optional[str] = None) -> dict:
    """The registry version's ``tags`` (kind, data, span, digest, blessing) and ``description``
    (what was trained on what, and why it was blessed), so a version says what it is without its run."""
    reason = (evaluation or {}).get("reason", "")
    tags = {"kind": kind, **run_tags(metadata, target), "blessing": reason[:500]}
    span = f" (span {_spans(metadata)})" if _spans(metadata) else ""
    return {"tags": tags, "description": f"{kind} on {_label(metadata, target)}{span}. {reason}"[:5000]}

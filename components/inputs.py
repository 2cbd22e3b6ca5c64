"""What a run consumes: the input files behind ``IngestConfig.path``, their spans and a content
fingerprint, resolved once when the pipeline is built (`snapshot_inputs`).

The snapshot is an execution property of the ingest component, so it is part of ingest's cache
key and of its ML Metadata record: changed bytes at the same path miss the cache and re-run
ingest and everything downstream; unchanged bytes are reused. The ingest executor then reads
exactly the files the snapshot names (`effective_paths`), not whatever a glob matches later.

Fingerprint: a streamed sha256 of every file's whole content (1 MiB blocks), not size + mtime.
Size + mtime misses rewrites that keep both (``cp -p``, ``rsync -t``, a restored backup, two
writes within the file system's timestamp granularity); sha256 streams at several hundred MB/s,
one more sequential read of data that ingest parses anyway, which is small beside transform and
training. The fingerprint covers each file's path and bytes, so a renamed, added or removed file
of a folder or glob changes it too.

Spans follow TFX's ExampleGen input patterns: ``{SPAN}`` (and optionally ``{VERSION}``) stand for
digits in ``path`` (``data/{SPAN}/*.csv``, ``data/span-{SPAN}/v{VERSION}``); a run takes the newest
span, or the newest ``IngestConfig.span_window`` spans, each at its newest version. The newest span
is the one `tfx.components.example_gen.utils.calculate_splits_fingerprint_span_and_version` picks
(tested); the window is listed here, since that helper's static ranges do not match zero-padded
span numbers.
"""

from __future__ import annotations

import dataclasses
import glob
import hashlib
import json
import os
import re
from typing import Dict, List, Optional, Tuple

from tfflows.components.config import IngestConfig
from tfflows.components.errors import DataError

__all__ = ["InputSnapshot", "SPAN", "VERSION", "effective_paths", "has_span", "pattern_matches",
           "snapshot_inputs", "file_sha256"]

SPAN = "{SPAN}"  # TFX ExampleGen's placeholders: digits in a path
VERSION = "{VERSION}"
_BLOCK = 1 << 20
_WILDCARDS = "*?["


@dataclasses.dataclass(frozen=True)
class InputSnapshot:
    """The inputs of one run.

    Attributes:
      pattern: ``IngestConfig.path`` as configured (may hold ``{SPAN}`` / ``{VERSION}``).
      paths: what the pattern resolved to, one path (file, folder or glob) per span used, oldest
        first; ``(pattern,)`` without spans.
      spans: the span numbers used, oldest first (empty without ``{SPAN}``).
      version: the newest span's version (None without ``{VERSION}``).
      files: ``[[path, size, sha256], ...]`` of every input file (test file included), sorted.
      digest: sha256 of ``files`` (path and content of each): the content fingerprint.
      label: a short name of the data for run names (``cancer.csv``, ``data-span3``).
    """

    pattern: str
    paths: Tuple[str, ...]
    spans: Tuple[int, ...]
    version: Optional[int]
    files: Tuple[Tuple[str, int, str], ...]
    digest: str
    label: str

    def to_json(self) -> str:
        return json.dumps(dataclasses.asdict(self), sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> "InputSnapshot":
        values = json.loads(text)
        return cls(**{**values, "paths": tuple(values["paths"]), "spans": tuple(values["spans"]),
                      "files": tuple(tuple(f) for f in values["files"])})

    @property
    def span(self) -> Optional[int]:
        """The newest span used (None without spans)."""
        return self.spans[-1] if self.spans else None


def has_span(path: Optional[str]) -> bool:
    return path is not None and SPAN in path


def pattern_matches(path: str) -> List[str]:
    """What ``path`` names on disk: a file or folder, a glob's matches, or a span pattern's
    matches (``{SPAN}``/``{VERSION}`` as ``*``); empty when nothing is there."""
    as_glob = path.replace(SPAN, "*").replace(VERSION, "*")
    if any(c in as_glob for c in _WILDCARDS):
        return sorted(glob.glob(as_glob))
    return [path] if os.path.exists(path) else []


def file_sha256(path: str) -> str:
    """sha256 hex of a file's content, read in 1 MiB blocks (memory stays flat)."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(_BLOCK), b""):
            digest.update(block)
    return digest.hexdigest()


def _files_of(path: str) -> List[str]:
    """The files a path names: the file, every file under a folder, or a glob's files."""
    found = []
    for match in pattern_matches(path):
        if os.path.isdir(match):
            found += [os.path.join(root, name) for root, _, names in os.walk(match) for name in names]
        elif os.path.isfile(match):
            found.append(match)
    return sorted(os.path.abspath(f) for f in found)


def _span_regex(pattern: str) -> re.Pattern:
    """``pattern`` as a regular expression: ``{SPAN}``/``{VERSION}`` capture digits, glob wildcards
    match within one path component."""
    parts = re.split(r"(\{SPAN\}|\{VERSION\}|\*|\?)", pattern)
    table = {SPAN: r"(?P<span>\d+)", VERSION: r"(?P<version>\d+)", "*": r"[^/]*", "?": r"[^/]"}
    return re.compile("".join(table.get(p, re.escape(p)) for p in parts))


def _spans(pattern: str) -> Dict[int, Tuple[str, Optional[str]]]:
    """span number -> (its digits as written, its newest version's digits or None)."""
    regex = _span_regex(pattern)
    found: Dict[int, Tuple[str, Optional[str]]] = {}
    for match in pattern_matches(pattern):
        m = regex.fullmatch(match) or regex.match(match)
        if m is None:
            continue
        span, version = m.group("span"), m.groupdict().get("version")
        old = found.get(int(span))
        if old is None or (version is not None and int(version) > int(old[1] or -1)):
            found[int(span)] = (span, version)
    return found


def _resolve_spans(pattern: str, window: int) -> Tuple[Tuple[str, ...], Tuple[int, ...], Optional[int]]:
    """(paths, spans, newest version) of the newest ``window`` spans of ``pattern``."""
    spans = _spans(pattern)
    if not spans:
        raise DataError(pattern, "ingest.path", "no span matches the {SPAN} pattern",
                        "check the pattern, e.g. data/{SPAN}/*.csv with folders data/1, data/2, ...")
    chosen = sorted(spans)[-window:]
    paths = tuple(pattern.replace(SPAN, spans[s][0]).replace(VERSION, spans[s][1] or "") for s in chosen)
    version = spans[chosen[-1]][1]
    return paths, tuple(chosen), int(version) if version is not None else None


def _label(files: List[str], spans: Tuple[int, ...], pattern: str) -> str:
    """The data's short name for run names: the one file's name, else the folder the pattern
    starts in (``data`` for ``data/{SPAN}/*.csv``); ``-span<N>`` with spans."""
    if len(files) == 1:
        base = os.path.basename(files[0])
    else:
        fixed = re.split(r"\{|[*?\[]", pattern)[0].rstrip("/")
        base = os.path.basename(fixed) or "data"
    return f"{base}-span{spans[-1]}" if spans else base


def snapshot_inputs(config: IngestConfig) -> Optional[InputSnapshot]:
    """The input snapshot of ``config``; None for sources without files (``moons``, ``digits``,
    ``mnist`` without a path), for object-store paths (read as they are at run time) and for a
    path that names no file (the readers then say what is missing).

    Raises:
      DataError: a ``{SPAN}`` pattern matches nothing, or ``span_window`` without ``{SPAN}``.
    """
    path = config.path
    if not path or "://" in path:
        return None
    if has_span(path):
        paths, spans, version = _resolve_spans(path, config.span_window)
    elif config.span_window != 1:
        raise DataError(path, "ingest.span_window", f"is {config.span_window} but the path has no {{SPAN}}",
                        "put {SPAN} in ingest.path (e.g. data/{SPAN}/*.csv) or leave span_window at 1")
    else:
        paths, spans, version = (path,), (), None
    files = [f for p in paths for f in _files_of(p)]
    if not files:  # the readers say what is missing, in their words
        return None
    test_files = _files_of(config.test_path) if config.test_path and "://" not in config.test_path else []
    listed = tuple((f, os.path.getsize(f), file_sha256(f)) for f in sorted(set(files + test_files)))
    digest = hashlib.sha256(json.dumps(listed).encode()).hexdigest()
    return InputSnapshot(path, paths, spans, version, listed, digest, _label(files, spans, path))


def effective_paths(config: IngestConfig, snapshot: Optional[InputSnapshot]) -> Tuple[IngestConfig, Tuple[str, ...]]:
    """(the config with ``path`` set to the one resolved path, all resolved paths) for the
    readers; without a snapshot, ``config`` and its own path. Several paths (a span window) can
    only be streamed (csv, tfrecord)."""
    if snapshot is None:
        return config, (config.path,) if config.path else ()
    if len(snapshot.paths) > 1 and config.dataset not in ("csv", "tfrecord"):
        raise DataError(snapshot.pattern, "ingest.span_window",
                        f"{len(snapshot.paths)} spans of {config.dataset} files cannot be read together",
                        "use csv or tfrecord files for span windows, or span_window: 1")
    return dataclasses.replace(config, path=snapshot.paths[-1]), snapshot.paths

"""Ingestion: bundled datasets, user files and the MAF paper benchmarks -> split tf.Examples.

Public API: `run_ingest` (executor logic, no orchestrator needed), `read_metadata`,
`load_split`, `DatasetMetadata`; the TFX component is `components.ingest.component.IngestExamples`.
"""

from tfflows.components.ingest.executor import run_ingest
from tfflows.components.ingest.metadata import DatasetMetadata, load_split, read_metadata, split_files

__all__ = ["DatasetMetadata", "load_split", "read_metadata", "run_ingest", "split_files"]

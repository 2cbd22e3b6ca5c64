"""Preprocessing with tf.Transform: raw ``x`` -> model ``z`` and ``log_det`` per example.

Public API: `run_transform` (executor logic), `benchmark_transform_config`, `dequantize`,
`load_transform` / `apply_transform` (the graph in TF), and `conversions`; the TFX component
is `components.transform.component.TransformData`.
"""

from tfflows.components.transform import conversions
from tfflows.components.transform.executor import (PREPROCESSING_FILE, benchmark_transform_config,
                                           run_transform)
from tfflows.components.transform.tfdata import apply_transform, dequantize, load_transform

__all__ = ["PREPROCESSING_FILE", "apply_transform", "benchmark_transform_config",
           "conversions", "dequantize", "load_transform", "run_transform"]

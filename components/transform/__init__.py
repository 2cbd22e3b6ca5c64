"""Preprocessing with tf.Transform: raw ``x`` -> model ``z`` and ``log_det`` per example.

Public API: `run_transform` (executor logic), `benchmark_transform_config`, `Preprocessing`
(the invertible map and its constants) and `read_preprocessing` / `read_context_preprocessing` /
`read_categories` / `read_context_categories` / `network_context_dim` (from a TransformGraph
artifact), `network_context` (the graph's outputs -> the network's context), `dequantize`, `load_transform` / `apply_transform` (the graph in TF), and
`conversions`; the TFX component is `components.transform.component.TransformData`.
"""

from tfflows.components.transform import conversions
from tfflows.components.transform.executor import benchmark_transform_config, run_transform
from tfflows.components.transform.preprocessing import (PREPROCESSING_FILE, Preprocessing, network_context,
                                                        network_context_dim, read_categories, read_context_categories,
                                                        read_context_preprocessing, read_preprocessing)
from tfflows.components.transform.tfdata import apply_transform, dequantize, load_transform

__all__ = ["PREPROCESSING_FILE", "Preprocessing", "apply_transform", "benchmark_transform_config",
           "conversions", "dequantize", "load_transform", "network_context", "network_context_dim", "read_categories",
           "read_context_categories", "read_context_preprocessing", "read_preprocessing", "run_transform"]

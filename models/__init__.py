"""tfflows.models: normalising flows on TensorFlow Probability bijectors.

This package imports TensorFlow, TFP and tf-keras only (never TFX, Beam or MLflow), so a researcher
can use it alone:

    from tfflows.models import build_flow
    flow = build_flow("maf", event_dim=2, num_layers=5, hidden_units=[64])
    flow.compile(optimizer=tf_keras.optimizers.Adam(1e-3))
    flow.fit(train_batches, epochs=10)
    flow.log_prob(x); flow.sample(100, seed=1)

Direction convention (as in TFP): a bijector's forward maps base noise u to data x; the density
direction is the inverse. MAF and HAF evaluate densities in one parallel pass and sample
sequentially; IAF does the opposite; Real NVP and NICE are parallel both ways, as are the
multi-scale image flows Glow and Real NVP image (events stay flat rows [batch, D]; their bijectors
read the leading values as an image [H, W, C]). Flow kinds are a registry (`models.kinds`: each kind's options; `models.builders`: each kind's layers).
"""

import importlib
from typing import TYPE_CHECKING

from tfflows.models.kinds import FLOW_KINDS, FlowConfig, flow_option_names, register_kind

if TYPE_CHECKING:
    from tfflows.models.base_densities import MixtureMADE, StandardNormal
    from tfflows.models.categorical import CategoricalMADE
    from tfflows.models.conditional_targets import ConditionalBanana
    from tfflows.models.flows import FlowModel, build_flow
    from tfflows.models.made import MADE, MaskedDense
    from tfflows.models.mixed import MixedDensity

# Imported on first use (PEP 562), so that `tfflows.models.kinds` (and the CLI's configuration
# check that reads it) does not import TensorFlow.
_LAZY = {"FlowModel": "flows", "build_flow": "flows", "MADE": "made",
         "MaskedDense": "made", "MixtureMADE": "base_densities", "StandardNormal": "base_densities",
         "CategoricalMADE": "categorical", "MixedDensity": "mixed", "ConditionalBanana": "conditional_targets"}


def __getattr__(name):
    if name in _LAZY:
        return getattr(importlib.import_module(f"tfflows.models.{_LAZY[name]}"), name)
    raise AttributeError(f"module 'tfflows.models' has no attribute {name!r}")


__all__ = [
    "FLOW_KINDS",
    "FlowConfig",
    "FlowModel",
    "build_flow",
    "flow_option_names",
    "register_kind",
    "MADE",
    "MaskedDense",
    "MixtureMADE",
    "StandardNormal",
    "CategoricalMADE",
    "MixedDensity",
    "ConditionalBanana",
]

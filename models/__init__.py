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
sequentially; IAF does the opposite; Real NVP is parallel both ways.
"""

from tfflows.models.base_densities import MixtureMADE, StandardNormal
from tfflows.models.flows import FLOW_KINDS, FlowConfig, FlowModel, build_flow
from tfflows.models.made import MADE, MaskedDense

__all__ = [
    "FLOW_KINDS",
    "FlowConfig",
    "FlowModel",
    "build_flow",
    "MADE",
    "MaskedDense",
    "MixtureMADE",
    "StandardNormal",
]

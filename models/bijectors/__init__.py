"""tfflows bijectors. Convention: forward maps base noise u to data x (as in TFP)."""

from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.batch_norm import BatchNormalization
from tfflows.models.bijectors.coupling import AffineCoupling, ConditionerNet, Coupling, split_indices
from tfflows.models.bijectors.hybrid import HybridAutoregressive
from tfflows.models.bijectors.iaf import GatedInverseAutoregressiveFlow, InverseAutoregressiveFlow
from tfflows.models.bijectors.linear import DiagonalScaling, LULinear
from tfflows.models.bijectors.maf import MaskedAutoregressiveFlow
from tfflows.models.bijectors.permute import Permutation
from tfflows.models.bijectors.planar import PlanarFlow
from tfflows.models.bijectors.transformers import Additive, Affine, RationalQuadraticSpline

__all__ = [
    "FlowBijector",
    "BatchNormalization",
    "AffineCoupling",
    "ConditionerNet",
    "Coupling",
    "split_indices",
    "HybridAutoregressive",
    "GatedInverseAutoregressiveFlow",
    "InverseAutoregressiveFlow",
    "DiagonalScaling",
    "LULinear",
    "MaskedAutoregressiveFlow",
    "Permutation",
    "PlanarFlow",
    "Additive",
    "Affine",
    "RationalQuadraticSpline",
]

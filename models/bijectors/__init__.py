"""tfflows bijectors. Convention: forward maps base noise u to data x (as in TFP)."""

from tfflows.models.bijectors.actnorm import ActNorm
from tfflows.models.bijectors.base import FlowBijector
from tfflows.models.bijectors.batch_norm import BatchNormalization
from tfflows.models.bijectors.coupling import AffineCoupling, ConditionerNet, Coupling, split_indices
from tfflows.models.bijectors.hybrid import HybridAutoregressive
from tfflows.models.bijectors.image import FactorOut, ImageBijector, Squeeze
from tfflows.models.bijectors.image_coupling import (
    ConvNet,
    ImageCoupling,
    LearntPrior,
    channel_mask,
    checkerboard_mask,
)
from tfflows.models.bijectors.iaf import GatedInverseAutoregressiveFlow, InverseAutoregressiveFlow
from tfflows.models.bijectors.linear import DiagonalScaling, InvertibleConv1x1, LULinear
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
    "InvertibleConv1x1",
    "ActNorm",
    "ImageBijector",
    "Squeeze",
    "FactorOut",
    "ConvNet",
    "ImageCoupling",
    "LearntPrior",
    "checkerboard_mask",
    "channel_mask",
    "MaskedAutoregressiveFlow",
    "Permutation",
    "PlanarFlow",
    "Additive",
    "Affine",
    "RationalQuadraticSpline",
]

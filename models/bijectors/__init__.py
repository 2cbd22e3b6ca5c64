"""tfflows bijectors. Convention: forward maps base noise u to data x (as in TFP)."""

from models.bijectors.base import FlowBijector
from models.bijectors.batch_norm import BatchNormalization
from models.bijectors.coupling import AffineCoupling, ConditionerNet, split_indices
from models.bijectors.hybrid import HybridAutoregressive
from models.bijectors.iaf import GatedInverseAutoregressiveFlow, InverseAutoregressiveFlow
from models.bijectors.maf import MaskedAutoregressiveFlow
from models.bijectors.permute import Permutation
from models.bijectors.planar import PlanarFlow

__all__ = [
    "FlowBijector",
    "BatchNormalization",
    "AffineCoupling",
    "ConditionerNet",
    "split_indices",
    "HybridAutoregressive",
    "GatedInverseAutoregressiveFlow",
    "InverseAutoregressiveFlow",
    "MaskedAutoregressiveFlow",
    "Permutation",
    "PlanarFlow",
]

"""Degrees, orders and connectivity masks of a MADE (Germain et al. 2015; thesis ch. 4).

Every unit k of a MADE gets a degree m(k). Inputs carry their position in the autoregressive
order, 1..D. A hidden unit of degree m may see inputs of degree <= m, and an output of degree d
may see hidden units of degree < d, so output d depends only on inputs that come before it in the
order. Masks are pure NumPy functions of the degrees; the layers multiply them into their kernels
on every call, so the structure holds whatever the weights are.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["input_order", "hidden_degrees", "made_masks", "ORDERS"]

ORDERS = ("natural", "reversed", "random")


def input_order(event_dim: int, order: str | Sequence[int] = "natural", seed: int = 0) -> np.ndarray:
    """Degrees of the D inputs: a permutation of 1..D.

    Args:
      event_dim: D, the number of inputs.
      order: "natural" (1..D), "reversed" (D..1), "random" (a permutation drawn with `seed`), or an
        explicit sequence holding a permutation of 1..D.
      seed: seed of the "random" order.

    Example:
      >>> input_order(4, "reversed")
      array([4, 3, 2, 1])
    """
    if event_dim < 1:
        raise ValueError(f"`event_dim` must be a positive integer, but is {event_dim}.")
    if isinstance(order, str):
        if order == "natural":
            return np.arange(1, event_dim + 1)
        if order == "reversed":
            return np.arange(event_dim, 0, -1)
        if order == "random":
            return np.random.default_rng(seed).permutation(event_dim) + 1
        raise ValueError(f"`order` must be one of {ORDERS} or a permutation of 1..D, but is {order!r}.")
    degrees = np.asarray(order, dtype=np.int64)
    if degrees.shape != (event_dim,) or not np.array_equal(np.sort(degrees), np.arange(1, event_dim + 1)):
        raise ValueError(f"`order` must be a permutation of 1..{event_dim}, but is {list(order)}.")
    return degrees


def hidden_degrees(num_units: int, event_dim: int, min_degree: int = 1) -> np.ndarray:
    """Degrees of one hidden layer, assigned cyclically over min_degree..D-1.

    The cyclic (not random) assignment gives every admissible degree at least one unit as soon as
    the layer is wide enough, so no conditional is cut off from the inputs it may use.

    Example:
      >>> hidden_degrees(5, event_dim=4)
      array([1, 2, 3, 1, 2])
    """
    top = max(event_dim - 1, 1)
    low = min(min_degree, top)
    span = top - low + 1
    if event_dim > 1 and num_units < span:
        raise ValueError(
            f"`hidden_units` entries must be >= {span} for event_dim={event_dim} (one unit per "
            f"conditional), but a layer has {num_units}."
        )
    return np.arange(num_units) % span + low


def made_masks(
    degrees_in: np.ndarray, hidden_units: Sequence[int]
) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """Masks of a MADE with the given input degrees and hidden widths.

    Returns:
      (hidden_masks, output_mask, degrees): `hidden_masks[l]` has shape [fan_in, H_l] and is 1 where
      the connection is allowed (degree_out >= degree_in); `output_mask` has shape [H_L, D] (or
      [D, D] without hidden layers) and is 1 where degree_out > degree_in; `degrees` lists the
      degrees of the inputs and of every hidden layer.

    Example:
      Output 3 may see inputs 1 and 2, output 2 only input 1, output 1 nothing:

      >>> hidden_masks, output_mask, degrees = made_masks(input_order(3), [4])
      >>> hidden_masks[0]
      array([[1., 1., 1., 1.],
             [0., 1., 0., 1.],
             [0., 0., 0., 0.]], dtype=float32)
      >>> output_mask
      array([[0., 1., 1.],
             [0., 0., 1.],
             [0., 1., 1.],
             [0., 0., 1.]], dtype=float32)
    """
    event_dim = len(degrees_in)
    degrees = [np.asarray(degrees_in)]
    hidden_masks = []
    for width in hidden_units:
        d_hidden = hidden_degrees(width, event_dim, min_degree=int(degrees[-1].min()))
        hidden_masks.append((d_hidden[None, :] >= degrees[-1][:, None]).astype(np.float32))
        degrees.append(d_hidden)
    output_mask = (np.asarray(degrees_in)[None, :] > degrees[-1][:, None]).astype(np.float32)
    return hidden_masks, output_mask, degrees

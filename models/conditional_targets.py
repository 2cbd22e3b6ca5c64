r"""A synthetic conditional density with an exact log p(x | c), for measuring conditional flows.

`ConditionalBanana`: a context \(c \sim \mathcal{U}(-1, 1)\) and, given c, a 2-D banana (a
Gaussian whose second coordinate bends with the square of the first) that is stretched, bent,
rotated and shifted by smooth functions of c:

```math
\begin{aligned}
y_1 &\sim \mathcal{N}\big(0,\ s_1(c)^2\big), &
y_2 \mid y_1 &\sim \mathcal{N}\big(b(c)\,(y_1^2 - s_1(c)^2),\ s_2(c)^2\big), &
x &= R(\theta(c))\, y + m(c),
\end{aligned}
```

with \(s_1 = e^{0.4 c}\), \(b = 0.25 + 0.15 c\), \(s_2 = 0.3\, e^{-0.3 c}\),
\(\theta = \pi c / 3\), \(m = (c / 2, 0)\). The rotation has determinant 1, so with
\(y = R(\theta)^\top (x - m)\)

```math
\log p(x \mid c) = \log \mathcal{N}\big(y_1; 0, s_1^2\big)
  + \log \mathcal{N}\big(y_2; b\,(y_1^2 - s_1^2), s_2^2\big),
```

exactly, and \(\mathbb{E}[x \mid c] = m(c)\),
\(\operatorname{Cov}[x \mid c] = R\, \operatorname{diag}\big(s_1^2,\ 2 b^2 s_1^4 + s_2^2\big) R^\top\).
A flow that ignores c cannot match it: the shape turns by 120 degrees across the contexts.
NumPy, float64: the reference must not share the models' float32 rounding.
"""

from __future__ import annotations

import math

import numpy as np

__all__ = ["ConditionalBanana"]


class ConditionalBanana:
    """x [N, 2] given a context c [N, 1] uniform on (-1, 1): exact `log_prob`, `sample`, moments."""

    event_dim = 2
    context_dim = 1

    @staticmethod
    def parameters(c: np.ndarray) -> dict:
        """s1, b, s2, theta and the shift m [N, 2] of contexts c [N, 1] (module docstring)."""
        c = np.asarray(c, np.float64)[:, 0]
        return dict(s1=np.exp(0.4 * c), b=0.25 + 0.15 * c, s2=0.3 * np.exp(-0.3 * c), theta=math.pi * c / 3,
                    m=np.stack([0.5 * c, np.zeros_like(c)], axis=1))

    def sample_context(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """n contexts [n, 1] from U(-1, 1)."""
        return rng.uniform(-1.0, 1.0, size=(n, 1))

    def sample(self, context: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """One x [N, 2] per context row [N, 1]."""
        p = self.parameters(context)
        y1 = p["s1"] * rng.standard_normal(len(context))
        y2 = p["b"] * (y1**2 - p["s1"] ** 2) + p["s2"] * rng.standard_normal(len(context))
        cos, sin = np.cos(p["theta"]), np.sin(p["theta"])
        return np.stack([cos * y1 - sin * y2, sin * y1 + cos * y2], axis=1) + p["m"]

    def sample_joint(self, n: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
        """(x [n, 2], c [n, 1]) from p(c) p(x | c)."""
        context = self.sample_context(n, rng)
        return self.sample(context, rng), context

    def log_prob(self, x: np.ndarray, context: np.ndarray) -> np.ndarray:
        """log p(x | c) [N], exact (nats)."""
        p = self.parameters(context)
        d = np.asarray(x, np.float64) - p["m"]
        cos, sin = np.cos(p["theta"]), np.sin(p["theta"])
        y1, y2 = cos * d[:, 0] + sin * d[:, 1], -sin * d[:, 0] + cos * d[:, 1]

        def log_normal(v, mean, scale):
            return -0.5 * ((v - mean) / scale) ** 2 - np.log(scale) - 0.5 * math.log(2 * math.pi)

        return log_normal(y1, 0.0, p["s1"]) + log_normal(y2, p["b"] * (y1**2 - p["s1"] ** 2), p["s2"])

    def mean_and_covariance(self, context: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(mean [N, 2], covariance [N, 2, 2]) of x given each context, in closed form (module docstring)."""
        p = self.parameters(context)
        cos, sin = np.cos(p["theta"]), np.sin(p["theta"])
        rotation = np.stack([np.stack([cos, -sin], -1), np.stack([sin, cos], -1)], axis=-2)
        var_y = np.stack([p["s1"] ** 2, 2 * p["b"] ** 2 * p["s1"] ** 4 + p["s2"] ** 2], axis=-1)
        return p["m"], np.einsum("nij,nj,nkj->nik", rotation, var_y, rotation)

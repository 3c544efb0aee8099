"""LARS: layer-wise adaptive rate scaling (You et al. 2017), as MAE's linear probe uses it (He et al. 2022,
``util/lars.py``) and Objectives Matter's probe grid (Table 4) inherits.

One step for a weight matrix ``p`` with gradient ``g``, weight decay ``wd``, momentum ``m`` and trust
coefficient ``eta`` (0.001)::

    d  = g + wd * p                                   (coupled L2, as SGD)
    q  = eta * ||p|| / ||d||   (1 where either norm is 0)
    mu = m * mu + q * d
    p  = p - lr * mu

Vectors (biases, BatchNorm parameters) skip the weight decay and the trust ratio, as in MAE's code: they take
plain momentum SGD. :func:`lars_step_` does this for C configurations at once, each slice ``p[c]`` with its own
``lr[c]`` and ``wd[c]`` and its own norms; :class:`LARS` is the one-model ``torch.optim`` form of the same rule.
"""
from __future__ import annotations

import torch
from torch import Tensor

#: MAE's trust coefficient.
TRUST_COEFFICIENT = 1e-3
#: Table 4's optimizer momentum.
MOMENTUM = 0.9


def _per_config(v: Tensor, like: Tensor) -> Tensor:
    """A per-configuration vector ``[C]`` shaped to broadcast against ``like`` ``[C, ...]``."""
    return v.to(like).reshape(-1, *([1] * (like.ndim - 1)))


@torch.no_grad()
def lars_step_(params: list[Tensor], grads: list[Tensor], buffers: list[Tensor], lr: Tensor, weight_decay: Tensor,
               is_matrix: list[bool], *, momentum: float = MOMENTUM,
               trust_coefficient: float = TRUST_COEFFICIENT) -> None:
    """One LARS step, in place, on stacked parameters of C configurations.

    params, grads, buffers: tensors ``[C, ...]`` (slice ``c`` belongs to configuration ``c``; buffers start at 0).
    lr, weight_decay: ``[C]``. is_matrix: per parameter, whether each slice is a weight matrix (weight decay and the
    trust ratio apply, norms taken over the slice) or a vector (plain momentum SGD).
    """
    for p, g, mu, matrix in zip(params, grads, buffers, is_matrix, strict=True):
        d = g
        if matrix:
            d = g + _per_config(weight_decay, p) * p
            dims = tuple(range(1, p.ndim))
            p_norm = torch.linalg.vector_norm(p, dim=dims, keepdim=True)
            d_norm = torch.linalg.vector_norm(d, dim=dims, keepdim=True)
            q = torch.where((p_norm > 0) & (d_norm > 0), trust_coefficient * p_norm / d_norm.clamp_min(1e-30),
                            torch.ones_like(p_norm))
            d = d * q
        mu.mul_(momentum).add_(d)
        p.sub_(_per_config(lr, p) * mu)


class LARS(torch.optim.Optimizer):
    """LARS for one model (MAE's ``util/lars.py``): weight decay and the trust ratio on parameters with more than
    one dimension, plain momentum SGD on the others. ``lr`` may be changed per step through ``param_groups``."""

    def __init__(self, params, lr: float = 0.0, weight_decay: float = 0.0, momentum: float = MOMENTUM,
                 trust_coefficient: float = TRUST_COEFFICIENT):
        super().__init__(params, {"lr": lr, "weight_decay": weight_decay, "momentum": momentum,
                                      "trust_coefficient": trust_coefficient})

    @torch.no_grad()
    def step(self, closure=None):
        loss = None if closure is None else closure()
        for group in self.param_groups:
            live = [p for p in group["params"] if p.grad is not None]
            for p in live:
                if "mu" not in self.state[p]:
                    self.state[p]["mu"] = torch.zeros_like(p)
            # one configuration: add a leading axis of 1 and reuse the batched rule (lr and weight decay in
            # float64: _per_config casts them to each parameter's dtype, so float64 parameters see them unrounded)
            lr = torch.tensor([group["lr"]], dtype=torch.float64)
            weight_decay = torch.tensor([group["weight_decay"]], dtype=torch.float64)
            lars_step_([p.unsqueeze(0) for p in live], [p.grad.unsqueeze(0) for p in live],
                       [self.state[p]["mu"].unsqueeze(0) for p in live], lr, weight_decay, [p.ndim > 1 for p in live],
                       momentum=group["momentum"], trust_coefficient=group["trust_coefficient"])
        return loss

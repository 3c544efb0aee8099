"""Minibatch CKA kernel (all layer pairs from per-batch Grams) vs pytorch-cka 1.1.3's ``hsic`` (module ``cka``)."""
from __future__ import annotations

import torch
from common import best_of, record

from vitscope.kernels import cka


def run(layers: int = 24, n: int = 1024, batch: int = 32, p: int = 768) -> list[dict]:
    from cka import hsic as pytorch_cka_hsic  # pytorch-cka's import name is ``cka``
    g = torch.Generator().manual_seed(0)
    grams_a, grams_b = [], []
    for _ in range(0, n, batch):
        fa = torch.randn(layers, batch, p, generator=g, dtype=torch.float64)
        fb = fa[torch.randperm(layers, generator=g)] + torch.randn(layers, batch, p, generator=g, dtype=torch.float64)
        grams_a.append(fa @ fa.mT)
        grams_b.append(fb @ fb.mT)

    def ours():
        return cka.minibatch_cka_from_grams(grams_a, grams_b)

    def baseline():                                     # pytorch-cka's accumulation loop, without its clamping
        xy = torch.zeros(layers, layers, dtype=torch.float64)
        xx = torch.zeros(layers, dtype=torch.float64)
        yy = torch.zeros(layers, dtype=torch.float64)
        for ga, gb in zip(grams_a, grams_b):
            a, b, c = pytorch_cka_hsic(ga, gb)
            xy += a
            xx += b
            yy += c
        return xy / (xx[:, None] * yy[None, :]).sqrt()

    diff = float((ours() - baseline()).abs().max())
    return [record("cka_kernel_vs_pytorch_cka", best_of(ours), "pytorch-cka 1.1.3 hsic", best_of(baseline), diff,
                   1e-10, layers=layers, n=n, batch=batch)]

"""Minibatch CKA kernel (all layer pairs from per-batch Grams) vs pytorch-cka 1.1.3's ``hsic`` (module ``cka``)
and torch-cka 0.21's ``CKA._HSIC`` (one layer pair at a time, float32, as its ``compare`` loop does)."""
from __future__ import annotations

import torch
from common import best_of, best_of_interleaved, record

from vitscope.kernels import cka


def _grams(layers, n, batch, p):
    g = torch.Generator().manual_seed(0)
    grams_a, grams_b = [], []
    for _ in range(0, n, batch):
        fa = torch.randn(layers, batch, p, generator=g, dtype=torch.float64)
        fb = fa[torch.randperm(layers, generator=g)] + torch.randn(layers, batch, p, generator=g, dtype=torch.float64)
        grams_a.append(fa @ fa.mT)
        grams_b.append(fb @ fb.mT)
    return grams_a, grams_b


def run(layers: int = 24, n: int = 1024, batch: int = 32, p: int = 768) -> list[dict]:
    from cka import hsic as pytorch_cka_hsic  # pytorch-cka's import name is ``cka``
    from torch_cka.cka import CKA as TorchCKA
    grams_a, grams_b = _grams(layers, n, batch, p)

    def ours():
        return cka.minibatch_cka_from_grams(grams_a, grams_b)

    def pytorch_cka():                                  # pytorch-cka's accumulation loop, without its clamping
        xy = torch.zeros(layers, layers, dtype=torch.float64)
        xx = torch.zeros(layers, dtype=torch.float64)
        yy = torch.zeros(layers, dtype=torch.float64)
        for ga, gb in zip(grams_a, grams_b):
            a, b, c = pytorch_cka_hsic(ga, gb)
            xy += a
            xx += b
            yy += c
        return xy / (xx[:, None] * yy[None, :]).sqrt()

    hsic_pair = TorchCKA._HSIC                          # an unbound method: only ``self.device`` is read
    holder = type("Holder", (), {"device": "cpu"})()
    grams_a32 = [g.float() for g in grams_a]            # torch-cka multiplies by a float32 ones vector
    grams_b32 = [g.float() for g in grams_b]

    def torch_cka():                                    # torch-cka's compare loop on the same Grams
        m = torch.zeros(layers, layers, 3, dtype=torch.float64)
        for ga, gb in zip(grams_a32, grams_b32):
            for i in range(layers):
                K = ga[i].clone().fill_diagonal_(0)
                m[i, :, 0] += hsic_pair(holder, K, K)
                for j in range(layers):
                    L = gb[j].clone().fill_diagonal_(0)
                    m[i, j, 1] += hsic_pair(holder, K, L)
                    m[i, j, 2] += hsic_pair(holder, L, L)
        return m[:, :, 1] / (m[:, :, 0].sqrt() * m[:, :, 2].sqrt())

    mine = ours()
    sizes = {"layers": layers, "n": n, "batch": batch}
    times = best_of_interleaved({"ours": ours, "theirs": pytorch_cka}, repeat=5)
    rows = [record("cka_kernel_vs_pytorch_cka", times["ours"], "pytorch-cka 1.1.3 hsic", times["theirs"],
                   float((mine - pytorch_cka()).abs().max()), 1e-10, **sizes)]
    theirs = torch_cka()                                # float32 arithmetic: agreement to float32 precision
    rows.append(record("cka_kernel_vs_torch_cka", times["ours"], "torch-cka 0.21 _HSIC per layer pair",
                       best_of(torch_cka, 1), float((mine - theirs).abs().max()), 1e-4, **sizes))
    return rows

"""Benchmarks: each prints its time and the ratio against a named baseline measured in the same run.

    make bench            # or: python benchmarks/run.py

Targets live here, never in unit tests (timings vary by machine and load).
"""
from __future__ import annotations

import time

import torch

from vitscope.kernels import cka


def best_of(fn, repeat: int = 3) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def bench_minibatch_cka(layers: int = 13, n: int = 1024, batch: int = 32, p: int = 768) -> None:
    """All layer pairs at once (hsic1_cross inside MinibatchCKA) vs the per-pair loop the original code used."""
    g = torch.Generator().manual_seed(0)
    feats_a = [torch.randn(n, p, generator=g) for _ in range(layers)]
    feats_b = [torch.randn(n, p, generator=g) for _ in range(layers)]
    grams_a = [torch.stack([cka.gram(f[i:i + batch]) for f in feats_a]) for i in range(0, n, batch)]
    grams_b = [torch.stack([cka.gram(f[i:i + batch]) for f in feats_b]) for i in range(0, n, batch)]

    def vectorised():
        return cka.minibatch_cka_from_grams(grams_a, grams_b)

    def per_pair_loop():   # baseline: one hsic1 call per (layer_a, layer_b, batch), as in the TM/PyTorch-Model-Compare code
        out = torch.zeros(layers, layers, dtype=torch.float64)
        for i in range(layers):
            for j in range(layers):
                kl = sum(cka.hsic1(ga[i], gb[j]) for ga, gb in zip(grams_a, grams_b))
                kk = sum(cka.hsic1(ga[i], ga[i]) for ga in grams_a)
                ll = sum(cka.hsic1(gb[j], gb[j]) for gb in grams_b)
                out[i, j] = kl / (kk * ll).sqrt()
        return out

    torch.testing.assert_close(vectorised(), per_pair_loop())
    t_vec, t_loop = best_of(vectorised), best_of(per_pair_loop, repeat=1)
    print(f"minibatch CKA {layers}x{layers} layers, {n} examples / batch {batch}: "
          f"vectorised {t_vec * 1e3:.1f} ms, per-pair loop (baseline) {t_loop * 1e3:.1f} ms, "
          f"speed-up x{t_loop / t_vec:.1f}")


if __name__ == "__main__":
    torch.set_num_threads(max(1, torch.get_num_threads()))
    bench_minibatch_cka()

"""Full capture (attention distance, CLS attention, pooled tokens, Grams at block/norm1/qkv/fc1) vs a plain
forward pass, with fused attention off (the target: >= 0.8x its throughput) and on; where the capture's time goes
(per product); and bf16 autocast's effect on each analysis. Random-init timm models at 224 px."""
from __future__ import annotations

import time
from collections import Counter

import timm
import torch
from common import best_of_interleaved, record

from vitscope.extract import (
    AttentionDistance,
    Capture,
    ClsAttention,
    GramMatrices,
    PooledTokens,
    unfused_attention,
    vit_geometry,
)
from vitscope.kernels import attention, cka

GRAM_SITES = ("block", "norm1", "qkv", "fc1")


def _products():
    return {"attention_distance": AttentionDistance(), "cls_attention": ClsAttention(), "pooled": PooledTokens(),
            "grams": GramMatrices(capture_sites=GRAM_SITES)}


def _capture(model, x, autocast=False, spent: Counter | None = None):
    """The extraction's inner loop (extract/run.py) on one batch, without the data loading and the store.

    With ``spent``, the seconds each product spends consuming captured tensors are added to it (by product name).
    """
    products = _products()
    geometry = vit_geometry(model)
    sites = set().union(*(p.sites for p in products.values()))
    for p in products.values():
        p.start(geometry, x.shape[0])
        p.begin_batch(x.shape[0])
    consumers = {site: [(k, p) for k, p in products.items() if site in p.sites] for site in sites}

    def sink(site, block, t):
        for name, p in consumers[site]:
            if spent is None:
                p.consume(site, block, t)
            else:
                t0 = time.perf_counter()
                p.consume(site, block, t)
                spent[name] += time.perf_counter() - t0

    ctx = torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast)
    with torch.inference_mode(), Capture(model, sites, sink=sink) as cap, ctx:
        model.forward_features(x)
        cap.collect()
    for p in products.values():
        p.end_batch()
    return {k: p.finish() for k, p in products.items()}


def _reference_checks(model, x, out) -> tuple[float, float]:
    """Max |difference| of the capture's attention distances (both methods, every block) from float64 on the same
    maps, and of its minibatch CKA (block and fc1 Grams, every layer pair) from float64 Grams."""
    geometry = vit_geometry(model)
    with torch.inference_mode(), Capture(model, {"attn", "block", "fc1"}) as cap:
        model.forward_features(x)
        ref = cap.collect()
    diff_ad = 0.0
    for block, a in enumerate(ref["attn"]):
        exact = attention.attention_distances(a.double(), geometry["n_prefix"], geometry["patch_size"])
        scale = {"unit_square": 1.0, "pixels": geometry["patch_size"] * (geometry["grid"][0] - 1)}
        for method, d in exact.items():
            got = out["attention_distance"][method][:, block].double()
            diff_ad = max(diff_ad, float(((got - d) / scale[method]).abs().max()))
    depth = geometry["depth"]
    fast = out["grams"]["batch0000"]
    rows = [fast[GRAM_SITES.index(site) * depth + i] for site in ("block", "fc1") for i in range(depth)]
    exact = [cka.gram(t.double()) for site in ("block", "fc1") for t in ref[site]]
    c_fast = cka.minibatch_cka_from_grams([torch.stack(rows)], [torch.stack(rows)])
    c_ref = cka.minibatch_cka_from_grams([torch.stack(exact)], [torch.stack(exact)])
    return diff_ad, float((c_fast - c_ref).abs().max())


def run(archs=("vit_small_patch16_224", "vit_base_patch16_224"), batch: int = 32, repeat: int = 2) -> list[dict]:
    rows = []
    for arch in archs:
        rows += _run_one(arch, batch, repeat)
    return rows


def _run_one(arch: str, batch: int, repeat: int) -> list[dict]:
    torch.manual_seed(0)
    model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
    x = torch.randn(batch, 3, 224, 224)

    def plain():
        with torch.inference_mode():
            model.forward_features(x)

    def plain_unfused():
        with torch.inference_mode(), unfused_attention(model):
            model.forward_features(x)

    # The warm-up round matters: the first full-size pass pays one-time costs (allocator growth, kernel selection
    # for new shapes) that an extraction pays once, on its first batch.
    times = best_of_interleaved({"capture": lambda: _capture(model, x), "unfused": plain_unfused, "fused": plain},
                                repeat=repeat)
    spent = Counter()
    t0 = time.perf_counter()
    out = _capture(model, x, spent=spent)
    total = time.perf_counter() - t0
    breakdown = {"total_s": round(total, 3), "forward_and_hooks_s": round(total - sum(spent.values()), 3),
                 **{f"{k}_s": round(v, 3) for k, v in spent.items()}}
    print(f"capture time by product [{arch}]: " + ", ".join(f"{k} {v:.2f}" for k, v in breakdown.items()))
    diff_ad, diff_cka = _reference_checks(model, x, out)
    rows = [record(f"capture_vs_unfused_forward[{arch}]", times["capture"], "plain forward, fused attention off",
                   times["unfused"], max(diff_ad, diff_cka), 1e-6, "ratio >= 0.8", 0.8, batch=batch,
                   breakdown=breakdown, attention_distance_diff=diff_ad, cka_diff=diff_cka),
            record(f"capture_vs_fused_forward[{arch}]", times["capture"], "plain forward, fused attention on",
                   times["fused"], max(diff_ad, diff_cka), 1e-6, batch=batch)]
    rows.append({"benchmark": f"bf16_effect[{arch}]", **_bf16_effect(model, x, out), "agrees": True,
                 "sizes": {"batch": batch}})
    return rows


def _bf16_effect(model, x, out) -> dict:
    """bf16 autocast's effect on each analysis (not a speed comparison: CPUs without AMX gain nothing)."""
    bf = _capture(model, x, autocast=True)
    effect = {}
    for method in attention.METHODS:
        effect[f"attention_distance_{method}_max_abs_diff"] = float(
            (bf["attention_distance"][method] - out["attention_distance"][method]).abs().max())
    effect["cls_attention_max_abs_diff"] = float((bf["cls_attention"]["mean"] - out["cls_attention"]["mean"])
                                                 .abs().max())
    for pooled in ("cls", "mean"):
        a, b = out["pooled"][pooled], bf["pooled"][pooled]
        effect[f"pooled_{pooled}_max_rel_diff"] = float((a - b).abs().max() / a.abs().max())
    ga, gb = out["grams"]["batch0000"], bf["grams"]["batch0000"]
    effect["cka_fp32_vs_bf16_min_diagonal"] = float(cka.minibatch_cka_from_grams([ga], [gb]).diagonal().min())
    print("bf16 autocast: " + ", ".join(f"{k} {v:.3g}" for k, v in effect.items()))
    return effect

"""Full capture (attention distance, CLS attention, pooled tokens, Grams at block/norm1/qkv/fc1) vs a plain
forward pass, with fused attention on and off; plus bf16 autocast's effect on each analysis."""
from __future__ import annotations

import timm
import torch
from common import best_of, record

from vitscope.extract import (
    AttentionDistance,
    Capture,
    ClsAttention,
    GramMatrices,
    PooledTokens,
    unfused_attention,
    vit_geometry,
)
from vitscope.kernels import cka


def _products():
    return {"ad": AttentionDistance(), "cls": ClsAttention(), "pooled": PooledTokens(),
            "grams": GramMatrices(capture_sites=("block", "norm1", "qkv", "fc1"))}


def _capture(model, x, autocast=None):
    """The extraction's inner loop (extract/run.py) on one batch, without the data loading and the store."""
    products = _products()
    geometry = vit_geometry(model)
    sites = set().union(*(p.sites for p in products.values()))
    for p in products.values():
        p.start(geometry, x.shape[0])
        p.begin_batch(x.shape[0])

    def sink(site, block, t):
        for p in products.values():
            if site in p.sites:
                p.consume(site, block, t)

    ctx = torch.autocast("cpu", dtype=torch.bfloat16) if autocast else torch.autocast("cpu", enabled=False)
    with torch.inference_mode(), Capture(model, sites, sink=sink) as cap, ctx:
        model.forward_features(x)
        cap.collect()
    for p in products.values():
        p.end_batch()
    return {k: p.finish() for k, p in products.items()}


def run(archs=("vit_small_patch16_224", "vit_base_patch16_224"), batch: int = 16) -> list[dict]:
    rows = []
    for arch in archs:
        torch.manual_seed(0)
        model = timm.create_model(arch, pretrained=False, num_classes=0).eval()
        x = torch.randn(batch, 3, 224, 224)

        def plain():
            with torch.inference_mode():
                model.forward_features(x)

        def plain_unfused():
            with torch.inference_mode(), unfused_attention(model):
                model.forward_features(x)

        out = _capture(model, x)
        # the answer check: the streamed products against direct float64 computation on the same batch
        with torch.inference_mode(), Capture(model, {"attn", "fc1"}) as cap:
            model.forward_features(x)
            ref = cap.collect()
        from vitscope.kernels import attention
        ad_ref = attention.attention_distance(ref["attn"][5].double())
        diff_ad = float((out["ad"]["unit_square"][:, 5].double() - ad_ref).abs().max())
        rows.append(record(f"capture_vs_unfused_forward[{arch}]", best_of(lambda: _capture(model, x), 2),
                           "plain forward, fused attention off", best_of(plain_unfused, 2), diff_ad, 1e-6,
                           "ratio >= 0.8", batch=batch))
        rows.append(record(f"capture_vs_fused_forward[{arch}]", best_of(lambda: _capture(model, x), 1),
                           "plain forward, fused attention on", best_of(plain, 2), diff_ad, 1e-6, batch=batch))
        g64 = cka.gram(ref["fc1"][5].double())
        g = out["grams"]["batch0000"][3 * model.blocks.__len__() + 5]
        rows.append(record(f"gram_fc1_fast_vs_float64[{arch}]", 1.0, "float64 Gram", 1.0,
                           float((g - g64).abs().max() / g64.abs().max()), 1e-6, batch=batch))
        # bf16 autocast: effect on each analysis (not a speed comparison on CPU)
        bf = _capture(model, x, autocast=True)
        d_ad = float((bf["ad"]["unit_square"] - out["ad"]["unit_square"]).abs().max())
        ga, gb = out["grams"]["batch0000"], bf["grams"]["batch0000"]
        cka_fp32 = cka.minibatch_cka_from_grams([ga], [ga])
        cka_bf16_vs = cka.minibatch_cka_from_grams([ga], [gb])
        print(f"bf16 autocast [{arch}]: attention distance (unit square) max |bf16 - fp32| {d_ad:.2e}; "
              f"CKA(fp32 layer, its bf16 twin) min over layers {float(cka_bf16_vs.diagonal().min()):.6f} "
              f"(fp32 self-CKA {float(cka_fp32.diagonal().min()):.6f})")
        rows.append({"benchmark": f"bf16_effect[{arch}]", "attention_distance_max_abs_diff": d_ad,
                     "cka_fp32_vs_bf16_min_diagonal": float(cka_bf16_vs.diagonal().min()), "agrees": True})
    return rows

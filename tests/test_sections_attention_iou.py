"""TM 4.4: the streamed IoU product against the kernels applied to every captured map at once, the COCO dataset of
a profile, the page tables, and the claim checks on hand-made IoUs."""
from __future__ import annotations

import pytest
import torch

from vitscope.claims.verdict import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.data.coco import CocoInstances, mask_transform
from vitscope.data.twins.coco import write_coco_twin
from vitscope.extract import Capture, FeatureStore, extract
from vitscope.extract.iou_products import AttentionIoU, spatial_mean_maps
from vitscope.kernels import attention_iou as k
from vitscope.kernels import attention_maps as am
from vitscope.models import Preprocess
from vitscope.profiles import Profile
from vitscope.sections import attention_iou

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)


@pytest.fixture(scope="module")
def coco_root(tmp_path_factory):
    return write_coco_twin(tmp_path_factory.mktemp("coco"), n_images=12, size=40, seed=0)


def test_streamed_iou_matches_the_kernels_on_all_maps(tiny_vit, coco_root, tmp_path):
    dataset = CocoInstances(coco_root, transform=eval_transform(PRE), mask_transform=mask_transform(PRE))
    out = extract(tiny_vit, {"name": "tiny"}, dataset, {"iou": AttentionIoU(masks="m")}, transform_id={"r": 32},
                  store=FeatureStore(tmp_path), batch_size=5, progress=False)
    order = out["_meta"]["order"]
    items = [dataset[int(i)] for i in order]
    x = torch.stack([im for im, _, _ in items])
    masks = torch.stack([e["object_mask"] for _, _, e in items])
    with torch.inference_mode(), Capture(tiny_vit, {"attn"}) as cap:
        tiny_vit.forward_features(x)
        attn = cap.collect()["attn"]                                            # L x [N, H, T, T]
    target, fraction = k.mask_to_grid(masks, 4)[:, None], k.object_fraction(masks, 4)[:, None]
    for name, maps in (("cls", [am.cls_maps(a) for a in attn]), ("spatial", [spatial_mean_maps(a, 1) for a in attn])):
        pred = torch.stack([k.mass_mask(m) for m in maps], 1)                      # [N, L, H, G, G]
        torch.testing.assert_close(out["iou"][name].double(), k.iou(pred, target[:, None]), atol=1e-6, rtol=0)
        torch.testing.assert_close(out["iou"][f"{name}_pixel"].double(), k.iou(pred, fraction[:, None]),
                                   atol=1e-6, rtol=0)
    assert out["iou"]["cls"].shape == (12, 3, 3)
    torch.testing.assert_close(out["iou"]["object_share"].double(), target.double().mean((-3, -2, -1)))


def test_spatial_mean_map_is_the_mean_of_the_renormalised_rows():
    g = torch.Generator().manual_seed(0)
    a = torch.softmax(torch.randn(2, 3, 5, 5, generator=g), -1)                # 1 prefix token, 2x2 grid
    rows = a[:, :, 1:, 1:] / a[:, :, 1:, 1:].sum(-1, keepdim=True)
    torch.testing.assert_close(spatial_mean_maps(a, 1), rows.mean(2).reshape(2, 3, 2, 2))


@pytest.mark.reliability("bad input", "attention IoU asked of a dataset without object masks")
def test_product_refuses_a_dataset_without_masks(tiny_vit, synthetic_root, manifest, tmp_path):
    dataset = ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=2, num_classes=2)
    with pytest.raises(ValueError, match="object_mask"):
        extract(tiny_vit, {"name": "tiny"}, dataset, {"iou": AttentionIoU()}, transform_id={"r": 32},
                store=FeatureStore(tmp_path), batch_size=4, progress=False)


def test_profile_dataset_writes_and_reads_the_twin(tmp_path):
    raw = {"name": "t", "models": ["random-a"],
           "datasets": {"c": {"manifest": "coco_val2017", "root": str(tmp_path / "c"),
                              "synthetic": {"n_images": 5, "size": 40, "seed": 0}}},
           "attention_iou": {"dataset": "c", "n_images": 4}}
    run = Profile("t", raw)
    ds = attention_iou.coco_dataset(run, "c", PRE, attention_iou.settings(run)["n_images"])
    assert len(ds) == 4 and ds[0][2]["object_mask"].shape == (32, 32)
    assert attention_iou.settings(run)["mass"] == k.MASS
    raw["datasets"]["c"]["manifest"] = "imagenet50"
    with pytest.raises(ValueError, match="COCO-format"):
        attention_iou.coco_dataset(run, "c", PRE)


def _result(cls: torch.Tensor, spatial: torch.Tensor | None = None) -> dict:
    spatial = cls if spatial is None else spatial
    return {"cls": cls, "spatial": spatial, "cls_pixel": cls, "spatial_pixel": spatial,
            "object_share": torch.full((cls.shape[0],), 0.3)}


def _iou(n, per_block, noise=0.02, seed=0):
    """[n, L=6, H=2] IoUs: head 0 follows ``per_block``, head 1 is worse; a little per-image noise."""
    g = torch.Generator().manual_seed(seed)
    base = torch.tensor(per_block, dtype=torch.float64)
    head0 = base + noise * torch.randn(n, len(per_block), generator=g, dtype=torch.float64)
    return torch.stack([head0, head0 - 0.1], -1).clamp(0, 1)


def test_tables_rules_and_gap():
    r = _result(_iou(40, [0.3, 0.4, 0.5, 0.5, 0.4, 0.3]))
    table = attention_iou.layer_table("m", r, 0)
    held = table[(table.tokens == "cls") & (table.rule == "held_out")]
    assert held.best_head.tolist() == [0] * 6                          # head 0 is better everywhere
    assert set(table.rule) == {"held_out", "per_image_max", "mean_head", "held_out_pixel"}
    summary = attention_iou.summary_table(table)
    row = summary[(summary.tokens == "cls") & (summary.rule == "held_out")].iloc[0]
    assert row.best_block in (3, 4) and row.last_minus_best < 0
    gap = attention_iou.rule_gap({"m": r}, 0)
    assert (gap.gap >= -1e-12).all()           # on the same images the per-image max is never below a fixed head
    assert gap.per_image_max.tolist() == pytest.approx([float(r["cls"].amax(-1)[k.split_halves(40, 0)[1]].mean())] * 2)


def test_drop_claim_holds_for_a_mid_network_drop_and_not_for_a_rise():
    n = 60
    drop, flat, rise = [0.5, 0.55, 0.5, 0.3, 0.25, 0.2], [0.3] * 6, [0.2, 0.25, 0.3, 0.45, 0.5, 0.55]
    results = {"zoo-supervised": _result(_iou(n, drop, seed=1)), "zoo-clip": _result(_iou(n, drop, seed=2)),
               "zoo-dino": _result(_iou(n, rise, seed=3)),
               **{s: _result(_iou(n, flat, seed=10 + i)) for i, s in enumerate(("random-a", "random-b", "random-c"))}}
    rows = attention_iou.claims_from_results(results, 0, ("random-a", "random-b", "random-c"))
    drops = [r for r in rows if r.claim == "TM-4.4a"]
    assert [r.subject for r in drops][0].startswith("mean of") and len(drops) == 3
    assert all(r.verdict == HOLDS for r in drops), [(r.subject, r.verdict, r.reason) for r in drops]
    clip_rise = [r for r in rows if r.claim == "TM-4.4d"]
    assert len(clip_rise) == 1 and clip_rise[0].verdict == DOES_NOT_HOLD        # CLIP's last block falls here
    results["zoo-supervised"] = results["zoo-clip"] = _result(_iou(n, rise, seed=4))
    rows = attention_iou.claims_from_results(results, 0, ("random-a", "random-b", "random-c"))
    assert rows[0].verdict == DOES_NOT_HOLD


def test_claims_without_baseline_or_models():
    n = 20
    rows = attention_iou.claims_from_results({"zoo-dino": _result(_iou(n, [0.3] * 6))}, 0)
    assert {r.verdict for r in rows} == {CANNOT_CHECK}
    rows = attention_iou.claims_from_results({"zoo-supervised": _result(_iou(n, [0.5, 0.5, 0.5, 0.2, 0.2, 0.2]))}, 0)
    assert rows[0].verdict == INCONCLUSIVE and "baseline" in rows[0].reason


def test_class_score_target_needs_a_head(tiny_vit):
    with pytest.raises(ValueError, match="feature_norm"):
        attention_iou._target_fn(tiny_vit, "class_score")
    x = torch.randn(2, 3, 32, 32)
    torch.testing.assert_close(attention_iou._target_fn(tiny_vit, "feature_norm")(x),
                               tiny_vit.forward_features(x)[:, 0].norm(dim=-1))

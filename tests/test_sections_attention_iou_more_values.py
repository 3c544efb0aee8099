"""TM 4.4 (sections.attention_iou), values: ``compute`` and ``attribution_iou`` with the expensive edge (model
loading, extraction, captum) replaced by recorded fakes, checked against float64 NumPy; the claim rows (effects,
floors, measure strings) on hand-made IoUs; and the exact messages."""
from __future__ import annotations

import types

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims.verdict import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS
from vitscope.data import transform_key
from vitscope.data.twins.coco import write_coco_twin
from vitscope.kernels import attention_iou as k
from vitscope.models import Preprocess
from vitscope.profiles import Profile
from vitscope.sections import attention_iou as sec

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
SEEDS = ("random-a", "random-b", "random-c")


def _profile(tmp_path, **section) -> Profile:
    raw = {"name": "t", "models": ["zoo-dino"], "device": "cpu",
           "datasets": {"c": {"manifest": "coco_val2017", "root": str(tmp_path / "c"),
                              "synthetic": {"n_images": 5, "size": 40, "seed": 3}}},
           "attention_iou": {"dataset": "c", **section}}
    return Profile("t", raw)


# ------------------------------------------------------------------------------------------------- compute
def test_compute_passes_the_settings_to_the_edge_and_returns_its_product(tmp_path, monkeypatch):
    run = _profile(tmp_path, n_images=7, mass=0.4)
    calls = {}
    net, cfg = object(), types.SimpleNamespace(preprocess=PRE)

    def load(model, weights, device):
        calls["load"] = (model, weights, device)
        return net, cfg, {"name": model}

    dataset = types.SimpleNamespace(manifest=types.SimpleNamespace(annotations="digest-123"))

    def coco(profile, name, preprocess, limit=None):
        calls["coco"] = (profile, name, preprocess, limit)
        return dataset

    product = {"cls": torch.full((2, 3, 4), 0.25), "object_share": torch.tensor([0.1, 0.2])}

    def fake_extract(model, ident, ds, products, **kw):
        calls["extract"] = (model, ident, ds, products, kw)
        return {"iou": product, "_meta": {"order": torch.tensor([1, 0])}}

    monkeypatch.setattr(sec, "load_for_analysis", load)
    monkeypatch.setattr(sec, "coco_dataset", coco)
    monkeypatch.setattr(sec, "extract", fake_extract)
    store = object()
    out = sec.compute("zoo-dino", run, weights="w.safetensors", device="cpu", store=store, progress=True)
    assert calls["load"][:2] == ("zoo-dino", "w.safetensors") and str(calls["load"][2]) == "cpu"
    assert calls["coco"] == (run, "c", PRE, 7)
    model, ident, ds, products, kw = calls["extract"]
    assert model is net and ident == {"name": "zoo-dino"} and ds is dataset
    assert list(products) == ["iou"]
    assert products["iou"].mass == 0.4 and products["iou"].masks == "digest-123"
    assert kw["transform_id"] == transform_key(PRE) and kw["store"] is store and kw["progress"] is True
    assert str(kw["device"]) == "cpu"
    assert set(out) == {"cls", "object_share", "order"}
    assert out["order"].tolist() == [1, 0] and out["cls"] is product["cls"]


def test_compute_defaults_mass_store_and_the_profile_device(tmp_path, monkeypatch):
    run = _profile(tmp_path)                     # no n_images, no mass: the defaults
    seen = {}
    monkeypatch.setattr(sec, "load_for_analysis",
                        lambda m, w, d: (seen.setdefault("device", d), types.SimpleNamespace(preprocess=PRE), {}))
    monkeypatch.setattr(sec, "coco_dataset", lambda p, n, pre, limit=None: (
        seen.setdefault("limit", ("set", limit)), types.SimpleNamespace(manifest=types.SimpleNamespace(
            annotations="a")))[1])

    def fake_extract(net, ident, ds, products, **kw):
        seen.update(kw, mass=products["iou"].mass)
        return {"iou": {}, "_meta": {"order": torch.tensor([0])}}

    monkeypatch.setattr(sec, "extract", fake_extract)
    sec.compute("zoo-dino", run)
    assert seen["limit"] == ("set", None) and seen["mass"] == k.MASS == 0.6
    assert str(seen["device"]) == "cpu" and seen["progress"] is False
    assert type(seen["store"]).__name__ == "FeatureStore"


def test_settings_drop_null_keys_and_keep_defaults(tmp_path):
    run = _profile(tmp_path, n_images=None, captum_steps=4, split_seed=None)
    assert sec.settings(run) == {"mass": 0.6, "split_seed": 0, "n_images": None, "captum_images": 16,
                                 "captum_steps": 4, "captum_target": "feature_norm", "dataset": "c"}


# ------------------------------------------------------------------------------------------ attribution IoU
def _mass_mask_np(m: np.ndarray, mass: float) -> np.ndarray:
    flat = m.reshape(-1) / m.sum()
    order = np.argsort(-flat, kind="stable")
    keep = np.zeros(flat.shape, bool)
    total = 0.0
    for i in order:
        keep[i] = True
        total += flat[i]
        if total >= mass - 1e-12:
            break
    return keep.reshape(m.shape)


def _reference_iou(attr: np.ndarray, masks: np.ndarray, patch: int, mass: float) -> np.ndarray:
    out = []
    for a, msk in zip(attr, masks, strict=True):
        G = a.shape[-1] // patch
        sums = np.abs(a).sum(0).reshape(G, patch, G, patch).sum((1, 3))
        frac = (msk != 0).astype(float).reshape(G, patch, G, patch).mean((1, 3))
        target = frac >= 0.5 - 1e-9
        pred = _mass_mask_np(sums, mass)
        out.append((pred & target).sum() / (pred | target).sum())
    return np.array(out)


class _FakeStore:
    def __init__(self):
        self.calls = []

    def memo(self, model, product, key, compute):
        self.calls.append((model, product, key))
        return compute()


def test_attribution_iou_reduces_the_attributions_it_is_given(tmp_path, monkeypatch, tiny_vit):
    import captum.attr

    run = _profile(tmp_path, n_images=5, captum_images=3, captum_steps=7, mass=0.5)
    cfg = types.SimpleNamespace(preprocess=PRE)
    loads = []
    monkeypatch.setattr(sec, "load_for_analysis", lambda m, w, d: (loads.append((m, w, str(d))), tiny_vit)[1:]
                        + (cfg, {"name": m}))
    tiny_vit.train()                              # attribution_iou must put it in eval mode
    g = torch.Generator().manual_seed(5)
    ig_attr, sal_attr = torch.randn(3, 3, 32, 32, generator=g), torch.rand(3, 3, 32, 32, generator=g)
    rec = {}

    class IG:
        def __init__(self, fn):
            rec["ig_fn"] = fn

        def attribute(self, x, baselines, n_steps):
            rec["ig"] = (x.detach().clone(), baselines.clone(), n_steps, x.requires_grad)
            return ig_attr

    class Sal:
        def __init__(self, fn):
            rec["sal_fn"] = fn

        def attribute(self, x, abs):                     # noqa: A002 - captum's keyword
            rec["sal"] = abs
            return sal_attr

    monkeypatch.setattr(captum.attr, "IntegratedGradients", IG)
    monkeypatch.setattr(captum.attr, "Saliency", Sal)
    store = _FakeStore()
    out = sec.attribution_iou("zoo-dino", run, weights="w", device="cpu", store=store)

    dataset = sec.coco_dataset(run, "c", PRE, 5)
    items = [dataset[i] for i in range(3)]
    x = torch.stack([im for im, _, _ in items])
    masks = torch.stack([e["object_mask"] for _, _, e in items]).numpy()
    assert loads == [("zoo-dino", "w", "cpu")]
    torch.testing.assert_close(rec["ig"][0], x)
    assert torch.equal(rec["ig"][1], torch.zeros_like(x)) and rec["ig"][2] == 7 and rec["ig"][3]
    assert rec["sal"] is True
    assert not tiny_vit.training
    with torch.no_grad():
        torch.testing.assert_close(rec["ig_fn"](x), tiny_vit.forward_features(x)[:, 0].norm(dim=-1))
        torch.testing.assert_close(rec["sal_fn"](x), tiny_vit.forward_features(x)[:, 0].norm(dim=-1))

    assert list(out.columns) == ["model", "method", "image", "iou"]
    assert out.method.tolist() == ["integrated_gradients"] * 3 + ["saliency"] * 3
    assert out.image.tolist() == [0, 1, 2] * 2 and set(out.model) == {"zoo-dino"}
    want_ig = _reference_iou(ig_attr.double().numpy(), masks, 8, 0.5)
    want_sal = _reference_iou(sal_attr.double().numpy(), masks, 8, 0.5)
    np.testing.assert_allclose(out.iou.to_numpy(), np.concatenate([want_ig, want_sal]), atol=1e-6)
    assert not np.allclose(want_ig, want_sal)

    [(model, product, key)] = store.calls
    assert (model, product) == ("zoo-dino", "captum_iou")
    assert {kk: v for kk, v in key.items() if kk not in ("dataset", "model")} == {
        "masks": dataset.manifest.annotations, "n": 3, "steps": 7, "target": "feature_norm", "mass": 0.5,
        "transform": transform_key(PRE), "version": 1}
    assert key["model"] == {"name": "zoo-dino"} and key["dataset"]["n"] == 5


def test_attribution_iou_caps_images_at_the_dataset_and_uses_the_class_score(tmp_path, monkeypatch):
    import captum.attr
    import timm

    torch.manual_seed(0)
    net = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=2, num_heads=3,
                            num_classes=4).eval()
    run = _profile(tmp_path, n_images=2, captum_images=16, captum_target="class_score")
    monkeypatch.setattr(sec, "load_for_analysis", lambda m, w, d: (net, types.SimpleNamespace(preprocess=PRE), {}))
    rec = {}

    class Attr:
        def __init__(self, fn):
            rec.setdefault("fns", []).append(fn)

        def attribute(self, x, **kw):
            rec["n"] = x.shape[0]
            return torch.ones_like(x)

    monkeypatch.setattr(captum.attr, "IntegratedGradients", Attr)
    monkeypatch.setattr(captum.attr, "Saliency", Attr)
    out = sec.attribution_iou("zoo-dino", run, store=_FakeStore())
    assert rec["n"] == 2 and len(out) == 4
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        torch.testing.assert_close(rec["fns"][0](x), net(x).max(-1).values)


# --------------------------------------------------------------------------------------------------- tables
def test_layer_table_values_against_numpy():
    g = torch.Generator().manual_seed(1)
    cls = torch.rand(8, 3, 2, generator=g, dtype=torch.float64)
    spatial = torch.rand(8, 3, 2, generator=g, dtype=torch.float64)
    r = {"cls": cls, "spatial": spatial, "cls_pixel": cls * 0.5, "spatial_pixel": spatial * 0.5}
    t = sec.layer_table("m", r, 2)
    assert len(t) == 2 * 4 * 3 and list(t.columns) == ["model", "tokens", "rule", "block", "iou", "low", "high",
                                                      "best_head", "n_images"]
    choose, score = k.split_halves(8, 2)
    for name, v in (("cls", cls.numpy()), ("spatial", spatial.numpy())):
        heads = v[choose.numpy()].mean(0).argmax(-1)
        sub = t[(t.tokens == name)]
        held = sub[sub.rule == "held_out"]
        assert held.block.tolist() == [1, 2, 3] and held.best_head.tolist() == heads.tolist()
        want = [v[score.numpy(), b, heads[b]].mean() for b in range(3)]
        np.testing.assert_allclose(held.iou, want)
        assert (held.n_images == 4).all()
        pim = sub[sub.rule == "per_image_max"]
        np.testing.assert_allclose(pim.iou, v.max(-1).mean(0))
        assert (pim.best_head == -1).all() and (pim.n_images == 8).all()
        np.testing.assert_allclose(sub[sub.rule == "mean_head"].iou, v.mean((0, 2)))
        pix = sub[sub.rule == "held_out_pixel"]
        np.testing.assert_allclose(pix.iou, np.array(want) * 0.5)
        assert ((sub.low <= sub.iou + 1e-12) & (sub.iou <= sub.high + 1e-12)).all()
        assert (sub.high > sub.low).all()


def test_summary_head_table_and_rule_gap_values():
    table = pd.DataFrame({"model": "m", "tokens": "cls", "rule": "held_out", "block": [1, 2, 3, 4],
                          "iou": [0.2, 0.5, 0.4, 0.3]})
    s = sec.summary_table(table)
    assert s.to_dict("records") == [{"model": "m", "tokens": "cls", "rule": "held_out", "best_block": 2, "best": 0.5,
                                     "last": 0.3, "last_minus_best": pytest.approx(-0.2)}]
    v = torch.arange(24, dtype=torch.float64).reshape(2, 3, 4) / 24
    heads = sec.head_table("m", {"cls": v, "spatial": 1 - v})
    assert heads.block.tolist()[:8] == [1] * 4 + [2] * 4 and heads["head"].tolist()[:5] == [0, 1, 2, 3, 0]
    np.testing.assert_allclose(heads[heads.tokens == "cls"].iou, v.numpy().mean(0).reshape(-1))
    np.testing.assert_allclose(heads[heads.tokens == "spatial"].iou, 1 - v.numpy().mean(0).reshape(-1))
    g = torch.Generator().manual_seed(4)
    cls = torch.rand(10, 2, 3, generator=g, dtype=torch.float64)
    gap = sec.rule_gap({"a": {"cls": cls, "spatial": cls.flip(-1)}}, 1)
    choose, score = (i.numpy() for i in k.split_halves(10, 1))
    c = cls.numpy()
    heads = c[choose].mean(0).argmax(-1)
    held = np.mean([c[score, b, heads[b]] for b in range(2)])
    best = c[score].max(-1).mean()
    row = gap.iloc[0]
    assert (row.model, row.tokens) == ("a", "cls") and gap.tokens.tolist() == ["cls", "spatial"]
    assert row.per_image_max == pytest.approx(best) and row.held_out == pytest.approx(held)
    assert row.gap == pytest.approx(best - held)


# --------------------------------------------------------------------------------------------------- claims
def _one_head(values: np.ndarray) -> dict:
    t = torch.tensor(values, dtype=torch.float64)[..., None]          # [n, L, 1]: the held-out head is head 0
    return {"cls": t, "spatial": t, "cls_pixel": t, "spatial_pixel": t}


def _curve(n, per_block, seed):
    rng = np.random.default_rng(seed)
    return np.clip(np.array(per_block)[None] + 0.02 * rng.standard_normal((n, len(per_block))), 0, 1)


def test_claim_rows_values_measures_and_floors():
    n = 40
    curves = {"zoo-supervised": _curve(n, [0.5, 0.5, 0.5, 0.3, 0.3, 0.3], 1),
              "zoo-clip": _curve(n, [0.6, 0.6, 0.6, 0.3, 0.2, 0.5], 2),
              "random-a": _curve(n, [0.3] * 6, 3), "random-b": _curve(n, [0.31] * 6, 4),
              "random-c": _curve(n, [0.29] * 6, 5)}
    rows = sec.claims_from_results({m: _one_head(v) for m, v in curves.items()}, 3, SEEDS)
    score = k.split_halves(n, 3)[1].numpy()
    drop = {m: (v[score][:, :3].mean(1) - v[score][:, 3:].mean(1)).mean() for m, v in curves.items()}
    rise = {m: (v[score][:, -1] - v[score][:, -2]).mean() for m, v in curves.items()}
    measure = "CLS-mask IoU of the held-out best head, first-half minus second-half blocks"
    assert [(r.claim, r.subject) for r in rows] == [
        ("TM-4.4a", "mean of zoo-supervised, zoo-clip"), ("TM-4.4a", "zoo-supervised"), ("TM-4.4a", "zoo-clip"),
        ("TM-4.4d", "zoo-clip")]
    pooled = rows[0]
    assert pooled.measure == measure and pooled.expected == 1 and pooled.baseline_model == "random-a"
    assert pooled.effect.estimate == pytest.approx((drop["zoo-supervised"] + drop["zoo-clip"]) / 2)
    assert pooled.baseline.estimate == pytest.approx(
        (drop["zoo-supervised"] + drop["zoo-clip"]) / 2 - drop["random-a"])
    assert pooled.effect.n == len(score) and pooled.effect.unit == "images"
    seed_drops = [drop[s] for s in SEEDS]
    spread = max(seed_drops) - min(seed_drops)
    assert pooled.floor == pytest.approx(max(abs(max(seed_drops)), abs(min(seed_drops))))
    assert pooled.baseline_floor == pytest.approx(spread)
    assert pooled.seeds == SEEDS and pooled.verdict == HOLDS
    for r, m in zip(rows[1:3], ("zoo-supervised", "zoo-clip"), strict=True):
        assert r.measure == measure + " minus `random-a`'s" and r.baseline_model == "random-a"
        assert r.effect.estimate == pytest.approx(drop[m] - drop["random-a"])
        assert r.baseline.estimate == r.effect.estimate and r.floor == pytest.approx(spread)
        assert r.baseline_floor == pytest.approx(spread) and r.verdict == HOLDS
    d = rows[3]
    assert d.measure == ("spatial-mean-mask IoU of the held-out best head, last block minus the one before minus "
                         "`random-a`'s")
    assert d.effect.estimate == pytest.approx(rise["zoo-clip"] - rise["random-a"]) and d.verdict == HOLDS
    seed_rises = [rise[s] for s in SEEDS]
    assert d.floor == pytest.approx(max(seed_rises) - min(seed_rises))


def test_claim_rows_without_seeds_or_baseline():
    n = 20
    res = {"zoo-supervised": _one_head(_curve(n, [0.6, 0.6, 0.6, 0.2, 0.2, 0.2], 1)),
           "zoo-clip": _one_head(_curve(n, [0.2, 0.2, 0.2, 0.6, 0.6, 0.2], 2))}
    rows = sec.claims_from_results(res, 0)
    assert rows[0].floor is None and rows[0].baseline is None and rows[0].baseline_floor is None
    assert rows[0].seeds == () and rows[0].subject == "mean of zoo-supervised, zoo-clip"
    for r in rows[1:]:
        assert (r.verdict, r.reason) == (CANNOT_CHECK, "no untrained baseline of the same architecture in this "
                                                       "profile")
    assert [r.subject for r in rows[1:]] == ["zoo-supervised", "zoo-clip", "zoo-clip"]
    res["random-a"] = _one_head(_curve(n, [0.3] * 6, 3))
    rows = sec.claims_from_results(res, 0)
    assert rows[-1].verdict == DOES_NOT_HOLD and rows[-1].floor is None          # CLIP's last block falls


def test_claim_cannot_check_reasons():
    rows = sec.claims_from_results({"zoo-dino": _one_head(_curve(10, [0.3] * 4, 0))}, 0)
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows] == [
        ("TM-4.4a", "FS and CLIP", CANNOT_CHECK, "the profile has no explicitly supervised model"),
        ("TM-4.4d", "CLIP", CANNOT_CHECK, "the profile has no image-text model")]


def test_check_claims_extracts_models_and_seeds_once(tmp_path, monkeypatch):
    run = _profile(tmp_path, split_seed=5)
    run.raw["baselines"] = list(SEEDS)
    run.raw["models"] = ["zoo-supervised", "random-a"]
    calls = []

    def fake_compute(m, profile, *, weights=None, device=None, store=None, progress=False):
        calls.append((m, weights, device, store, progress))
        return _one_head(_curve(10, [0.3] * 4, len(calls)))

    got = {}
    monkeypatch.setattr(sec, "compute", fake_compute)
    monkeypatch.setattr(sec, "claims_from_results", lambda results, split, seeds: got.update(
        models=list(results), split=split, seeds=seeds) or ["rows"])
    store = object()
    assert sec.check_claims(None, run, weights={"zoo-supervised": "w"}, device="dev", store=store,
                            progress=True) == ["rows"]
    assert calls == [("zoo-supervised", "w", "dev", store, True), ("random-a", None, "dev", store, True),
                     ("random-b", None, "dev", store, True), ("random-c", None, "dev", store, True)]
    assert got == {"models": ["zoo-supervised", *SEEDS], "split": 5, "seeds": list(SEEDS)}
    calls.clear()
    sec.check_claims(["zoo-clip"], run)
    assert [c[0] for c in calls] == ["zoo-clip", *SEEDS] and calls[0][1:] == (None, None, None, False)


# -------------------------------------------------------------------------------------------------- messages
def test_messages(tmp_path, tiny_vit):
    with pytest.raises(ValueError) as err:
        sec.best_head_values({"cls": torch.zeros(2, 2, 2)}, "cls", "best", 0)
    assert str(err.value) == "rule='best'; choose from ['held_out', 'per_image_max']"
    with pytest.raises(ValueError) as err:
        sec._target_fn(tiny_vit, "class_score")
    assert str(err.value) == ("captum_target='class_score' needs a model with a classification head; this one has "
                              "none (num_classes=0): use 'feature_norm'")
    with pytest.raises(ValueError) as err:
        sec._target_fn(tiny_vit, "logits")
    assert str(err.value) == "captum_target='logits'; choose 'feature_norm' or 'class_score'"
    run = _profile(tmp_path)
    run.raw["datasets"]["c"]["manifest"] = "imagenet50"
    with pytest.raises(ValueError) as err:
        sec.coco_dataset(run, "c", PRE)
    assert str(err.value) == ("Dataset 'c' (manifest 'imagenet50') is in format 'imagefolder'; the attention IoU "
                              "reads COCO-format instance masks (e.g. manifest coco_val2017)")


def test_best_head_values_per_rule():
    v = torch.tensor([[[0.1, 0.4]], [[0.3, 0.2]], [[0.5, 0.9]], [[0.2, 0.1]]], dtype=torch.float64)
    torch.testing.assert_close(sec.best_head_values({"cls": v}, "cls", "per_image_max", 0), v.amax(-1))
    choose, score = k.split_halves(4, 0)
    head = int(v[choose].mean(0).argmax(-1))
    torch.testing.assert_close(sec.best_head_values({"spatial": v}, "spatial", "held_out", 0), v[score, :, head])


def test_coco_dataset_writes_the_twin_with_the_profile_settings(tmp_path):
    run = _profile(tmp_path)
    ds = sec.coco_dataset(run, "c", PRE, 3)
    ref = write_coco_twin(tmp_path / "ref", 5, 40, 3)
    assert len(ds) == 3 and ds.manifest.name == "coco_val2017"
    ref_ds = type(ds)(ref, transform=ds.transform, mask_transform=ds.mask_transform)
    for i in range(3):
        torch.testing.assert_close(ds[i][2]["object_mask"], ref_ds[i][2]["object_mask"])
        torch.testing.assert_close(ds[i][0], ref_ds[i][0])

"""OM Fig. 3 invariance section (sections.invariance), pinned down: what ``similarities``/``compute``/``per_image``/
``check_claims`` pass to their edges (model, dataset, augmentation, weights, device, store, progress), every number of
the tables against float64 NumPy, and ``flip_check``'s rows (which augmentation, pooling and block it reads, the
contrast's weights, the claim texts) on constructed tables. ``pooled_features`` is replaced by planted tensors."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims.verdict import paired_contrast
from vitscope.kernels.invariance import augmentation_similarity
from vitscope.profiles import Profile
from vitscope.sections import invariance


def _profile(augs=None, **top) -> Profile:
    spec = {"dataset": "flips"} | ({"augmentations": augs} if augs is not None else {})
    return Profile("p", {"models": ["zoo-dino", "zoo-mae"], "invariance": spec, **top})


def _pooled(seed, n=5, blocks=3, dim=4):
    g = torch.Generator().manual_seed(seed)
    return {"cls": torch.randn(n, blocks, dim, generator=g), "gap": torch.randn(n, blocks, dim, generator=g) + 1}


def test_similarities_pass_every_setting_and_pair_each_pooling(monkeypatch):
    planted = {None: _pooled(0), "grayscale": _pooled(1), "hflip": _pooled(2)}
    calls = []

    def fake(model, profile, dataset, augment=None, **kw):
        calls.append((model, profile.name, dataset, augment, dict(kw)))
        return planted[augment[0] if augment else None]

    monkeypatch.setattr(invariance, "pooled_features", fake)
    store = object()
    out = invariance.similarities("zoo-mae", _profile(["grayscale", "hflip"]), weights="w.pt", device="cuda:7",
                                  store=store, progress=True)
    kw = {"weights": "w.pt", "device": "cuda:7", "store": store, "progress": True}
    assert calls == [("zoo-mae", "p", "flips", None, kw),
                     ("zoo-mae", "p", "flips", ("grayscale", invariance.AUGMENTATIONS["grayscale"]), kw),
                     ("zoo-mae", "p", "flips", ("hflip", invariance.AUGMENTATIONS["hflip"]), kw)]
    assert list(out) == [("grayscale", "cls"), ("grayscale", "gap"), ("hflip", "cls"), ("hflip", "gap")]
    for (aug, pooling), s in out.items():
        want = augmentation_similarity(planted[None][pooling], planted[aug][pooling])   # original first, copy second
        assert set(s) == {"own", "others", "index"}
        for key in s:
            torch.testing.assert_close(s[key], want[key], rtol=0, atol=0)
    calls.clear()
    invariance.similarities("zoo-dino", _profile())                  # defaults: hflip only, nothing passed on
    assert calls == [("zoo-dino", "p", "flips", None, {"weights": None, "device": None, "store": None,
                                                        "progress": False}),
                     ("zoo-dino", "p", "flips", ("hflip", invariance.AUGMENTATIONS["hflip"]),
                      {"weights": None, "device": None, "store": None, "progress": False})]


def test_the_augmentations_are_what_they_say():
    img = torch.rand(3, 4, 5, generator=torch.Generator().manual_seed(0))
    assert torch.equal(invariance.AUGMENTATIONS["hflip"](img), img.flip(-1))
    assert torch.equal(invariance.AUGMENTATIONS["vflip"](img), img.flip(-2))
    gray = invariance.AUGMENTATIONS["grayscale"](img)
    assert gray.shape == (3, 4, 5)
    want = 0.2989 * img[0] + 0.587 * img[1] + 0.114 * img[2]
    for c in range(3):
        torch.testing.assert_close(gray[c], want, atol=1e-6, rtol=0)
    assert invariance.DESCRIPTIONS == {
        "hflip": "horizontal flip (OM Fig. 3)", "vflip": "vertical flip (a control: in no model's training)",
        "grayscale": "grayscale (in the joint-embedding models' colour augmentations)"}


def _sims(n=4, depth=3, seed=0):
    """Planted similarities: N=4 images, L=3 blocks (N != L), own/others/index all different."""
    rng = np.random.default_rng(seed)
    out = {}
    for aug in ("hflip", "vflip"):
        for pooling in ("cls", "gap"):
            out[(aug, pooling)] = {k: torch.tensor(rng.standard_normal((n, depth)), dtype=torch.float64)
                                   for k in ("own", "others", "index")}
    return out


def test_compute_every_row_against_numpy(monkeypatch):
    sims, calls = _sims(), []
    monkeypatch.setattr(invariance, "similarities", lambda m, p, **kw: calls.append((m, p, kw)) or sims)
    t = invariance.compute("zoo-mae", "prof", weights="w", device="d", store="s", progress=True)
    assert calls == [("zoo-mae", "prof", {"weights": "w", "device": "d", "store": "s", "progress": True})]
    assert list(t.columns) == ["model", "augmentation", "pooling", "block", "own", "others", "index", "index_std",
                               "n_images"]
    assert len(t) == 4 * 3
    want_keys = [(a, p, b) for (a, p) in sims for b in (1, 2, 3)]
    assert list(zip(t.augmentation, t.pooling, t.block)) == want_keys
    for row in t.itertuples():
        s = {k: v.numpy() for k, v in sims[(row.augmentation, row.pooling)].items()}
        col = row.block - 1
        assert row.model == "zoo-mae" and row.n_images == 4
        assert row.own == pytest.approx(s["own"][:, col].mean(), abs=1e-12)
        assert row.others == pytest.approx(s["others"][:, col].mean(), abs=1e-12)
        assert row.index == pytest.approx(s["index"][:, col].mean(), abs=1e-12)
        assert row.index_std == pytest.approx(np.std(s["index"][:, col], ddof=1), abs=1e-12)
    assert all(isinstance(x, float) for x in t.own) and t.n_images.dtype.kind == "i"


def test_per_image_every_value_against_numpy(monkeypatch):
    sims, calls = _sims(seed=1), []
    monkeypatch.setattr(invariance, "similarities", lambda m, p, **kw: calls.append((m, p, kw)) or sims)
    t = invariance.per_image("zoo-dino", "prof", weights="w", device="d")
    assert calls == [("zoo-dino", "prof", {"weights": "w", "device": "d"})]
    assert list(t.columns) == ["model", "augmentation", "pooling", "block", "image", "index"]
    assert list(t.index) == list(range(4 * 4 * 3))                      # one index, not per augmentation
    assert set(t.model) == {"zoo-dino"}
    for (aug, pooling), s in sims.items():
        sel = t[(t.augmentation == aug) & (t.pooling == pooling)]
        assert sel.block.tolist() == [1, 2, 3] * 4 and sel.image.tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
        for row in sel.itertuples():
            assert row.index == s["index"].numpy()[row.image, row.block - 1]


# ------------------------------------------------------------------------------------------------ the claim
def _table(levels, n=30, seed=0, shuffle=True):
    """Per-image table: hflip CLS last block (3) at ``levels[m]`` + noise; decoys elsewhere (vflip, GAP, block 2)
    that a wrong selection would read."""
    rng = np.random.default_rng(seed)
    frames = []
    for m, lv in levels.items():
        for aug, pooling, block, shift in (("hflip", "cls", 3, 0.0), ("hflip", "cls", 1, -5.0),
                                           ("hflip", "cls", 2, 3.0), ("hflip", "gap", 3, 7.0),
                                           ("vflip", "cls", 3, -9.0), ("vflip", "cls", 4, 11.0)):
            frames.append(pd.DataFrame({"model": m, "augmentation": aug, "pooling": pooling, "block": block,
                                        "image": np.arange(n),
                                        "index": lv + shift + 0.05 * rng.standard_normal(n)}))
    t = pd.concat(frames, ignore_index=True)
    return t.sample(frac=1.0, random_state=3).reset_index(drop=True) if shuffle else t


def _last(t, m):
    sel = t[(t.model == m) & (t.augmentation == "hflip") & (t.pooling == "cls") & (t.block == 3)]
    return sel.sort_values("image")["index"].to_numpy()


def test_last_reads_hflip_cls_last_block_in_image_order():
    t = _table({"zoo-dino": 0.5})
    got = invariance._last(t, "zoo-dino", "cls")
    assert got.dtype == torch.float64
    np.testing.assert_array_equal(got.numpy(), _last(t, "zoo-dino"))
    gap = t[(t.augmentation == "hflip") & (t.pooling == "gap")].sort_values("image")["index"].to_numpy()
    np.testing.assert_array_equal(invariance._last(t, "zoo-dino", "gap").numpy(), gap)


def test_flip_check_holds_with_base_estimates_and_texts():
    levels = {"zoo-dino": 0.8, "zoo-mocov3": 0.6, "zoo-mae": 0.1, "zoo-supervised": 0.7, "random-a": 0.3}
    t = _table(levels)
    got = invariance.flip_check(t)
    v = {m: _last(t, m) for m in levels}
    je_names = [m for m in dict.fromkeys(t.model) if m in ("zoo-dino", "zoo-mocov3")]    # table order (shuffled)
    assert je_names == ["zoo-mocov3", "zoo-dino"]
    assert [(r.claim, r.subject, r.expected, r.baseline_model) for r in got] == [
        ("OM-2.2d", "joint-embedding minus reconstruction", 1, "random-a"), ("OM-2.2d", "zoo-mocov3", 1, "random-a"),
        ("OM-2.2d", "zoo-dino", 1, "random-a"), ("OM-2.2d", "zoo-mae", -1, "random-a")]
    assert [r.verdict for r in got] == ["holds"] * 4
    assert got[0].measure == "last-block flip-invariance index (CLS) (zoo-mocov3, zoo-dino minus zoo-mae)"
    assert [r.measure for r in got[1:]] == ["last-block flip-invariance index (CLS) minus `random-a`'s"] * 3
    je = (v["zoo-dino"].mean() + v["zoo-mocov3"].mean()) / 2
    assert got[0].effect.estimate == pytest.approx(je - v["zoo-mae"].mean(), abs=1e-9)
    assert got[0].baseline.estimate == pytest.approx(je - v["random-a"].mean(), abs=1e-9)
    for r in got[1:]:
        assert r.effect.estimate == pytest.approx(v[r.subject].mean() - v["random-a"].mean(), abs=1e-9)
        assert r.baseline.estimate == r.effect.estimate
    assert (got[0].effect.n, got[0].effect.unit) == (30, "images")
    vals = {m: torch.tensor(v[m]) for m in levels}
    want = paired_contrast(vals, {"zoo-dino": 0.5, "zoo-mocov3": 0.5, "zoo-mae": -1.0}, "images")
    assert (got[0].effect.low, got[0].effect.high) == pytest.approx((want.low, want.high), abs=1e-9)
    assert got[0].floor is None and got[0].seeds == ()


def test_flip_check_does_not_hold_for_a_flip_sensitive_joint_embedding_model():
    levels = {"zoo-dino": 0.1, "zoo-mae": 0.9, "random-a": 0.5}
    got = invariance.flip_check(_table(levels))
    assert [(r.subject, r.verdict) for r in got] == [("joint-embedding minus reconstruction", "does not hold"),
                                                   ("zoo-dino", "does not hold"), ("zoo-mae", "does not hold")]
    assert got[2].effect.estimate == pytest.approx(0.4, abs=0.05)
    flat = invariance.flip_check(_table({"zoo-dino": 0.5, "zoo-mae": 0.5, "random-a": 0.5}, seed=4))
    assert {r.verdict for r in flat} <= {"inconclusive", "does not hold"}


def test_flip_check_seed_floors_and_messages():
    levels = {"zoo-dino": 0.8, "zoo-mae": 0.1, "random-a": 0.3, "random-b": 0.5}
    t = _table(levels)
    got = invariance.flip_check(t, ["random-a", "random-b"])
    assert got[0].seeds == ("random-a", "random-b") and got[0].baseline_model == "random-a"
    assert got[0].floor == pytest.approx(abs(_last(t, "random-a").mean() - _last(t, "random-b").mean()), rel=0.5)
    assert got[0].floor > 0
    no_je = invariance.flip_check(_table({"zoo-mae": 0.1, "random-a": 0.3}))
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in no_je][0] == (
        "OM-2.2d", "joint-embedding minus reconstruction", "cannot be checked",
        "the profile lacks a joint-embedding or a reconstruction model")
    assert [r.subject for r in no_je] == ["joint-embedding minus reconstruction", "zoo-mae"]
    no_flip = invariance.flip_check(_table({"zoo-dino": 0.8, "zoo-mae": 0.1}).assign(augmentation="vflip"))
    assert [(r.claim, r.reason) for r in no_flip] == [("OM-2.2d", "the profile's invariance section does not "
                                                                  "list hflip")]
    no_base = invariance.flip_check(_table({"zoo-dino": 0.8, "zoo-mae": 0.1}))
    assert [(r.claim, r.verdict) for r in no_base[1:]] == [("OM-2.2d", "cannot be checked")] * 2


def test_check_claims_passes_everything_and_keeps_model_order(monkeypatch):
    levels = {"zoo-mae": 0.1, "zoo-dino": 0.8, "random-a": 0.3, "random-b": 0.32}
    t = _table(levels, shuffle=False)
    seen = []

    def fake(m, profile, **kw):
        seen.append((m, profile.name, kw))
        return t[t.model == m]

    monkeypatch.setattr(invariance, "per_image", fake)
    profile = _profile(baselines=["random-a", "random-b"])
    got = invariance.check_claims(["zoo-mae", "random-b", "zoo-dino"], profile, weights={"zoo-dino": "w"},
                                  device="d", store="s", progress=True)
    kw = {"device": "d", "store": "s", "progress": True}
    assert seen == [("zoo-mae", "p", {"weights": None, **kw}), ("random-b", "p", {"weights": None, **kw}),
                    ("zoo-dino", "p", {"weights": "w", **kw}), ("random-a", "p", {"weights": None, **kw})]
    order = ["zoo-mae", "random-b", "zoo-dino", "random-a"]
    table = pd.concat([t[t.model == m] for m in order], ignore_index=True)
    assert got == invariance.flip_check(table, ["random-a", "random-b"])
    assert got[0].seeds == ("random-a", "random-b")
    seen.clear()
    invariance.check_claims(None, _profile())                          # default: the profile's models, no seeds
    assert [(m, k) for m, _, k in seen] == [(m, {"weights": None, "device": None, "store": None, "progress": False})
                                            for m in ("zoo-dino", "zoo-mae")]

"""OM 2.3 (sections.finetuning) claim checks pinned down (issue 17): every row's claim, subject, measure, expected
sign, baseline model and the exact interval against the contrast it must be (parts and weights written out here,
estimates against a float64 reference), and whole cannot-check reasons."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.claims.verdict import CONFIDENCE, N_RESAMPLES, SEED, Interval, paired_contrast
from vitscope.kernels import cka as cka_k
from vitscope.kernels.stats import bootstrap_contrast
from vitscope.sections import cka as cka_section
from vitscope.sections import finetuning as sec

SITES = ("block", "norm1", "qkv", "fc1")
LABELS = [(s, i) for s in SITES for i in (1, 2)]


def _grams(names, batches=6, b=10, d=5, seed=0):
    """Per model, per-batch Gram stacks [S*L, b, b] of seeded features; every ``+ft`` model is its base's features
    plus noise, so the pairs differ in value."""
    g = torch.Generator().manual_seed(seed)
    out = {m: [] for m in names}
    for _ in range(batches):
        feats = {m: torch.randn(len(LABELS), b, d, generator=g, dtype=torch.float64) for m in names}
        for m in names:
            if m.endswith("+ft") and m[:-3] in feats:
                feats[m] = feats[m[:-3]] + (0.3 if "mae" in m else 1.5) * feats[m]
        for m in names:
            out[m].append(feats[m] @ feats[m].transpose(1, 2))
    return {m: (v, LABELS) for m, v in out.items()}


def _ref_cka(grams, a, b, sites) -> float:
    """Mean over the (site, index) layers at ``sites`` of eq. (2) CKA of a vs b, from the kernel on the Grams."""
    rows = [i for i, (s, _) in enumerate(LABELS) if s in sites]
    vals = [float(cka_k.minibatch_cka_from_grams([x[i:i + 1] for x in grams[a][0]],
                                                 [x[i:i + 1] for x in grams[b][0]])[0, 0]) for i in rows]
    return float(np.mean(vals))


BASES = ["zoo-mae", "zoo-dino", "random-a"]
NAMES = [*BASES, *[m + "+ft" for m in BASES]]
BLK, ATT, MLP = ("block",), ("norm1", "qkv"), ("fc1",)


def _rise(x, y, s=1.0):
    return [(x + "+ft", y + "+ft", ATT, s), (x, y, ATT, -s), (x + "+ft", y + "+ft", MLP, -s), (x, y, MLP, s)]


def _expected_parts(rec, je, base="random-a"):
    """(claim, subject, measure, effect parts, baseline parts) of every row cka_checks must give, in order."""
    out = []
    for r in rec:
        for j in je:
            rf = r + "+ft"
            toward = [(rf, j, BLK, 1.0), (r, j, BLK, -1.0)]
            out.append(("OM-2.3a", f"{rf} vs {j}", f"same-depth block CKA: {rf} vs {j} minus {r} vs {j}",
                        toward, toward + [(base + "+ft", j, BLK, -1.0), (base, j, BLK, 1.0)]))
            closer = [(rf, j, BLK, 1.0), (rf, r, BLK, -1.0)]
            out.append(("OM-2.3a", f"{rf}: {j} or {r}?", f"same-depth block CKA: {rf} vs {j} minus {rf} vs {r}",
                        closer, closer + [(base + "+ft", j, BLK, -1.0), (base + "+ft", base, BLK, 1.0)]))
    for j in je:
        for r in rec:
            out.append(("OM-2.3b", f"{j} vs {r}", "rise of same-depth CKA after fine-tuning both, norm1 and qkv "
                        "minus fc1", _rise(j, r), _rise(j, r) + _rise(j, base, -1.0)))
    return out


def test_cka_checks_values_against_the_kernel():
    grams = _grams(NAMES)
    terms = cka_section.batch_terms(grams)
    rows = sec.cka_checks(terms, BASES)
    expected = _expected_parts(["zoo-mae"], ["zoo-dino"])
    assert [(x.claim, x.subject, x.measure) for x in rows] == [e[:3] for e in expected]
    for row, (_, _, _, parts, beyond) in zip(rows, expected):
        assert row.expected == 1 and row.baseline_model == "random-a"
        assert row.effect.unit == "minibatches" and row.effect.n == 6
        ref = sum(w * _ref_cka(grams, a, b, s) for a, b, s, w in parts)
        assert row.effect.estimate == pytest.approx(ref, abs=1e-9)
        ref = sum(w * _ref_cka(grams, a, b, s) for a, b, s, w in beyond)
        assert row.baseline.estimate == pytest.approx(ref, abs=1e-9)
    assert rows[0].effect == cka_section._cka_contrast(terms, expected[0][3])
    # zoo-mae+ft is its base plus a little noise: it stays closer to its start than to zoo-dino
    assert rows[1].effect.estimate < -0.5 and rows[1].verdict == DOES_NOT_HOLD


def _recorder(monkeypatch):
    """Replace the bootstrap by a recorder: call k returns an interval with estimate k (so rows show which call)."""
    calls = []

    def fake(terms, parts):
        calls.append(parts)
        return Interval(float(len(calls)), float(len(calls)), float(len(calls)) + 0.5, 7, "minibatches")
    monkeypatch.setattr(sec, "_terms_contrast", fake)
    return calls


def test_cka_checks_pass_every_part_and_put_effect_and_baseline_in_place(monkeypatch):
    calls = _recorder(monkeypatch)
    terms = pd.DataFrame({"site": list(SITES)})
    rows = sec.cka_checks(terms, ["zoo-mae", "zoo-dino", "random-a", "zoo-beit", "zoo-mocov3"])
    expected = _expected_parts(["zoo-mae", "zoo-beit"], ["zoo-dino", "zoo-mocov3"])
    assert [(x.claim, x.subject, x.measure, x.expected, x.baseline_model) for x in rows] == [
        (*e[:3], 1, "random-a") for e in expected]
    assert calls == [p for e in expected for p in (e[4], e[3])]         # the baseline contrast is computed first
    assert [(x.baseline.estimate, x.effect.estimate) for x in rows] == [(2 * k + 1.0, 2 * k + 2.0)
                                                                        for k in range(len(rows))]
    assert all(x.verdict == HOLDS for x in rows)


def test_cka_checks_without_a_baseline_or_the_layer_type_sites(monkeypatch):
    calls = _recorder(monkeypatch)
    rows = sec.cka_checks(pd.DataFrame({"site": list(SITES)}), ["zoo-mae", "zoo-dino"])
    assert [(r.claim, r.subject, r.baseline, r.baseline_model, r.verdict) for r in rows] == [
        ("OM-2.3a", "zoo-mae+ft vs zoo-dino", None, None, INCONCLUSIVE),
        ("OM-2.3a", "zoo-mae+ft: zoo-dino or zoo-mae?", None, None, INCONCLUSIVE),
        ("OM-2.3b", "zoo-dino vs zoo-mae", None, None, INCONCLUSIVE)]
    assert calls == [e[3] for e in _expected_parts(["zoo-mae"], ["zoo-dino"])]
    assert [r.effect.estimate for r in rows] == [1.0, 2.0, 3.0]
    for dropped in ("norm1", "qkv", "fc1"):
        calls.clear()
        rows = sec.cka_checks(pd.DataFrame({"site": [s for s in SITES if s != dropped]}), BASES)
        assert [r.claim for r in rows] == ["OM-2.3a", "OM-2.3a", "OM-2.3b"] and len(calls) == 4
        last = rows[-1]
        assert (last.subject, last.verdict, last.reason) == (
            "joint-embedding vs reconstruction", CANNOT_CHECK, "the profile's CKA sites lack one of fc1, norm1, qkv")
    calls.clear()
    rows = sec.cka_checks(pd.DataFrame({"site": ["norm1", "qkv", "fc1"]}), BASES)     # exactly the sites needed
    assert [r.claim for r in rows] == ["OM-2.3a", "OM-2.3a", "OM-2.3b"] and len(calls) == 6
    assert rows[-1].verdict == HOLDS and rows[-1].effect.estimate == 6.0
    why = "the profile's finetune.models lack a joint-embedding or a reconstruction model"
    for bases in (["zoo-mae", "random-a"], ["zoo-dino", "random-a"]):
        assert [(r.claim, r.subject, r.verdict, r.reason) for r in sec.cka_checks(pd.DataFrame(), bases)] == [
            ("OM-2.3a", "reconstruction (FT) vs joint-embedding", CANNOT_CHECK, why),
            ("OM-2.3b", "joint-embedding vs reconstruction", CANNOT_CHECK, why)]


# ---------------------------------------------------------------- path efficiency
def _path_table(eff: dict[str, list[float]], layer_type="qkv") -> pd.DataFrame:
    """Per model, the efficiencies of blocks 1..n (rows written in reverse block order), a whole-type row (block 0)
    and rows of another layer type, both far from the per-block values."""
    rows = []
    for m, vs in eff.items():
        rows.append({"model": m, "type": layer_type, "block": 0, "efficiency": 50.0})
        rows += [{"model": m, "type": layer_type, "block": k, "efficiency": v}
                 for k, v in reversed(list(enumerate(vs, start=1)))]
        rows += [{"model": m, "type": "other", "block": k, "efficiency": -40.0} for k in range(1, len(vs) + 1)]
    return pd.DataFrame(rows).assign(displacement=1.0, path_length=1.0)


def _blocks_interval(eff, weights) -> Interval:
    v = torch.tensor(np.array([eff[m] for m in weights], dtype=np.float64))
    res = bootstrap_contrast(v, torch.tensor(list(weights.values()), dtype=torch.float64),
                             n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    return Interval(res["estimate"], res["low"], res["high"], res["n"], "blocks")


def test_path_check_exact_rows_per_pair_with_the_baseline():
    rng = np.random.default_rng(3)
    eff = {m: list(c + 0.05 * rng.normal(size=6)) for m, c in
           (("zoo-dino", 0.3), ("zoo-mae", 0.8), ("random-a", 0.45), ("zoo-beit", 0.7), ("zoo-mocov3", 0.4))}
    rows = sec.path_check(_path_table(eff))
    pairs = [("zoo-mae", "zoo-dino"), ("zoo-mae", "zoo-mocov3"), ("zoo-beit", "zoo-dino"), ("zoo-beit", "zoo-mocov3")]
    assert [(r.claim, r.subject, r.measure, r.expected, r.baseline_model) for r in rows] == [
        ("OM-2.3c", f"{r} minus {j}", "path efficiency of qkv (mean over blocks)", 1, "random-a") for r, j in pairs]
    for row, (r, j) in zip(rows, pairs):
        assert row.effect == _blocks_interval(eff, {r: 1.0, j: -1.0})
        assert row.effect.estimate == pytest.approx(np.mean(eff[r]) - np.mean(eff[j]), abs=1e-12)
        assert row.baseline == _blocks_interval(eff, {r: 1.0, "random-a": -1.0})
        assert row.effect.n == 6 and row.effect.unit == "blocks"
        assert row.verdict == HOLDS


def test_path_check_other_layer_type_no_baseline_and_missing_group():
    eff = {"zoo-mae": [0.9, 0.8, 0.7], "zoo-dino": [0.1, 0.2, 0.3]}
    (row,) = sec.path_check(_path_table(eff, "fc1"), layer_type="fc1")
    assert row.measure == "path efficiency of fc1 (mean over blocks)"
    assert row.effect.estimate == pytest.approx(0.6, abs=1e-12)
    assert (row.baseline, row.baseline_model, row.verdict) == (None, None, INCONCLUSIVE)
    (row,) = sec.path_check(_path_table({"zoo-mae": [0.5, 0.6], "random-a": [0.1, 0.2]}))
    assert (row.claim, row.subject, row.verdict, row.reason) == (
        "OM-2.3c", "reconstruction minus joint-embedding", CANNOT_CHECK,
        "the profile's finetune.models lack a joint-embedding or a reconstruction model")
    (row,) = sec.path_check(_path_table({"zoo-dino": [0.5, 0.6]}))
    assert row.verdict == CANNOT_CHECK and row.subject == "reconstruction minus joint-embedding"


# ---------------------------------------------------------------- flip invariance
def _flips(values: dict[str, np.ndarray]) -> pd.DataFrame:
    """Block 2 (the last) holds ``values``; block 1 and the mean pooling hold decoys; images listed in reverse."""
    rows = []
    for m, v in values.items():
        for i in reversed(range(len(v))):
            rows.append({"model": m, "augmentation": "hflip", "pooling": "cls", "block": 2, "image": i, "index": v[i]})
            rows.append({"model": m, "augmentation": "hflip", "pooling": "cls", "block": 1, "image": i, "index": -5.0})
            rows.append({"model": m, "augmentation": "hflip", "pooling": "mean", "block": 2, "image": i, "index": 9.0})
            rows.append({"model": m, "augmentation": "crop", "pooling": "cls", "block": 2, "image": i, "index": 7.0})
    return pd.DataFrame(rows)


def test_flip_check_exact_rows():
    rng = np.random.default_rng(5)
    v = {m: c + 0.05 * rng.normal(size=30) for m, c in
         (("zoo-mae", 0.2), ("zoo-mae+ft", 0.7), ("zoo-beit", 0.6), ("zoo-beit+ft", 0.3), ("zoo-dino", 0.8),
          ("zoo-dino+ft", 0.9), ("random-a", 0.1), ("random-a+ft", 0.2))}
    rows = sec.flip_check(_flips(v), ["zoo-mae", "zoo-dino", "zoo-beit", "random-a"])
    assert [(r.claim, r.subject, r.measure, r.expected, r.baseline_model) for r in rows] == [
        ("OM-2.3d", f"{m}+ft minus {m}", "last-block flip-invariance index (CLS)", 1, "random-a")
        for m in ("zoo-mae", "zoo-beit")]
    for row, m in zip(rows, ("zoo-mae", "zoo-beit")):
        w = {m + "+ft": 1.0, m: -1.0}
        assert row.effect == paired_contrast(v, w)
        assert row.effect.estimate == pytest.approx(v[m + "+ft"].mean() - v[m].mean(), abs=1e-12)
        assert row.baseline == paired_contrast(v, {**w, "random-a+ft": -1.0, "random-a": 1.0})
        assert row.baseline.estimate == pytest.approx(
            v[m + "+ft"].mean() - v[m].mean() - v["random-a+ft"].mean() + v["random-a"].mean(), abs=1e-12)
    assert [r.verdict for r in rows] == [HOLDS, DOES_NOT_HOLD]


def test_flip_check_without_a_baseline_and_its_messages():
    rng = np.random.default_rng(6)
    v = {"zoo-mae": 0.2 + 0.01 * rng.normal(size=20), "zoo-mae+ft": 0.6 + 0.01 * rng.normal(size=20)}
    (row,) = sec.flip_check(_flips(v), ["zoo-mae"])
    assert (row.baseline, row.baseline_model, row.verdict) == (None, None, INCONCLUSIVE)
    assert row.effect == paired_contrast(v, {"zoo-mae+ft": 1.0, "zoo-mae": -1.0})
    (row,) = sec.flip_check(_flips(v), ["zoo-dino"])
    assert (row.claim, row.subject, row.verdict, row.reason) == (
        "OM-2.3d", "reconstruction (FT) minus (PT)", CANNOT_CHECK, "no reconstruction model is fine-tuned")
    (row,) = sec.flip_check(_flips(v).assign(augmentation="crop"), ["zoo-mae"])
    assert (row.claim, row.subject, row.verdict, row.reason) == (
        "OM-2.3d", "reconstruction (FT) minus (PT)", CANNOT_CHECK, "the invariance section lacks hflip")


# ---------------------------------------------------------------- marginal information
def _correct(rng, lin, multi, n=120):
    c = {("linear", 0, 0): torch.tensor((rng.random(n) < lin).astype(np.float64))}
    c.update({("multi-layer", 0, k): torch.tensor((rng.random(n) < p).astype(np.float64))
              for k, p in zip((1, 2, 3), multi)})
    return c


def _gain(c):
    return np.mean([c[k].numpy() for k in c if k[0] == "multi-layer"], axis=0) - c[("linear", 0, 0)].numpy()


def test_marginal_check_exact_rows():
    rng = np.random.default_rng(7)
    correct = {"zoo-mae": _correct(rng, 0.3, (0.5, 0.7, 0.9)), "zoo-mae+ft": _correct(rng, 0.8, (0.8, 0.8, 0.7)),
               "zoo-beit": _correct(rng, 0.5, (0.5, 0.5, 0.5)), "zoo-beit+ft": _correct(rng, 0.4, (0.9, 0.9, 0.9)),
               "random-a": _correct(rng, 0.2, (0.2, 0.2, 0.2)), "random-a+ft": _correct(rng, 0.4, (0.4, 0.4, 0.4))}
    rows = sec.marginal_check({"correct": correct}, ["zoo-dino", "zoo-mae", "zoo-beit", "random-a"])
    assert [(r.claim, r.subject, r.measure, r.expected, r.baseline_model) for r in rows] == [
        ("OM-2.3e", f"{m} minus {m}+ft", "gain of final + intermediate CLS over the final CLS (mean over blocks)", 1,
         "random-a") for m in ("zoo-mae", "zoo-beit")]
    gain = {m: _gain(c) for m, c in correct.items()}
    for row, m in zip(rows, ("zoo-mae", "zoo-beit")):
        w = {m: 1.0, m + "+ft": -1.0}
        assert row.effect == paired_contrast(gain, w)
        assert row.effect.estimate == pytest.approx(gain[m].mean() - gain[m + "+ft"].mean(), abs=1e-12)
        assert row.baseline == paired_contrast(gain, {**w, "random-a": -1.0, "random-a+ft": 1.0})
        assert row.baseline.estimate == pytest.approx(gain[m].mean() - gain[m + "+ft"].mean()
                                                       - gain["random-a"].mean() + gain["random-a+ft"].mean(),
                                                       abs=1e-12)
    assert rows[0].verdict == HOLDS and rows[1].verdict == DOES_NOT_HOLD
    (row,) = sec.marginal_check({"correct": {m: correct[m] for m in ("zoo-mae", "zoo-mae+ft")}}, ["zoo-mae"])
    assert (row.baseline, row.baseline_model, row.verdict) == (None, None, INCONCLUSIVE)
    (row,) = sec.marginal_check({"correct": correct}, ["zoo-dino", "random-a"])
    assert (row.claim, row.subject, row.verdict, row.reason) == (
        "OM-2.3e", "reconstruction (PT) minus (FT)", CANNOT_CHECK, "no reconstruction model is fine-tuned")


# ---------------------------------------------------------------- tables
def _same_depth(values, site="block"):
    return pd.DataFrame([{"model_a": a, "model_b": b, "site": site, "index": i + 1, "cka": v}
                         for (a, b), vs in values.items() for i, v in enumerate(vs)])


def test_closeness_two_by_two_in_order():
    pairs = {}
    k = 0
    for r in ("zoo-mae", "zoo-beit"):
        for other in ("zoo-dino", "zoo-mocov3", r, "zoo-dino+ft", "zoo-mocov3+ft"):
            pairs[(other, r + "+ft") if k % 2 else (r + "+ft", other)] = [k / 16, k / 16 + 0.5]
            k += 1
        for j in ("zoo-dino", "zoo-mocov3"):
            pairs[(j, r)] = [k / 16, k / 16 + 0.25]
            k += 1
    sd = pd.concat([_same_depth(pairs), _same_depth({p: [9.0] for p in pairs}, site="qkv")])
    t = sec.closeness(sd, ["zoo-mae", "zoo-dino", "random-a", "zoo-beit", "zoo-mocov3"])
    expect = [(r + "+ft", o) for r in ("zoo-mae", "zoo-beit")
              for o in ("zoo-dino", "zoo-mocov3", r, "zoo-dino+ft", "zoo-mocov3+ft")]
    expect += [(r, j) for r in ("zoo-mae", "zoo-beit") for j in ("zoo-dino", "zoo-mocov3")]
    assert list(zip(t.model, t.vs)) == expect
    mean = {frozenset(p): float(np.mean(v)) for p, v in pairs.items()}
    assert t.cka.tolist() == [mean[frozenset(p)] for p in expect]
    assert list(t.columns) == ["model", "vs", "cka"]


def test_before_after_per_site_and_block():
    sd = pd.concat([_same_depth({("zoo-dino", "zoo-mae"): [0.5, 0.25], ("zoo-dino+ft", "zoo-mae"): [0.1, 0.2],
                                 ("zoo-mae+ft", "zoo-dino"): [0.3, 0.4], ("zoo-mae+ft", "zoo-dino+ft"): [0.7, 0.8]}),
                    _same_depth({("zoo-mae", "zoo-dino"): [0.6], ("zoo-dino+ft", "zoo-mae"): [0.11],
                                 ("zoo-dino", "zoo-mae+ft"): [0.31], ("zoo-dino+ft", "zoo-mae+ft"): [0.71]}, "qkv")])
    t = sec.before_after(sd, "zoo-dino", "zoo-mae")
    assert t.to_dict("list") == {"site": ["block", "block", "qkv"], "index": [1, 2, 1], "PT/PT": [0.5, 0.25, 0.6],
                                 "FT/PT": [0.1, 0.2, 0.11], "PT/FT": [0.3, 0.4, 0.31], "FT/FT": [0.7, 0.8, 0.71]}

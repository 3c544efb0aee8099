"""OM Fig. 3 (invariance), TM 6.1 / OM Fig. 12 (k-NN) and OM App. F (agreement) sections: protocols, the wiring from
pooled features to tables and the claim plumbing. ``pooled_features`` (an extraction) is replaced by planted
tensors; the k-NN and similarity kernels run on a few dozen points."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.kernels.agreement import knn_class_votes, prediction_f1, topk_kendall_tau
from vitscope.kernels.invariance import augmentation_similarity
from vitscope.profiles import Profile
from vitscope.sections import agreement, invariance, knn

LABELS = torch.arange(3).repeat_interleave(6)                 # 18 images, 3 classes


def _feats(seed=0, blocks=2, dim=5, signal=(0.0, 4.0)):
    """Planted pooled features: class signal ``signal[b]`` at block b (CLS), the GAP readout without signal."""
    gen = torch.Generator().manual_seed(seed)
    onehot = torch.nn.functional.one_hot(LABELS, dim).float()
    cls = torch.randn(len(LABELS), blocks, dim, generator=gen) + torch.tensor(signal)[None, :, None] * onehot[:, None]
    gap = torch.randn(len(LABELS), blocks, dim, generator=gen)
    return {"cls": cls, "gap": gap, "labels": LABELS, "num_classes": 3}


def _profile(**sections) -> Profile:
    return Profile("t", {"models": ["zoo-dino", "zoo-mae"], "knn": {"dataset": "d", "folds": 3, "ks": [2, 4],
                                                                    "k": 4}, **sections})


# ------------------------------------------------------------------------------------------------------ k-NN
def test_knn_protocol_defaults_and_the_reported_k_check():
    assert knn.protocol(Profile("t", {"models": [], "knn": {"dataset": "d"}})) == {
        "dataset": "d", "folds": 5, "ks": (10, 20, 100, 200), "k": 20, "temperature": 0.07}
    assert knn.protocol(_profile()) == {"dataset": "d", "folds": 3, "ks": (2, 4), "k": 4, "temperature": 0.07}
    with pytest.raises(ValueError) as err:
        knn.protocol(Profile("t", {"models": [], "knn": {"dataset": "d", "ks": [10], "k": 20}}))
    assert str(err.value) == "Profile 't': knn.k=20 (the reported k) is not in knn.ks=(10,)"


def _fake_knn_features(monkeypatch, per_model, calls=None):
    def fake(model, profile, dataset, **kw):
        if calls is not None:
            calls.append((model, dataset, kw.get("weights")))
        return per_model[model]
    monkeypatch.setattr(knn, "pooled_features", fake)


def test_compute_and_per_query_from_planted_features(monkeypatch):
    feats, calls = _feats(), []
    _fake_knn_features(monkeypatch, {"zoo-dino": feats}, calls)
    table = knn.compute("zoo-dino", _profile(), weights="w.pt")
    assert calls == [("zoo-dino", "d", "w.pt")]
    folds = knn.fold_assignment(LABELS, 3)
    noise = knn.noise_accuracy(LABELS, folds, 5, (2, 4), 3)
    assert len(table) == 2 * 2 * 2 and list(table.columns) == ["model", "pooling", "block", "k", "accuracy",
                                                                "n_queries", "noise", "chance"]
    for row in table.itertuples():
        x = feats[row.pooling][:, row.block - 1]
        pred = knn.cross_validated(x, LABELS, folds, (row.k,), 3)[row.k]
        assert row.accuracy == float((pred == LABELS).double().mean()) and row.noise == noise[row.k]
        assert (row.model, row.n_queries, row.chance) == ("zoo-dino", 18, 1 / 3)
    assert table[(table.pooling == "cls") & (table.block == 2)].accuracy.tolist() == [1.0, 1.0]   # planted signal
    q = knn.per_query("zoo-dino", _profile())
    assert len(q) == 2 * 2 * 18 and set(q.columns) == {"model", "pooling", "block", "image", "correct"}
    last = q[(q.pooling == "cls") & (q.block == 1)].sort_values("image")
    pred = knn.cross_validated(feats["cls"][:, 0], LABELS, folds, (4,), 3)[4]    # default k: the reported one
    assert last.correct.tolist() == (pred == LABELS).double().tolist() and last.image.tolist() == list(range(18))
    k2 = knn.per_query("zoo-dino", _profile(), k=2)
    pred2 = knn.cross_validated(feats["gap"][:, 1], LABELS, folds, (2,), 3)[2]
    assert k2[(k2.pooling == "gap") & (k2.block == 2)].correct.tolist() == (pred2 == LABELS).double().tolist()


def test_best_blocks_picks_the_best_and_the_last_block():
    t = pd.DataFrame({"model": ["a"] * 4 + ["a"] * 3, "pooling": ["cls"] * 3 + ["cls"] + ["gap"] * 3,
                      "block": [2, 1, 3, 1, 1, 2, 3], "k": [20, 20, 20, 10, 20, 20, 20],
                      "accuracy": [0.7, 0.4, 0.6, 0.99, 0.3, 0.2, 0.5], "noise": [0.1] * 4 + [0.2] * 3})
    got = knn.best_blocks(t)
    assert got.to_dict("records") == [
        {"model": "a", "pooling": "cls", "best_block": 2, "best": 0.7, "last_block": 3, "last": 0.6, "noise": 0.1},
        {"model": "a", "pooling": "gap", "best_block": 3, "best": 0.5, "last_block": 3, "last": 0.5, "noise": 0.2}]
    assert knn.best_blocks(t, k=10).to_dict("records")[0]["best"] == 0.99


def test_check_tm_and_om_claims_add_the_seeds(monkeypatch):
    from test_sections_knn import _per_query

    planted = {("zoo-supervised", "cls"): [0.2, 0.4, 0.9], ("zoo-mae", "cls"): [0.2, 0.3, 0.3],
               ("random-a", "cls"): [0.03] * 3, ("random-b", "cls"): [0.04] * 3}
    planted |= {(m, "gap"): [0.3] * 3 for m in ("zoo-supervised", "zoo-mae", "random-a", "random-b")}
    table = _per_query(planted)
    seen = []
    monkeypatch.setattr(knn, "per_query", lambda m, profile, **kw: seen.append((m, kw["weights"]))
                        or table[table.model == m])
    profile = Profile("t", {"models": ["zoo-supervised", "zoo-mae"], "baselines": ["random-a", "random-b"]})
    got = knn.check_tm_claims(None, profile, weights={"zoo-mae": "w"})
    assert seen == [("zoo-supervised", None), ("zoo-mae", "w"), ("random-a", None), ("random-b", None)]
    assert got == knn.tm_check(table, ["random-a", "random-b"])
    assert got[0].seeds == ("random-a", "random-b")
    seen.clear()
    assert knn.check_om_claims(["zoo-mae", "random-a"], profile) == knn.om_check(table, ["random-a", "random-b"])
    assert seen == [("zoo-mae", None), ("random-a", None), ("random-b", None)]


# ------------------------------------------------------------------------------------------------ invariance
def test_invariance_protocol_defaults_and_unknown_augmentations():
    assert invariance.protocol(Profile("t", {"models": [], "invariance": {"dataset": "d"}})) == {
        "dataset": "d", "augmentations": ["hflip"]}
    assert invariance.protocol(_profile(invariance={"dataset": "e", "augmentations": ["vflip", "grayscale"]})) == {
        "dataset": "e", "augmentations": ["vflip", "grayscale"]}
    with pytest.raises(ValueError) as err:
        invariance.protocol(_profile(invariance={"dataset": "e", "augmentations": ["hflip", "blur", "crop"]}))
    assert str(err.value) == ("Profile 't': invariance.augmentations ['blur', 'crop'] unknown; choose from "
                              "['grayscale', 'hflip', 'vflip']")


def test_similarities_compare_each_augmented_copy_with_the_original(monkeypatch):
    copies = {None: _feats(0), "hflip": _feats(1), "vflip": _feats(2)}
    calls = []

    def fake(model, profile, dataset, augment=None, **kw):
        calls.append((model, dataset, augment and augment[0], augment and augment[1], kw["weights"]))
        return copies[augment and augment[0]]

    monkeypatch.setattr(invariance, "pooled_features", fake)
    profile = _profile(invariance={"dataset": "e", "augmentations": ["hflip", "vflip"]})
    out = invariance.similarities("zoo-dino", profile, weights="w")
    assert calls == [("zoo-dino", "e", None, None, "w"), ("zoo-dino", "e", "hflip", invariance.AUGMENTATIONS["hflip"],
                                                          "w"),
                     ("zoo-dino", "e", "vflip", invariance.AUGMENTATIONS["vflip"], "w")]
    assert list(out) == [("hflip", "cls"), ("hflip", "gap"), ("vflip", "cls"), ("vflip", "gap")]
    for (aug, pooling), s in out.items():
        want = augmentation_similarity(copies[None][pooling], copies[aug][pooling])
        assert all(torch.equal(s[key], want[key]) for key in ("own", "others", "index"))


def test_invariance_compute_and_per_image_tables(monkeypatch):
    index = torch.tensor([[0.1, 0.5], [0.3, 0.9], [0.2, 0.4]], dtype=torch.float64)      # [N=3, L=2]
    sims = {("hflip", "cls"): {"own": index + 1, "others": index - 1, "index": index},
            ("hflip", "gap"): {"own": index * 2, "others": index * 0, "index": index.flip(1)}}
    monkeypatch.setattr(invariance, "similarities", lambda model, profile, **kw: sims)
    t = invariance.compute("zoo-dino", None)
    assert list(t.columns) == ["model", "augmentation", "pooling", "block", "own", "others", "index", "index_std",
                               "n_images"]
    first = t.iloc[1].to_dict()
    assert first == {"model": "zoo-dino", "augmentation": "hflip", "pooling": "cls", "block": 2,
                     "own": pytest.approx(1.6), "others": pytest.approx(-0.4), "index": pytest.approx(0.6),
                     "index_std": pytest.approx(float(np.std([0.5, 0.9, 0.4], ddof=1))), "n_images": 3}
    assert t.iloc[2]["pooling"] == "gap" and t.iloc[2]["index"] == pytest.approx(0.6)
    img = invariance.per_image("zoo-dino", None)
    cls = img[img.pooling == "cls"]
    assert list(cls.block) == [1, 2, 1, 2, 1, 2] and list(cls.image) == [0, 0, 1, 1, 2, 2]
    assert cls["index"].tolist() == index.reshape(-1).tolist()
    assert img[img.pooling == "gap"]["index"].tolist() == [0.5, 0.1, 0.9, 0.3, 0.4, 0.2]
    assert set(img.model) == {"zoo-dino"} and set(img.augmentation) == {"hflip"}


def _flip_table(levels, aug="hflip", n=200):
    rng = np.random.default_rng(1)
    return pd.concat([pd.DataFrame({"model": m, "augmentation": aug, "pooling": "cls", "block": b,
                                    "image": np.arange(n),
                                    "index": (lv if b == 2 else 0.0) + 0.01 * rng.standard_normal(n)})
                      for m, lv in levels.items() for b in (1, 2)], ignore_index=True)


def test_flip_check_cannot_check_cases():
    no_hflip = invariance.flip_check(_flip_table({"zoo-dino": 0.9}, aug="vflip"))
    assert [(r.verdict, r.subject, r.reason) for r in no_hflip] == [
        ("cannot be checked", "joint-embedding minus reconstruction",
         "the profile's invariance section does not list hflip")]
    no_rec = invariance.flip_check(_flip_table({"zoo-dino": 0.9, "random-a": 0.5}))
    assert no_rec[0].reason == "the profile lacks a joint-embedding or a reconstruction model"
    assert no_rec[1].subject == "zoo-dino" and no_rec[1].verdict == "holds"
    assert no_rec[1].measure == "last-block flip-invariance index (CLS) minus `random-a`'s"
    no_base = invariance.flip_check(_flip_table({"zoo-dino": 0.9, "zoo-mae": 0.3}))
    assert no_base[0].measure == "last-block flip-invariance index (CLS) (zoo-dino minus zoo-mae)"
    assert [(r.subject, r.verdict, r.reason) for r in no_base[1:]] == [
        (m, "cannot be checked", "no untrained baseline of the same architecture in this profile")
        for m in ("zoo-dino", "zoo-mae")]
    assert no_base[0].effect.estimate == pytest.approx(0.6, abs=0.01)      # the last block, not block 1


def test_invariance_check_claims_adds_the_seeds(monkeypatch):
    table = _flip_table({"zoo-dino": 0.9, "zoo-mae": 0.3, "random-a": 0.5, "random-b": 0.52})
    seen = []
    monkeypatch.setattr(invariance, "per_image", lambda m, profile, **kw: seen.append((m, kw["weights"]))
                        or table[table.model == m])
    profile = Profile("t", {"models": ["zoo-dino", "zoo-mae"], "baselines": ["random-a", "random-b"]})
    got = invariance.check_claims(None, profile, weights={"zoo-dino": "w"})
    assert seen == [("zoo-dino", "w"), ("zoo-mae", None), ("random-a", None), ("random-b", None)]
    assert got == invariance.flip_check(table, ["random-a", "random-b"])
    assert got[0].floor == pytest.approx(0.02, abs=0.005) and got[0].seeds == ("random-a", "random-b")


# ------------------------------------------------------------------------------------------------- agreement
def test_agreement_protocol():
    assert agreement.protocol(_profile()) == {"models": ["zoo-dino", "zoo-mae"], "ks": (5, 10)}
    assert agreement.protocol(_profile(agreement={"models": ["a"], "ks": [3]})) == {"models": ["a"], "ks": (3,)}


def test_votes_are_cross_validated_knn_votes_of_the_last_cls(monkeypatch):
    feats = _feats(signal=(4.0, 0.0))                            # block 1 separates, the last block does not
    _fake_knn_features(monkeypatch, {"zoo-dino": feats})
    v = agreement.votes("zoo-dino", _profile())
    folds = knn.fold_assignment(LABELS, 3)
    x = feats["cls"][:, -1]
    for f in range(3):
        q, r = folds == f, folds != f
        want = knn_class_votes(x[r], LABELS[r], x[q], k=4, temperature=0.07, num_classes=3)
        torch.testing.assert_close(v["scores"][q], want.double(), rtol=0, atol=0)
    assert v["scores"].dtype == torch.float64 and torch.equal(v["pred"], v["scores"].argmax(1))
    assert torch.equal(v["labels"], LABELS)


def _votes(seed):
    gen = torch.Generator().manual_seed(seed)
    scores = torch.rand(18, 6, generator=gen, dtype=torch.float64)
    return {"scores": scores, "pred": scores.argmax(1), "labels": LABELS}


def test_per_image_and_compute_tables(monkeypatch):
    v = {"zoo-dino": _votes(0), "zoo-mae": _votes(1), "random-a": _votes(2)}
    img = agreement.per_image(v, ks=(2, 4))
    assert list(img.columns) == ["model_a", "model_b", "image", "tau@2", "tau@4", "agree", "correct_a", "correct_b"]
    pairs = list(dict.fromkeys(zip(img.model_a, img.model_b)))
    assert pairs == [("zoo-dino", "zoo-mae"), ("zoo-dino", "random-a"), ("zoo-mae", "random-a")]
    g = img[(img.model_a == "zoo-dino") & (img.model_b == "random-a")]
    a, b = v["zoo-dino"], v["random-a"]
    np.testing.assert_array_equal(g["tau@4"].to_numpy(), topk_kendall_tau(a["scores"], b["scores"], 4).numpy())
    assert g.agree.tolist() == (a["pred"] == b["pred"]).double().tolist()
    assert g.correct_a.tolist() == (a["pred"] == LABELS).tolist() and g.image.tolist() == list(range(18))
    assert g.correct_b.tolist() == (b["pred"] == LABELS).tolist()

    seen = []
    monkeypatch.setattr(agreement, "votes", lambda m, profile, **kw: seen.append((m, kw["weights"])) or v[m])
    tau, f1 = agreement.compute(None, _profile(agreement={"models": ["zoo-dino", "zoo-mae", "random-a"],
                                                          "ks": [2, 4]}), weights={"zoo-mae": "w"})
    assert seen == [("zoo-dino", None), ("zoo-mae", "w"), ("random-a", None)]
    assert list(tau.columns) == ["model_a", "model_b", "k", "subset", "tau", "n_images"] and len(tau) == 3 * 2 * 3
    for row in tau.itertuples():
        g = img[(img.model_a == row.model_a) & (img.model_b == row.model_b)]
        mask = {"all": np.ones(18, bool), "both correct": g.correct_a & g.correct_b,
                "both wrong": ~g.correct_a & ~g.correct_b}[row.subset]
        t = g[f"tau@{row.k}"].to_numpy()[np.asarray(mask)]
        t = t[np.isfinite(t)]
        assert row.n_images == len(t)
        assert (np.isnan(row.tau) and not len(t)) or row.tau == pytest.approx(t.mean())
    assert tau.subset.tolist()[:3] == ["all", "both correct", "both wrong"] and tau.k.tolist()[:4] == [2, 2, 2, 4]
    assert f1.to_dict("records")[1] == {
        "model_a": "zoo-dino", "model_b": "random-a", "f1_macro": prediction_f1(a["pred"], b["pred"]),
        "agreement": pytest.approx(float((a["pred"] == b["pred"]).double().mean()))}


def test_agreement_check_claims_adds_the_seeds(monkeypatch):
    v = {m: _votes(i) for i, m in enumerate(["zoo-dino", "zoo-mocov3", "zoo-mae", "random-a", "random-b"])}
    seen = []
    monkeypatch.setattr(agreement, "votes", lambda m, profile, **kw: seen.append(m) or v[m])
    profile = Profile("t", {"models": ["zoo-dino"], "baselines": ["random-a", "random-b"],
                            "agreement": {"models": ["zoo-dino", "zoo-mocov3", "zoo-mae"], "ks": [3]}})
    got = agreement.check_claims(None, profile)
    assert seen == ["zoo-dino", "zoo-mocov3", "zoo-mae", "random-a", "random-b"]
    assert got == agreement.agreement_check(agreement.per_image(v, (3,)), (3,), ["random-a", "random-b"])
    assert [r.claim for r in got] == ["OM-F.a", "OM-F.b"] and got[0].seeds == ()     # one seed pair: no floor
    assert got[0].measure.startswith("top-3 Kendall tau: zoo-dino–zoo-mocov3 minus")

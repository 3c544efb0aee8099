"""k-NN per block (TM 6.1, OM Fig. 12): the cross-validation split, the per-block protocol on planted features, the
noise baseline and the claim checks on hand-made per-query tables. No model is run here."""
import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.claims import CANNOT_CHECK, HOLDS, INCONCLUSIVE
from vitscope.kernels.knn import weighted_knn
from vitscope.sections import knn
from vitscope.sections.agreement import agreement_check
from vitscope.sections.invariance import flip_check


def test_folds_are_stratified_and_every_image_is_queried_once():
    labels = torch.tensor([0] * 7 + [1] * 5 + [2] * 3)
    folds = knn.fold_assignment(labels, 3)
    assert folds.tolist()[:7] == [0, 1, 2, 0, 1, 2, 0]
    for c in range(3):                                   # each class spread over the folds as evenly as it can be
        counts = torch.bincount(folds[labels == c], minlength=3)
        assert int(counts.max() - counts.min()) <= 1
    with pytest.raises(ValueError, match="folds"):
        knn.fold_assignment(labels, 1)


def test_cross_validated_equals_a_loop_over_folds_and_drops_too_large_k():
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(4).repeat_interleave(6)        # 24 images, 4 classes
    feats = torch.randn(24, 5, generator=gen) + 3 * torch.nn.functional.one_hot(labels, 5)
    folds = knn.fold_assignment(labels, 3)               # 16 references per fold
    preds = knn.cross_validated(feats, labels, folds, ks=(3, 16, 17), num_classes=4)
    assert set(preds) == {3, 16}                          # 17 > 16 references: left out
    for f in range(3):
        q, r = folds == f, folds != f
        assert torch.equal(preds[3][q], weighted_knn(feats[r], labels[r], feats[q], k=3, num_classes=4))
    assert float((preds[3] == labels).double().mean()) == 1.0   # planted, well-separated classes


def test_noise_baseline_is_near_chance():
    labels = torch.arange(10).repeat_interleave(40)
    folds = knn.fold_assignment(labels, 5)
    acc = knn.noise_accuracy(labels, folds, dim=32, ks=(20,), num_classes=10)
    assert abs(acc[20] - 0.1) < 0.05


def _per_query(acc: dict, n=400, seed=0) -> pd.DataFrame:
    """A per-query table with planted accuracies ``{(model, pooling): [per-block accuracy]}``."""
    rng = np.random.default_rng(seed)
    frames = []
    for (model, pooling), per_block in acc.items():
        for block, a in enumerate(per_block, 1):
            correct = (np.arange(n) < round(a * n)).astype(float)
            frames.append(pd.DataFrame({"model": model, "pooling": pooling, "block": block, "image": np.arange(n),
                                        "correct": rng.permutation(correct)}))
    return pd.concat(frames, ignore_index=True)


def test_om_check_holds_when_joint_embedding_leads_and_is_inconclusive_without_a_gap():
    planted = {("zoo-dino", "cls"): [0.5, 0.5, 0.6, 0.8], ("zoo-mocov3", "cls"): [0.5, 0.5, 0.6, 0.8],
               ("zoo-mae", "cls"): [0.1, 0.1, 0.1, 0.1], ("random-a", "cls"): [0.05] * 4}
    planted |= {(m, "gap"): [0.4] * 4 for m in ("zoo-dino", "zoo-mocov3", "zoo-mae")}
    planted |= {("random-a", "gap"): [0.05] * 4}
    results = knn.om_check(_per_query(planted))
    assert results[0].claim == "OM-2.1e" and results[0].verdict == HOLDS          # last block
    assert results[1].verdict == HOLDS                                             # block 1 of 4 (a quarter)
    gap = next(r for r in results if r.subject.startswith("zoo-mae"))
    assert gap.verdict == HOLDS and gap.effect.estimate == pytest.approx(0.3)
    assert results[-1].verdict == CANNOT_CHECK
    same = {key: [0.3] * 4 for key in planted}
    assert knn.om_check(_per_query(same))[0].verdict == INCONCLUSIVE


def test_tm_check_last_block_rows():
    planted = {("zoo-supervised", "cls"): [0.2, 0.4, 0.9], ("zoo-mae", "cls"): [0.2, 0.3, 0.3],
               ("zoo-beit", "cls"): [0.1, 0.2, 0.1], ("random-a", "cls"): [0.03, 0.03, 0.03]}
    results = knn.tm_check(_per_query(planted))
    by = {(r.claim, r.subject): r for r in results}
    assert by[("TM-6.1a", "supervised minus the other trained models")].verdict == HOLDS
    assert by[("TM-6.1a", "zoo-mae minus zoo-beit")].verdict == HOLDS
    assert by[("TM-T1a", "k-NN, zoo-supervised")].verdict == HOLDS
    assert by[("TM-T1a", "k-NN, zoo-mae")].verdict == INCONCLUSIVE    # last block ties block 2
    assert by[("TM-T1a", "k-NN, zoo-beit")].effect.estimate == pytest.approx(-0.1)


def test_flip_check_orders_joint_embedding_above_reconstruction():
    rng = np.random.default_rng(1)
    rows = []
    for model, level in (("zoo-dino", 0.9), ("zoo-mocov3", 0.85), ("zoo-mae", 0.3), ("random-a", 0.5)):
        rows.append(pd.DataFrame({"model": model, "augmentation": "hflip", "pooling": "cls", "block": 6,
                                  "image": np.arange(300), "index": level + 0.05 * rng.standard_normal(300)}))
    results = flip_check(pd.concat(rows, ignore_index=True))
    assert results[0].verdict == HOLDS
    assert {r.subject: r.verdict for r in results[1:]} == {"zoo-dino": HOLDS, "zoo-mocov3": HOLDS, "zoo-mae": HOLDS}


def test_agreement_check_on_planted_pairs():
    n = 300
    rng = np.random.default_rng(2)
    rows = []
    for (a, b), tau, agree in ((("zoo-mocov3", "zoo-dino"), 0.8, 0.9), (("zoo-mocov3", "zoo-mae"), 0.2, 0.5),
                               (("zoo-dino", "zoo-mae"), 0.25, 0.5), (("zoo-mocov3", "random-a"), 0.0, 0.1),
                               (("zoo-dino", "random-a"), 0.0, 0.1), (("zoo-mae", "random-a"), 0.0, 0.1)):
        taus = tau + 0.1 * rng.standard_normal(n)
        taus[0] = np.nan                                  # an undefined tau is left out, not a crash
        rows.append(pd.DataFrame({"model_a": a, "model_b": b, "image": np.arange(n), "tau@5": taus,
                                  "agree": (rng.random(n) < agree).astype(float), "correct_a": True,
                                  "correct_b": True}))
    results = agreement_check(pd.concat(rows, ignore_index=True), ks=(5,))
    assert [r.claim for r in results] == ["OM-F.a", "OM-F.b"]
    assert all(r.verdict == HOLDS for r in results)
    assert results[0].effect.n == n - 1

"""sections.architecture (OM Fig. 11) on hand-made Gram matrices: pairs, binned CKA, verdicts, missing models."""
from __future__ import annotations

import pytest
import torch

from vitscope.claims.verdict import CANNOT_CHECK, HOLDS
from vitscope.kernels import cka as cka_k
from vitscope.profiles import Profile, load_profile
from vitscope.sections import architecture as A

N_BATCHES, B = 6, 16


def _grams(features: list[torch.Tensor]) -> tuple[list[torch.Tensor], int]:
    """Per-batch Gram stacks [L, b, b] of per-layer features [N, D]."""
    out = []
    for k in range(N_BATCHES):
        rows = slice(k * B, (k + 1) * B)
        out.append(torch.stack([cka_k.gram(f[rows].double()) for f in features]))
    return out, len(features)


@pytest.fixture(scope="module")
def fake():
    """zoo-cnn-mocov3 computes what zoo-mocov3 computes (plus noise) at every depth; zoo-mae and zoo-dino each
    compute something else; the untrained CNN is noise."""
    g = torch.Generator().manual_seed(0)
    n = N_BATCHES * B
    shared = [torch.randn(n, 12, generator=g) for _ in range(6)]
    noise = lambda: torch.randn(n, 12, generator=g)   # noqa: E731
    grams = {"zoo-mocov3": _grams(shared),
             "zoo-cnn-mocov3": _grams([shared[min(5, i * 6 // 8)] + 0.3 * noise() for i in range(8)]),
             "zoo-mae": _grams([noise() for _ in range(6)]),
             "zoo-dino": _grams([noise() for _ in range(6)]),
             "random-cnn-a": _grams([noise() for _ in range(8)])}
    return grams


def _profile(**section) -> Profile:
    raw = load_profile("demo").raw
    return Profile("demo", {**raw, "architecture": {**raw["architecture"], **section}})


def test_table_matches_minibatch_cka_and_bins_are_hand_checkable(fake):
    profile = _profile()
    table = A.compute(profile, fake)
    assert set(table.pair) == {"zoo-mocov3 vs zoo-cnn-mocov3", "zoo-mocov3 vs zoo-mae", "zoo-dino vs zoo-mae"}
    sel = table[table.pair == "zoo-mocov3 vs zoo-cnn-mocov3"]
    assert len(sel) == 6 * 8
    direct = cka_k.minibatch_cka_from_grams(fake["zoo-mocov3"][0], fake["zoo-cnn-mocov3"][0])
    row = sel[(sel.index_a == 3) & (sel.index_b == 4)].iloc[0]
    assert row.cka == pytest.approx(float(direct[2, 3]))
    assert row.depth_a == pytest.approx(3 / 6) and row.distance == pytest.approx(abs(3 / 6 - 4 / 8))
    binned = A.by_distance(table, bins=2)
    first = binned[(binned.pair == row.pair) & (binned.low == 0.0)].iloc[0]
    near = sel[sel.distance < 0.5]
    assert first["count"] == len(near) and first.cka == pytest.approx(near.cka.mean())


def test_same_objective_pair_beats_different_objectives_and_the_untrained_cnn(fake):
    results = A.judge_pairs(_profile(), fake, {})
    arch = [r for r in results if r.claim == A.ARCH_CLAIM]
    assert arch[0].verdict == HOLDS and arch[0].baseline_model == "random-cnn-a"
    # the effect is the mean over distance bins of the same pair's curve minus the mixed pairs' (the kernel's bins)
    means = A.summary(A.by_distance(A.compute(_profile(), fake), bins=5)).set_index("pair").iloc[:, -1]
    mixed = (means["zoo-mocov3 vs zoo-mae"] + means["zoo-dino vs zoo-mae"]) / 2
    expected = means["zoo-mocov3 vs zoo-cnn-mocov3"] - mixed
    assert arch[0].effect.estimate == pytest.approx(expected, abs=1e-9) and expected > 0.05
    assert len(arch) == 1 + 1 * 2                       # pooled, then one per (same pair, mixed pair)
    far = [r for r in results if r.claim == A.FAR_CLAIM]
    assert [r.verdict for r in far] == [CANNOT_CHECK]    # the demo has no reconstruction CNN


def test_absent_weights_make_the_pair_uncheckable(fake):
    grams = {k: v for k, v in fake.items() if k != "zoo-cnn-mocov3"}
    results = A.judge_pairs(_profile(), grams, {"zoo-cnn-mocov3": "FileNotFoundError: not trained yet"})
    assert results[0].verdict == CANNOT_CHECK and "zoo-cnn-mocov3" in results[0].reason
    assert "zoo-cnn-mocov3 vs" not in " ".join(A.compute(_profile(), grams).pair)


def test_mislabelled_pairs_are_refused():
    with pytest.raises(ValueError, match="families"):
        A.pairs(_profile(same_objective=[["zoo-mocov3", "zoo-cnn-supervised"]]))


def test_paper_profile_pairs_resnets_and_convnext():
    listed = A.pairs(load_profile("paper"))
    assert ("mae", "convnextv2-fcmae") in listed[A.SAME] and ("dino", "mae") in listed[A.DIFFERENT]

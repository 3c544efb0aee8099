"""sections.region_purity: the TM 5.3 claims on hand-made per-region indicators, and the profile's section."""
from __future__ import annotations

from fake_tables import indicators
from vitscope.claims.verdict import CANNOT_CHECK, DOES_NOT_HOLD, HOLDS
from vitscope.profiles import load_profile
from vitscope.sections import region_purity

FAMILY = {"zoo-supervised": "supervised", "zoo-clip": "image-text", "zoo-dino": "self-distillation",
          "zoo-mocov3": "contrastive", "zoo-mae": "masked-reconstruction", "zoo-beit": "masked-token-prediction",
          "random-a": "random"}


def _indicators(rates, n=400):
    return indicators(rates, n, seed=None)     # evenly spread: equal rates align row by row


PAPER_LIKE = {"zoo-supervised": [0.3, 0.7, 0.6], "zoo-clip": [0.3, 0.65, 0.55], "zoo-dino": [0.3, 0.6, 0.5],
              "zoo-mocov3": [0.3, 0.6, 0.5], "zoo-mae": [0.2, 0.45, 0.3], "zoo-beit": [0.2, 0.4, 0.25],
              "random-a": [0.1, 0.1, 0.1]}


def test_object_order_and_peak_hold_on_paper_like_numbers():
    correct = _indicators(PAPER_LIKE)
    rows = region_purity.order_check(correct, "object", FAMILY)
    assert [r.verdict for r in rows] == [HOLDS, HOLDS]
    peaks = region_purity.peak_check(correct, "object", FAMILY)
    assert all(r.verdict == HOLDS for r in peaks) and len(peaks) == 7          # pooled + 6 trained models


def test_part_order_catches_a_reversed_ranking():
    # CLIP above the joint-embedding models: "contrastive surpass CLIP" does not hold
    correct = _indicators({**PAPER_LIKE, "zoo-clip": [0.3, 0.9, 0.8]})
    rows = {r.subject: r for r in region_purity.order_check(correct, "part", FAMILY)}
    reversed_row = rows["joint-embedding minus CLIP"]
    assert reversed_row.verdict != HOLDS and reversed_row.effect.estimate < 0
    assert rows["FS minus the other trained models"].verdict == HOLDS
    # a peak at the last block is not a peak before it
    rising = region_purity.peak_check(_indicators({**PAPER_LIKE, "zoo-dino": [0.3, 0.4, 0.6]}), "part", FAMILY)
    assert next(r for r in rising if r.subject == "zoo-dino (parts)").verdict == DOES_NOT_HOLD


def test_missing_groups_cannot_be_checked():
    only = {m: v for m, v in _indicators(PAPER_LIKE).items() if m in ("zoo-dino", "random-a")}
    rows = region_purity.order_check(only, "object", FAMILY)
    assert all(r.verdict == CANNOT_CHECK for r in rows)


def test_demo_profile_section():
    run = load_profile("demo")
    p = region_purity.protocol(run)
    assert p["overlap"] in ("any", "fraction", "weighted")
    assert region_purity.datasets(run)[0] == p["parts_dataset"]
    paper = region_purity.protocol(load_profile("paper"))
    assert paper["parts_dataset"] and paper["k"] == 80

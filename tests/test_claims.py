"""The claims ledger: the verdict rule on constructed cases, the catalogue (its bootstrap kernels:
test_kernels_stats.py)."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from vitscope import claims
from vitscope.claims import CLAIMS, Interval, decide

ROOT = Path(__file__).resolve().parents[1]


# ---------------------------------------------------------------- the rule on constructed cases
def _iv(est, lo, hi):
    return Interval(est, lo, hi, 100, "images")


@pytest.mark.parametrize("effect, baseline, expected, verdict", [
    (_iv(0.2, 0.1, 0.3), _iv(0.1, 0.05, 0.15), 1, claims.HOLDS),           # clear, beyond the baseline
    (_iv(-0.2, -0.3, -0.1), _iv(-0.1, -0.2, -0.05), 1, claims.DOES_NOT_HOLD),  # reversed
    (_iv(0.2, -0.1, 0.5), _iv(0.1, 0.05, 0.15), 1, claims.INCONCLUSIVE),   # within noise
    (_iv(0.2, 0.1, 0.3), _iv(0.0, -0.02, 0.02), 1, claims.INCONCLUSIVE),   # the untrained model does as much
    (_iv(0.2, 0.1, 0.3), _iv(-0.1, -0.2, -0.05), 1, claims.INCONCLUSIVE),  # untrained does more
    (_iv(0.2, 0.1, 0.3), None, 1, claims.INCONCLUSIVE),                     # no baseline in the profile
    (None, None, 1, claims.CANNOT_CHECK),                                   # models missing
    (_iv(-0.2, -0.3, -0.1), _iv(-0.1, -0.2, -0.05), -1, claims.HOLDS),     # the paper predicts a negative effect
    (_iv(float("nan"), float("nan"), float("nan")), None, 1, claims.INCONCLUSIVE),
])
def test_verdict_rule(effect, baseline, expected, verdict):
    assert decide(effect, baseline, expected, "random-a")[0] == verdict


@pytest.mark.parametrize("effect, baseline, floor, baseline_floor, verdict, why", [
    # the image interval excludes 0 but reaches inside the seed floor: two untrained seeds differ by as much
    (_iv(8e-4, 1e-4, 1.4e-3), _iv(8e-4, 1e-4, 1.4e-3), 2e-4, 2e-4, claims.INCONCLUSIVE, "seed noise"),
    (_iv(8e-4, 3e-4, 1.4e-3), _iv(8e-4, 3e-4, 1.4e-3), 2e-4, 2e-4, claims.HOLDS, "seed floor"),  # clears it
    (_iv(-8e-4, -1.4e-3, -3e-4), _iv(-8e-4, -1.4e-3, -3e-4), 2e-4, 2e-4, claims.DOES_NOT_HOLD, "seed floor"),
    # the effect clears its floor, the beyond-untrained contrast does not clear its own
    (_iv(0.2, 0.1, 0.3), _iv(0.04, 0.03, 0.05), 0.01, 0.02 + 0.04, claims.INCONCLUSIVE, "seed noise"),
    (_iv(0.2, 0.1, 0.3), _iv(0.04, 0.03, 0.05), 0.01, 0.02, claims.HOLDS, "seed floor"),
])
def test_verdict_rule_with_a_seed_floor(effect, baseline, floor, baseline_floor, verdict, why):
    got, reason = decide(effect, baseline, 1, "random-a", floor, baseline_floor, ("random-a", "random-b"))
    assert got == verdict and why in reason
    assert decide(effect, baseline, 1, "random-a")[0] in (claims.HOLDS, claims.DOES_NOT_HOLD)   # no seeds: passes


def test_interval_clears_a_floor_on_either_side_only_when_wholly_beyond_it():
    iv = _iv(0.5, 0.3, 0.7)
    assert (iv.clears(0.0), iv.clears(0.29), iv.clears(0.3), iv.clears(float("nan"))) == (1, 1, 0, 0)
    assert _iv(-0.5, -0.7, -0.3).clears(0.2) == -1 and _iv(0.0, -0.1, 0.1).clears(0.0) == 0
    with pytest.raises(ValueError, match="floor"):
        decide(iv, iv, 1, "random-a", floor=-0.1)


def _per_image(last: dict, n=60, noise=0.02, seed=0, alternate=()):
    """Per-image tables with a fixed first block and each model's last block ~ N(last[m], noise); models in
    ``alternate`` get last[m] ± noise instead (mean exactly last[m], large spread)."""
    rng = np.random.default_rng(seed)
    frames = []
    for m, mu in last.items():
        eps = (-1.0) ** np.arange(n) if m in alternate else rng.normal(size=n)
        d = np.stack([np.full(n, 0.5), mu + noise * eps], 1)
        frames.append(pd.DataFrame({"model": m, "image": np.repeat(np.arange(n), 2), "block": np.tile([1, 2], n),
                                    "distance": d.reshape(-1)}))
    return pd.concat(frames)


def test_late_layer_check_on_constructed_tables():
    from vitscope.sections.attention_distance import late_layer_check

    clear = late_layer_check(_per_image({"zoo-dino": 0.58, "zoo-mae": 0.40, "random-a": 0.45}))
    assert clear[0].verdict == claims.HOLDS and clear[0].effect.estimate == pytest.approx(0.18, abs=0.01)
    assert clear[0].effect.n == 60 and clear[0].baseline_model == "random-a"
    assert [r.subject for r in clear[1:]] == ["zoo-dino", "zoo-mae"] and all(r.verdict == claims.HOLDS for r in clear)
    # the global group ends exactly where the untrained model does: the ordering is explained by the baseline
    explained = late_layer_check(_per_image({"zoo-dino": 0.59, "zoo-mae": 0.40, "random-a": 0.59}))
    assert explained[0].verdict == claims.INCONCLUSIVE and explained[1].verdict == claims.INCONCLUSIVE
    assert explained[2].verdict == claims.HOLDS    # MAE is more local than untrained
    reversed_ = late_layer_check(_per_image({"zoo-dino": 0.30, "zoo-mae": 0.50, "random-a": 0.45}))
    assert reversed_[0].verdict == claims.DOES_NOT_HOLD
    noisy = late_layer_check(_per_image({"zoo-dino": 0.46, "zoo-mae": 0.45, "random-a": 0.20}, n=20, noise=0.3,
                                        alternate=("zoo-dino",)))
    assert noisy[0].verdict == claims.INCONCLUSIVE
    missing = late_layer_check(_per_image({"zoo-dino": 0.58, "random-a": 0.45}))
    assert missing[0].verdict == claims.CANNOT_CHECK and "reconstruction" in missing[0].reason


def test_late_layer_check_needs_to_clear_the_seed_floor():
    from vitscope.sections.attention_distance import late_layer_check

    # seeds end at 0.590, 0.592, 0.591 exactly (alternating noise): floor = 0.592 - 0.590 = 0.002 for every contrast
    seeds = {"random-a": 0.590, "random-b": 0.592, "random-c": 0.591}
    table = _per_image({"zoo-supervised": 0.5915, "zoo-dino": 0.600, "zoo-mae": 0.40, **seeds}, n=200, noise=5e-4,
                       alternate=tuple(seeds))
    with_seeds = {r.subject: r for r in late_layer_check(table, seeds=tuple(seeds))}
    without = {r.subject: r for r in late_layer_check(table)}
    sup, dino = with_seeds["zoo-supervised"], with_seeds["zoo-dino"]
    assert sup.floor == pytest.approx(0.002) and sup.baseline_floor == pytest.approx(0.002)
    assert sup.seeds == tuple(seeds) and sup.baseline_model == "random-a"
    # +0.0015 beyond random-a: the image interval excludes 0, yet two untrained seeds differ by 0.002
    assert sup.effect.sign == 1 and sup.verdict == claims.INCONCLUSIVE and "seed noise" in sup.reason
    assert without["zoo-supervised"].verdict == claims.HOLDS              # the bootstrap alone would say holds
    assert dino.effect.estimate == pytest.approx(0.010, abs=2e-4) and dino.verdict == claims.HOLDS   # 5x the floor
    assert with_seeds["zoo-mae"].verdict == claims.HOLDS
    with pytest.raises(ValueError, match="random-z"):
        late_layer_check(table, seeds=("random-a", "random-z"))


def test_noise_seeds_come_from_the_profile_and_are_checked():
    from vitscope.profiles import Profile, load_profile

    assert claims.noise_seeds(load_profile("demo")) == ["random-a", "random-b", "random-c"]
    assert claims.noise_seeds(load_profile("paper")) == ["random-vitb-a", "random-vitb-b", "random-vitb-c"]
    with pytest.raises(ValueError, match="trained"):
        claims.noise_seeds(Profile("x", {"baselines": ["random-a", "zoo-dino"]}))
    with pytest.raises(ValueError, match="at least two"):
        claims.noise_seeds(Profile("x", {"baselines": ["random-a"]}))


# ---------------------------------------------------------------- the catalogue and rendering
def test_catalogue_covers_every_design_section_and_points_at_real_pages_and_checks():
    sections = {(c.paper, c.section.split(",")[0]) for c in CLAIMS.values()}
    tm = {("TM", s) for s in ("4.1", "4.2", "4.3", "4.4", "5.1", "5.2", "5.3", "6.1", "6.2", "6.3")}
    om = {("OM", s) for s in ("2.1", "App. B.1", "2.2", "App. F", "2.3", "App. C")}
    assert tm | om <= sections
    assert any(c.figure == "Fig. 1b" for c in CLAIMS.values()) and any("Table 1" in c.figure for c in CLAIMS.values())
    for c in CLAIMS.values():
        assert c.paper in claims.PAPERS and c.statement.endswith(".")
        assert c.page is None or (ROOT / "notebooks" / f"{c.page}.ipynb").is_file(), c.page
        assert c.check is None or c.page is not None
        if c.check:
            assert callable(claims.render._resolve(c.check))


def test_show_and_ledger_report_verdicts_intervals_and_coverage():
    from vitscope.sections.attention_distance import late_layer_check

    results = late_layer_check(_per_image({"zoo-dino": 0.58, "zoo-mae": 0.40, "random-a": 0.45}))
    md = claims.show(results).data
    assert "TM-4.3c" in md and "**holds**" in md and f"{results[0].effect.low:+.3f}" in md and "60 images" in md
    assert "random-a" in md and "(seed floor)" in md and "only noise measure" in md    # no seeds given: said so
    seeded = late_layer_check(_per_image({"zoo-dino": 0.58, "zoo-mae": 0.40, "random-a": 0.45, "random-b": 0.46}),
                              seeds=("random-a", "random-b"))
    md = claims.show(seeded).data
    assert "`random-b`" in md and f"±{seeded[0].floor:.4f}" in md and "only noise measure" not in md
    assert claims.results_table(seeded)["seed_floor"].iloc[0] == pytest.approx(seeded[0].floor)
    table = claims.ledger(results)
    assert len(table) == len(CLAIMS) and table.set_index("id").loc["TM-4.3c", "verdict"] == claims.HOLDS
    assert table.set_index("id").loc["OM-2.1a", "verdict"] == "not run"
    cov = claims.coverage(table)
    assert cov["claims"].sum() == len(CLAIMS)
    assert cov["with_page"].sum() == sum(c.page is not None for c in CLAIMS.values())
    assert claims.results_table(results)["effect"].iloc[0] == pytest.approx(results[0].effect.estimate)


def test_pages_carry_their_verdicts_and_the_ledger_collects_them(tmp_path):
    import json

    from vitscope import claims
    from vitscope.claims import CLAIMS_MIME, ClaimResult, Interval

    results = [ClaimResult("TM-4.3c", "zoo-dino", claims.HOLDS, "why", "a measure", 1,
                           Interval(0.1, 0.05, 0.15, 500, "images"), None, "random-a", 0.01, None, ("random-a",)),
               ClaimResult("OM-2.1a", "pairs", claims.CANNOT_CHECK, "no models")]
    bundle = claims.show(results)._repr_mimebundle_()
    assert "TM-4.3c" in bundle["text/markdown"]
    assert [claims.from_json(d) for d in json.loads(json.dumps(bundle[CLAIMS_MIME]))] == results
    page = {"cells": [{"cell_type": "code", "outputs": [{"output_type": "execute_result", "data": bundle}]}],
            "metadata": {"papermill": {"parameters": {"profile": "demo"}}}}
    for name in ("tm_x.ipynb", "om_y.ipynb"):      # the same results on two pages are collected once
        (tmp_path / "book" / "generated").mkdir(parents=True, exist_ok=True)
        (tmp_path / "book" / "generated" / name).write_text(json.dumps(page))
    assert claims.book_results("demo", root=tmp_path) == results
    assert claims.book_results("paper", root=tmp_path) == []

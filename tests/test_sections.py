"""Section reductions and book orchestration that need no model: hand-made tables, TOC and page titles."""
from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from vitscope.book.build import PAGES, personalise, toc
from vitscope.profiles import load_profile
from vitscope.sections.attention_distance import layer_summary


def _table(model, per_block):
    return pd.DataFrame([{"model": model, "method": "unit_square", "block": b + 1, "head": h, "distance": d + 0.01 * h,
                          "uniform": 0.5} for b, d in enumerate(per_block) for h in range(3)])


def test_layer_summary_by_hand():
    s = layer_summary(_table("random-a", [0.4, 0.2, 0.3, 0.35])).iloc[0]
    # per-layer means are d + 0.01 (heads add 0, 0.01, 0.02)
    assert s["first"] == pytest.approx(0.41) and s["dip_block"] == 2 and s["dip"] == pytest.approx(0.21)
    assert s["last"] == pytest.approx(0.36) and s["late_rise"] == pytest.approx(0.15) and s["depth"] == 4


def test_toc_nests_per_model_pages_under_their_overview():
    profile = load_profile("demo")
    parts = {p["caption"]: p["chapters"] for p in toc(profile)["parts"]}
    tm = {c["file"]: c for c in next(iter(parts.values()))}
    overview = tm["book/generated/tm_4_3_overview"]
    assert [s["file"] for s in overview["sections"]] == [
        f"book/generated/tm_4_3_attention_distance/{m}" for m in profile.models]
    names = [p.notebook for p in PAGES]
    assert len(names) == len(set(names))


def test_personalise_sets_the_title_and_hides_parameters(tmp_path):
    nb = {"cells": [{"cell_type": "markdown", "metadata": {}, "source": "# Template title\nbody"},
                    {"cell_type": "code", "metadata": {"tags": ["injected-parameters"]}, "source": "model = 'x'"}],
          "metadata": {}, "nbformat": 4, "nbformat_minor": 5}
    path = tmp_path / "page.ipynb"
    path.write_text(json.dumps(nb))
    personalise(path, "4.3 Average attention distance: DINO")
    out = json.loads(path.read_text())
    assert out["cells"][0]["source"] == "# 4.3 Average attention distance: DINO\nbody"
    assert "remove-cell" in out["cells"][1]["metadata"]["tags"]


def test_cli_lists_every_registry_model(capsys):
    from vitscope.cli import main
    from vitscope.models import MODELS

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    assert all(name in out for name in MODELS)


def test_unknown_profile_suggests_the_closest():
    with pytest.raises(FileNotFoundError, match="Did you mean 'demo'"):
        load_profile("dmeo")


def test_resolve_device():
    import torch

    from vitscope.devices import resolve_device

    assert resolve_device("auto") == ("cuda" if torch.cuda.is_available() else "cpu")
    assert resolve_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="no CUDA device"):
            resolve_device("cuda")


def _cka_rows(pairs: dict, depth: int = 3) -> pd.DataFrame:
    """A CKA table with same-depth values per pair (and off-diagonal noise that must be ignored)."""
    rows = []
    for (a, b), values in pairs.items():
        for i in range(1, depth + 1):
            for j in range(1, depth + 1):
                rows.append({"model_a": a, "model_b": b, "site_a": "block", "site_b": "block", "index_a": i,
                             "index_b": j, "cka": values[i - 1] if i == j else 0.0, "mode": "reference"})
    rows.append({"model_a": "zoo-dino", "model_b": "zoo-dino", "site_a": "block", "site_b": "block",
                 "index_a": 1, "index_b": 1, "cka": 1.0, "mode": "reference"})
    return pd.DataFrame(rows)


def test_distance_table_mean_and_spread_match_numpy():
    import torch

    from vitscope.sections.attention_distance import distance_table

    d = torch.tensor([[[0.1, 0.5]], [[0.3, 0.2]], [[0.8, 0.2]]])          # [N=3, L=1, H=2]
    t = distance_table("random-a", {"unit_square": d, "pixels": 10 * d}, {"unit_square": 0.6, "pixels": 6.0})
    us = t[t.method == "unit_square"].set_index("head")
    ref = d.double().numpy()[:, 0]
    assert us["distance"].to_numpy() == pytest.approx(ref.mean(0))
    assert us["distance_std"].to_numpy() == pytest.approx(ref.std(0, ddof=1))   # sample std over images
    assert t[t.method == "pixels"]["distance_std"].to_numpy() == pytest.approx(10 * ref.std(0, ddof=1))


def test_per_image_table_averages_heads():
    import torch

    from vitscope.sections.attention_distance import per_image_table

    d = torch.arange(12, dtype=torch.float32).reshape(2, 3, 2)           # [N=2, L=3, H=2]
    t = per_image_table("zoo-dino", {"unit_square": d, "pixels": d})
    assert list(t.block[:3]) == [1, 2, 3] and list(t.image[:3]) == [0, 0, 0]
    assert t.distance.to_numpy() == pytest.approx(d.double().mean(-1).reshape(-1).numpy())


def _np_hsic1(K, L):
    n = K.shape[0]
    K, L = K - np.diag(np.diag(K)), L - np.diag(np.diag(L))
    one = np.ones(n)
    return (np.trace(K @ L) + (one @ K @ one) * (one @ L @ one) / ((n - 1) * (n - 2))
            - 2 / (n - 2) * one @ K @ L @ one) / (n * (n - 3))


def _np_minibatch_cka(X, Y, b):
    hs = np.array([[_np_hsic1(x @ x.T, y @ y.T), _np_hsic1(x @ x.T, x @ x.T), _np_hsic1(y @ y.T, y @ y.T)]
                   for x, y in ((X[s:s + b], Y[s:s + b]) for s in range(0, len(X), b))]).mean(0)
    return hs[0] / np.sqrt(hs[1] * hs[2])


def _fake_grams(feats: list[np.ndarray], b: int):
    import torch

    stacks = [torch.stack([torch.tensor(f[s:s + b] @ f[s:s + b].T) for f in feats]) for s in range(0, len(feats[0]), b)]
    return stacks, [("block", i + 1) for i in range(len(feats))]


def test_cka_table_rows_name_model_a_on_the_rows():
    from vitscope.sections.cka import table_from_grams

    rng = np.random.default_rng(0)
    x = [rng.normal(size=(24, 5)) for _ in range(2)]                      # model "x": 2 layers
    y = [x[0] + 0.1 * rng.normal(size=(24, 5)), rng.normal(size=(24, 7)), x[1] @ rng.normal(size=(5, 3))]
    t = table_from_grams({"x": _fake_grams(x, 8), "y": _fake_grams(y, 8)})
    row = t[(t.model_a == "x") & (t.model_b == "y")].set_index(["index_a", "index_b"]).cka
    assert len(row) == 6                                                 # 2 layers of x (rows) x 3 layers of y
    for i in range(2):
        for j in range(3):
            assert row[(i + 1, j + 1)] == pytest.approx(_np_minibatch_cka(x[i], y[j], 8))


def test_pair_kind_counts_only_joint_embedding_vs_reconstruction_as_mixed():
    from vitscope.sections.cka import pair_kind

    assert pair_kind("contrastive", "self-distillation") == "joint-embedding"
    assert pair_kind("masked-reconstruction", "contrastive") == "mixed"
    assert pair_kind("masked-reconstruction", "random") is None
    assert pair_kind("masked-reconstruction", "masked-token-prediction") is None
    assert pair_kind("supervised", "contrastive") is None


def _terms(cka_by_pair: dict, sites=("block", "norm1", "qkv", "fc1"), depth=3, k=10, noise=0.01) -> pd.DataFrame:
    """A batch_terms table with unit self terms, so each (pair, site) CKA is the batch mean of ``ab``."""
    rng = np.random.default_rng(0)
    rows = []
    for (a, b), per_site in cka_by_pair.items():
        for site in sites:
            value = per_site.get(site, per_site["block"]) if isinstance(per_site, dict) else per_site
            for i in range(1, depth + 1):
                for batch in range(k):
                    rows.append({"model_a": a, "model_b": b, "site": site, "index": i, "batch": batch,
                                 "ab": value + noise * rng.normal(), "aa": 1.0, "bb": 1.0})
    return pd.DataFrame(rows)


def test_joint_embedding_check_needs_to_beat_the_untrained_baseline():
    from vitscope.claims import CANNOT_CHECK, HOLDS, INCONCLUSIVE
    from vitscope.sections.cka import joint_embedding_check

    base = {("zoo-mocov3", "zoo-dino"): 0.9, ("zoo-mocov3", "zoo-mae"): 0.5, ("zoo-dino", "zoo-mae"): 0.6}
    good = joint_embedding_check(_terms({**base, ("zoo-mocov3", "random-a"): 0.3, ("zoo-dino", "random-a"): 0.3,
                                         ("zoo-mae", "random-a"): 0.3}))
    assert good[0].verdict == HOLDS and good[0].effect.estimate == pytest.approx(0.9 - 0.55, abs=0.01)
    assert good[0].baseline.estimate == pytest.approx(0.6, abs=0.01) and good[0].effect.unit == "minibatches"
    assert len(good) == 3                                 # pooled, then the JE pair against each mixed pair
    # the case: each JE model is as close to the untrained ViT as to the other JE model
    explained = joint_embedding_check(_terms({**base, ("zoo-mocov3", "random-a"): 0.92,
                                              ("zoo-dino", "random-a"): 0.9}))
    assert explained[0].verdict == INCONCLUSIVE and "untrained" in explained[0].reason
    # "reconstruction vs anything" is not a mixed pair: a high MAE-vs-random similarity changes nothing
    more = joint_embedding_check(_terms({**base, ("zoo-mocov3", "random-a"): 0.3, ("zoo-dino", "random-a"): 0.3,
                                         ("zoo-mae", "random-a"): 0.99}))
    assert more[0].effect.estimate == pytest.approx(good[0].effect.estimate)
    assert joint_embedding_check(_terms({("zoo-dino", "zoo-mae"): 0.5}))[0].verdict == CANNOT_CHECK


def test_layer_type_check_compares_fc1_with_attention_and_norm_beyond_baseline():
    from vitscope.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
    from vitscope.sections.cka import layer_type_check

    paper = {"block": 0.5, "norm1": 0.3, "qkv": 0.3, "fc1": 0.8}
    flat = {"block": 0.5, "norm1": 0.5, "qkv": 0.5, "fc1": 0.5}
    r = layer_type_check(_terms({("zoo-mae", "zoo-mocov3"): paper, ("zoo-mocov3", "random-a"): flat}))
    assert r[0].subject == "zoo-mocov3 vs zoo-mae" and r[0].verdict == HOLDS
    assert r[0].effect.estimate == pytest.approx(0.5, abs=0.01)
    assert r[0].baseline.estimate == pytest.approx(0.5, abs=0.01)
    same = layer_type_check(_terms({("zoo-mae", "zoo-mocov3"): paper, ("zoo-mocov3", "random-a"): paper}))
    assert same[0].verdict == INCONCLUSIVE                 # an untrained ViT shows the same layer-type pattern
    other_way = {"block": 0.5, "norm1": 0.8, "qkv": 0.8, "fc1": 0.3}
    assert layer_type_check(_terms({("zoo-mae", "zoo-mocov3"): other_way,
                                    ("zoo-mocov3", "random-a"): flat}))[0].verdict == DOES_NOT_HOLD


SEEDS = ("random-a", "random-b", "random-c")


def test_joint_embedding_check_needs_to_clear_the_seed_floor():
    from vitscope.claims import HOLDS, INCONCLUSIVE
    from vitscope.sections.cka import joint_embedding_check

    # untrained seeds are alike at 0.99, 0.995, 0.96: the floor of "pair minus pair" is 0.995 - 0.96 = 0.035
    seed_pairs = {("random-a", "random-b"): 0.99, ("random-a", "random-c"): 0.995, ("random-b", "random-c"): 0.96}
    # each JE model vs random-a/b/c: (0.30 + 0.30)/2, (0.32 + 0.32)/2, (0.36 + 0.36)/2 -> swapping the baseline seed
    # moves the beyond-untrained contrast by up to 0.36 - 0.30 = 0.06
    to_seeds = {(m, s): v for m in ("zoo-mocov3", "zoo-dino") for s, v in zip(SEEDS, (0.30, 0.32, 0.36))}
    clear = {("zoo-mocov3", "zoo-dino"): 0.9, ("zoo-mocov3", "zoo-mae"): 0.5, ("zoo-dino", "zoo-mae"): 0.6}
    r = joint_embedding_check(_terms({**clear, **to_seeds, **seed_pairs}, noise=0.002), seeds=SEEDS)
    assert r[0].floor == pytest.approx(0.035, abs=0.003) and r[0].baseline_floor == pytest.approx(0.06, abs=0.003)
    assert r[0].verdict == HOLDS and r[0].seeds == SEEDS
    # a JE pair 0.02 more alike than the mixed pairs: the minibatch interval excludes 0, the seed floor does not
    near = {("zoo-mocov3", "zoo-dino"): 0.62, ("zoo-mocov3", "zoo-mae"): 0.6, ("zoo-dino", "zoo-mae"): 0.6}
    terms = _terms({**near, **to_seeds, **seed_pairs}, noise=0.002)
    r = joint_embedding_check(terms, seeds=SEEDS)
    assert r[0].effect.sign == 1 and r[0].verdict == INCONCLUSIVE and "seed noise" in r[0].reason
    assert joint_embedding_check(terms)[0].verdict == HOLDS            # without seeds the bootstrap alone passes it
    with pytest.raises(ValueError, match="three"):
        joint_embedding_check(terms, seeds=SEEDS[:2])


def test_layer_type_check_needs_to_clear_the_gap_between_untrained_seeds():
    from vitscope.claims import HOLDS, INCONCLUSIVE
    from vitscope.sections.cka import layer_type_check

    def gap(g, level=0.5):       # fc1 minus the attention sites = g
        return {"block": level, "norm1": level, "qkv": level, "fc1": level + g}

    # untrained seed pairs show layer-type gaps +0.02, -0.04, 0: the effect floor is 0.04
    seed_pairs = {("random-a", "random-b"): gap(0.02, 0.95), ("random-a", "random-c"): gap(-0.04, 0.95),
                  ("random-b", "random-c"): gap(0.0, 0.95)}
    # MoCo-v3 vs random-a/b/c gaps 0, 0.01, -0.01: swapping the baseline moves the contrast by up to 0.02
    to_seeds = {("zoo-mocov3", s): gap(g) for s, g in zip(SEEDS, (0.0, 0.01, -0.01))}
    r = layer_type_check(_terms({("zoo-mocov3", "zoo-mae"): gap(0.3), **to_seeds, **seed_pairs}, noise=0.002),
                         seeds=SEEDS)
    assert r[0].floor == pytest.approx(0.04, abs=0.003) and r[0].baseline_floor == pytest.approx(0.02, abs=0.003)
    assert r[0].verdict == HOLDS
    small = _terms({("zoo-mocov3", "zoo-mae"): gap(0.03), **to_seeds, **seed_pairs}, noise=0.002)
    r = layer_type_check(small, seeds=SEEDS)
    assert r[0].effect.sign == 1 and r[0].verdict == INCONCLUSIVE and "seed noise" in r[0].reason


def test_batch_terms_reproduce_the_cka_table():
    import torch

    from vitscope.kernels.stats import cka_from_batch_terms
    from vitscope.sections.cka import batch_terms, same_depth, table_from_grams

    rng = np.random.default_rng(2)
    f = {m: [rng.normal(size=(24, 6)) for _ in range(2)] for m in ("zoo-dino", "zoo-mae")}
    grams = {m: _fake_grams(v, 8) for m, v in f.items()}
    terms = batch_terms(grams).sort_values(["index", "batch"])
    cka = cka_from_batch_terms(*(torch.tensor(terms[t].to_numpy().reshape(2, 3)).T for t in ("ab", "aa", "bb")))
    ref = same_depth(table_from_grams(grams)).sort_values("index").cka.to_numpy()
    assert cka.numpy() == pytest.approx(ref)
    assert ref == pytest.approx([_np_minibatch_cka(f["zoo-dino"][i], f["zoo-mae"][i], 8) for i in range(2)])


def test_estimator_comparison_matches_rows_by_key_not_position():
    from vitscope.sections.cka import estimator_comparison

    ref = _cka_rows({("zoo-dino", "zoo-mae"): [0.5, 0.6, 0.7]})
    compat = ref.assign(cka=ref.cka + 0.1).iloc[::-1].reset_index(drop=True)     # same rows, other order
    out = estimator_comparison(ref, compat)
    assert out["difference"].to_numpy() == pytest.approx([0.1] * len(out))
    assert out["cka"].to_numpy() == pytest.approx(
        ref[(ref.model_a != ref.model_b) & (ref.site_a == ref.site_b)].groupby(["model_a", "model_b", "site_a"])
        ["cka"].mean().to_numpy())
    with pytest.raises(ValueError, match="do not cover"):
        estimator_comparison(ref, compat.iloc[1:])

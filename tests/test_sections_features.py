"""TM 5.1 and 5.2 sections: the spatial-token Gram product, last-block CKA tables and claims, purity claims."""
from __future__ import annotations

import pytest
import torch

from fake_tables import indicators
from vitscope.claims import DOES_NOT_HOLD, HOLDS, INCONCLUSIVE
from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import Capture, FeatureStore, GramMatrices, extract
from vitscope.kernels import cka as cka_k
from vitscope.models import Preprocess
from vitscope.sections import last_layer_cka as llc
from vitscope.sections import purity
from vitscope.sections.cka import _cka_contrast

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)


def test_spatial_gram_flattens_spatial_tokens_without_cls(tiny_vit, synthetic_root, manifest, tmp_path):
    dataset = ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=6, num_classes=5)
    products = {t: GramMatrices(capture_sites=("block",), tokens=t) for t in ("spatial", "all")}
    out = extract(tiny_vit, {"name": "tiny"}, dataset, products, transform_id={"resize": 32},
                  store=FeatureStore(tmp_path), batch_size=8, progress=False)
    images = torch.stack([dataset[i][0] for i in out["_meta"]["order"][:8].tolist()])
    with torch.inference_mode(), Capture(tiny_vit, {"block"}) as cap:
        tiny_vit.forward_features(images)
        x = cap.collect()["block"][-1].double()                                   # [8, 1 + 16, 48]
    spatial = x[:, 1:].reshape(8, -1)                                              # float64 reference
    torch.testing.assert_close(out["spatial"]["batch0000"][-1], spatial @ spatial.T, rtol=1e-4, atol=1e-3)
    everything = x.reshape(8, -1)
    torch.testing.assert_close(out["all"]["batch0000"][-1], everything @ everything.T, rtol=1e-4, atol=1e-3)
    cls = x[:, 0]
    # "all" = "spatial" + the CLS token's own Gram: dropping CLS is the only difference
    torch.testing.assert_close(out["all"]["batch0000"][-1] - out["spatial"]["batch0000"][-1], cls @ cls.T,
                               rtol=1e-4, atol=1e-3)


def test_unknown_token_reduction_is_refused():
    with pytest.raises(ValueError, match="spatial"):
        GramMatrices(tokens="patches")


# ---------------------------------------------------------------- last-block CKA from hand-made features
ZOO = ["zoo-supervised", "zoo-clip", "zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit", "random-a"]
N, B = 96, 12          # 8 minibatches of 12


def _features(shared: dict[str, str], seed=0, dim=6):
    """Per model, CLS [N, dim] and spatial [N, 4, dim] features; models naming the same key of ``shared`` carry
    the same latent signal (plus a little noise), the others independent noise."""
    gen = torch.Generator().manual_seed(seed)
    latents = {key: torch.randn(N, dim, generator=gen, dtype=torch.float64) for key in set(shared.values())}
    out = {}
    for m in ZOO:
        base = latents[shared[m]] if m in shared else torch.randn(N, dim, generator=gen, dtype=torch.float64)
        mix = torch.randn(dim, dim, generator=gen, dtype=torch.float64)
        cls = base @ mix + 0.3 * torch.randn(N, dim, generator=gen, dtype=torch.float64)
        spatial = cls[:, None, :] * torch.ones(4, 1, dtype=torch.float64) \
            + torch.randn(N, 4, dim, generator=gen, dtype=torch.float64)
        out[m] = {"cls": cls, "spatial": spatial}
    return out


def _grams(feats):
    return {m: {"cls": [cka_k.gram(f["cls"][s:s + B]) for s in range(0, N, B)],
                "spatial": [cka_k.gram(f["spatial"][s:s + B]) for s in range(0, N, B)]} for m, f in feats.items()}


def test_table_is_symmetric_with_unit_diagonal_and_matches_minibatch_cka_on_features():
    feats = _features({"zoo-dino": "c", "zoo-mocov3": "c"})
    table = llc.table_from_grams(_grams(feats))
    for tokens in llc.TOKENS:
        for mode in cka_k.MODES:
            m = llc.matrix(table, tokens, mode)
            assert list(m.index) == ZOO and torch.allclose(torch.tensor(m.values), torch.tensor(m.values.T))
            assert torch.allclose(torch.tensor(m.values).diagonal(), torch.ones(len(ZOO), dtype=torch.float64))
    ref = cka_k.minibatch_cka([feats["zoo-dino"]["spatial"]], [feats["zoo-mae"]["spatial"]], batch_size=B)
    assert llc.matrix(table, "spatial").loc["zoo-dino", "zoo-mae"] == pytest.approx(float(ref[0, 0]))
    tm = cka_k.minibatch_cka([feats["zoo-dino"]["cls"]], [feats["zoo-mae"]["cls"]], batch_size=B,
                             mode="teaching-matters")
    assert llc.matrix(table, "cls", "teaching-matters").loc["zoo-dino", "zoo-mae"] == pytest.approx(float(tm[0, 0]))


def test_batch_terms_reproduce_the_table():
    grams = _grams(_features({"zoo-dino": "c", "zoo-mocov3": "c"}))
    table, terms = llc.table_from_grams(grams), llc.terms_from_grams(grams)
    for tokens in llc.TOKENS:
        estimate = _cka_contrast(terms, [("zoo-dino", "zoo-mae", (tokens,), 1.0)]).estimate
        assert estimate == pytest.approx(llc.matrix(table, tokens).loc["zoo-dino", "zoo-mae"])


def test_pair_claim_holds_when_dino_and_moco_share_a_signal_and_fails_when_another_pair_does():
    terms = llc.terms_from_grams(_grams(_features({"zoo-dino": "c", "zoo-mocov3": "c"})))
    rows = llc.pair_check(terms)
    assert [r.verdict for r in rows] == [HOLDS, HOLDS]
    assert "zoo-dino vs zoo-mocov3" in rows[0].subject
    flipped = llc.terms_from_grams(_grams(_features({"zoo-supervised": "s", "zoo-clip": "s"})))
    first = llc.pair_check(flipped)[0]
    assert first.verdict in (DOES_NOT_HOLD, INCONCLUSIVE) and first.effect.high < 0
    assert "zoo-supervised vs zoo-clip" in first.subject            # the runner-up pair is named


def test_mae_claim_and_spatial_claim_read_the_right_pairs():
    shared = {"zoo-mae": "c", "zoo-dino": "c", "zoo-mocov3": "c"}
    terms = llc.terms_from_grams(_grams(_features(shared)))
    assert llc.mae_check(terms)[0].verdict == HOLDS                 # MAE closer to DINO/MoCo than to BEiT
    spatial = llc.spatial_check(terms)
    assert spatial[0].verdict == HOLDS
    assert spatial[1].claim == llc.SPATIAL_CLAIM and spatial[1].expected == -1
    close_to_beit = llc.terms_from_grams(_grams(_features({"zoo-mae": "r", "zoo-beit": "r"})))
    assert llc.mae_check(close_to_beit)[0].verdict == DOES_NOT_HOLD


def test_claims_cannot_be_checked_without_their_models():
    grams = _grams(_features({}))
    terms = llc.terms_from_grams({m: grams[m] for m in ("zoo-supervised", "zoo-clip", "random-a")})
    assert llc.pair_check(terms)[0].verdict == "cannot be checked"
    assert llc.mae_check(terms)[0].verdict == "cannot be checked"


# ---------------------------------------------------------------- purity claims from hand-made indicators
_indicators = indicators


PAPER_LIKE = {"zoo-supervised": [0.2, 0.5, 0.8], "zoo-clip": [0.2, 0.45, 0.6], "zoo-dino": [0.2, 0.45, 0.55],
              "zoo-mocov3": [0.2, 0.4, 0.55], "zoo-mae": [0.2, 0.3, 0.4], "zoo-beit": [0.2, 0.4, 0.3],
              "random-a": [0.2, 0.2, 0.2]}


def test_depth_claim_by_hand():
    rows = purity.depth_check(_indicators(PAPER_LIKE))
    head = rows[0]
    rising = ["zoo-supervised", "zoo-clip", "zoo-dino", "zoo-mocov3", "zoo-mae"]
    assert head.effect.estimate == pytest.approx(sum(PAPER_LIKE[m][-1] - PAPER_LIKE[m][0] for m in rising) / 5)
    assert head.baseline.estimate == pytest.approx(head.effect.estimate)      # the untrained model stays flat
    assert all(r.verdict == HOLDS for r in rows)
    beit = next(r for r in rows if r.subject == "zoo-beit")
    assert beit.expected == -1 and beit.effect.estimate == pytest.approx(0.3 - 0.4)
    flat = purity.depth_check(_indicators({**PAPER_LIKE, "zoo-supervised": [0.6, 0.4, 0.2]}))
    assert next(r for r in flat if r.subject == "zoo-supervised").verdict == DOES_NOT_HOLD


def test_order_claim_by_hand():
    correct = _indicators(PAPER_LIKE)
    noise = _indicators({"noise": [0.1]})["noise"][0]
    rows = purity.order_check(correct, noise)
    assert rows[0].effect.estimate == pytest.approx(0.8 - (0.6 + 0.55 + 0.55 + 0.4 + 0.3) / 5)
    rec = next(r for r in rows if r.subject.startswith("mean of zoo-mae"))
    assert rec.expected == -1 and rec.effect.estimate == pytest.approx(0.35 - (0.8 + 0.6 + 0.55 + 0.55) / 4)
    above = [r for r in rows if r.subject.endswith("minus noise")]
    assert [r.effect.estimate for r in above] == pytest.approx([0.4 - 0.1, 0.3 - 0.1])
    assert all(r.verdict == HOLDS for r in rows)
    at_random = _indicators({**PAPER_LIKE, "zoo-beit": [0.2, 0.2, 0.2]})
    beit_row = next(r for r in purity.order_check(at_random, noise) if r.subject == "zoo-beit minus noise")
    assert beit_row.verdict == INCONCLUSIVE          # above noise, but no more than the untrained model


def test_order_claim_cannot_be_checked_without_a_supervised_model():
    correct = _indicators({m: v for m, v in PAPER_LIKE.items() if m != "zoo-supervised"})
    rows = purity.order_check(correct, torch.zeros(400, dtype=torch.float64))
    assert rows[0].verdict == "cannot be checked"


def test_profiles_declare_the_sections():
    from vitscope.profiles import load_profile

    for name in ("demo", "paper"):
        run = load_profile(name)
        assert purity.settings(run).n_init == 10
        assert run.section(llc.SECTION)["dataset"] == "imagenet50"

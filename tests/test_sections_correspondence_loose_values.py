"""TM 6.2 keypoints (sections.correspondence), pinned down: ``_hits`` and ``per_pair`` against hand / NumPy
counts, ``summarise`` by hand, ``predictions`` (its cache key and what it passes on), and ``_predict`` on an untrained
zoo-architecture ViT against an independent per-block matching (forward hooks), across chunk boundaries."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image

from vitscope.data.spair import SpairPair
from vitscope.kernels import correspondence as kc
from vitscope.models import get_cfg, load_model
from vitscope.profiles import Profile
from vitscope.sections import correspondence as C


def _pair(tmp, name, cat, src_size, trg_size, src_kps, trg_kps, trg_bbox, seed=0):
    rng = np.random.default_rng(seed)
    paths = []
    for tag, (w, h) in (("s", src_size), ("t", trg_size)):
        path = tmp / f"{name}-{tag}.png"
        Image.fromarray(rng.integers(0, 255, (h, w, 3), dtype=np.uint8)).save(path)
        paths.append(path)
    return SpairPair(name, cat, paths[0], paths[1], np.asarray(src_kps, dtype=np.float64),
                     np.asarray(trg_kps, dtype=np.float64), (0.0, 0.0, float(src_size[0]), float(src_size[1])),
                     trg_bbox, src_size, trg_size)


def _pairs(tmp):
    return [_pair(tmp, "p0", "cat", (32, 16), (16, 32), [[1, 1], [30, 14]], [[2, 2], [10, 20]], (0, 0, 16, 32), 0),
            _pair(tmp, "p1", "dog", (20, 20), (40, 20), [[5, 5], [15, 15], [10, 2]], [[4, 4], [30, 10], [39, 19]],
                  (0, 0, 40, 20), 1),
            _pair(tmp, "p2", "cat", (24, 48), (24, 24), [[3, 40]], [[20, 20]], (4, 4, 20, 20), 2)]


def test_hits_against_hand_geometry(tmp_path):
    sel = _pairs(tmp_path)
    size = 64
    # predictions at the letterboxed ground truth (hit at every α) and 5 pixels off in x (hit only at α=0.1)
    gts = [kc.letterbox_points(torch.from_numpy(p.trg_kps), kc.letterbox_geometry(p.trg_size[1], p.trg_size[0],
                                                                                   size)) for p in sel]
    exact = torch.cat(gts).round().long()
    off = exact + torch.tensor([5, 0])
    pred = torch.stack([exact, off, torch.zeros_like(exact)])                 # [3 blocks, K=6, 2]
    got = C._hits(sel, pred, size, [0.1, 0.05])
    assert got.dtype == np.int64 and got.shape == (3, 2, 3)
    # bboxes letterboxed: p0 16x32 -> 32x64 (max side 64), p1 40x20 -> 64x32 (64), p2 box 16x16 at scale 64/24
    # thresholds: α=0.1: 6.4, 6.4, 4.27; α=0.05: 3.2, 3.2, 2.13
    assert got[0].tolist() == [[2, 3, 1], [2, 3, 1]]
    assert got[1].tolist() == [[2, 3, 0], [0, 0, 0]]
    far = [[int(((torch.linalg.vector_norm(g.double(), dim=1)) <= a * m).sum()) for g, m in
            zip((exact[:2], exact[2:5], exact[5:]), (64.0, 64.0, 16 * 64 / 24))] for a in (0.1, 0.05)]
    assert got[2].tolist() == far


def test_per_pair_and_summarise_every_value(tmp_path, monkeypatch):
    sel = _pairs(tmp_path)
    gts = torch.cat([kc.letterbox_points(torch.from_numpy(p.trg_kps), kc.letterbox_geometry(
        p.trg_size[1], p.trg_size[0], 64)) for p in sel]).round().long()
    far = torch.tensor([[0, 0], [0, 0], [5, 0], [0, 5], [30, 30], [0, 0]])
    res = {"pred": torch.stack([gts + far, gts + far.flip(0)]), "noise": (gts + far.roll(1, 0))[None]}
    calls = []
    monkeypatch.setattr(C, "predictions", lambda m, p, **kw: calls.append((m, p.name, kw)) or (sel, res))
    profile = Profile("t", {"models": [], "keypoints": {"dataset": "d", "alphas": [0.1, 0.05, 0.2], "alpha": 0.1}})
    pp = C.per_pair("zoo-dino", profile, weights="w", device="d", store="s", progress=True)
    assert calls == [("zoo-dino", "t", {"weights": "w", "device": "d", "store": "s", "progress": True})]
    assert list(pp.columns) == ["model", "block", "alpha", "pair", "category", "correct", "total"]
    assert pp.attrs["noise_of"] == "zoo-dino"
    keys = [("zoo-dino", b, a) for b in (1, 2) for a in (0.1, 0.05, 0.2)] + [("noise", 0, a) for a in (0.1, 0.05, 0.2)]
    assert list(dict.fromkeys(zip(pp.model, pp.block, pp.alpha))) == keys
    size = get_cfg("zoo-dino").preprocess.crop
    for name, pred, first in (("zoo-dino", res["pred"], 1), ("noise", res["noise"], 0)):
        hits = C._hits(sel, pred, size, [0.1, 0.05, 0.2])
        for b in range(pred.shape[0]):
            for a, alpha in enumerate((0.1, 0.05, 0.2)):
                rows = pp[(pp.model == name) & (pp.block == b + first) & (pp.alpha == alpha)]
                assert rows.pair.tolist() == [0, 1, 2] and rows.category.tolist() == ["cat", "dog", "cat"]
                assert rows.correct.tolist() == hits[b, a].tolist() and rows.total.tolist() == [2, 3, 1]
    assert pp.correct.tolist()[:9] == [2, 2, 1, 2, 0, 1, 2, 2, 1]
    s = C.summarise(pp)
    assert list(s.columns) == ["model", "block", "alpha", "pck", "n_pairs", "n_keypoints", "n_categories"]
    assert list(zip(s.model, s.block, s.alpha)) == keys
    for row in s.itertuples():
        rows = pp[(pp.model == row.model) & (pp.block == row.block) & (pp.alpha == row.alpha)]
        c = rows.correct.to_numpy()
        want = np.mean([(c[0] + c[2]) / 3, c[1] / 3])                      # per category, then the mean
        assert row.pck == pytest.approx(want) and (row.n_pairs, row.n_keypoints, row.n_categories) == (3, 6, 2)


def test_summarise_by_hand():
    t = pd.DataFrame({"model": ["m"] * 4, "block": [2] * 4, "alpha": [0.05] * 4, "pair": range(4),
                      "category": ["a", "a", "b", "c"], "correct": [1, 3, 0, 2], "total": [2, 4, 5, 2]})
    s = C.summarise(t)
    assert s.to_dict("records") == [{"model": "m", "block": 2, "alpha": 0.05, "pck": pytest.approx((4 / 6 + 0 + 1) / 3),
                                     "n_pairs": 4, "n_keypoints": 13, "n_categories": 3}]
    assert isinstance(s.block[0], (int, np.integer)) and isinstance(s.alpha[0], float)


def test_predictions_key_and_what_it_passes(tmp_path, monkeypatch):
    sel = _pairs(tmp_path)
    monkeypatch.setattr(C, "pairs", lambda profile: sel)
    loads, preds, noises, memos = [], [], [], []
    net = SimpleNamespace(tag="net")
    monkeypatch.setattr(C, "load_for_analysis", lambda m, w, d: loads.append((m, w, d)) or (net, None, None))
    monkeypatch.setattr(C, "_predict", lambda n, s, pre, sim, dev, prog: preds.append((n, s, pre, sim, dev, prog))
                        or "P")
    monkeypatch.setattr(C, "vit_geometry", lambda n: {"geo": n.tag})
    monkeypatch.setattr(C, "_noise_predict", lambda s, geo, size, sim: noises.append((s, geo, size, sim)) or "N")
    monkeypatch.setattr(C, "library_versions", lambda: {"torch": "x"})

    def memo(model, product, key, compute):
        memos.append((model, product, key))
        return compute()
    profile = Profile("t", {"models": [], "device": "cpu", "keypoints": {
        "dataset": "d", "split": "val", "pairs_per_category": 3, "seed": 5, "similarity": "teaching-matters"}})
    got = C.predictions("zoo-clip", profile, weights=None, device=None, store=SimpleNamespace(memo=memo),
                        progress=True)
    cfg = get_cfg("zoo-clip")
    assert got == (sel, {"pred": "P", "noise": "N"})
    assert memos == [("zoo-clip", "keypoint_nn", {
        "model": cfg.identity(None), "data": C.data_identity(sel), "split": "val", "pairs_per_category": 3,
        "seed": 5, "similarity": "teaching-matters",
        "letterbox": {"size": cfg.preprocess.crop, "fill": "black", "interpolation": cfg.preprocess.interpolation},
        "noise_seed": 0, "versions": {"torch": "x"}, "product_version": 1})]
    assert loads == [("zoo-clip", None, "cpu")]
    assert preds == [(net, sel, cfg.preprocess, "teaching-matters", "cpu", True)]
    assert noises == [(sel, {"geo": "net"}, cfg.preprocess.crop, "teaching-matters")]
    loads.clear()
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"not a checkpoint")
    C.predictions("zoo-clip", profile, weights=weights, device="cpu", store=SimpleNamespace(memo=memo))
    assert loads == [("zoo-clip", weights, "cpu")] and preds[-1][5] is False
    assert memos[-1][2]["model"] == cfg.identity(weights) != cfg.identity(None)


def test_predict_matches_each_block_independently_across_chunks(tmp_path, monkeypatch):
    sel = _pairs(tmp_path)
    monkeypatch.setattr(C, "CHUNK_PAIRS", 2)                   # chunks of 2 and 1: offsets must carry over
    net = load_model("random-a", device="cpu").eval()
    pre = get_cfg("random-a").preprocess
    got = C._predict(net, sel, pre, "cosine", "cpu", False)
    depth = len(net.blocks)
    assert got.dtype == torch.int64 and got.shape == (depth, 6, 2)
    # independent: every image through the net alone, block outputs by forward hooks
    outs = {}
    hooks = [blk.register_forward_hook(lambda m, i, o, b=b: outs.__setitem__(b, o)) for b, blk in
             enumerate(net.blocks)]
    try:
        def tokens(path):
            with torch.no_grad():
                net.forward_features(C._image_tensor(path, pre)[None])
            gh, gw = net.patch_embed.grid_size
            return {b: o[0, net.num_prefix_tokens:].float().T.reshape(-1, gh, gw) for b, o in outs.items()}
        start = 0
        for pair in sel:
            src, trg = tokens(pair.src_image), tokens(pair.trg_image)
            pts = C._source_points(pair, pre.crop)
            for b in range(depth):
                want = kc.nearest_neighbour_keypoints(src[b], trg[b], pts, size=pre.crop, similarity="cosine")
                assert torch.equal(got[b, start:start + len(want)], want), (pair.name, b)
            start += len(pair.src_kps)
    finally:
        for h in hooks:
            h.remove()
    assert not torch.equal(got[0], got[-1])

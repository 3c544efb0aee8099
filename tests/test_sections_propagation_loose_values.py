"""TM 6.2 DAVIS section (sections.propagation), pinned down: ``propagate`` (what it hands to the dense tiling and to
the propagation kernel, and where each block's frame lands), ``_video_scores`` (the cache key and the scores),
``per_object`` (every J, F and J&F against NumPy), ``strip`` (frames picked, defaults) and ``summarise``.
The model, the videos, the dense tiling and the propagation loop are replaced by recorded fakes on a 5-frame video."""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch

from vitscope.kernels import propagation as prop
from vitscope.kernels import segmentation_metrics as seg
from vitscope.profiles import Profile
from vitscope.sections import propagation as P

H, W, PATCH, GRID = 12, 16, 4, (3, 4)
IDS = {"v1": [0, 1, 3], "v2": [0, 2]}


def _annotations(video, T=5):
    g = torch.Generator().manual_seed(len(video) + sum(map(ord, video)))
    ids = torch.tensor(IDS[video])
    return ids[torch.randint(len(ids), (T, H, W), generator=g)]


class FakeVideos:
    names = ["v1", "v2"]

    def __init__(self):
        self.ann = {v: _annotations(v) for v in self.names}
        self.frame_list = {v: [torch.full((3, H, W), 10.0 * k + t) for t in range(5)]
                           for k, v in enumerate(self.names)}

    def annotations(self, video):
        return self.ann[video]

    def object_ids(self, video):
        return IDS[video]

    def frames(self, video):
        return iter(self.frame_list[video])

    def video_digest(self, video):
        return f"digest-{video}"

    def palette(self, video):
        return f"palette-{video}"

    def video(self, video):
        return SimpleNamespace(frames=[f"{video}/{t:05d}.jpg" for t in range(5)])


NET = SimpleNamespace(blocks=[None] * 4)
CFG = SimpleNamespace(preprocess=SimpleNamespace(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)))


def _soft(t, n_blocks, num_labels):
    """Planted soft labels of frame t: [L, K1, h, w], different per frame and block."""
    g = torch.Generator().manual_seed(100 + t)
    return torch.rand(n_blocks, num_labels, *GRID, generator=g)


@pytest.fixture
def fakes(monkeypatch):
    rec = {"dense": [], "video": []}

    def dense_tokens(net, image, layers, *, mean, std, device):
        rec["dense"].append((net, float(image[0, 0, 0]), layers, mean, std, device))
        return torch.full((len(layers), *GRID, 2), float(image[0, 0, 0]))

    def propagate_video(features, first_labels, **kw):
        feats = list(features)
        rec["video"].append({"feats": feats, "first_labels": first_labels, **kw})
        for t in range(len(feats)):
            yield _soft(t, feats[0].shape[0], first_labels.shape[0])

    monkeypatch.setattr(P, "dense_tokens", dense_tokens)
    monkeypatch.setattr(P, "model_geometry", lambda net: (48, PATCH))
    monkeypatch.setattr(prop, "propagate_video", propagate_video)
    return rec


def _p(**over):
    return {"n_last_frames": 3, "neighbourhood": 6, "topk": 2, "temperature": 0.25, "blocks": None, **over}


def test_propagate_wiring_and_every_frame(fakes):
    data = FakeVideos()
    out = P.propagate(NET, CFG, data, "v1", _p(), [2, 4], "cpu")
    assert out.dtype == torch.int64 and out.shape == (2, 5, H, W)
    assert [d[1:] for d in fakes["dense"]] == [(float(t), [1, 3], (0.1, 0.2, 0.3), (0.4, 0.5, 0.6), "cpu")
                                               for t in range(5)]
    assert all(d[0] is NET for d in fakes["dense"])
    (call,) = fakes["video"]
    assert {k: call[k] for k in ("n_last_frames", "temperature", "topk", "radius")} == {
        "n_last_frames": 3, "temperature": 0.25, "topk": 2, "radius": 6}
    assert [float(f[0, 0, 0, 0]) for f in call["feats"]] == [0.0, 1.0, 2.0, 3.0, 4.0]       # frame order
    ann0 = data.ann["v1"][0]
    small = ann0[PATCH // 2::PATCH, PATCH // 2::PATCH]                  # nearest-exact to the 3 x 4 grid
    want_first = torch.stack([(small == k).float() for k in range(4)])   # labels 0..max(id)=3
    assert torch.equal(call["first_labels"], want_first)
    assert torch.equal(out[:, 0], torch.stack([ann0, ann0]))           # frame 0: the given annotation
    for t in range(1, 5):
        for i in range(2):
            want = prop.labels_to_mask(_soft(t, 2, 4)[i], PATCH, (H, W))
            assert torch.equal(out[i, t], want), (t, i)
    assert not torch.equal(out[0, 1], out[1, 1]) and not torch.equal(out[0, 1], out[0, 2])


def _store():
    rec = []

    def memo(model, product, key, compute):
        rec.append((model, product, key))
        return compute()
    return SimpleNamespace(memo=memo, calls=rec)


def _planted_predictions(video, blocks):
    g = torch.Generator().manual_seed(7 + len(blocks))
    ids = torch.tensor(IDS[video])
    return ids[torch.randint(len(ids), (len(blocks), 5, H, W), generator=g)]


def test_video_scores_key_and_scores(monkeypatch):
    data, store, calls = FakeVideos(), _store(), []
    monkeypatch.setattr(P, "propagate", lambda *a: calls.append(a) or _planted_predictions("v1", a[5]))
    p = _p() | {"dataset": "d", "bound_th": 0.5}
    got = P._video_scores("zoo-dino", NET, CFG, "ident", data, "v1", p, [1, 3], "cpu", store)
    assert store.calls == [("zoo-dino", "davis-scores", {
        "model": "ident", "video": "v1", "files": "digest-v1",
        "protocol": {"n_last_frames": 3, "neighbourhood": 6, "topk": 2, "temperature": 0.25},
        "blocks": [1, 3], "short_side_factor": P.SHORT_SIDE_FACTOR, "bound_th": 0.008, "version": 1})]
    assert calls == [(NET, CFG, data, "v1", p, [1, 3], "cpu")]
    pred = _planted_predictions("v1", [1, 3])
    assert set(got) == {"j", "f"}
    for i in range(2):
        j, f = seg.video_scores(data.ann["v1"], pred[i], IDS["v1"])
        assert torch.equal(got["j"][i], j) and torch.equal(got["f"][i], f)
        gt, pr = data.ann["v1"][2].numpy(), pred[i, 2].numpy()
        for k, obj in enumerate(IDS["v1"]):                              # J by hand: IoU per object
            inter, union = ((gt == obj) & (pr == obj)).sum(), ((gt == obj) | (pr == obj)).sum()
            assert got["j"][i, k, 2] == pytest.approx(inter / union)
    assert not torch.equal(got["j"][0], got["f"][0])


def _profile(**davis):
    return Profile("t", {"models": ["zoo-dino"], "device": "cpu", "davis": {"dataset": "d", **davis}})


def test_per_object_every_value(monkeypatch):
    data, store, loads = FakeVideos(), _store(), []
    monkeypatch.setattr(P, "videos", lambda profile: data)
    monkeypatch.setattr(P, "load_for_analysis", lambda m, w, d: loads.append((m, w, d)) or (NET, CFG, "ident"))
    seen = []
    monkeypatch.setattr(P, "propagate", lambda net, cfg, data, video, p, blocks, device:
                        seen.append((video, blocks, device, p["topk"])) or _planted_predictions(video, blocks))
    t = P.per_object("zoo-dino", _profile(blocks=[3, 1], topk=4), weights="w.pt", store=store)
    assert loads == [("zoo-dino", "w.pt", "cpu")]
    assert seen == [("v1", [3, 1], "cpu", 4), ("v2", [3, 1], "cpu", 4)]
    assert [c[2]["video"] for c in store.calls] == ["v1", "v2"] and store.calls[0][2]["model"] == "ident"
    assert list(t.columns) == ["model", "block", "video", "object", "j", "f", "jf"]
    assert list(t.index) == list(range(2 * 3 + 2 * 2))
    assert list(zip(t.block, t.video, t.object)) == [(3, "v1", 0), (3, "v1", 1), (3, "v1", 3), (1, "v1", 0),
                                                     (1, "v1", 1), (1, "v1", 3), (3, "v2", 0), (3, "v2", 2),
                                                     (1, "v2", 0), (1, "v2", 2)]
    assert set(t.model) == {"zoo-dino"}
    for video in ("v1", "v2"):
        pred = _planted_predictions(video, [3, 1])
        for i, block in enumerate((3, 1)):
            j, f = (x.numpy() for x in seg.video_scores(data.ann[video], pred[i], IDS[video]))
            sel = t[(t.video == video) & (t.block == block)]
            np.testing.assert_allclose(sel.j, j[:, 1:4].mean(1), rtol=0, atol=1e-12)      # frames 1..T-2
            np.testing.assert_allclose(sel.f, f[:, 1:4].mean(1), rtol=0, atol=1e-12)
            np.testing.assert_allclose(sel.jf, (j[:, 1:4].mean(1) + f[:, 1:4].mean(1)) / 2, rtol=0, atol=1e-12)
    loads.clear()
    t_all = P.per_object("zoo-dino", _profile(), device="cpu", store=store)      # blocks: every block of the net
    assert sorted(set(t_all.block)) == [1, 2, 3, 4] and loads == [("zoo-dino", None, "cpu")]


def test_per_object_device_comes_from_the_profile(monkeypatch):
    data, loads = FakeVideos(), []
    monkeypatch.setattr(P, "videos", lambda profile: data)
    monkeypatch.setattr(P, "resolve_device", lambda d: f"resolved:{d}")
    monkeypatch.setattr(P, "load_for_analysis", lambda m, w, d: loads.append(d) or (NET, CFG, "ident"))
    devs = []
    monkeypatch.setattr(P, "propagate", lambda *a: devs.append(a[6]) or _planted_predictions(a[3], a[5]))
    P.per_object("zoo-dino", _profile(blocks=[1]), store=_store())
    P.per_object("zoo-dino", _profile(blocks=[1]), device="cuda:3", store=_store())
    assert loads == ["resolved:cpu", "resolved:cuda:3"] and devs == ["resolved:cpu"] * 2 + ["resolved:cuda:3"] * 2


def test_summarise_by_hand():
    objects = pd.DataFrame({"model": ["b", "b", "b", "a", "a", "b"], "block": [2, 2, 1, 1, 1, 2],
                            "video": ["x", "y", "x", "x", "x", "y"],
                            "jf": [0.2, 0.4, 0.9, 0.5, 0.7, 0.6], "j": [0.1, 0.3, 1.0, 0.4, 0.6, 0.8],
                            "f": [0.3, 0.5, 0.8, 0.6, 0.8, 0.4], "object": [1, 1, 1, 1, 2, 2]})
    got = P.summarise(objects)
    assert list(got.columns) == ["model", "block", "jf", "j", "f", "n_objects", "n_videos"]
    assert got[["model", "block", "n_objects", "n_videos"]].values.tolist() == [["b", 2, 3, 2], ["b", 1, 1, 1],
                                                                                 ["a", 1, 2, 1]]
    np.testing.assert_allclose(got.jf, [0.4, 0.9, 0.6])
    np.testing.assert_allclose(got.j, [0.4, 1.0, 0.5])
    np.testing.assert_allclose(got.f, [0.4, 0.8, 0.7])


def test_strip_picks_frames_and_defaults(monkeypatch):
    data, loads, props, reads = FakeVideos(), [], [], []
    monkeypatch.setattr(P, "videos", lambda profile: data)
    monkeypatch.setattr(P, "load_for_analysis", lambda m, w, d: loads.append((m, w, d)) or (NET, CFG, "ident"))
    monkeypatch.setattr(P, "propagate", lambda net, cfg, d, video, p, blocks, device: props.append(
        (video, blocks, device, p["n_last_frames"])) or _planted_predictions(video, blocks))
    monkeypatch.setattr(P, "read_frame", lambda path: reads.append(path) or torch.full((3, 2, 2), float(len(reads))))
    s = P.strip("zoo-dino", _profile(blocks=[1, 3], n_last_frames=2), weights="w")
    assert loads == [("zoo-dino", "w", "cpu")] and props == [("v1", [3], "cpu", 2)]
    assert (s["video"], s["block"], s["frames"]) == ("v1", 3, [0, 1, 3, 4])      # round(i * 4 / 3)
    assert reads == ["v1/00000.jpg", "v1/00001.jpg", "v1/00003.jpg", "v1/00004.jpg"]
    assert torch.equal(s["images"], torch.stack([torch.full((3, 2, 2), float(k)) for k in (1, 2, 3, 4)]))
    assert torch.equal(s["annotations"], data.ann["v1"][[0, 1, 3, 4]])
    assert torch.equal(s["predictions"], _planted_predictions("v1", [3])[0][[0, 1, 3, 4]])
    assert s["palette"] == "palette-v1" and set(s) == {"video", "block", "frames", "images", "annotations",
                                                       "predictions", "palette"}
    props.clear()
    s2 = P.strip("zoo-dino", _profile(), video="v2", block=2, n_frames=3, device="cpu")
    assert props == [("v2", [2], "cpu", 7)] and (s2["video"], s2["block"], s2["frames"]) == ("v2", 2, [0, 2, 4])
    assert s2["palette"] == "palette-v2"
    assert P.strip("zoo-dino", _profile())["block"] == 4                                 # the net's last block
    assert P.strip("zoo-dino", _profile(), n_frames=1)["frames"] == [0]
    assert P.strip("zoo-dino", _profile(), n_frames=2)["frames"] == [0, 4]

"""sections.region_purity: the data wiring (open_dataset, _regions, category_names), the region features (pooled
tokens per mask, checked against a float64 NumPy pooling), the clustering and the compute() table, with the
expensive edges (twin writers, dataset readers, model loading, dense extraction) replaced by hand-made tensors."""
from __future__ import annotations

import hashlib
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from sklearn.metrics import adjusted_rand_score, normalized_mutual_info_score

from vitscope.claims.verdict import CONFIDENCE, N_RESAMPLES, SEED
from vitscope.data.twins import coco as coco_twin
from vitscope.extract import FeatureStore
from vitscope.extract.dense import SHORT_SIDE_FACTOR
from vitscope.kernels import clustering as clustering_k
from vitscope.kernels.stats import bootstrap_contrast
from vitscope.profiles import Profile
from vitscope.sections import purity, region_purity

KM = {"n_init": 2, "max_iter": 30}


def _profile(spec=None, datasets=None, **raw) -> Profile:
    return Profile("t", {"models": ["zoo-dino"], "purity": dict(KM), "region_purity": spec or {},
                         "datasets": datasets or {}, **raw})


@pytest.fixture
def store(monkeypatch, tmp_path):
    monkeypatch.setattr(region_purity, "FeatureStore", lambda root=None: FeatureStore(tmp_path))
    return FeatureStore(tmp_path)


# --------------------------------------------------------------------------------------------- fake data
class FakePin:
    """Stands in for PartImageNet (region_purity.PartImageNet is patched to this class)."""

    made: list = []

    def __init__(self, root=None, per_supercategory=None, items=()):
        FakePin.made.append((root, per_supercategory))
        self.cocos = {"train": None, "val": None}
        self.part_categories = [(11, "head", "Bird"), (12, "wing", "Bird"), (20, "wheel", "Car")]
        self.supercategories = ["Bird", "Car"]
        self.items = list(items)

    def __len__(self):
        return len(self.items)

    def __getitem__(self, i):
        return self.items[i]


class FakeCoco:
    made: list = []

    def __init__(self, root=None, limit=None, name=None, images=(), instances=()):
        FakeCoco.made.append((root, limit, name))
        self.classes = [(1, "person"), (3, "car"), (7, "train")]
        self.manifest = SimpleNamespace(annotations="ann-digest")
        self.images, self._instances = list(images), list(instances)

    def __len__(self):
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], 0

    def instances(self, i):
        return self._instances[i]


@pytest.fixture
def fakes(monkeypatch):
    FakePin.made, FakeCoco.made = [], []
    monkeypatch.setattr(region_purity, "PartImageNet", FakePin)
    monkeypatch.setattr(region_purity, "CocoInstances", FakeCoco)


def _mask(h, w, cells):
    m = torch.zeros(h, w, dtype=torch.bool)
    for r, c in cells:
        m[r, c] = True
    return m


# ------------------------------------------------------------------------------------------ open_dataset
def test_open_dataset_partimagenet_writes_the_twin_and_digests_the_annotations(monkeypatch, tmp_path, fakes):
    calls = {}
    monkeypatch.setattr(region_purity, "load_fetch_spec",
                        lambda manifest: calls.setdefault("manifest", manifest) and SimpleNamespace(
                            format="partimagenet-coco"))
    monkeypatch.setattr(region_purity.pin_twin, "write_partimagenet_twin",
                        lambda *a: calls.setdefault("twin", a))
    for s, text in (("train", b"alpha"), ("val", b"beta")):
        (tmp_path / s).write_bytes(text)
    monkeypatch.setattr(region_purity, "annotation_path", lambda root, s: root / s)
    syn = {"per_class": 3, "size": 64, "seed": 5}
    profile = _profile({"per_supercategory": 4}, {"pin": {"manifest": "pin-manifest", "root": str(tmp_path),
                                                          "synthetic": syn}})
    data, levels, ident = region_purity.open_dataset(profile, "pin")
    assert isinstance(data, FakePin) and levels == ("part", "object")
    assert calls == {"manifest": "pin-manifest", "twin": (tmp_path, 3, 64, 5)}
    assert FakePin.made == [(tmp_path, 4)]
    assert ident == {"name": "pin", "manifest": "pin-manifest", "synthetic": syn,
                     "generator": region_purity.GENERATOR_VERSION, "twin": region_purity.pin_twin.TWIN_VERSION,
                     "annotations": hashlib.sha256(b"alphabeta").hexdigest()[:16], "per_supercategory": 4}
    assert len(ident["annotations"]) == 16
    # defaults of the twin's settings; no synthetic entry: no twin written, no twin version
    calls.clear()
    region_purity.open_dataset(_profile({}, {"pin": {"manifest": "m", "root": str(tmp_path), "synthetic": {}}}),
                               "pin")
    assert calls["twin"] == (tmp_path, 6, 96, 0)
    calls.clear()
    _, _, ident = region_purity.open_dataset(_profile({}, {"pin": {"manifest": "m", "root": str(tmp_path)}}), "pin")
    assert "twin" not in calls and "twin" not in ident and ident["synthetic"] is None
    assert ident["per_supercategory"] is None and FakePin.made[-1] == (tmp_path, None)


def test_open_dataset_coco_writes_its_twin_and_limits_the_images(monkeypatch, tmp_path, fakes):
    calls = {}
    monkeypatch.setattr(region_purity, "load_fetch_spec", lambda manifest: SimpleNamespace(format="coco"))
    monkeypatch.setattr(coco_twin, "write_coco_twin", lambda *a: calls.setdefault("twin", a))
    syn = {"n_images": 12, "size": 48, "seed": 2}
    profile = _profile({"object_images": 7}, {"c": {"manifest": "coco-m", "root": str(tmp_path), "synthetic": syn}})
    data, levels, ident = region_purity.open_dataset(profile, "c")
    assert isinstance(data, FakeCoco) and levels == ("object",)
    assert calls["twin"] == (tmp_path, 12, 48, 2) and FakeCoco.made == [(tmp_path, 7, "coco-m")]
    assert ident == {"name": "c", "manifest": "coco-m", "synthetic": syn, "generator": region_purity.GENERATOR_VERSION,
                     "twin": coco_twin.TWIN_VERSION, "annotations": "ann-digest", "limit": 7}
    calls.clear()
    region_purity.open_dataset(_profile({}, {"c": {"manifest": "coco-m", "root": str(tmp_path), "synthetic": {}}}),
                               "c")
    assert calls["twin"] == (tmp_path, 200, 96, 0) and FakeCoco.made[-1] == (tmp_path, None, "coco-m")
    calls.clear()
    _, _, ident = region_purity.open_dataset(_profile({}, {"c": {"manifest": "coco-m", "root": str(tmp_path)}}), "c")
    assert calls == {} and "twin" not in ident


def test_open_dataset_refuses_another_format(monkeypatch, tmp_path):
    monkeypatch.setattr(region_purity, "load_fetch_spec", lambda manifest: SimpleNamespace(format="imagefolder"))
    profile = _profile({}, {"inet": {"manifest": "imagenet50", "root": str(tmp_path)}})
    with pytest.raises(ValueError) as err:
        region_purity.open_dataset(profile, "inet")
    assert str(err.value) == ("Dataset 'inet' (manifest 'imagenet50') is in format 'imagefolder'; region purity reads "
                              "PartImageNet (partimagenet-coco) or COCO instances (coco)")


def test_digest_hashes_the_files_in_order(tmp_path):
    a, b = tmp_path / "a", tmp_path / "b"
    a.write_bytes(b"one"), b.write_bytes(b"two")
    assert region_purity._digest(a, b) == hashlib.sha256(b"onetwo").hexdigest()[:16]
    assert region_purity._digest(b, a) == hashlib.sha256(b"twoone").hexdigest()[:16]


# ------------------------------------------------------------------------------------- regions and names
def test_category_names_per_level(fakes):
    assert region_purity.category_names(FakePin(), "part") == ["head", "wing", "wheel"]
    assert region_purity.category_names(FakePin(), "object") == ["Bird", "Car"]
    assert region_purity.category_names(FakeCoco(), "object") == ["person", "car", "train"]


def _pin_items():
    """Two 4x6 images: image 0 has 3 parts (one empty: no token overlaps it) and 1 object; image 1 has no part and
    2 objects."""
    gen = torch.Generator().manual_seed(3)
    im = [torch.randint(0, 256, (3, 4, 6), generator=gen, dtype=torch.uint8) for _ in range(2)]
    parts0 = torch.stack([_mask(4, 6, [(0, 0)]), _mask(4, 6, []), _mask(4, 6, [(1, 2), (3, 5), (2, 3)])])
    obj0 = _mask(4, 6, [(0, 0), (1, 2), (3, 5), (2, 3)])[None]
    obj1 = torch.stack([_mask(4, 6, [(2, 0), (3, 1)]), _mask(4, 6, [(0, 4), (0, 5), (1, 4)])])
    return [{"image": im[0], "part_masks": parts0, "part_labels": torch.tensor([2, 0, 1]),
             "object_masks": obj0, "object_labels": torch.tensor([0])},
            {"image": im[1], "part_masks": torch.zeros(0, 4, 6, dtype=torch.bool),
             "part_labels": torch.zeros(0, dtype=torch.int64),
             "object_masks": obj1, "object_labels": torch.tensor([1, 0])}]


def test_regions_of_partimagenet_and_coco(fakes):
    items = _pin_items()
    image, regions = region_purity._regions(FakePin(items=items), 0)
    assert image.dtype == torch.float32 and torch.equal(image, items[0]["image"].float() / 255)
    assert list(regions) == ["part", "object"]
    assert regions["part"][0] is items[0]["part_masks"] and regions["part"][1] is items[0]["part_labels"]
    assert regions["object"][0] is items[0]["object_masks"] and regions["object"][1] is items[0]["object_labels"]
    arr = np.arange(4 * 6 * 3, dtype=np.uint8).reshape(4, 6, 3)
    inst = [{"mask": np.eye(4, 6, dtype=bool), "label": 2}, {"mask": np.ones((4, 6), dtype=bool), "label": 0}]
    image, regions = region_purity._regions(FakeCoco(images=[arr], instances=[inst]), 0)
    assert image.shape == (3, 4, 6) and image.dtype == torch.float32
    np.testing.assert_array_equal(image.numpy(), arr.transpose(2, 0, 1).astype(np.float32) / 255)
    masks, labels = regions["object"]
    assert list(regions) == ["object"] and masks.dtype == torch.bool
    assert torch.equal(masks, torch.stack([torch.eye(4, 6, dtype=torch.bool), torch.ones(4, 6, dtype=torch.bool)]))
    assert labels.dtype == torch.int64 and labels.tolist() == [2, 0]


# ----------------------------------------------------------------------------------------- region features
BLOCKS, GRID, C, PATCH = 3, (2, 3), 5, 4


def _tokens(i):
    return torch.randn(BLOCKS, *GRID, C, generator=torch.Generator().manual_seed(100 + i))


def _reference(tokens, mask):
    """float64 [L, C]: the mean of the tokens whose 4x4 patch (a 2x2 block of the 4x6 mask) holds a mask pixel,
    or None when none does."""
    m = mask.numpy()
    hit = [(gh, gw) for gh in range(GRID[0]) for gw in range(GRID[1]) if m[2 * gh:2 * gh + 2, 2 * gw:2 * gw + 2].any()]
    if not hit:
        return None
    t = tokens.numpy().astype(np.float64)
    return np.mean([t[:, gh, gw] for gh, gw in hit], axis=0)


@pytest.fixture
def extraction(monkeypatch, fakes):
    """Patched model loading and dense extraction; records the calls."""
    calls = {"load": [], "dense": [], "geometry": []}
    net = SimpleNamespace(blocks=[None] * BLOCKS)
    cfg = SimpleNamespace(preprocess=SimpleNamespace(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6)))

    def load(model, weights, device):
        calls["load"].append((model, weights, device))
        return net, cfg, {"model": model, "weights": weights}

    def dense(n, image, blocks, *, mean, std, device):
        calls["dense"].append((n, image, blocks, mean, std, device))
        return _tokens(len(calls["dense"]) - 1)

    monkeypatch.setattr(region_purity, "load_for_analysis", load)
    monkeypatch.setattr(region_purity, "model_geometry", lambda n: calls["geometry"].append(n) or (32, PATCH))
    monkeypatch.setattr(region_purity, "dense_tokens", dense)
    return calls, net


def test_region_features_pool_the_tokens_of_each_mask(monkeypatch, store, extraction):
    calls, net = extraction
    items = _pin_items()
    ident = {"name": "pin"}
    opened = []
    monkeypatch.setattr(region_purity, "open_dataset",
                        lambda profile, name: opened.append(name) or (FakePin(items=items), ("part", "object"), ident))
    profile = _profile({}, device="meta")
    out = region_purity.region_features("zoo-dino", profile, "pin", weights="w.pt", store=store)
    assert calls["load"] == [("zoo-dino", "w.pt", "meta")] and opened == ["pin"] and calls["geometry"] == [net]
    assert len(calls["dense"]) == 2
    for i, (n, image, blocks, mean, std, device) in enumerate(calls["dense"]):
        assert n is net and torch.equal(image, items[i]["image"].float() / 255)
        assert blocks == [0, 1, 2] and mean == (0.1, 0.2, 0.3) and std == (0.4, 0.5, 0.6) and device == "meta"
    assert set(out) == {f"{lv}_{x}" for lv in ("part", "object") for x in ("features", "labels", "image", "skipped")}
    # parts: image 0's first and third part (the empty one skipped); objects: image 0's one, image 1's two
    want_part = [_reference(_tokens(0), m) for m in items[0]["part_masks"]]
    assert want_part[1] is None
    assert out["part_features"].dtype == torch.float32 and out["part_features"].shape == (2, BLOCKS, C)
    np.testing.assert_allclose(out["part_features"].numpy(), np.stack([want_part[0], want_part[2]]), rtol=1e-5,
                               atol=1e-6)
    assert out["part_labels"].tolist() == [2, 1] and out["part_image"].tolist() == [0, 0]
    assert out["part_image"].dtype == torch.int64 and out["part_skipped"].tolist() == [1]
    want_obj = [_reference(_tokens(0), items[0]["object_masks"][0])] + [
        _reference(_tokens(1), m) for m in items[1]["object_masks"]]
    np.testing.assert_allclose(out["object_features"].numpy(), np.stack(want_obj), rtol=1e-5, atol=1e-6)
    assert out["object_labels"].tolist() == [0, 1, 0] and out["object_image"].tolist() == [0, 1, 1]
    assert out["object_skipped"].tolist() == [0]
    assert out["object_features"].is_contiguous()
    # cached under the model, the dataset and every setting that changes the features
    key = {"model": {"model": "zoo-dino", "weights": "w.pt"}, "data": ident, "overlap": "any", "min_fraction": None,
           "tiling": {"short_side_factor": SHORT_SIDE_FACTOR}, "version": region_purity.FEATURES_VERSION}
    hit = store.get("zoo-dino", "regions-pin", key)
    assert hit is not None and torch.equal(hit["object_features"], out["object_features"])
    again = region_purity.region_features("zoo-dino", profile, "pin", weights="w.pt", device="cpu")
    assert len(calls["dense"]) == 2 and calls["load"][-1] == ("zoo-dino", "w.pt", "cpu")      # read from the store
    assert torch.equal(again["part_features"], out["part_features"])


def test_region_features_fraction_rule_and_coco(monkeypatch, store, extraction):
    calls, _ = extraction
    arr = np.zeros((4, 6, 3), dtype=np.uint8)
    # one mask covers 1 pixel of the first patch and all 4 of the second: fraction 0.5 keeps the second token only
    m = _mask(4, 6, [(0, 0), (0, 2), (0, 3), (1, 2), (1, 3)]).numpy()
    sliver = _mask(4, 6, [(3, 5)]).numpy()
    coco = FakeCoco(images=[arr, arr], instances=[[{"mask": m, "label": 2}, {"mask": sliver, "label": 1}],
                                                  [{"mask": sliver, "label": 0}, {"mask": m, "label": 1}]])
    monkeypatch.setattr(region_purity, "open_dataset", lambda profile, name: (coco, ("object",), {"name": name}))
    profile = _profile({"overlap": "fraction", "min_fraction": 0.5})
    out = region_purity.region_features("zoo-mae", profile, "c", store=store)
    assert set(out) == {"object_features", "object_labels", "object_image", "object_skipped"}
    t = _tokens(0).numpy().astype(np.float64)
    t1 = _tokens(1).numpy().astype(np.float64)
    np.testing.assert_allclose(out["object_features"].numpy(), np.stack([t[:, 0, 1], t1[:, 0, 1]]), rtol=1e-6)
    assert out["object_labels"].tolist() == [2, 1] and out["object_image"].tolist() == [0, 1]
    assert out["object_skipped"].tolist() == [2]
    assert calls["dense"][0][5] == "cpu"
    key = {"model": {"model": "zoo-mae", "weights": None}, "data": {"name": "c"}, "overlap": "fraction",
           "min_fraction": 0.5, "tiling": {"short_side_factor": SHORT_SIDE_FACTOR},
           "version": region_purity.FEATURES_VERSION}
    assert store.get("zoo-mae", "regions-c", key) is not None


def test_region_features_refuse_a_level_without_regions(monkeypatch, store, extraction):
    items = [{**it, "object_masks": torch.zeros(0, 4, 6, dtype=torch.bool)} for it in _pin_items()]
    monkeypatch.setattr(region_purity, "open_dataset",
                        lambda profile, name: (FakePin(items=items), ("part", "object"), {"name": name}))
    with pytest.raises(ValueError) as err:
        region_purity.region_features("zoo-dino", _profile(), "pin", store=store)
    assert str(err.value) == "dataset 'pin' yielded no object region that a token overlaps"


# ---------------------------------------------------------------------------------------------- clustering
def _feats(n, seed, blocks=2, dim=3, n_labels=3):
    gen = torch.Generator().manual_seed(seed)
    labels = torch.arange(n) % n_labels
    x = torch.randn(n, blocks, dim, generator=gen) + 6 * torch.eye(n_labels, dim)[labels][:, None]
    return x, labels


def test_kmeans_blocks_cluster_each_block_and_cache(store):
    x, _ = _feats(12, 0)
    km = clustering_k.KMeansSettings(**KM)
    got = region_purity._kmeans_blocks("m", x, 3, km, store)
    want = torch.stack([clustering_k.kmeans(x[:, b], 3, km) for b in range(2)])
    assert torch.equal(got, want) and got.shape == (2, 12)
    key = {"features": region_purity.tensor_digest(x), "k": 3, "settings": km.record(),
           "version": purity.CLUSTERING_VERSION}
    assert torch.equal(store.get("m", "kmeans-regions", key)["assignments"], want)
    assert torch.equal(region_purity._kmeans_blocks("m", x, 3, km, None), want)      # the default store: same entry


def test_cluster_model_per_dataset_and_level(monkeypatch, store, fakes):
    xp, lp = _feats(10, 1, n_labels=3)
    xo, lo = _feats(8, 2, dim=4, n_labels=2)
    xc, lc = _feats(5, 3, dim=4, n_labels=3)
    feats = {"pin": {"part_features": xp, "part_labels": lp, "part_image": torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 6]),
                     "part_skipped": torch.tensor([3]), "object_features": xo, "object_labels": lo,
                     "object_image": torch.tensor([0, 1, 2, 3, 4, 5, 6, 6]), "object_skipped": torch.tensor([0])},
             "c": {"object_features": xc, "object_labels": lc, "object_image": torch.tensor([0, 0, 1, 1, 1]),
                   "object_skipped": torch.tensor([2])}}
    seen = []

    def fake_features(model, profile, ds, *, weights, device, store):
        seen.append((model, ds, weights, device, store))
        return feats[ds]

    data = {"pin": (FakePin(), ("part", "object"), {}), "c": (FakeCoco(), ("object",), {})}
    monkeypatch.setattr(region_purity, "region_features", fake_features)
    monkeypatch.setattr(region_purity, "open_dataset", lambda profile, ds: data[ds])
    profile = _profile({"parts_dataset": "pin", "objects_dataset": "c"})
    out = region_purity.cluster_model("zoo-dino", profile, weights="w", device="cpu", store=store)
    assert seen == [("zoo-dino", "pin", "w", "cpu", store), ("zoo-dino", "c", "w", "cpu", store)]
    km = purity.settings(profile)
    # k: the level's number of categories (parts 3, objects 2, COCO 3 but only 5 regions -> 3), at most the regions
    want = [("pin", "part", xp, lp, 3, 3, 7), ("pin", "object", xo, lo, 2, 0, 7), ("c", "object", xc, lc, 3, 2, 2)]
    assert len(out) == 3
    for c, (ds, lv, x, labels, k, skipped, n_images) in zip(out, want):
        assert {kk: v for kk, v in c.items() if kk not in ("labels", "assignments")} == {
            "dataset": ds, "level": lv, "k": k, "dim": x.shape[-1], "skipped": skipped, "n_images": n_images}
        assert c["labels"] is labels
        assert torch.equal(c["assignments"], torch.stack([clustering_k.kmeans(x[:, b], k, km) for b in range(2)]))
    # the profile's k, capped by the number of regions
    out = region_purity.cluster_model("zoo-dino", _profile({"parts_dataset": "pin", "objects_dataset": "c", "k": 4}),
                                      store=store)
    assert [c["k"] for c in out] == [4, 4, 4]
    out = region_purity.cluster_model("zoo-dino", _profile({"objects_dataset": "c", "k": 9}), store=store)
    assert [(c["dataset"], c["k"]) for c in out] == [("c", 5)]


def test_noise_is_kmeans_on_the_profiles_noise_and_cached(store):
    c = {"labels": torch.zeros(14, dtype=torch.int64), "dim": 3, "k": 2}
    profile = _profile({"noise": "uniform"})
    km = purity.settings(profile)
    got = region_purity._noise(c, profile, store)
    assert torch.equal(got, clustering_k.kmeans(clustering_k.noise_features(14, 3, 0, "uniform"), 2, km))
    gauss = region_purity._noise(c, _profile(), store)
    assert torch.equal(gauss, clustering_k.kmeans(clustering_k.noise_features(14, 3, 0, "gaussian"), 2, km))
    assert not torch.equal(got, gauss)
    key = {"n": 14, "dim": 3, "k": 2, "distribution": "uniform", "settings": km.record(),
           "version": purity.CLUSTERING_VERSION}
    assert torch.equal(store.get("noise", "kmeans", key)["assignment"], got)
    assert torch.equal(region_purity._noise(c, profile), got)                     # default store, same entry


def _purity(labels, assign):
    """Hand purity: per cluster the count of its majority label, summed over clusters, over n."""
    labels, assign = np.asarray(labels), np.asarray(assign)
    return sum(np.bincount(labels[assign == a]).max() for a in np.unique(assign)) / len(labels)


def test_row_scores_one_block():
    labels, assign = torch.tensor([0, 0, 1, 1, 1, 2, 2]), torch.tensor([0, 0, 0, 1, 1, 2, 1])
    c = {"dataset": "pin", "level": "part", "labels": labels, "k": 3, "n_images": 4, "skipped": 2}
    row = region_purity._row("zoo-dino", c, 2, assign)
    per = torch.tensor([1.0, 1, 0, 1, 1, 1, 0], dtype=torch.float64)
    ref = bootstrap_contrast(per[None], torch.ones(1), n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    assert row == {"model": "zoo-dino", "dataset": "pin", "level": "part", "block": 2,
                   "purity": pytest.approx(5 / 7), "nmi": pytest.approx(normalized_mutual_info_score(labels, assign)),
                   "ari": pytest.approx(adjusted_rand_score(labels, assign)), "purity_low": ref["low"],
                   "purity_high": ref["high"], "k": 3, "n_regions": 7, "n_images": 4, "skipped": 2}
    assert _purity(labels, assign) == pytest.approx(5 / 7) and row["purity_low"] < 5 / 7 < row["purity_high"]


def test_compute_rows_per_block_then_one_noise_row_per_dataset_level_and_width(monkeypatch, store):
    gen = torch.Generator().manual_seed(4)
    lab = torch.randint(0, 3, (20,), generator=gen)
    lab_o = torch.randint(0, 2, (9,), generator=gen)

    def c(ds, lv, labels, dim, assign):
        return {"dataset": ds, "level": lv, "labels": labels, "k": int(assign.max()) + 1, "dim": dim,
                "skipped": len(ds), "n_images": dim + 1, "assignments": assign}

    a1 = torch.randint(0, 3, (2, 20), generator=gen)
    a2 = torch.randint(0, 3, (2, 20), generator=gen)
    ao = torch.randint(0, 2, (2, 9), generator=gen)
    fake = {"zoo-dino": [c("pin", "part", lab, 4, a1), c("pin", "object", lab_o, 4, ao),
                         c("c", "object", lab_o, 4, ao)],
            "zoo-mae": [c("pin", "part", lab, 4, a2), c("c", "object", lab_o, 6, ao.flip(0))]}
    seen = []

    def fake_cluster(m, profile, *, weights, device, store):
        seen.append((m, weights, device, store))
        return fake[m]

    monkeypatch.setattr(region_purity, "cluster_model", fake_cluster)
    profile = _profile()
    t = region_purity.compute(["zoo-dino", "zoo-mae"], profile, weights={"zoo-mae": "w"}, device="cpu", store=store)
    assert seen == [("zoo-dino", None, "cpu", store), ("zoo-mae", "w", "cpu", store)]
    assert list(t.columns) == ["model", "dataset", "level", "block", "purity", "nmi", "ari", "purity_low",
                               "purity_high", "k", "n_regions", "n_images", "skipped", "dim"]
    body = t[t.model != "noise"]
    assert list(zip(body.model, body.dataset, body.level, body.block)) == [
        ("zoo-dino", "pin", "part", 1), ("zoo-dino", "pin", "part", 2), ("zoo-dino", "pin", "object", 1),
        ("zoo-dino", "pin", "object", 2), ("zoo-dino", "c", "object", 1), ("zoo-dino", "c", "object", 2),
        ("zoo-mae", "pin", "part", 1), ("zoo-mae", "pin", "part", 2), ("zoo-mae", "c", "object", 1),
        ("zoo-mae", "c", "object", 2)]
    want = [(lab, a1[0]), (lab, a1[1]), (lab_o, ao[0]), (lab_o, ao[1]), (lab_o, ao[0]), (lab_o, ao[1]),
            (lab, a2[0]), (lab, a2[1]), (lab_o, ao[1]), (lab_o, ao[0])]
    for (_, r), (labels, a) in zip(body.iterrows(), want):
        assert r.purity == pytest.approx(_purity(labels, a))
        assert r.nmi == pytest.approx(normalized_mutual_info_score(labels, a))
        assert r.ari == pytest.approx(adjusted_rand_score(labels, a))
        assert r.n_regions == len(labels) and np.isnan(r.dim)
    assert body.skipped.tolist() == [3, 3, 3, 3, 1, 1, 3, 3, 1, 1]
    assert body.n_images.tolist() == [5, 5, 5, 5, 5, 5, 5, 5, 7, 7]
    # noise: one row per (dataset, level, dim) first met: pin/part/4, pin/object/4, c/object/4, c/object/6
    noise = t[t.model == "noise"]
    assert list(zip(noise.dataset, noise.level, noise.dim)) == [("pin", "part", 4), ("pin", "object", 4),
                                                                ("c", "object", 4), ("c", "object", 6)]
    assert noise.block.isna().all() and noise.n_regions.tolist() == [20, 9, 9, 9]
    km = purity.settings(profile)
    for (_, r), (labels, dim, k) in zip(noise.iterrows(), [(lab, 4, 3), (lab_o, 4, 2), (lab_o, 4, 2),
                                                           (lab_o, 6, 2)]):
        a = clustering_k.kmeans(clustering_k.noise_features(len(labels), dim, 0, "gaussian"), k, km)
        assert r.purity == pytest.approx(_purity(labels, a)) and r.k == k
    one = region_purity.compute("zoo-dino", profile, store=store)                     # a single name
    assert set(one.model) == {"zoo-dino", "noise"} and seen[-1] == ("zoo-dino", None, None, store)

"""vitscope.extract.run, value by value (issue 17: survivors in extract, _forward, _loader, _check_cls,
_check_last_batch, dataset_identity and _Shards).

Every cache key and run-info field is compared whole, every error with its whole message, bounds at the bound, the
DataLoader's settings read back from it, and tqdm's arguments recorded. One tiny ViT on 4 to 16 images, in process.
"""
from __future__ import annotations

import hashlib
import json
import time
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import timm
import torch
from torch.utils.data import SequentialSampler

import vitscope
from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import ClsAttention, FeatureStore, GramMatrices, PooledTokens, extract, vit_geometry
from vitscope.extract import run as run_mod
from vitscope.extract.run import _check_cls, _check_last_batch, _loader, dataset_identity, library_versions
from vitscope.models import Preprocess

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
TRANSFORM_ID = {"resize": 32}


@pytest.fixture
def small(synthetic_root, manifest):
    return ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=4, num_classes=4)   # 16


@pytest.fixture
def four(synthetic_root, manifest):
    return ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=2, num_classes=2)   # 4


class RecordingTqdm:
    """Stands in for tqdm: records each call's keyword arguments, iterates the loader, and (``stop_after``)
    interrupts the run after that many batches."""

    def __init__(self, stop_after=None):
        self.calls, self.stop_after = [], stop_after

    def __call__(self, iterable, **kwargs):
        self.calls.append(kwargs)
        for i, item in enumerate(iterable):
            if self.stop_after is not None and i == self.stop_after:
                raise KeyboardInterrupt
            yield item


class RecordingStore(FeatureStore):
    def __init__(self, root):
        super().__init__(root)
        self.gets = []

    def get(self, model, product, key):
        self.gets.append((model, product, key))
        return super().get(model, product, key)


def _sidecar(store, model="tiny", product="cls_attention"):
    [meta] = (Path(store.root) / model).glob(f"{product}-*.json")
    return json.loads(meta.read_text())


def _files_digest(dataset):
    h = hashlib.sha256()
    for path, label in dataset.samples:
        st = path.stat()
        h.update(f"{path.relative_to(Path(dataset.root))}|{label}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return h.hexdigest()


# ------------------------------------------------------------------------------------------------ identity and keys


def test_dataset_identity_is_exactly_the_documented_dict(synthetic_root, manifest):
    dataset = ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=3, num_classes=2)
    got = dataset_identity(dataset)
    assert got == {"manifest": "imagenet50", "per_class": 3, "classes": 2, "n": 6,
                   "files": _files_digest(dataset)[:16]}
    assert len(got["files"]) == 16


def test_library_versions_are_torch_timm_and_vitscope():
    assert library_versions() == {"torch": str(torch.__version__), "timm": str(timm.__version__),
                                  "vitscope": vitscope.__version__}


def test_cache_key_and_run_info_hold_every_field(tiny_vit, small, tmp_path, monkeypatch):
    clock = iter([100.0, 103.14159])              # _forward's two perf_counter readings: 3.14159 s
    monkeypatch.setattr(run_mod, "time", SimpleNamespace(perf_counter=lambda: next(clock),
                                                         monotonic=time.monotonic))
    store = FeatureStore(tmp_path)
    extract(tiny_vit, {"name": "tiny", "weights": "w"}, small, {"cls": ClsAttention()}, transform_id=TRANSFORM_ID,
            store=store, batch_size=8, seed=3, limit=12, progress=False, device=torch.device("cpu"))
    sidecar = _sidecar(store)
    assert sidecar["key"] == {
        "model": {"name": "tiny", "weights": "w"}, "dataset": dataset_identity(small), "batch_size": 8,
        "order": "shuffled", "seed": 3, "limit": 12, "transform": TRANSFORM_ID, "autocast": None,
        "versions": library_versions(), "product": "cls_attention", "version": 1}
    geometry = json.loads(json.dumps(vit_geometry(tiny_vit)))          # the grid tuple as JSON stores it
    assert sidecar["info"] == {"seconds": 3.14, "device": "cpu", "geometry": geometry, "num_workers": 0,
                               "resumed_from_batch": 0}


def test_a_full_cache_hit_reads_each_entry_once_under_its_own_product_name(tiny_vit, four, tmp_path, monkeypatch):
    store = RecordingStore(tmp_path)
    products = {"cls": ClsAttention(), "pooled": PooledTokens()}
    first = extract(tiny_vit, {"name": "tiny"}, four, products, transform_id=TRANSFORM_ID, store=store,
                    batch_size=4, progress=False)
    store.gets.clear()
    monkeypatch.setattr(run_mod, "_forward", lambda *a, **k: pytest.fail("a full cache hit ran the model"))
    monkeypatch.setattr(store, "locked", lambda *a, **k: pytest.fail("a full cache hit took the entry locks"))
    second = extract(tiny_vit, {"name": "tiny"}, four, {"cls": ClsAttention(), "pooled": PooledTokens()},
                     transform_id=TRANSFORM_ID, store=store, batch_size=4, progress=False)
    assert [(m, p) for m, p, _ in store.gets] == [("tiny", "cls_attention"), ("tiny", "pooled")]
    assert store.gets[0][2]["product"] == "cls_attention" and store.gets[1][2]["site"] == "block"
    assert torch.equal(second["cls"]["mean"], first["cls"]["mean"])
    assert torch.equal(second["pooled"]["cls"], first["pooled"]["cls"])


class StoredWhileWaiting(FeatureStore):
    """Misses every entry until its locks are taken: as if another process stored them while this one waited."""

    def __init__(self, root):
        super().__init__(root)
        self.waited = False

    @contextmanager
    def locked(self, entries):
        with super().locked(entries):
            self.waited = True
            yield

    def get(self, model, product, key):
        return super().get(model, product, key) if self.waited else None


def test_entries_stored_while_waiting_for_the_locks_are_read_not_recomputed(tiny_vit, four, tmp_path, monkeypatch):
    kw = dict(transform_id=TRANSFORM_ID, batch_size=4, progress=False)
    first = extract(tiny_vit, {"name": "tiny"}, four, {"cls": ClsAttention()}, store=FeatureStore(tmp_path), **kw)
    monkeypatch.setattr(run_mod, "_forward", lambda *a, **k: pytest.fail("an entry found under the lock was rerun"))
    store = StoredWhileWaiting(tmp_path)
    got = extract(tiny_vit, {"name": "tiny"}, four, {"cls": ClsAttention()}, store=store, **kw)
    assert store.waited and torch.equal(got["cls"]["mean"], first["cls"]["mean"])


# ------------------------------------------------------------------------------------------------ argument checks


def test_limit_bounds_at_the_bounds(tiny_vit, four, tmp_path):
    for limit in (0, -1, 5):
        with pytest.raises(ValueError) as err:
            extract(tiny_vit, {"name": "tiny"}, four, {"p": PooledTokens()}, transform_id=TRANSFORM_ID,
                    store=FeatureStore(tmp_path), limit=limit, progress=False)
        assert str(err.value) == f"limit={limit} but the dataset holds 4 images."
    out = extract(tiny_vit, {"name": "tiny"}, four, {"p": PooledTokens()}, transform_id=TRANSFORM_ID,
                  store=FeatureStore(tmp_path), limit=4, order="sorted", progress=False)
    assert out["_meta"]["order"].tolist() == [0, 1, 2, 3] and out["p"]["cls"].shape[0] == 4
    out = extract(tiny_vit, {"name": "tiny"}, four, {"p": PooledTokens()}, transform_id=TRANSFORM_ID,
                  store=FeatureStore(tmp_path), limit=1, order="sorted", progress=False)
    assert out["_meta"]["order"].tolist() == [0] and out["p"]["cls"].shape[0] == 1


def test_autocast_and_order_errors_whole(tiny_vit, four, tmp_path):
    kw = dict(transform_id=TRANSFORM_ID, store=FeatureStore(tmp_path), progress=False)
    with pytest.raises(ValueError) as err:
        extract(tiny_vit, {"name": "tiny"}, four, {"p": PooledTokens()}, autocast="fp8", **kw)
    assert str(err.value) == "autocast='fp8'; choose None (full precision) or one of ['bfloat16', 'float16']"
    with pytest.raises(ValueError) as err:
        extract(tiny_vit, {"name": "tiny"}, four, {"p": PooledTokens()}, order="random", **kw)
    assert str(err.value) == "order='random'; choose 'shuffled' or 'sorted'."


@pytest.mark.parametrize("what", ["shard_seconds", "shard_batches"])
@pytest.mark.parametrize("value", [0, -1, 0.0, True, False, np.float64(-1.0)])
def test_shard_settings_must_be_positive_naming_the_setting(tiny_vit, four, tmp_path, what, value):
    with pytest.raises(ValueError) as err:
        extract(tiny_vit, {"name": "tiny"}, four, {"cls": ClsAttention()}, transform_id=TRANSFORM_ID,
                store=FeatureStore(tmp_path), progress=False, **{what: value})
    assert str(err.value) == f"{what} must be > 0 or None (no shards by that rule); got {value!r}"


def test_last_batch_rule_at_its_bounds_with_the_whole_message():
    grams = {"grams": GramMatrices()}
    for n in (8, 12, 13, 16):                      # tails 4 (= min_batch), 5, 0: fine
        _check_last_batch(n, 8, grams)
    _check_last_batch(9, 8, {"cls": ClsAttention()})           # min_batch 1: a tail of 1 is fine
    for n, tail in ((9, 1), (11, 3)):
        with pytest.raises(ValueError) as err:
            _check_last_batch(n, 8, {"cls": ClsAttention(), "grams": GramMatrices()})
        assert str(err.value) == (f"{n} images in batches of 8 leave a last batch of {tail}, but product 'grams' "
                                  "(GramMatrices) needs at least 4 images per batch. Change per_class, limit or "
                                  "batch_size.")


# ------------------------------------------------------------------------------------------------ CLS check


def _no_cls_message(name, model_type, pool, n_prefix, label, product_type):
    return (f"model {name!r} ({model_type}) has no CLS token (class_token=False, global_pool={pool!r}, "
            f"{n_prefix} prefix token(s)), but product {label!r} ({product_type}) reads the CLS token; drop it, or "
            "use a spatial reduction (e.g. GramMatrices(tokens='mean') or 'spatial')")


def test_a_model_without_cls_refuses_cls_products_with_the_whole_message(four, tmp_path):
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=16, depth=1, num_heads=2,
                              num_classes=0, class_token=False, global_pool="avg").eval()
    with pytest.raises(ValueError) as err:
        extract(model, {"name": "nocls"}, four, {"g": GramMatrices(tokens="mean"), "c": GramMatrices(tokens="cls")},
                transform_id=TRANSFORM_ID, store=FeatureStore(tmp_path), progress=False)
    assert str(err.value) == _no_cls_message("nocls", "VisionTransformer", "avg", 0, "c", "GramMatrices")
    # no global_pool attribute: shown as '?'; 2 register tokens shown as the prefix count
    stand_in = SimpleNamespace(has_class_token=False)
    with pytest.raises(ValueError) as err:
        _check_cls(stand_in, "m", {"n_prefix": 2}, {"x": (ClsAttention(), {})})
    assert str(err.value) == _no_cls_message("m", "SimpleNamespace", "?", 2, "x", "ClsAttention")
    # what passes: a CNN's geometry, a model with a CLS token, products that do not read it
    _check_cls(stand_in, "m", {"kind": "cnn", "n_prefix": 0}, {"x": (ClsAttention(), {})})
    _check_cls(SimpleNamespace(cls_token=torch.zeros(1)), "m", {"n_prefix": 1}, {"x": (ClsAttention(), {})})
    _check_cls(stand_in, "m", {"n_prefix": 2}, {"x": (GramMatrices(tokens="spatial"), {})})


# ------------------------------------------------------------------------------------------------ loader


def test_loader_settings_read_back(four):
    idx = torch.tensor([3, 0, 2])
    cases = [("cpu", 0, None, False), ("cpu", 0, True, True), ("cpu", 2, False, False), ("cuda", 0, False, False),
             ("cuda:0", 2, None, True), (torch.device("cpu"), 0, None, False)]
    for device, workers, pin, pinned in cases:
        loader = _loader(four, idx, 2, device, workers, pin)
        assert loader.pin_memory is pinned, (device, workers, pin)
        assert loader.num_workers == workers and loader.batch_size == 2 and loader.persistent_workers is False
        assert loader.prefetch_factor == (2 if workers else None)
        assert isinstance(loader.sampler, SequentialSampler) and loader.drop_last is False
        assert loader.dataset.dataset is four and loader.dataset.indices == [3, 0, 2]


# ------------------------------------------------------------------------------------------------ progress, resume


def test_progress_bar_arguments_by_default_off_and_resumed(tiny_vit, small, tmp_path, monkeypatch):
    bar = RecordingTqdm()
    monkeypatch.setattr(run_mod, "tqdm", bar)
    kw = dict(transform_id=TRANSFORM_ID, batch_size=4, order="sorted")
    want = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=FeatureStore(tmp_path / "a"),
                   **kw)                                                            # progress left at its default
    assert bar.calls == [dict(desc="extract tiny", disable=False, unit="batch", initial=0, total=4)]
    extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=FeatureStore(tmp_path / "b"),
            progress=False, **kw)
    assert bar.calls[-1] == dict(desc="extract tiny", disable=True, unit="batch", initial=0, total=4)

    # killed after 3 batches with a shard after every batch, then resumed: the bar starts at 3 of 4
    store = FeatureStore(tmp_path / "c")
    monkeypatch.setattr(run_mod, "tqdm", RecordingTqdm(stop_after=3))
    with pytest.raises(KeyboardInterrupt):
        extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, shard_batches=1, **kw)
    bar = RecordingTqdm()
    monkeypatch.setattr(run_mod, "tqdm", bar)
    got = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, progress=False, **kw)
    assert bar.calls == [dict(desc="extract tiny", disable=True, unit="batch", initial=3, total=4)]
    assert _sidecar(store)["info"]["resumed_from_batch"] == 3
    torch.testing.assert_close(got["cls"]["mean"], want["cls"]["mean"], rtol=0, atol=1e-7)

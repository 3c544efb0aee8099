"""vitscope.extract.run and .store, value by value (issue 17, round 2 survivors in _forward, _Shards.__init__ /
after_batch, key_hash, FeatureStore.get / put).

Where each batch goes (recorded ``.to`` calls), which saved shard is used (at the bounds of ``next_batch``), when a
shard is written (by batches, and by a fake clock exactly at the due time), the key digest of a key that JSON cannot
hold natively, the sidecar's exact text, and which line an unreadable-sidecar warning points at.
"""
from __future__ import annotations

import copy
import hashlib
import json
import warnings
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import ClsAttention, FeatureStore, extract, key_hash
from vitscope.extract import run as run_mod
from vitscope.models import Preprocess
from warning_origin import warned_at_the_call

PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
KW = dict(transform_id={"resize": 32}, batch_size=1, order="sorted", progress=False)


@pytest.fixture
def small(synthetic_root, manifest):
    return ImageFolderSubset(synthetic_root, manifest, eval_transform(PRE), per_class=2, num_classes=2)   # 4: 4 batches


class NoHits(FeatureStore):
    """A store that never finds an entry (so every call extracts) and records the shards written."""

    def __init__(self, root, saved=None):
        super().__init__(root)
        self.saved, self.puts, self.shard_keys = saved, [], []

    def get(self, model, product, key):
        return None

    def get_shard(self, model, key):
        self.shard_keys.append(key)
        return self.saved if self.saved is not None else super().get_shard(model, key)

    def put_shard(self, model, key, state, next_batch):
        self.puts.append((next_batch, copy.deepcopy(state)))
        return super().put_shard(model, key, state, next_batch)


def _mean(result):
    return result["cls"]["mean"]


# ------------------------------------------------------------------------------------------------ _forward


class _Recorded:
    """A batch tensor that records where ``.to`` sends it."""

    def __init__(self, t, calls):
        self.t, self.calls, self.shape = t, calls, t.shape

    def to(self, *args, **kwargs):
        self.calls.append((args, kwargs))
        return self.t.to(*args, **kwargs)


def test_every_batch_and_its_extras_go_to_the_device_without_blocking(tiny_vit, small, tmp_path, monkeypatch):
    calls = {"images": [], "mask": []}
    real_loader = run_mod._loader

    class Loader:
        def __init__(self, *args):
            self.inner = real_loader(*args)
            self.num_workers = self.inner.num_workers

        def __len__(self):
            return len(self.inner)

        def __iter__(self):
            for images, labels in self.inner:
                yield (_Recorded(images, calls["images"]), labels,
                       {"mask": _Recorded(torch.ones(images.shape[0], 2), calls["mask"])})

    monkeypatch.setattr(run_mod, "_loader", Loader)
    device = torch.device("cpu")
    got = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=NoHits(tmp_path), device=device,
                  **KW)
    assert calls["images"] == [((device,), {"non_blocking": True})] * 4
    assert calls["mask"] == [((device,), {"non_blocking": True})] * 4
    want = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=NoHits(tmp_path / "b"), **KW)
    torch.testing.assert_close(_mean(got), _mean(want), rtol=0, atol=0)


# ------------------------------------------------------------------------------------------------ shards


def _states(tiny_vit, small, tmp_path):
    """The shards an uninterrupted run writes after every batch (1..4), and its result."""
    store = NoHits(tmp_path / "full")
    full = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, shard_batches=1,
                   shard_seconds=None, **KW)
    assert [n for n, _ in store.puts] == [1, 2, 3, 4]
    return dict(store.puts), full


def test_a_saved_shard_is_used_only_for_0_lt_next_batch_le_n_batches(tiny_vit, small, tmp_path):
    states, full = _states(tiny_vit, small, tmp_path)
    # a shard at the last batch: nothing left to run, the saved state is the result
    store = NoHits(tmp_path / "last", saved=(states[4], 4))
    got = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, shard_batches=1, **KW)
    torch.testing.assert_close(_mean(got), _mean(full), rtol=0, atol=0)
    assert store.puts == []                                  # no batch ran after it
    # a shard claiming batch 0 or batch 5 (of 4) is ignored: its (wrong) state would change the result
    wrong = {"cls": {"_sum": states[2]["cls"]["_sum"] * 7, "_count": 3}}
    for next_batch in (0, 5):
        store = NoHits(tmp_path / f"at{next_batch}", saved=(wrong, next_batch))
        got = extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, shard_batches=1,
                      **KW)
        torch.testing.assert_close(_mean(got), _mean(full), rtol=0, atol=0)
        assert [n for n, _ in store.puts] == [1, 2, 3, 4]


def test_shards_every_second_batch_are_written_after_batches_2_and_4_only(tiny_vit, small, tmp_path):
    store = NoHits(tmp_path)
    extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, shard_batches=2,
            shard_seconds=None, **KW)
    assert [n for n, _ in store.puts] == [2, 4]


class Unresumable(ClsAttention):
    state_fields = None


def test_a_product_without_state_fields_writes_no_shard(tiny_vit, small, tmp_path):
    store = NoHits(tmp_path)
    extract(tiny_vit, {"name": "tiny"}, small, {"cls": Unresumable()}, store=store, shard_batches=1,
            shard_seconds=1e-9, **KW)
    assert store.puts == [] and store.shard_keys == []
    store = NoHits(tmp_path / "two")                          # one unresumable product disables the shards of all
    extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention(), "plain": Unresumable()}, store=store,
            shard_batches=1, shard_seconds=1e-9, **KW)
    assert store.puts == [] and store.shard_keys == []


def test_a_shard_is_due_at_exactly_shard_seconds(tiny_vit, small, tmp_path, monkeypatch):
    """A fake clock: 10 when the run starts, then 10.5, 11, 11.5, ... each held for three readings (the check after
    a batch, and the two around a shard's write). With shard_seconds=0.5 every check lands exactly on the due time."""
    readings = iter([10.0] + [10.0 + 0.5 * (i // 3 + 1) for i in range(30)])
    monkeypatch.setattr(run_mod, "time", SimpleNamespace(monotonic=lambda: next(readings),
                                                         perf_counter=run_mod.time.perf_counter))
    store = NoHits(tmp_path)
    extract(tiny_vit, {"name": "tiny"}, small, {"cls": ClsAttention()}, store=store, shard_seconds=0.5, **KW)
    assert [n for n, _ in store.puts] == [1, 2, 3, 4]


# ------------------------------------------------------------------------------------------------ store


def test_key_hash_writes_what_json_cannot_hold_as_its_str():
    key = {"root": Path("/data/x"), "dtype": torch.float32, "n": 3}
    blob = json.dumps({"dtype": "torch.float32", "n": 3, "root": "/data/x"}, sort_keys=True).encode()
    assert key_hash(key) == hashlib.sha256(blob).hexdigest()[:16]


def test_the_sidecar_text_is_sorted_indented_json(tmp_path):
    store = FeatureStore(tmp_path)
    key = {"zeta": 1, "alpha": {"y": Path("/p"), "b": [2, 1]}}
    info = {"seconds": 1.5, "device": "cpu"}
    data = store.put("m", "p", key, {"x": torch.arange(3.0)}, info)
    sha = hashlib.sha256(data.read_bytes()).hexdigest()
    text = data.with_suffix(".json").read_text()
    assert text == json.dumps({"info": {"device": "cpu", "seconds": 1.5},
                               "key": {"alpha": {"b": [2, 1], "y": "/p"}, "zeta": 1}, "sha256": sha},
                              indent=1, sort_keys=True)
    assert list(json.loads(text)) == ["info", "key", "sha256"]


def _warned_at_the_call(w) -> bool:
    return warned_at_the_call(w, __file__)


def test_an_unreadable_sidecar_warning_points_at_the_line_that_called_get(tmp_path):
    store = FeatureStore(tmp_path)
    data = store.put("m", "p", {"k": 1}, {"x": torch.arange(3.0)})
    meta = data.with_suffix(".json")
    meta.write_text("{not json")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.get("m", "p", {"k": 1}) is None
    [w] = seen
    assert w.category is UserWarning and _warned_at_the_call(w), (w.filename, w.lineno)
    assert str(w.message) == f"Unreadable cache sidecar {meta}: recomputing the entry."


def test_checksum_and_damaged_shard_warnings_point_at_the_line_that_called_the_store(tmp_path):
    store = FeatureStore(tmp_path)
    data = store.put("m", "p", {"k": 1}, {"x": torch.arange(3.0)})
    data.write_bytes(data.read_bytes()[:-2])
    shard = store.put_shard("m", {"k": 2}, {"a": torch.arange(2.0)}, 1)
    shard.write_bytes(b"not a safetensors file")
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        assert store.get("m", "p", {"k": 1}) is None
        assert store.get_shard("m", {"k": 2}) is None
    checksum, damaged = seen
    assert _warned_at_the_call(checksum) and _warned_at_the_call(damaged)
    assert str(checksum.message) == (f"Cache file {data} does not match its recorded checksum (truncated or "
                                     "corrupted): recomputing the entry.")
    assert str(damaged.message).startswith(f"Ignoring the damaged extraction shard {shard} (")
    assert str(damaged.message).endswith("): the extraction starts from its first batch.")

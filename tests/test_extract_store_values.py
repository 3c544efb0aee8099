"""FeatureStore.memo's two reads, in this process (issue 17: the multi-process test in test_cache_lock.py runs memo in
child processes, which mutation testing does not see).

A stored entry is served without touching its lock (a reader never waits for a computation it does not need), and an
entry another holder stores while memo waits for the lock is served after the wait, not computed a second time.
"""
from __future__ import annotations

import threading

import pytest
import torch

from vitscope.extract import FeatureStore
from vitscope.extract import store as store_mod

KEY = {"features": "abc", "k": 3}
STORED = torch.arange(12, dtype=torch.float64).reshape(3, 4)
OTHER = -torch.ones(3, 4, dtype=torch.float64)


def test_a_stored_entry_is_served_while_its_lock_is_held(tmp_path):
    store = FeatureStore(tmp_path, lock_timeout=0.2)
    store.put("m", "kmeans", KEY, {"y": STORED})
    calls = []
    with store_mod.file_lock(store.lock_path("m", "kmeans", KEY)):     # another holder: its own open file
        got = store.memo("m", "kmeans", KEY, lambda: calls.append(1) or {"y": OTHER})
    assert calls == [] and sorted(got) == ["y"] and torch.equal(got["y"], STORED)


def test_memo_serves_what_another_holder_stored_while_it_waited(tmp_path):
    store = FeatureStore(tmp_path, lock_timeout=60)
    real_get, first_miss = store.get, threading.Event()

    def get(*args):                                   # tells the test when memo's first read has missed
        hit = real_get(*args)
        first_miss.set()
        return hit

    store.get = get
    calls, result = [], {}

    def ask():
        result["got"] = store.memo("m", "kmeans", KEY, lambda: calls.append(1) or {"y": OTHER})

    with store_mod.file_lock(store.lock_path("m", "kmeans", KEY)):
        waiter = threading.Thread(target=ask)
        waiter.start()
        first_miss.wait(30)                            # memo missed and now waits for the lock held here
        FeatureStore(tmp_path).put("m", "kmeans", KEY, {"y": STORED})
    waiter.join(60)
    assert not waiter.is_alive()
    assert calls == [] and torch.equal(result["got"]["y"], STORED)
    assert torch.equal(real_get("m", "kmeans", KEY)["y"], STORED)


def test_memo_computes_and_stores_a_missing_entry_once(tmp_path):
    store = FeatureStore(tmp_path)
    calls = []
    first = store.memo("m", "kmeans", KEY, lambda: calls.append(1) or {"y": STORED})
    again = store.memo("m", "kmeans", KEY, lambda: calls.append(1) or {"y": OTHER})
    assert calls == [1] and torch.equal(first["y"], STORED) and torch.equal(again["y"], STORED)
    assert torch.equal(store.get("m", "kmeans", KEY)["y"], STORED)
    assert store.get("m", "kmeans", {**KEY, "k": 4}) is None and store.get("m", "other", KEY) is None


def test_a_shard_state_holding_overlapping_views_of_one_buffer_round_trips(tmp_path):
    # safetensors refuses tensors that share memory with overlap: each view is stored on its own (a copy)
    store = FeatureStore(tmp_path / "new" / "cache")                  # a root not made yet: every folder is created
    buf = torch.arange(10, dtype=torch.float64)
    whole = torch.arange(6, dtype=torch.int64)
    state = {"head": buf[:4], "tail": buf[2:7], "whole": whole, "pair": (whole[1:3], [buf[5:]]), "n": 3, "x": None}
    store.put_shard("m", KEY, state, 2)
    got, next_batch = store.get_shard("m", KEY)
    assert next_batch == 2 and sorted(got) == sorted(state) and got["n"] == 3 and got["x"] is None
    for a, b in ((got["head"], buf[:4]), (got["tail"], buf[2:7]), (got["whole"], whole),
                 (got["pair"][0], whole[1:3]), (got["pair"][1][0], buf[5:])):
        assert a.dtype == b.dtype and torch.equal(a, b)
    assert isinstance(got["pair"], tuple) and isinstance(got["pair"][1], list)


@pytest.mark.parametrize("state, shown", [({"$t": 1, "a": 2}, "[\"'$t'\", \"'a'\"]"),
                                          ({"a": {"$tuple": []}}, "[\"'$tuple'\"]"),
                                          ({1: torch.zeros(1)}, "['1']"),
                                          # the first five keys in sorted order, however many there are
                                          ({"$g": 0, **dict.fromkeys("abcdef", 1)},
                                           "[\"'$g'\", \"'a'\", \"'b'\", \"'c'\", \"'d'\"]")])
def test_a_shard_state_refuses_keys_that_are_not_plain_strings(tmp_path, state, shown):
    with pytest.raises(TypeError) as err:
        FeatureStore(tmp_path).put_shard("m", KEY, state, 1)
    assert str(err.value) == f"state dicts need str keys not starting with '$'; got {shown}"


def test_tensor_digest_of_empty_and_filled_tensors_by_hand():
    import hashlib

    empty = torch.empty(0, 3)
    assert store_mod.tensor_digest(empty) == hashlib.sha256(b"torch.float32|(0, 3)|").hexdigest()[:16]
    t = torch.tensor([1, 2], dtype=torch.uint8)
    assert store_mod.tensor_digest(t, empty) == hashlib.sha256(
        b"torch.uint8|(2,)|\x01\x02" + b"torch.float32|(0, 3)|").hexdigest()[:16]


def test_a_state_with_an_unstorable_object_is_refused_whole():
    with pytest.raises(TypeError) as err:
        store_mod._flatten({"a": [1, object()]}, {})
    assert str(err.value) == ("cannot store a object in a shard; a product's state holds tensors, numbers, str, None "
                              "and dicts/lists/tuples of them")

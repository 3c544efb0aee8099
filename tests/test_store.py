"""The feature store never serves a wrong, truncated or half-written entry, and concurrent writers do not corrupt it."""
from __future__ import annotations

import json
import multiprocessing
import os

import pytest
import torch

from vitscope.extract.store import READ_LOG_ENV, FeatureStore, key_hash

KEY = {"model": {"name": "m"}, "n": 3}


def _entry(store: FeatureStore):
    data = store.root / "m" / f"p-{key_hash(KEY)}.safetensors"
    return data, data.with_suffix(".json")


@pytest.mark.reliability("fault", "a cache sidecar whose key differs (edited, or a hash collision) is never served")
def test_round_trip_and_key_mismatch(tmp_path):
    store = FeatureStore(tmp_path)
    store.put("m", "p", KEY, {"x": torch.arange(6.0).reshape(2, 3)})
    assert torch.equal(store.get("m", "p", KEY)["x"], torch.arange(6.0).reshape(2, 3))
    data, meta = _entry(store)
    sidecar = json.loads(meta.read_text())
    sidecar["key"]["n"] = 4             # a hand-edited (or colliding) sidecar must not serve the entry
    meta.write_text(json.dumps(sidecar))
    assert store.get("m", "p", KEY) is None


@pytest.mark.reliability("fault", "a truncated or bit-flipped cache file is detected by its checksum and recomputed")
@pytest.mark.parametrize("damage", ["truncate", "flip"])
def test_corrupted_data_file_is_a_miss_not_data(tmp_path, damage):
    store = FeatureStore(tmp_path)
    store.put("m", "p", KEY, {"x": torch.randn(64, 64)})
    data, _ = _entry(store)
    blob = bytearray(data.read_bytes())
    if damage == "truncate":
        blob = blob[: len(blob) // 2]
    else:
        blob[-10] ^= 0xFF               # same size, one float changed: only the checksum can tell
    data.write_bytes(bytes(blob))
    with pytest.warns(UserWarning, match="checksum"):
        assert store.get("m", "p", KEY) is None


@pytest.mark.reliability("fault", "a write killed before its sidecar leaves no entry that reads as valid")
def test_no_sidecar_no_entry(tmp_path):
    """A crash after the data file and before the sidecar leaves nothing that reads as an entry."""
    store = FeatureStore(tmp_path)
    store.put("m", "p", KEY, {"x": torch.ones(3)})
    _, meta = _entry(store)
    meta.unlink()
    assert store.get("m", "p", KEY) is None


def test_reads_are_logged_for_the_book(tmp_path, monkeypatch):
    store = FeatureStore(tmp_path / "cache")
    log = tmp_path / "reads.log"
    monkeypatch.setenv(READ_LOG_ENV, str(log))
    store.put("m", "p", KEY, {"x": torch.ones(3)})
    store.get("m", "p", KEY)
    assert set(log.read_text().split()) == {str(_entry(store)[1])}


def _writer(root: str, seed: int, rounds: int) -> None:
    store = FeatureStore(root)
    for _ in range(rounds):
        # every writer computes the same (deterministic) value, as two processes extracting one entry would
        store.put("m", "p", KEY, {"x": torch.arange(200_000, dtype=torch.float32)})


@pytest.mark.reliability("fault", "two processes writing one cache entry: readers never see a torn entry")
def test_concurrent_writers_leave_a_valid_entry_and_readers_never_see_a_torn_one(tmp_path):
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_writer, args=(str(tmp_path), s, 15)) for s in range(2)]
    for p in procs:
        p.start()
    store, seen = FeatureStore(tmp_path), 0
    while any(p.is_alive() for p in procs):
        got = store.get("m", "p", KEY)
        if got is not None:         # whatever a reader sees mid-write is either nothing or the whole value
            assert torch.equal(got["x"], torch.arange(200_000, dtype=torch.float32))
            seen += 1
    for p in procs:
        p.join()
        assert p.exitcode == 0
    assert torch.equal(store.get("m", "p", KEY)["x"], torch.arange(200_000, dtype=torch.float32))
    assert not [f for f in os.listdir(tmp_path / "m") if f.endswith(".tmp")]



def test_memo_computes_once_and_keys_on_the_input_digest(tmp_path):
    from vitscope.extract.store import tensor_digest

    store, calls = FeatureStore(tmp_path), []
    x = torch.arange(12.0).reshape(3, 4)

    def compute():
        calls.append(1)
        return {"y": x.sum(0)}

    key = {"features": tensor_digest(x), "k": 2}
    assert torch.equal(store.memo("m", "derived", key, compute)["y"], x.sum(0))
    assert torch.equal(store.memo("m", "derived", key, compute)["y"], x.sum(0)) and len(calls) == 1
    # one changed value, a changed dtype or shape: another digest, so another entry
    assert tensor_digest(x) != tensor_digest(x.clone().index_fill_(0, torch.tensor([0]), 1.0))
    assert tensor_digest(x) != tensor_digest(x.double()) != tensor_digest(x.reshape(4, 3))
    assert tensor_digest(x) == tensor_digest(x.clone())

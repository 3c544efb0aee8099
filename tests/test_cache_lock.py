"""Two processes asking for the same missing cache entry: one computes, the other waits and reads it."""
from __future__ import annotations

import errno
import json
import multiprocessing
import shutil
import threading
import time

import pytest
import timm
import torch

from vitscope import locks
from vitscope.data import ImageFolderSubset, eval_transform
from vitscope.extract import AttentionDistance, FeatureStore, extract
from vitscope.extract import store as store_mod
from vitscope.models import Preprocess

KEY = {"features": "abc", "k": 3}
VALUE = torch.arange(1000, dtype=torch.float64)


def _memo_worker(root: str, counter: str, go: str, ready: str) -> None:
    from pathlib import Path

    Path(ready).touch()
    while not Path(go).exists():           # both processes ask at the same moment
        time.sleep(0.01)

    def compute():
        with open(counter, "a") as f:
            f.write("computed\n")
        time.sleep(2.0)                    # long enough that the other process asks while this one computes
        return {"y": VALUE.clone()}

    got = FeatureStore(root).memo("m", "kmeans", KEY, compute)
    assert torch.equal(got["y"], VALUE)


@pytest.mark.reliability("fault", "two processes asking for one missing cache entry: one computes, the other waits "
                                  "on the entry's lock and reads it")
def test_two_processes_compute_a_memo_entry_once(tmp_path):
    counter, go = tmp_path / "counter.txt", tmp_path / "go"
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=_memo_worker, args=(str(tmp_path / "store"), str(counter), str(go),
                                                    str(tmp_path / f"ready{i}"))) for i in range(2)]
    for p in procs:
        p.start()
    deadline = time.monotonic() + 120
    while not all((tmp_path / f"ready{i}").exists() for i in range(2)):
        assert time.monotonic() < deadline and all(p.is_alive() for p in procs)
        time.sleep(0.05)
    go.touch()
    for p in procs:
        p.join(120)
        assert p.exitcode == 0
    assert counter.read_text().splitlines() == ["computed"]
    assert torch.equal(FeatureStore(tmp_path / "store").get("m", "kmeans", KEY)["y"], VALUE)
    assert FeatureStore(tmp_path / "store").lock_path("m", "kmeans", KEY).is_file()   # left in place on purpose


@pytest.mark.reliability("fault", "a cache entry whose lock is held too long: a timeout error naming the lock file")
def test_lock_timeout_names_the_lock_file(tmp_path):
    store = FeatureStore(tmp_path, lock_timeout=0.3)
    lock = store.lock_path("m", "kmeans", KEY)
    calls = []
    with store_mod.file_lock(lock):               # another holder (its own open file: flock conflicts in-process)
        t0 = time.monotonic()
        with pytest.raises(TimeoutError, match=rf"0\.3 s for the lock file {lock}"):
            store.memo("m", "kmeans", KEY, lambda: calls.append(1) or {"y": VALUE})
        assert time.monotonic() - t0 >= 0.3
    assert calls == []
    assert torch.equal(store.memo("m", "kmeans", KEY, lambda: {"y": VALUE})["y"], VALUE)   # released: computes


class _NoFlock:
    LOCK_EX, LOCK_NB, LOCK_UN = 2, 4, 8

    @staticmethod
    def flock(fd, op):
        raise OSError(errno.ENOLCK, "No locks available")


@pytest.mark.reliability("fault", "a filesystem without flock (or no fcntl at all): entries are still computed and "
                                  "written whole")
@pytest.mark.parametrize("fcntl", [None, _NoFlock], ids=["no-fcntl", "flock-refused"])
def test_without_flock_memo_still_computes(tmp_path, monkeypatch, fcntl):
    monkeypatch.setattr(locks, "fcntl", fcntl)   # the lock lives in vitscope.locks
    store = FeatureStore(tmp_path)
    if fcntl is None:
        got = store.memo("m", "kmeans", KEY, lambda: {"y": VALUE})
    else:
        with pytest.warns(UserWarning, match="computing without a lock"):
            got = store.memo("m", "kmeans", KEY, lambda: {"y": VALUE})
    assert torch.equal(got["y"], VALUE) and torch.equal(store.get("m", "kmeans", KEY)["y"], VALUE)


def test_locks_of_overlapping_sets_are_taken_in_one_order(tmp_path):
    store = FeatureStore(tmp_path, lock_timeout=5)
    a, b = ("m", "p", {"a": 1}), ("m", "p", {"b": 2})
    order = []

    def hold(entries, tag):
        with store.locked(entries):
            order.append(tag)
            time.sleep(0.2)

    threads = [threading.Thread(target=hold, args=([a, b], 1)), threading.Thread(target=hold, args=([b, a], 2))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
        assert not t.is_alive(), "two lockers of the same entries in opposite orders deadlocked"
    assert sorted(order) == [1, 2]


def test_a_waiting_extraction_reads_the_entry_the_lock_holder_stored(synthetic_root, manifest, tmp_path):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3,
                              num_classes=0).eval()
    pre = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
    dataset = ImageFolderSubset(synthetic_root, manifest, eval_transform(pre), per_class=6, num_classes=5)

    def run(store):
        return extract(model, {"name": "tiny"}, dataset, {"ad": AttentionDistance()}, transform_id={"resize": 32},
                       store=store, batch_size=10, progress=False)

    first = run(FeatureStore(tmp_path / "a"))                     # the entry another process would compute
    [sidecar] = (tmp_path / "a" / "tiny").glob("*.json")
    key = json.loads(sidecar.read_text())["key"]
    waiting = FeatureStore(tmp_path / "b")
    calls, out = [], {}
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    with store_mod.file_lock(waiting.lock_path("tiny", "attention_distance", key)):
        thread = threading.Thread(target=lambda: out.update(run(waiting)))
        thread.start()
        time.sleep(1.0)
        assert thread.is_alive() and calls == []                  # it waits for the lock instead of computing
        shutil.copytree(tmp_path / "a" / "tiny", tmp_path / "b" / "tiny", dirs_exist_ok=True)
    thread.join(60)
    assert calls == []                                            # ... then reads what the holder stored
    assert torch.equal(out["ad"]["unit_square"], first["ad"]["unit_square"])

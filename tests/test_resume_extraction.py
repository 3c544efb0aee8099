"""A killed extraction resumes from its last shard, and its result equals an uninterrupted run's bit for bit."""
from __future__ import annotations

import json
import multiprocessing
import time

import pytest
import timm
import torch
from safetensors import safe_open

from vitscope.data import ImageFolderSubset, eval_transform, load_manifest
from vitscope.extract import AttentionDistance, ClsAttention, FeatureStore, GramMatrices, PooledTokens, extract
from vitscope.extract.attention_products import AlignedAttention, ClsMapStats, QueryAttention
from vitscope.models import Preprocess

TINY = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=0)
PRE = Preprocess(mean=(0.5,) * 3, std=(0.5,) * 3, resize=32, crop=32)
#: 30 images in batches of 6: five batches; the first half (15 images) ends inside the third batch and the 8
#: example maps of ClsMapStats span two batches, so a shard catches every kind of partial state.
BATCH = 6
N_BATCHES = 5


def _setup(root):
    torch.manual_seed(0)
    model = timm.create_model("vit_tiny_patch16_224", **TINY).eval()
    dataset = ImageFolderSubset(root, load_manifest("imagenet50"), eval_transform(PRE), per_class=6, num_classes=5)
    products = {"ad": AttentionDistance(), "cls": ClsAttention(), "pooled": PooledTokens(),
                "grams": GramMatrices(capture_sites=("block", "norm1")), "stats": ClsMapStats(n_examples=8),
                "aaam": AlignedAttention(), "queries": QueryAttention()}
    return model, dataset, products


def _run(model, dataset, products, store, **kw):
    return extract(model, {"name": "tiny"}, dataset, products, transform_id={"resize": 32}, store=store,
                   batch_size=BATCH, progress=False, **kw)


def _killed_worker(root: str, store_root: str) -> None:
    torch.set_num_threads(1)
    model, dataset, products = _setup(root)
    model.patch_embed.register_forward_pre_hook(lambda *_: time.sleep(1.0))   # slow enough to be killed midway
    _run(model, dataset, products, FeatureStore(store_root), shard_batches=1, shard_seconds=None)


@pytest.fixture
def one_thread():
    # bit-for-bit equality of float sums holds for the same thread count (the killed child runs on one thread)
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _count_batches(model) -> list:
    calls = []
    model.patch_embed.register_forward_pre_hook(lambda *_: calls.append(1))
    return calls


def _assert_identical(got: dict, want: dict) -> None:
    assert set(got) == set(want)
    for label in want:
        if label == "_meta":
            continue
        assert set(got[label]) == set(want[label]), label
        for name, tensor in want[label].items():
            assert torch.equal(got[label][name].nan_to_num(-7.0), tensor.nan_to_num(-7.0)), f"{label}/{name}"


@pytest.mark.reliability("fault", "an extraction killed (SIGKILL) midway resumes from its last shard; the result "
                                  "equals an uninterrupted run's bit for bit")
def test_killed_extraction_resumes_from_its_last_shard(synthetic_root, tmp_path, one_thread):
    store_root = tmp_path / "store"
    child = multiprocessing.get_context("spawn").Process(target=_killed_worker,
                                                         args=(str(synthetic_root), str(store_root)))
    child.start()
    deadline = time.monotonic() + 120
    while not list((store_root / "tiny").glob("shard-*.safetensors")):
        assert child.is_alive() and time.monotonic() < deadline, "the child ended before writing a shard"
        time.sleep(0.05)
    child.kill()                                                  # SIGKILL: no cleanup, no finally blocks
    child.join()
    assert child.exitcode == -9, "the extraction finished before it could be killed"
    [shard] = (store_root / "tiny").glob("shard-*.safetensors")
    with safe_open(str(shard), framework="pt") as f:
        saved_at = int(f.metadata()["next_batch"])
    assert 0 < saved_at < N_BATCHES
    assert not list((store_root / "tiny").glob("*.json")), "a killed run must not leave finished entries"

    model, dataset, products = _setup(synthetic_root)
    calls = _count_batches(model)
    resumed = _run(model, dataset, products, FeatureStore(store_root))
    assert len(calls) == N_BATCHES - saved_at                     # only the batches after the shard ran
    assert not list((store_root / "tiny").glob("shard-*")), "a finished extraction removes its shard"
    info = json.loads(next((store_root / "tiny").glob("attention_distance-*.json")).read_text())["info"]
    assert info["resumed_from_batch"] == saved_at

    model, dataset, products = _setup(synthetic_root)
    uninterrupted = _run(model, dataset, products, FeatureStore(tmp_path / "fresh"), shard_seconds=None)
    _assert_identical(resumed, uninterrupted)
    assert torch.equal(resumed["_meta"]["order"], uninterrupted["_meta"]["order"])


def test_resume_in_process_for_every_shard_position(synthetic_root, tmp_path, one_thread):
    """The same equality at every batch a shard can hold, without a subprocess: an exception stands in for the kill."""
    model, dataset, products = _setup(synthetic_root)
    want = _run(model, dataset, products, FeatureStore(tmp_path / "fresh"), shard_seconds=None)
    for stop in range(1, N_BATCHES):
        store = FeatureStore(tmp_path / f"stop{stop}")
        model, dataset, products = _setup(synthetic_root)
        seen = _count_batches(model)
        model.patch_embed.register_forward_pre_hook(
            lambda *_: (_ for _ in ()).throw(KeyboardInterrupt) if len(seen) > stop else None)
        with pytest.raises(KeyboardInterrupt):
            _run(model, dataset, products, store, shard_batches=1)
        model, dataset, products = _setup(synthetic_root)
        calls = _count_batches(model)
        _assert_identical(_run(model, dataset, products, store), want)
        assert len(calls) == N_BATCHES - stop


@pytest.mark.reliability("fault", "a damaged extraction shard is reported and ignored: the extraction starts over")
def test_a_damaged_shard_is_ignored(synthetic_root, tmp_path, one_thread):
    model, dataset, products = _setup(synthetic_root)
    want = _run(model, dataset, products, FeatureStore(tmp_path / "fresh"), shard_seconds=None)
    store = FeatureStore(tmp_path / "store")
    model, dataset, products = _setup(synthetic_root)
    seen = _count_batches(model)
    model.patch_embed.register_forward_pre_hook(
        lambda *_: (_ for _ in ()).throw(KeyboardInterrupt) if len(seen) > 2 else None)
    with pytest.raises(KeyboardInterrupt):
        _run(model, dataset, products, store, shard_batches=1)
    [shard] = (store.root / "tiny").glob("shard-*.safetensors")
    blob = bytearray(shard.read_bytes())
    blob[-3] ^= 0xFF                                      # one byte of one tensor: only the digest can tell
    shard.write_bytes(bytes(blob))
    model, dataset, products = _setup(synthetic_root)
    calls = _count_batches(model)
    with pytest.warns(UserWarning, match="damaged extraction shard"):
        got = _run(model, dataset, products, store)
    assert len(calls) == N_BATCHES
    _assert_identical(got, want)


def test_shards_are_keyed_by_the_request_and_never_written_by_default_on_a_short_run(synthetic_root, tmp_path):
    model, dataset, products = _setup(synthetic_root)
    store = FeatureStore(tmp_path)
    seen = _count_batches(model)
    model.patch_embed.register_forward_pre_hook(
        lambda *_: (_ for _ in ()).throw(KeyboardInterrupt) if len(seen) > 2 else None)
    with pytest.raises(KeyboardInterrupt):
        _run(model, dataset, {"ad": products["ad"]}, store, shard_batches=1)
    assert len(list((store.root / "tiny").glob("shard-*"))) == 1
    model, dataset, products = _setup(synthetic_root)
    calls = _count_batches(model)
    _run(model, dataset, {"ad": products["ad"], "cls": products["cls"]}, store)   # another request: from the start
    assert len(calls) == N_BATCHES
    assert len(list((store.root / "tiny").glob("shard-*"))) == 1      # the first request's shard is still there
    # the default (one shard a minute at most) writes none in a run of a second
    model, dataset, products = _setup(synthetic_root)
    _run(model, dataset, {"q": products["queries"]}, store)
    assert len(list((store.root / "tiny").glob("shard-*"))) == 1


def test_shard_state_round_trip_keeps_structure_and_refuses_bad_settings(tmp_path):
    store = FeatureStore(tmp_path)
    view = torch.arange(12.0).reshape(3, 4)[1]               # a view into a larger buffer
    state = {"a": {"rows": [torch.ones(2), view], "n": 3, "none": None, "pair": (1, 2.5), "name": "x"},
             "b": [[None, torch.zeros(1, dtype=torch.int64)]]}
    store.put_shard("m", {"k": 1}, state, 4)
    got, next_batch = store.get_shard("m", {"k": 1})
    assert next_batch == 4 and got["a"]["pair"] == (1, 2.5) and got["a"]["none"] is None and got["a"]["n"] == 3
    assert torch.equal(got["a"]["rows"][1], torch.tensor([4.0, 5.0, 6.0, 7.0])) and got["b"][0][0] is None
    assert store.get_shard("m", {"k": 2}) is None
    with pytest.raises(TypeError, match="str keys"):
        store.put_shard("m", {"k": 1}, {("tuple", "key"): 1}, 1)
    product = AttentionDistance()
    with pytest.raises(ValueError, match="shard_batches must be > 0"):
        extract(None, {"name": "x"}, _FakeData(), {"ad": product}, transform_id={}, store=store, batch_size=2,
                progress=False, shard_batches=0)


class _FakeData:
    """Enough of a dataset for extract's checks before the forward pass."""

    root = "/"
    samples = []
    per_class = 1
    classes = ["a"]
    labels = torch.zeros(2, dtype=torch.long)

    class manifest:
        name = "fake"

    def __len__(self):
        return 2

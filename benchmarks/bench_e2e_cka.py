"""End to end: all-pairs block CKA among the six mini-zoo models on the demo's 480 images (15 minibatches of 32),
vitscope (one extraction per model into a fresh feature store, then every pair from the stored Grams) vs
pytorch-cka 1.1.3 run per pair, as a researcher would (its ``compute_cka(model1, model2, loader)``), on the same
images in the same order. Target: >= 5x (one extraction per model makes 6x the ceiling for 21 pairs)."""
from __future__ import annotations

import itertools
import tempfile
import time

from common import record
from torch.utils.data import DataLoader, Subset

from vitscope.data import transform_key
from vitscope.extract import FeatureStore, GramMatrices, example_order, extract, stack_batches
from vitscope.kernels import cka as cka_k
from vitscope.models import get_cfg, load_model
from vitscope.profiles import load_profile
from vitscope.sections.common import model_identity

ZOO = ("zoo-supervised", "zoo-clip", "zoo-dino", "zoo-mocov3", "zoo-mae", "zoo-beit")


def run(models=ZOO, n_images: int = 480, batch: int = 32, seed: int = 0) -> list[dict]:
    from cka import compute_cka  # pytorch-cka's import name is ``cka``
    profile = load_profile("demo")
    preprocess = {get_cfg(m).preprocess for m in models}
    if len(preprocess) != 1:
        raise RuntimeError(f"the zoo models must share one eval transform for one loader; got {preprocess}")
    dataset = profile.dataset("imagenet50", next(iter(preprocess)))
    idx = example_order(len(dataset), "shuffled", seed)[:n_images]
    nets = {m: load_model(m) for m in models}
    depth = {m: len(nets[m].blocks) for m in models}

    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as cache:
        store = FeatureStore(cache)
        grams = {}
        for m in models:
            out = extract(nets[m], model_identity(m), dataset, {"g": GramMatrices(capture_sites=("block",))},
                          transform_id=transform_key(get_cfg(m).preprocess), store=store, batch_size=batch,
                          seed=seed, limit=n_images, progress=False)
            grams[m] = stack_batches(out["g"])
        ours = {(a, b): cka_k.minibatch_cka_from_grams(grams[a], grams[b])
                for a, b in itertools.combinations_with_replacement(models, 2)}
    ours_s = time.perf_counter() - t0

    loader = DataLoader(Subset(dataset, idx.tolist()), batch_size=batch, shuffle=False)
    t0 = time.perf_counter()
    theirs = {}
    for a, b in itertools.combinations_with_replacement(models, 2):
        layers_a = [f"blocks.{i}" for i in range(depth[a])]
        layers_b = [f"blocks.{i}" for i in range(depth[b])]
        theirs[(a, b)] = compute_cka(nets[a], nets[b], loader, layers=layers_a, model2_layers=layers_b,
                                     device="cpu", progress=False)[0]
    theirs_s = time.perf_counter() - t0
    # pytorch-cka clamps to [0, 1] and works in float32: compare on the clamped values
    diff = max(float((ours[k].clamp(0, 1) - theirs[k].double()).abs().max()) for k in ours)
    return [record("e2e_all_pairs_cka_vs_pytorch_cka", ours_s, "pytorch-cka 1.1.3 per pair", theirs_s, diff, 1e-4,
                   "ratio >= 5", 5.0, models=len(models), pairs=len(ours), images=n_images, batch=batch)]

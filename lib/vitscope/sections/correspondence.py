"""SPair-71k keypoint correspondence after every block: Teaching Matters §6.2 (Fig. 10 right) and Table 1's PCK column.

Data: :mod:`vitscope.data.spair` (the real layout, or its twin written by :mod:`vitscope.data.twins.spair`); kernels:
:mod:`vitscope.kernels.correspondence` (letterbox, nearest-neighbour matching of upsampled unit tokens, PCK, the
mean over categories) and, for the claims, :func:`vitscope.claims.verdict.paired_contrast`.

Protocol (the profile's ``keypoints`` section): the split's pairs, at most ``pairs_per_category`` per category
(seed ``seed``); each image letterboxed to the model's input size; per block, the spatial tokens matched by
:func:`~vitscope.kernels.correspondence.nearest_neighbour_keypoints`; PCK@α for every α, per category over its
keypoints, then the mean over categories. The random-chance reference (TM §6) runs the same matching on Gaussian
noise in place of the tokens.

Extraction streams: pairs are taken ``chunk`` at a time, their images go through the network once per chunk, and
each block's tokens are matched the moment the block returns and then dropped (a ViT-B block of 1 800 images at 224
pixels would be gigabytes). What is cached (:meth:`FeatureStore.memo`) is only the predicted target pixel of every
keypoint at every block, keyed by the model, the selected pairs' files and the protocol, so a rebuild reads it.
"""
from __future__ import annotations

import hashlib
import zlib

import numpy as np
import pandas as pd
import torch
from PIL import Image

from ..claims.baseline import noise_seeds, untrained_baseline
from ..claims.verdict import ClaimResult, cannot_check, group_weights, judge_contrast, judge_depth_contrast
from ..data.spair import load_pairs
from ..data.twins.spair import write_spair_twin
from ..devices import resolve_device
from ..extract import Capture, FeatureStore, vit_geometry
from ..extract.run import library_versions
from ..kernels import correspondence as kc
from ..profiles import Profile
from .common import load_for_analysis

SECTION = "keypoints"
DEFAULTS = {"split": "test", "pairs_per_category": 20, "seed": 42, "alphas": list(kc.ALPHAS), "alpha": 0.1,
            "similarity": "cosine"}
#: Pairs per forward pass: bounds memory (images of a chunk x one block's tokens) whatever the data set's size.
CHUNK_PAIRS = 16
#: Name of the Gaussian-noise reference in the tables, and its seed.
NOISE = "noise"
NOISE_SEED = 0
#: Bump when what is cached changes meaning.
PRODUCT_VERSION = 1


def protocol(profile: Profile) -> dict:
    """The profile's ``keypoints`` section with defaults: ``dataset, split, pairs_per_category, seed, alphas, alpha,
    similarity``."""
    p = {**DEFAULTS, **profile.section(SECTION)}
    p["alphas"] = [float(a) for a in p["alphas"]]
    p["alpha"] = float(p["alpha"])
    if p["alpha"] not in p["alphas"]:
        raise ValueError(f"Profile {profile.name!r}: {SECTION}.alpha={p['alpha']} (the reported α) is not in "
                         f"{SECTION}.alphas={p['alphas']}")
    if p["similarity"] not in kc.SIMILARITIES:
        raise ValueError(f"Profile {profile.name!r}: {SECTION}.similarity={p['similarity']!r}; choose from "
                         f"{kc.SIMILARITIES}")
    return p


def pairs(profile: Profile) -> list:
    """The selected :class:`~vitscope.data.spair.SpairPair` list (writing the synthetic twin first where due)."""
    p = protocol(profile)
    spec = profile.dataset_spec(p["dataset"], named_by="keypoints.dataset")
    root = profile.dataset_root(p["dataset"])
    if "synthetic" in spec:
        write_spair_twin(root, **(spec["synthetic"] or {}))
    return load_pairs(root, p["split"], p["pairs_per_category"], p["seed"])


def data_identity(selected) -> dict:
    """What identifies the selected pairs on disk: names, and a digest of their annotations and images' sizes."""
    h = hashlib.sha256()
    for pair in selected:
        h.update(f"{pair.name}|{pair.src_kps.tobytes().hex()}|{pair.trg_kps.tobytes().hex()}|{pair.trg_bbox}|".encode())
        for path in (pair.src_image, pair.trg_image):
            st = path.stat()
            h.update(f"{path.name}|{st.st_size}|{st.st_mtime_ns}\n".encode())
    return {"n_pairs": len(selected), "files": h.hexdigest()[:16]}


def letterbox_image(image: Image.Image, size: int, interpolation: str = "bicubic") -> Image.Image:
    """``image`` letterboxed into a black ``size x size`` square as
    :func:`~vitscope.kernels.correspondence.letterbox_geometry` places it."""
    resample = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "nearest": Image.NEAREST}
    if interpolation not in resample:
        raise ValueError(f"Unknown interpolation {interpolation!r}; choose from {sorted(resample)}")
    box = kc.letterbox_geometry(image.height, image.width, size)
    canvas = Image.new("RGB", (size, size))
    canvas.paste(image.convert("RGB").resize((box.new_w, box.new_h), resample[interpolation]),
                 (box.pad_left, box.pad_top))
    return canvas


def _source_points(pair, size) -> torch.Tensor:
    w, h = pair.src_size
    return kc.letterbox_points(torch.from_numpy(pair.src_kps), kc.letterbox_geometry(h, w, size))


def _image_tensor(path, preprocess) -> torch.Tensor:
    from torchvision.transforms import functional as TF
    with Image.open(path) as im:
        boxed = letterbox_image(im, preprocess.crop, preprocess.interpolation)
    return TF.normalize(TF.to_tensor(boxed), preprocess.mean, preprocess.std)


def _match_chunk(chunk, index, block_tokens, size, similarity, out, block):
    """Write the predictions of every pair of ``chunk`` at ``block`` into ``out`` ([depth, K_total, 2])."""
    for pair, start in chunk:
        src, trg = block_tokens[index[pair.src_image]], block_tokens[index[pair.trg_image]]
        pred = kc.nearest_neighbour_keypoints(src, trg, _source_points(pair, size), size=size, similarity=similarity)
        out[block, start:start + len(pred)] = pred


def _predict(net, selected, preprocess, similarity, device, progress) -> torch.Tensor:
    """[depth, K_total, 2] int64 predicted target pixels (letterboxed frame) of every keypoint at every block."""
    from tqdm import tqdm
    geo = vit_geometry(net)
    gh, gw = geo["grid"]
    starts = np.concatenate([[0], np.cumsum([len(p.src_kps) for p in selected])])
    out = torch.zeros(geo["depth"], int(starts[-1]), 2, dtype=torch.int64)
    net = net.to(device).eval()
    jobs = list(zip(selected, starts[:-1].tolist()))
    chunks = [jobs[i:i + CHUNK_PAIRS] for i in range(0, len(jobs), CHUNK_PAIRS)]
    for chunk in tqdm(chunks, desc="keypoints", disable=not progress, unit="chunk"):
        paths = list(dict.fromkeys(p for pair, _ in chunk for p in (pair.src_image, pair.trg_image)))
        index = {p: i for i, p in enumerate(paths)}
        images = torch.stack([_image_tensor(p, preprocess) for p in paths]).to(device)

        def sink(site, block, x, chunk=chunk, index=index):     # one block's tokens, matched then dropped
            tokens = x[:, geo["n_prefix"]:].float().transpose(1, 2).reshape(x.shape[0], -1, gh, gw)
            _match_chunk(chunk, index, tokens, preprocess.crop, similarity, out, block)

        with torch.inference_mode(), Capture(net, {"block"}, sink=sink) as cap:
            net.forward_features(images)
            cap.collect()
    return out


def _noise_predict(selected, geometry, size, similarity) -> torch.Tensor:
    """[1, K_total, 2]: the same matching on Gaussian noise tokens [D, gh, gw], one draw per image (seeded by
    :data:`NOISE_SEED` and the image's name)."""
    d, (gh, gw) = geometry["embed_dim"], geometry["grid"]

    def noise(path):
        g = torch.Generator().manual_seed(NOISE_SEED * 1_000_003 + zlib.crc32(str(path.name).encode()))
        return torch.randn(d, gh, gw, generator=g)
    preds = [kc.nearest_neighbour_keypoints(noise(p.src_image), noise(p.trg_image), _source_points(p, size),
                                            size=size, similarity=similarity) for p in selected]
    return torch.cat(preds)[None]


def predictions(model: str, profile: Profile, *, weights=None, device=None, store=None,
                progress: bool = False) -> tuple[list, dict[str, torch.Tensor]]:
    """``(pairs, {"pred": [depth, K_total, 2], "noise": [1, K_total, 2]})`` for ``model``, from the cache when the
    model, the pairs' files and the protocol are unchanged. Keypoints of all pairs are concatenated in pair order."""
    from ..models import get_cfg
    p = protocol(profile)
    selected = pairs(profile)
    cfg = get_cfg(model)
    store = store or FeatureStore()
    key = {"model": cfg.identity(weights), "data": data_identity(selected), "split": p["split"],
           "pairs_per_category": p["pairs_per_category"], "seed": p["seed"], "similarity": p["similarity"],
           "letterbox": {"size": cfg.preprocess.crop, "fill": "black", "interpolation": cfg.preprocess.interpolation},
           "noise_seed": NOISE_SEED, "versions": library_versions(), "product_version": PRODUCT_VERSION}

    def compute():
        dev = resolve_device(device or profile.device)
        net, _, _ = load_for_analysis(model, weights, dev)
        pred = _predict(net, selected, cfg.preprocess, p["similarity"], dev, progress)
        return {"pred": pred, "noise": _noise_predict(selected, vit_geometry(net), cfg.preprocess.crop,
                                                      p["similarity"])}
    return selected, store.memo(model, "keypoint_nn", key, compute)


def _hits(selected, pred: torch.Tensor, size: int, alphas) -> np.ndarray:
    """[blocks, A, P] correct keypoints per pair; and the per-pair totals come from the pairs."""
    out = np.zeros((pred.shape[0], len(alphas), len(selected)), dtype=np.int64)
    start = 0
    for i, pair in enumerate(selected):
        k = len(pair.trg_kps)
        w, h = pair.trg_size
        box = kc.letterbox_geometry(h, w, size)
        gt = kc.letterbox_points(torch.from_numpy(pair.trg_kps), box)
        bbox = kc.letterbox_bbox(pair.trg_bbox, box)
        for b in range(pred.shape[0]):
            out[b, :, i] = kc.keypoint_hits(pred[b, start:start + k], gt, bbox, alphas).sum(dim=1).numpy()
        start += k
    return out


def per_pair(model: str, profile: Profile, *, weights=None, device=None, store=None,
             progress: bool = False) -> pd.DataFrame:
    """Per pair, block and α: correct keypoints and keypoints. Columns ``model, block, alpha, pair, category,
    correct, total``; block 0 holds the Gaussian-noise reference (model ``noise``), blocks are 1-based."""
    from ..models import get_cfg
    p = protocol(profile)
    selected, res = predictions(model, profile, weights=weights, device=device, store=store, progress=progress)
    size = get_cfg(model).preprocess.crop
    totals = np.array([len(x.trg_kps) for x in selected])
    cats = [x.category for x in selected]
    frames = []
    for name, pred, first in ((model, res["pred"], 1), (NOISE, res["noise"], 0)):
        hits = _hits(selected, pred, size, p["alphas"])
        for b in range(hits.shape[0]):
            for a, alpha in enumerate(p["alphas"]):
                frames.append(pd.DataFrame({"model": name, "block": b + first, "alpha": alpha,
                                            "pair": np.arange(len(selected)), "category": cats,
                                            "correct": hits[b, a], "total": totals}))
    table = pd.concat(frames, ignore_index=True)
    table.attrs["noise_of"] = model
    return table


def summarise(pairs_table: pd.DataFrame) -> pd.DataFrame:
    """Per model, block and α from :func:`per_pair` rows: ``pck`` (mean over categories), ``n_pairs``,
    ``n_keypoints``, ``n_categories``."""
    rows = []
    for (model, block, alpha), g in pairs_table.groupby(["model", "block", "alpha"], sort=False):
        rows.append({"model": model, "block": int(block), "alpha": float(alpha),
                     "pck": kc.category_mean(g.correct.to_numpy(), g.total.to_numpy(), g.category.tolist()),
                     "n_pairs": len(g), "n_keypoints": int(g.total.sum()), "n_categories": g.category.nunique()})
    return pd.DataFrame(rows)


def compute(model: str, profile: Profile, *, weights=None, device=None, store=None,
            progress: bool = False) -> pd.DataFrame:
    """PCK of ``model`` after every block at every α of the protocol. Columns ``model, block, alpha, pck, n_pairs,
    n_keypoints, n_categories, noise`` (the same protocol on Gaussian noise tokens)."""
    pp = per_pair(model, profile, weights=weights, device=device, store=store, progress=progress)
    table = summarise(pp[pp.model == model])
    noise = summarise(pp[pp.model == NOISE]).set_index("alpha").pck
    table["noise"] = table.alpha.map(noise)
    return table


def best_per_model(table: pd.DataFrame, alpha: float = 0.1) -> pd.DataFrame:
    """For Table 1: per model at ``alpha``, the best block and its PCK, the last block and its PCK, and the noise.
    Columns ``model, best_block, best, last_block, last, noise``."""
    sel = table[np.isclose(table.alpha, alpha)]
    if sel.empty:
        raise ValueError(f"no rows at alpha={alpha}; the table has alphas {sorted(set(table.alpha))}")
    rows = []
    for model, g in sel.groupby("model", sort=False):
        g = g.sort_values("block")
        best = g.loc[g.pck.idxmax()]
        rows.append({"model": model, "best_block": int(best.block), "best": float(best.pck),
                     "last_block": int(g.block.iloc[-1]), "last": float(g.pck.iloc[-1]),
                     "noise": float(g.noise.iloc[0]) if "noise" in g else float("nan")})
    return pd.DataFrame(rows)


# ---------------------------------------------------------------------------------------------------- claims

def _values(pp: pd.DataFrame, model: str, block: int, alpha: float) -> torch.Tensor:
    """[P] per-pair values at ``block`` whose mean is the category-mean PCK (:func:`kc.pair_values`)."""
    g = pp[(pp.model == model) & (pp.block == block) & np.isclose(pp.alpha, alpha)].sort_values("pair")
    return kc.pair_values(g.correct.to_numpy(), g.total.to_numpy(), g.category.tolist())


def _best_block(pp: pd.DataFrame, model: str, alpha: float, exclude_last: bool = False) -> int:
    g = summarise(pp[(pp.model == model) & np.isclose(pp.alpha, alpha)])
    if exclude_last:
        g = g[g.block < g.block.max()]
    return int(g.loc[g.pck.idxmax()].block)


def check(pp: pd.DataFrame, seeds=(), alpha: float = 0.1) -> list[ClaimResult]:
    """TM-6.2b and the keypoint half of TM-T1b on :func:`per_pair` rows of several models (PCK@``alpha``).

    TM-6.2b: the image-text (CLIP) model at its best block minus the mean of the other trained models at theirs
    (expected > 0); beyond the untrained model's best block in CLIP's place; seed floor from the seeds' best blocks.
    TM-T1b: per trained model, its best block before the last minus its last block (expected > 0: a local task peaks
    a few layers before the last), beyond the same contrast of the untrained model. Both pick the best block on the
    pairs they are judged on (the paper's Table 1 does the same), which favours a positive effect; the untrained
    model's contrast, picked the same way, is what it must exceed.
    """
    from ..models import get_cfg
    names = [m for m in dict.fromkeys(pp.model) if m != NOISE]
    family = {m: get_cfg(m).family for m in names}
    trained = [m for m in names if family[m] != "random"]
    base = untrained_baseline(names)
    best = {m: _best_block(pp, m, alpha) for m in names}
    at_best = {m: _values(pp, m, best[m], alpha) for m in names}
    seed_best = torch.stack([at_best[s].mean() for s in seeds]) if seeds else None
    out = []
    clip = [m for m in trained if family[m] == "image-text"]
    others = [m for m in trained if family[m] != "image-text"]
    if not clip or not others:
        out.append(cannot_check("TM-6.2b", "CLIP minus the other trained models", "the profile lacks an "
                                "image-text (CLIP) model or any other trained model"))
    else:
        w, beyond = group_weights(clip[:1], others, base)
        out.append(judge_contrast("TM-6.2b", f"{clip[0]} minus the other trained models",
                                  f"PCK@{alpha:g} at each model's best block", at_best, w, beyond, 1, base,
                                  seed_best, seeds, unit="pairs"))
    def last_and_best_earlier(m):
        return int(pp[pp.model == m].block.max()), _best_block(pp, m, alpha, exclude_last=True)

    for m in trained:
        last, earlier = last_and_best_earlier(m)
        out.append(judge_depth_contrast(
            "TM-T1b", f"SPair keypoints, {m}",
            f"best block before the last ({earlier}) minus the last ({last}), PCK@{alpha:g}",
            lambda model, block: _values(pp, model, block, alpha), last_and_best_earlier, m, base, seeds, sign=-1.0,
            unit="pairs"))
    return out


def check_claims(models: list[str] | None, profile: Profile, *, weights=None, device=None, store=None,
                 progress: bool = False) -> list[ClaimResult]:
    """TM 6.2 (Fig. 10 right) and Table 1's local-task reading on ``models`` (default: the profile's); see
    :func:`check`."""
    seeds = noise_seeds(profile)
    weights = weights or {}
    frames = [per_pair(m, profile, weights=weights.get(m), device=device, store=store, progress=progress)
              for m in dict.fromkeys(list(models or profile.models) + seeds)]
    pp = pd.concat(frames, ignore_index=True)
    pp = pp[(pp.model != NOISE)]
    return check(pp, seeds, protocol(profile)["alpha"])

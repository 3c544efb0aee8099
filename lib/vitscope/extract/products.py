"""What extraction stores: small, streamed summaries of a forward pass, one class per consumer.

Keeping 5000 images x 13 layers x 197 tokens x 768 floats is out of the question, so each product reduces a
batch of captured tensors as it streams past (through the pure functions of :mod:`vitscope.kernels`) and
keeps only what its analyses need. Each product names its capture sites and its cache-key fields.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass

import torch

from ..kernels import attention as attention_k
from ..kernels import cka as cka_k

#: Bump when a product's numbers would change for the same inputs: it is part of every cache key.
PRODUCT_VERSION = 1


class Product:
    """Base class. Subclasses are frozen dataclasses whose fields are their parameters."""

    name: str = ""
    sites: tuple[str, ...] = ()

    def key(self) -> dict:
        return {"product": self.name, "version": PRODUCT_VERSION, **asdict(self)}

    def start(self, geometry: dict, n_images: int) -> None:
        self.geometry, self.n_images = geometry, n_images

    def update(self, captured: dict[str, list[torch.Tensor]]) -> None:
        raise NotImplementedError

    def finish(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError


@dataclass
class AttentionDistance(Product):
    """Average attention distance per image, block and head (TM 4.3), both variants.

    Stores ``unit_square`` and ``pixels``: float32 [N, L, H] (unit-square and pixel units).
    """

    name = "attention_distance"
    sites = ("attn",)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._rows = {"unit_square": [], "pixels": []}

    def update(self, captured):
        g = self.geometry
        attn = torch.stack(captured["attn"], dim=1)                     # [B, L, H, T, T]
        b, L = attn.shape[:2]
        flat = attn.flatten(0, 1)                                         # [B*L, H, T, T]
        for key, variant in (("unit_square", "teaching-matters"), ("pixels", "pixels")):
            d = attention_k.attention_distance(flat, n_prefix=g["n_prefix"], variant=variant,
                                               patch_size=g["patch_size"])
            self._rows[key].append(d.reshape(b, L, -1).float().cpu())

    def finish(self):
        return {k: torch.cat(v) for k, v in self._rows.items()}


@dataclass
class ClsAttention(Product):
    """Mean CLS attention map over images (TM 4.1): ``mean`` float32 [L, H, G, G]."""

    name = "cls_attention"
    sites = ("attn",)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._sum, self._count = None, 0

    def update(self, captured):
        maps = torch.stack([attention_k.cls_attention_map(a, n_prefix=self.geometry["n_prefix"]).sum(0)
                            for a in captured["attn"]])                    # [L, H, G, G]
        self._sum = maps.double().cpu() if self._sum is None else self._sum + maps.double().cpu()
        self._count += captured["attn"][0].shape[0]

    def finish(self):
        return {"mean": (self._sum / self._count).float()}


@dataclass
class PooledTokens(Product):
    """Per-image pooled tokens of every block: ``cls`` and ``mean`` (of spatial tokens), float32 [N, L, D]."""

    site: str = "block"
    name = "pooled"

    @property
    def sites(self):
        return (self.site,)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._cls, self._mean = [], []

    def update(self, captured):
        x = torch.stack(captured[self.site], dim=1)                       # [B, L, T, D]
        p = self.geometry["n_prefix"]
        self._cls.append(x[:, :, 0].float().cpu())
        self._mean.append(x[:, :, p:].mean(dim=2).float().cpu())

    def finish(self):
        return {"cls": torch.cat(self._cls), "mean": torch.cat(self._mean)}


TOKEN_REDUCTIONS = ("all", "cls", "mean")


@dataclass
class GramMatrices(Product):
    """Per-batch linear Gram matrices of several sites, for minibatch CKA (OM App. B.1).

    Every extraction batch is one CKA minibatch, so the batches of two models line up when both are
    extracted with the same order and batch size. Stores ``batch0000``, ``batch0001``, ...: float64
    [S*L, b, b] with rows ordered site-major (all blocks of ``sites[0]``, then ``sites[1]``, ...).

    ``tokens``: ``"all"`` flattens every token of an image into one vector (as the Teaching Matters code
    does), ``"cls"`` keeps the CLS token, ``"mean"`` the mean of spatial tokens.
    """

    capture_sites: tuple[str, ...] = ("block",)
    tokens: str = "all"
    name = "grams"

    def __post_init__(self):
        if self.tokens not in TOKEN_REDUCTIONS:
            raise ValueError(f"tokens={self.tokens!r}; choose from {TOKEN_REDUCTIONS}.")
        if "attn" in self.capture_sites:
            raise ValueError("Gram matrices of attention maps are not a CKA layer; drop 'attn' from sites.")

    @property
    def sites(self):
        return tuple(self.capture_sites)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._batches = []

    def _reduce(self, x: torch.Tensor) -> torch.Tensor:
        if self.tokens == "cls":
            return x[:, 0]
        if self.tokens == "mean":
            return x[:, self.geometry["n_prefix"]:].mean(dim=1)
        return x.flatten(1)

    def update(self, captured):
        grams = [cka_k.gram(self._reduce(x)) for site in self.capture_sites for x in captured[site]]
        self._batches.append(torch.stack(grams).cpu())

    def finish(self):
        return {f"batch{i:04d}": g for i, g in enumerate(self._batches)}


def layer_labels(product: GramMatrices, depth: int) -> list[tuple[str, int]]:
    """``(site, block)`` of each row of a :class:`GramMatrices` stack, blocks 1-based: ``[("block", 1), ...]``."""
    return [(site, i + 1) for site in product.capture_sites for i in range(depth)]


def stack_batches(result: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The per-batch Gram stacks of a stored :class:`GramMatrices` result, in batch order."""
    return [result[k] for k in sorted(k for k in result if k.startswith("batch"))]

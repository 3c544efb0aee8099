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


class Product:
    """Base class: a mutable accumulator whose dataclass fields are its parameters (they enter the cache key).

    Extraction streams each captured tensor to :meth:`consume` as soon as its block has run, so only one block's
    tensors are alive at a time and peak memory does not depend on the number of images or of blocks.
    Call order: ``start`` once, then per batch ``begin_batch``, ``consume`` for every (site, block), ``end_batch``;
    ``finish`` returns the tensors to store.
    """

    name: str = ""
    sites: tuple[str, ...] = ()
    #: Bump when this product's numbers would change for the same inputs: it is part of its cache key.
    version: int = 1
    #: The fewest images a batch may hold for this product (the last batch of an extraction may be smaller).
    min_batch: int = 1
    #: Whether the product reads the CLS token (token 0): refused on a model without one (``class_token=False``).
    reads_cls: bool = False
    #: The attributes holding what has been accumulated so far, between batches (everything else is set up by
    #: ``start``): what an extraction shard saves to resume. ``None``: not resumable (its extractions write no shard).
    state_fields: tuple[str, ...] | None = None

    def key(self) -> dict:
        return {"product": self.name, "version": self.version, **asdict(self)}

    def start(self, geometry: dict, n_images: int) -> None:
        self.geometry, self.n_images = geometry, n_images

    def begin_batch(self, batch_size: int) -> None:
        self._batch_size = batch_size

    def consume(self, site: str, block: int, x: torch.Tensor) -> None:
        raise NotImplementedError

    def end_batch(self) -> None:
        pass

    def finish(self) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def state_dict(self) -> dict:
        """The accumulated state between two batches (:attr:`state_fields`), to save in an extraction shard."""
        if self.state_fields is None:
            raise NotImplementedError(f"{type(self).__name__} declares no state_fields: it cannot be resumed")
        return {name: getattr(self, name) for name in self.state_fields}

    def load_state_dict(self, state: dict) -> None:
        """Restore :meth:`state_dict` into this product right after :meth:`start` (same geometry and image count);
        the batches that follow then accumulate exactly as in an uninterrupted run."""
        if self.state_fields is None or set(state) != set(self.state_fields):
            raise ValueError(f"{type(self).__name__}: a saved state holds {sorted(state)}, expected "
                             f"{sorted(self.state_fields or ())}; the shard belongs to another version of it")
        for name in self.state_fields:
            setattr(self, name, state[name])


@dataclass
class AttentionDistance(Product):
    """Average attention distance per image, block and head (TM 4.3) by both methods of
    :data:`vitscope.kernels.attention.METHODS`, from one pass over each attention map
    (:func:`~vitscope.kernels.attention.attention_distances`).

    Stores ``unit_square`` and ``pixels``: float32 [N, L, H].
    """

    name = "attention_distance"
    sites = ("attn",)
    version = 3      # 2: single pass, float32 row sums, float64 query means (within 1e-6 of 1); 3: sums by one bmm
    state_fields = ("_rows",)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._rows = {method: [] for method in attention_k.METHODS}

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._batch = {method: [None] * self.geometry["depth"] for method in attention_k.METHODS}

    def consume(self, site, block, x):
        g = self.geometry
        # The map is the model's own softmax output: checking its rows sum to 1 would cost two more passes over
        # [B, H, T, T] per block. A NaN/Inf map still yields a NaN/Inf distance, checked in end_batch on the
        # [B, L, H] values. Results stay on the model's device until then: one transfer (and GPU sync) per batch.
        distances = attention_k.attention_distances(x, g["n_prefix"], g["patch_size"], check_probabilities=False)
        for method, d in distances.items():
            self._batch[method][block] = d.float()

    def end_batch(self):
        for method, per_block in self._batch.items():
            rows = torch.stack(per_block, dim=1)                                  # [B, L, H]
            if not bool(torch.isfinite(rows).all()):
                bad = sorted({int(b) for b in torch.nonzero(~torch.isfinite(rows))[:, 1]})
                raise ValueError(f"block(s) {bad}: the captured attention maps hold NaN or Inf values (a diverged "
                                 "model or a reduced-precision overflow); check the model's weights and autocast")
            self._rows[method].append(rows.cpu())

    def finish(self):
        return {k: torch.cat(v) for k, v in self._rows.items()}


@dataclass
class ClsAttention(Product):
    """Mean CLS attention map over images (TM 4.1): ``mean`` float32 [L, H, G, G]."""

    name = "cls_attention"
    sites = ("attn",)
    reads_cls = True
    state_fields = ("_sum", "_count")

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._sum, self._count = None, 0

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._count += batch_size

    def consume(self, site, block, x):
        if self._sum is None:
            G = self.geometry["grid"][0]
            self._sum = torch.zeros(self.geometry["depth"], x.shape[1], G, G, dtype=torch.float64)
        self._sum[block] += attention_k.cls_attention_map(x, n_prefix=self.geometry["n_prefix"]).sum(
            0, dtype=torch.float64).cpu()

    def finish(self):
        return {"mean": (self._sum / self._count).float()}


@dataclass
class PooledTokens(Product):
    """Per-image pooled tokens of every block: ``cls`` and ``mean`` (of spatial tokens), float32 [N, L, D]."""

    site: str = "block"
    name = "pooled"
    reads_cls = True
    state_fields = ("_cls", "_mean")

    @property
    def sites(self):
        return (self.site,)

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._cls, self._mean = [], []

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._cls.append([None] * self.geometry["depth"])
        self._mean.append([None] * self.geometry["depth"])

    def consume(self, site, block, x):
        self._cls[-1][block] = x[:, 0].float()                    # to the CPU once per batch, in end_batch
        self._mean[-1][block] = x[:, self.geometry["n_prefix"]:].mean(dim=1, dtype=torch.float32)

    def end_batch(self):
        self._cls[-1] = torch.stack(self._cls[-1], dim=1).cpu()
        self._mean[-1] = torch.stack(self._mean[-1], dim=1).cpu()

    def finish(self):
        return {"cls": torch.cat(self._cls), "mean": torch.cat(self._mean)}


TOKEN_REDUCTIONS = ("all", "cls", "mean", "spatial")


@dataclass
class GramMatrices(Product):
    """Per-batch linear Gram matrices of several sites, for minibatch CKA (OM App. B.1).

    Every extraction batch is one CKA minibatch, so the batches of two models line up when both are
    extracted with the same order and batch size. Stores ``batch0000``, ``batch0001``, ...: float64
    [S*L, b, b] with rows ordered site-major (all blocks of ``sites[0]``, then ``sites[1]``, ...).

    ``tokens``: ``"all"`` flattens every token of an image into one vector (as the Teaching Matters code
    does), ``"cls"`` keeps the CLS token, ``"mean"`` the mean of spatial tokens, ``"spatial"`` flattens the
    spatial tokens only (CLS and any other prefix token dropped: the Teaching Matters code's ``spat`` mode, TM 5.1).
    """

    capture_sites: tuple[str, ...] = ("block",)
    tokens: str = "all"
    name = "grams"
    version = 3      # 3: "all" tokens via cka.gram_tokens (chunked centred float32 matmuls, float64 recombination)
    #: Each batch is one HSIC_1 minibatch, so it must hold HSIC_1's minimum number of examples.
    min_batch = cka_k.HSIC1_MIN_N
    state_fields = ("_batches",)

    def __post_init__(self):
        if self.tokens not in TOKEN_REDUCTIONS:
            raise ValueError(f"tokens={self.tokens!r}; choose from {TOKEN_REDUCTIONS}.")
        if "attn" in self.capture_sites:
            raise ValueError("Gram matrices of attention maps are not a CKA layer; drop 'attn' from sites.")

    @property
    def sites(self):
        return tuple(self.capture_sites)

    @property
    def reads_cls(self):
        return self.tokens == "cls"

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._batches = []

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._rows = {}

    def consume(self, site, block, x):
        if self.tokens == "all":
            g = cka_k.gram_tokens(x, check_finite=False)            # checked once per batch, in end_batch
        elif self.tokens == "spatial":
            g = cka_k.gram_tokens(x[:, self.geometry["n_prefix"]:], check_finite=False)
        elif self.tokens == "cls":
            g = cka_k.gram(x[:, 0])
        else:
            g = cka_k.gram(x[:, self.geometry["n_prefix"]:].mean(dim=1, dtype=torch.float64))
        self._rows[(site, block)] = g                              # to the CPU once per batch, in end_batch

    def end_batch(self):
        order = [(site, block) for site in self.capture_sites for block in range(self.geometry["depth"])]
        stack = torch.stack([self._rows[k] for k in order])
        if not bool(torch.isfinite(stack).all()):
            bad = sorted({order[int(i)] for i in torch.nonzero(~torch.isfinite(stack))[:, 0]})
            raise ValueError(f"{bad}: the captured features hold NaN or Inf values (or overflow float32 in their "
                             "Gram); check the model's weights and autocast")
        self._batches.append(stack.cpu())

    def finish(self):
        return {f"batch{i:04d}": g for i, g in enumerate(self._batches)}


def layer_labels(product: GramMatrices, depth: int) -> list[tuple[str, int]]:
    """``(site, block)`` of each row of a :class:`GramMatrices` stack, blocks 1-based: ``[("block", 1), ...]``."""
    return [(site, i + 1) for site in product.capture_sites for i in range(depth)]


def stack_batches(result: dict[str, torch.Tensor]) -> list[torch.Tensor]:
    """The per-batch Gram stacks of a stored :class:`GramMatrices` result, in batch order."""
    return [result[k] for k in sorted(k for k in result if k.startswith("batch"))]

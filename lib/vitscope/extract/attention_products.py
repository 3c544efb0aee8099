"""Streamed products of attention maps as pictures (Teaching Matters 4.1, 4.2), from the same forward pass.

Only reductions are kept: mean maps per block and head, a few numbers per image, block and head (for bootstrap
intervals over images), and the maps of the first few images as examples. No whole attention map is stored.
The images are split in two halves in extraction order: the first half chooses things (a head, a set of tokens),
the second half measures them, so a claim is never scored on the images that picked what it scores.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

from ..kernels import attention_maps as maps_k
from ..kernels.attention import cls_attention_map
from ..validation import check_int
from .products import ClsAttention, Product

#: Query positions of the spatial-query maps, as (row, column) fractions of the grid: centre and near a corner.
QUERY_FRACTIONS = (("centre", 0.5, 0.5), ("top-left", 0.15, 0.15))


def query_positions(grid_size: int, fractions=QUERY_FRACTIONS) -> list[tuple[str, int, int]]:
    """``[(name, row, col)]`` grid positions of the spatial-query maps on a ``grid_size`` grid."""
    return [(name, min(grid_size - 1, int(fy * grid_size)), min(grid_size - 1, int(fx * grid_size)))
            for name, fy, fx in fractions]


def reference_count(n_images: int) -> int:
    """Images of the first (choosing) half; the rest measure."""
    return n_images // 2


class _Streamed(Product):
    """Counts images as they stream past, so each image knows its position in extraction order."""

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._seen = 0

    def end_batch(self):
        self._seen += self._batch_size

    def _split(self, batch_size: int) -> int:
        """How many of this batch's images belong to the first (reference) half."""
        return max(0, min(batch_size, reference_count(self.n_images) - self._seen))


@dataclass
class ClsMapStats(_Streamed):
    """Per image, block and head, from the CLS map renormalised over spatial tokens
    (:func:`~vitscope.kernels.attention_maps.cls_maps`): float32 [N, L, H]

    ``centre``: mass in the central region (:func:`~vitscope.kernels.attention_maps.central_region`);
    ``coverage``: share of tokens holding ``COVERAGE_MASS`` of the map; ``fixed``: mass on the ``TOP_FRACTION``
    tokens most attended on average by the first half of the images (NaN for those images).
    Also ``examples`` [E, L, H, G, G]: the raw CLS maps (not renormalised, as :class:`ClsAttention`'s mean) of
    the first ``n_examples`` images.
    """

    n_examples: int = 4
    name = "cls_map_stats"
    sites = ("attn",)
    reads_cls = True
    state_fields = ("_seen", "_ref", "_rows", "_examples")

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        check_int(self.n_examples, "ClsMapStats n_examples (raw CLS maps kept; 0 for none)", 0)
        L, G = geometry["depth"], geometry["grid"][0]
        self._central = maps_k.central_region(G)
        self._ref = None
        self._rows = {k: [] for k in ("centre", "coverage", "fixed")}
        self._examples = [[None] * L for _ in range(min(self.n_examples, n_images))]

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._batch = {k: [None] * self.geometry["depth"] for k in self._rows}

    def consume(self, site, block, x):
        n_prefix = self.geometry["n_prefix"]
        m = maps_k.cls_maps(x, n_prefix).double()                          # [B, H, G, G]
        if self._ref is None:
            self._ref = torch.zeros(self.geometry["depth"], *m.shape[1:], dtype=torch.float64)
        k = self._split(m.shape[0])
        self._ref[block] += m[:k].sum(0).cpu()
        fixed = torch.full(m.shape[:2], float("nan"), dtype=torch.float64)
        if k < m.shape[0]:                      # every reference image precedes this one: the set is final
            top = maps_k.top_tokens(self._ref[block]).to(m.device)           # [H, G, G]
            fixed[k:] = maps_k.mass_on(m[k:], top).cpu()
        self._batch["centre"][block] = maps_k.mass_on(m, self._central).float().cpu()
        self._batch["coverage"][block] = maps_k.coverage(m).float().cpu()
        self._batch["fixed"][block] = fixed.float()
        for i in range(max(0, min(len(self._examples) - self._seen, m.shape[0]))):
            # a copy: a view would keep the batch's whole [B, H, T, T] map alive for the rest of the extraction
            self._examples[self._seen + i][block] = cls_attention_map(x[i:i + 1], n_prefix)[0].to(
                "cpu", torch.float32, copy=True)

    def end_batch(self):
        for key, per_block in self._batch.items():
            self._rows[key].append(torch.stack(per_block, dim=1))            # [B, L, H]
        super().end_batch()

    def finish(self):
        out = {k: torch.cat(v) for k, v in self._rows.items()}
        g = self.geometry
        out["examples"] = (torch.stack([torch.stack(e) for e in self._examples]) if self._examples else
                           torch.zeros(0, g["depth"], g["num_heads"], *g["grid"]))        # n_examples=0: none kept
        return out


@dataclass
class AlignedAttention(_Streamed):
    """Aligned Aggregated Attention Maps (TM 4.2): ``mean`` float32 [L, H, 2G-1, 2G-1] over all images (and
    ``mean_first`` over the first half), and per image ``moment`` float32 [N, L, H, 2], the local-window first
    moment of the image's AAAM (:func:`~vitscope.kernels.attention_maps.local_moment`; its mean over images is
    the moment of the mean AAAM)."""

    name = "aaam"
    sites = ("attn",)
    state_fields = ("_seen", "_sum", "_first", "_moments")

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        G = geometry["grid"][0]
        shape = (geometry["depth"], geometry["num_heads"], 2 * G - 1, 2 * G - 1)
        self._sum, self._first = torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64)
        self._moments = []

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._batch = [None] * self.geometry["depth"]

    def consume(self, site, block, x):
        rows = maps_k.spatial_rows(x, self.geometry["n_prefix"])                   # [B, H, Q, K]
        k = self._split(rows.shape[0])
        # The canvas is linear in the rows: re-centre the batch's sums, not each image (G**4 scatters per head).
        self._sum[block] += maps_k.aaam_canvas(rows.sum(0, dtype=torch.float64)).cpu()
        self._first[block] += maps_k.aaam_canvas(rows[:k].sum(0, dtype=torch.float64)).cpu()
        self._batch[block] = maps_k.local_moment_rows(rows).float().cpu()

    def end_batch(self):
        self._moments.append(torch.stack(self._batch, dim=1))                     # [B, L, H, 2]
        super().end_batch()

    def finish(self):
        n_first = reference_count(self.n_images)
        return {"mean": (self._sum / self._seen).float(), "mean_first": (self._first / max(n_first, 1)).float(),
                "moment": torch.cat(self._moments)}


@dataclass
class QueryAttention(Product):
    """Mean attention of a few spatial queries (:data:`QUERY_FRACTIONS`), renormalised over spatial keys:
    ``mean`` float32 [L, H, Q, G, G] and ``positions`` int64 [Q, 2] (row, column)."""

    name = "query_attention"
    sites = ("attn",)
    state_fields = ("_sum", "_count")

    def start(self, geometry, n_images):
        super().start(geometry, n_images)
        self._positions = [(r, c) for _, r, c in query_positions(geometry["grid"][0])]
        self._sum, self._count = None, 0

    def begin_batch(self, batch_size):
        super().begin_batch(batch_size)
        self._count += batch_size

    def consume(self, site, block, x):
        q = maps_k.query_maps(x, self._positions, self.geometry["n_prefix"]).sum(0, dtype=torch.float64).cpu()
        if self._sum is None:
            self._sum = torch.zeros(self.geometry["depth"], *q.shape, dtype=torch.float64)
        self._sum[block] += q

    def finish(self):
        return {"mean": (self._sum / self._count).float(), "positions": torch.tensor(self._positions)}


def attention_map_products(n_examples: int = 4) -> dict[str, Product]:
    """Every product of the TM 4.1 and 4.2 pages, requested together so one forward pass serves both pages."""
    return {"cls": ClsAttention(), "cls_stats": ClsMapStats(n_examples=n_examples), "aaam": AlignedAttention(),
            "queries": QueryAttention()}

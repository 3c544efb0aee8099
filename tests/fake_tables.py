"""Hand-made per-image tables shared by the claim tests (not a test module: pytest collects ``test_*.py`` only)."""
from __future__ import annotations

import torch


def indicators(rates: dict[str, list[float]], n: int = 400, seed: int | None = 0) -> dict[str, torch.Tensor]:
    """Per model, float64 [L, n] 0/1 indicators whose block means are exactly ``rates[model][l]`` (``round(r * n)``
    ones per block). ``seed``: the ones sit at random positions drawn from one generator for all models (so two
    models' rows are not aligned); ``None``: evenly spread, deterministic positions (rows of equal rate align)."""
    gen = torch.Generator().manual_seed(seed) if seed is not None else None
    out = {}
    for m, per_block in rates.items():
        rows = []
        for r in per_block:
            k = round(r * n)
            row = torch.zeros(n, dtype=torch.float64)
            where = torch.randperm(n, generator=gen)[:k] if gen is not None else torch.linspace(0, n - 1, k).round()
            row[where.long()] = 1.0
            rows.append(row)
        out[m] = torch.stack(rows)
    return out

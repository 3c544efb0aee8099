"""The batched probe grid (every cell in one forward and backward) vs the same cells trained one at a time, and
vs scikit-learn's LogisticRegression (lbfgs) fitted once per weight decay value."""
from __future__ import annotations

import torch
from common import best_of_interleaved, record

from vitscope.kernels import probes


def run(n: int = 2000, dim: int = 192, classes: int = 50, quick: bool = False) -> list[dict]:
    from sklearn.linear_model import LogisticRegression
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(0)
    centres = torch.randn(classes, dim, generator=g)
    y = torch.randint(classes, (n,), generator=g)
    x = centres[y] + 3 * torch.randn(n, dim, generator=g)
    epochs = (5, 10) if quick else (15, 30)
    grid = probes.probe_grid((0.3, 0.1, 0.03), (0.0, 0.05), epochs, (2,))
    kw = {"optimizer": "adamw", "batch_size": 64, "num_classes": classes}

    def batched():
        return probes.fit_probe_grid(x, y, grid, **kw).accuracies(x, y)

    def one_by_one():
        return torch.cat([probes.fit_probe_grid(x, y, [c], **kw).accuracies(x, y) for c in grid])

    def sklearn():
        xs = StandardScaler().fit_transform(x.numpy())
        return [LogisticRegression(C=1e4, max_iter=2000).fit(xs, y.numpy()).score(xs, y.numpy())]

    diff = float((batched() - one_by_one()).abs().max())
    times = best_of_interleaved({"batched": batched, "loop": one_by_one, "sklearn": sklearn}, repeat=1 if quick else 2)
    return [record("probe_grid_vs_loop", times["batched"], f"{len(grid)} cells one at a time", times["loop"], diff,
                   1e-9, "batched grid faster than the loop", 1.0, n=n, dim=dim, cells=len(grid)),
            record("probe_grid_vs_sklearn", times["batched"], "scikit-learn LogisticRegression (one fit)",
                   times["sklearn"], 0.0, 1.0, "", None, n=n, dim=dim, cells=len(grid))]


if __name__ == "__main__":
    import sys
    run(quick="--quick" in sys.argv)

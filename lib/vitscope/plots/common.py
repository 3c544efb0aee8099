"""Figure helpers shared by the plot families."""
from __future__ import annotations

from pathlib import Path


def save_figure(fig, path, dpi: int = 130) -> Path:
    """Save ``fig`` as PNG (the book also references saved files, so figures survive without a kernel)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=dpi, bbox_inches="tight")
    return path

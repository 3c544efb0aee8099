"""Linear probes on frozen features (Objectives Matter 2.2 and App. B.3).

The probe is ``BatchNorm1d(affine=False, eps=1e-6)`` followed by ``Linear`` (He et al. 2022's MAE probe: the
parameter-free BatchNorm calibrates feature scales, so one learning rate suits every model and layer). It is
trained with cross-entropy, AdamW and a cosine learning-rate schedule on minibatches drawn by a seeded generator.
OM sweeps LARS hyper-parameters on ImageNet (Table 4); our defaults suit a few thousand features and finish in
seconds on a CPU.

Everything runs on the device of ``train_x``; the result is deterministic for a given seed on a given device.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .validation import check_features, check_int, check_labels, check_positive


class LinearProbe(nn.Sequential):
    """``BatchNorm1d(dim, affine=False, eps=1e-6)`` + ``Linear(dim, num_classes)``: [B, dim] -> [B, num_classes]."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=1e-6), nn.Linear(dim, num_classes))


def fit_linear_probe(train_x: Tensor, train_y: Tensor, *, num_classes: int | None = None, epochs: int = 100,
                     lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 256, seed: int = 0) -> LinearProbe:
    """Train a :class:`LinearProbe` on features ``train_x`` [N, D] with integer labels ``train_y`` [N].

    ``epochs`` passes over shuffled minibatches of ``batch_size`` (the last, partial batch is kept unless it has a
    single row, which BatchNorm cannot normalise); AdamW with ``lr`` cosine-decayed to 0 over all steps.
    The probe's init and the shuffling come from ``seed`` only; the caller's global RNG is untouched.
    Returns the probe in eval mode on ``train_x``'s device.
    """
    check_features(train_x, "train_x", min_rows=2)   # BatchNorm needs 2 rows
    check_labels(train_y, train_x.shape[0], "train_y", num_classes)
    check_int(epochs, "epochs")
    check_int(batch_size, "batch_size", 2)
    check_positive(lr, "lr")
    C = int(num_classes) if num_classes is not None else int(train_y.max()) + 1
    device, n = train_x.device, train_x.shape[0]
    x, y = train_x.float(), train_y.to(device=device, dtype=torch.long)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
        torch.manual_seed(seed)
        probe = LinearProbe(x.shape[1], C).to(device)
    gen = torch.Generator(device="cpu").manual_seed(seed)
    opt = torch.optim.AdamW(probe.parameters(), lr=lr, weight_decay=weight_decay)
    batches = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    batches = [b for b in batches if b[1] - b[0] > 1]
    total, step = epochs * len(batches), 0
    probe.train()
    for _ in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        for s, e in batches:
            for group in opt.param_groups:   # cosine decay, one value per step
                group["lr"] = lr * 0.5 * (1 + math.cos(math.pi * step / total))
            idx = order[s:e]
            loss = F.cross_entropy(probe(x[idx]), y[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            step += 1
    return probe.eval()


@torch.no_grad()
def probe_accuracy(probe: nn.Module, test_x: Tensor, test_y: Tensor) -> float:
    """Top-1 accuracy in [0, 1] of ``probe`` on ``test_x`` [M, D] against ``test_y`` [M]."""
    check_features(test_x, "test_x")
    check_labels(test_y, test_x.shape[0], "test_y")
    device = next(probe.parameters()).device
    pred = probe.eval()(test_x.to(device).float()).argmax(1)
    return float((pred.cpu() == test_y.cpu().long()).double().mean())


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *, epochs: int = 100,
                 lr: float = 1e-3, weight_decay: float = 0.0, batch_size: int = 256, seed: int = 0,
                 num_classes: int | None = None) -> float:
    """Held-out top-1 accuracy in [0, 1] of a linear probe (OM 2.2) trained on (train_x [N, D], train_y [N]) and
    tested on (test_x [M, D], test_y [M]). See :func:`fit_linear_probe` for the training recipe."""
    if isinstance(test_x, Tensor) and isinstance(train_x, Tensor) and test_x.ndim == 2 and train_x.ndim == 2 \
            and test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"train_x {tuple(train_x.shape)} and test_x {tuple(test_x.shape)} must have the same D")
    if num_classes is None and isinstance(test_y, Tensor) and test_y.numel() and isinstance(train_y, Tensor) \
            and train_y.numel():
        num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    probe = fit_linear_probe(train_x, train_y, num_classes=num_classes, epochs=epochs, lr=lr,
                             weight_decay=weight_decay, batch_size=batch_size, seed=seed)
    return probe_accuracy(probe, test_x, test_y)

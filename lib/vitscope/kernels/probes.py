"""Probes on frozen features (Objectives Matter 2.2, App. B.3, B.4, Table 4), trained as one batched model per grid.

A probe is ``BatchNorm1d(D, affine=False, eps=1e-6)`` (He et al. 2022's parameter-free calibration of feature
scales, so one learning rate suits every model and layer), then ``depth`` blocks of ``Linear`` (no bias)
``+ BatchNorm1d + ReLU``
(OM App. B.4; ``depth=0`` is the linear probe), then ``Linear`` to the classes. It is trained with cross-entropy on
shuffled minibatches, a linear warm-up then a cosine decay to 0 of the learning rate, per step (MAE's
``lr_sched``), and LARS (:mod:`.lars`; OM Table 4) or AdamW.

**The batched grid.** OM trains one probe per cell of a hyper-parameter grid (learning rate x weight decay x
warm-up x epochs) and reports the mean ± std of the best 5. :func:`fit_probe_grid` trains all C cells as one model:
weights are stacked ``[C, in, out]`` and every cell's forward and backward is one ``einsum``; each cell's learning
rate and weight decay enter the (hand-written, batched) optimizer step as ``[C]`` vectors. All cells start from the
same initial weights and see the same minibatches, so cell ``c`` is exactly the probe that configuration alone
trains with the same seed (tested against a plain one-model loop). A cell whose ``epochs`` are done gets learning
rate 0 and stops moving (and stops updating its BatchNorm statistics) while longer cells train on.

Shapes: features ``[N, D]`` float, labels ``[N]`` int64. Everything runs on the device of the features; results are
deterministic for a seed on a device, and the caller's global RNG is untouched.
"""
from __future__ import annotations

import itertools
import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from .lars import lars_step_
from .validation import check_choice, check_features, check_int, check_labels, check_positive

#: BatchNorm's epsilon in every probe (He et al. 2022: ``BatchNorm1d(affine=False, eps=1e-6)``).
BN_EPS = 1e-6
#: BatchNorm running-statistics momentum (PyTorch's default, as in MAE's probe).
BN_MOMENTUM = 0.1
#: Absolute learning rate = base learning rate x batch size / LR_REFERENCE_BATCH (MAE's linear scaling rule).
LR_REFERENCE_BATCH = 256
OPTIMIZERS = ("lars", "adamw")
#: AdamW's betas and epsilon (PyTorch defaults).
ADAM_BETAS, ADAM_EPS = (0.9, 0.999), 1e-8


@dataclass(frozen=True)
class ProbeConfig:
    """One cell of a probe grid: base learning rate (before the batch-size scaling), weight decay, training epochs
    and linear warm-up epochs (``warmup_epochs < epochs``)."""

    lr: float
    weight_decay: float
    epochs: int
    warmup_epochs: int = 0

    def __post_init__(self):
        check_positive(self.lr, "ProbeConfig.lr")
        if not (isinstance(self.weight_decay, (int, float)) and self.weight_decay >= 0):
            raise ValueError(f"ProbeConfig.weight_decay must be a number >= 0; got {self.weight_decay!r}")
        check_int(self.epochs, "ProbeConfig.epochs")
        check_int(self.warmup_epochs, "ProbeConfig.warmup_epochs", 0, self.epochs - 1)


def probe_grid(lrs, weight_decays, epochs, warmup_epochs=(0,)) -> list[ProbeConfig]:
    """The cross product of the given values, learning rate slowest (OM Table 4's "cross-product of config values")."""
    return [ProbeConfig(float(a), float(b), int(c), int(d))
            for a, b, c, d in itertools.product(lrs, weight_decays, epochs, warmup_epochs)]


#: OM Table 4 as far as its text survives: LARS, momentum 0.9, batch 4096, cosine decay, base learning rate
#: {0.1, 1e-2, 1e-3}, weight decay {0, 5e-2, 0.1}, warm-up {10, 40} and {100, 200} epochs (36 cells). The table's
#: row labels are lost in our copy of the paper; we read its rows in the order of MAE's linear-probe table
#: (optimizer, base lr, weight decay, ...). One more row, {0, 1e-1, 1e-2, 1e-3, 1e-4, 5e-4}, has no label we can
#: recover, so it is not swept.
TABLE4 = {"lrs": (0.1, 1e-2, 1e-3), "weight_decays": (0.0, 5e-2, 0.1), "epochs": (100, 200), "warmup_epochs": (10, 40)}
TABLE4_BATCH_SIZE = 4096


def lr_at(config: ProbeConfig, epoch: float) -> float:
    """The base learning rate of ``config`` at fractional ``epoch``: linear warm-up, then half-cosine to 0; 0 from
    ``config.epochs`` on (MAE's ``adjust_learning_rate``, evaluated every step)."""
    if epoch >= config.epochs:
        return 0.0
    if epoch < config.warmup_epochs:
        return config.lr * epoch / config.warmup_epochs
    t = (epoch - config.warmup_epochs) / (config.epochs - config.warmup_epochs)
    return config.lr * 0.5 * (1.0 + math.cos(math.pi * t))


def lars_reach(config: ProbeConfig, n: int, batch_size: int) -> float:
    """The most a LARS run of ``config`` on ``n`` examples can change a weight matrix, relative to its norm: the
    sum over steps of ``lr_t x trust coefficient / (1 - momentum)`` (each step moves a matrix by at most
    ``lr_t * eta * ||p||`` times the momentum's geometric gain). Far below 1, LARS cannot leave its initial
    weights: the paper's grid on a small data set does not train."""
    from .lars import MOMENTUM, TRUST_COEFFICIENT
    steps = len(minibatches(n, batch_size))
    scale = batch_size / LR_REFERENCE_BATCH
    total = sum(lr_at(config, ep + i / steps) for ep in range(config.epochs) for i in range(steps))
    return total * scale * TRUST_COEFFICIENT / (1 - MOMENTUM)


def minibatches(n: int, batch_size: int) -> list[tuple[int, int]]:
    """``(start, end)`` of each minibatch of an epoch over ``n`` shuffled rows. A last batch of one row is dropped:
    BatchNorm cannot normalise one row (its variance is 0 and the unbiased running variance undefined)."""
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size)]
    return [s for s in spans if s[1] - s[0] > 1]


def init_probe_params(dim: int, num_classes: int, depth: int = 0, hidden: int | None = None,
                      seed: int = 0) -> list[Tensor]:
    """Initial weights of one probe, float32 on CPU: per hidden block ``W [in, hidden]``, BatchNorm ``gamma
    [hidden]`` (1) and ``beta [hidden]`` (0), then the head ``W [in, K]``, ``b [K]``.

    Hidden ``Linear`` layers have no bias: the BatchNorm after them removes it, so its gradient is rounding noise,
    which AdamW would normalise into real steps that move the running mean. They take PyTorch's default uniform
    init; the head takes MAE's truncated normal with std 0.01 and zero bias. Drawn from a generator seeded by
    ``seed`` only."""
    gen = torch.Generator().manual_seed(seed)
    params, fan_in = [], dim
    for _ in range(depth):
        width = hidden or dim
        bound = 1 / math.sqrt(fan_in)
        params += [(torch.rand(fan_in, width, generator=gen) * 2 - 1) * bound, torch.ones(width), torch.zeros(width)]
        fan_in = width
    head = torch.randn(fan_in, num_classes, generator=gen).mul_(0.01).clamp_(-0.02, 0.02)   # trunc. at 2 std
    return params + [head, torch.zeros(num_classes)]


def _batch_norm(x: Tensor, dim: int, eps: float = BN_EPS) -> tuple[Tensor, Tensor, Tensor]:
    """Normalise ``x`` over axis ``dim`` with its batch statistics; returns (normalised, mean, unbiased variance)."""
    mean = x.mean(dim, keepdim=True)
    var = x.var(dim, unbiased=False, keepdim=True)
    n = x.shape[dim]
    return (x - mean) / torch.sqrt(var + eps), mean, var * n / (n - 1)


@dataclass
class ProbeGridFit:
    """C trained probes stacked: ``params`` as :func:`init_probe_params` with a leading ``[C]`` axis, running
    BatchNorm statistics ``running`` (input: ``[C, D]`` mean and variance; then one pair ``[C, hidden]`` per block).
    ``step_sizes`` ``[steps, C]``: the norm of each cell's parameter change at every optimizer step (a record of
    what the schedule did)."""

    configs: list[ProbeConfig]
    depth: int
    params: list[Tensor]
    running: list[Tensor]
    steps_per_epoch: int
    step_sizes: Tensor = field(repr=False)

    @property
    def groups(self) -> int:
        """How many feature sets (``G``) the grid was trained on; cells are group-major,
        ``c = g * len(configs) + j``."""
        return self.running[0].shape[0] // len(self.configs)

    def _cells(self, t: Tensor) -> Tensor:
        """``[G, ...]`` -> ``[C, ...]``: each feature set's tensor repeated for its ``len(configs)`` cells."""
        return t.repeat_interleave(len(self.configs), dim=0)

    def logits(self, x: Tensor, *, train: bool = False) -> Tensor:
        """``[C, M, K]`` logits of features ``x`` [G, M, D]; ``train`` normalises with the batch's own statistics
        (kept in ``_batch_stats`` as ``[C, width]`` pairs for the running averages)."""
        stats = []
        if train:
            h, mean, var = _batch_norm(x, 1)
            h = self._cells(h)
            stats += [self._cells(mean.squeeze(1)), self._cells(var.squeeze(1))]
        else:
            h = (self._cells(x) - self.running[0].unsqueeze(1)) / torch.sqrt(self.running[1].unsqueeze(1) + BN_EPS)
        for i in range(self.depth):
            w, gamma, beta = self.params[3 * i:3 * i + 3]
            h = torch.einsum("cbi,cio->cbo", h, w)
            if train:
                h, mean, var = _batch_norm(h, 1)
                stats += [mean.squeeze(1), var.squeeze(1)]
            else:
                rm, rv = self.running[2 + 2 * i], self.running[3 + 2 * i]
                h = (h - rm.unsqueeze(1)) / torch.sqrt(rv.unsqueeze(1) + BN_EPS)
            h = torch.relu(h * gamma.unsqueeze(1) + beta.unsqueeze(1))
        self._batch_stats = stats
        return torch.einsum("cbi,cio->cbo", h, self.params[-2]) + self.params[-1].unsqueeze(1)

    @torch.no_grad()
    def predict(self, x: Tensor) -> Tensor:
        """``[C, M]`` int64 class predictions of every cell for features ``x`` [M, D] (or [G, M, D], one per feature
        set the grid was trained on)."""
        x = _as_groups(x, "x", self.groups)
        if x.shape[2] != self.running[0].shape[1]:
            raise ValueError(f"x has D={x.shape[2]} but the probes were trained on D={self.running[0].shape[1]}")
        return self.logits(x.to(self.params[0]).float()).argmax(-1)

    def correct(self, x: Tensor, y: Tensor) -> Tensor:
        """``[C, M]`` bool: whether each cell classifies each of the M examples correctly."""
        pred = self.predict(x)
        check_labels(y, pred.shape[1], "y")
        return pred == y.to(pred.device).long().unsqueeze(0)

    def accuracies(self, x: Tensor, y: Tensor) -> Tensor:
        """``[C]`` float64 top-1 accuracy in [0, 1] of each cell on (x [M, D] or [G, M, D], y [M])."""
        return self.correct(x, y).double().mean(1).cpu()


def _as_groups(x, name: str, groups: int | None = None) -> Tensor:
    """Features ``[N, D]`` or ``[G, N, D]`` as ``[G, N, D]`` (checked: finite floats, ``G`` as expected)."""
    if isinstance(x, Tensor) and x.ndim == 3:
        check_features(x.reshape(x.shape[0], -1), name)
    else:
        x = check_features(x, name).unsqueeze(0)
    if groups is not None and x.shape[0] != groups:
        raise ValueError(f"{name} holds {x.shape[0]} feature sets but the grid was trained on {groups}")
    return x


def _adamw_step_(params, grads, exp_avg, exp_sq, step: int, lr: Tensor, weight_decay: Tensor) -> None:
    """One batched AdamW step (PyTorch's rule: decoupled decay ``p *= 1 - lr*wd``, then the bias-corrected
    Adam update), cell ``c`` with ``lr[c]``, ``weight_decay[c]``."""
    b1, b2 = ADAM_BETAS
    for p, g, m, v in zip(params, grads, exp_avg, exp_sq, strict=True):
        shape = (-1, *([1] * (p.ndim - 1)))
        lr_c = lr.to(p).reshape(shape)
        p.mul_(1 - lr_c * weight_decay.to(p).reshape(shape))
        m.mul_(b1).add_(g, alpha=1 - b1)
        v.mul_(b2).addcmul_(g, g, value=1 - b2)
        denom = (v / (1 - b2 ** step)).sqrt_().add_(ADAM_EPS)
        p.sub_(lr_c / (1 - b1 ** step) * m / denom)


def fit_probe_grid(train_x: Tensor, train_y: Tensor, configs: list[ProbeConfig], *, depth: int = 0,
                   hidden: int | None = None, optimizer: str = "lars", batch_size: int = 256, seed: int = 0,
                   num_classes: int | None = None) -> ProbeGridFit:
    """Train one probe per cell on (train_x, train_y [N]) as one batched model.

    ``train_x``: features [N, D], or [G, N, D] for G feature sets of the same N examples (e.g. the final CLS
    concatenated with each intermediate CLS): every configuration is then trained on every set, ``G * len(configs)``
    cells, group-major. ``depth`` hidden ``Linear+BatchNorm+ReLU`` blocks of width ``hidden`` (default D);
    ``optimizer`` "lars" (OM Table 4) or "adamw"; absolute learning rate = base x ``batch_size`` / 256. The epoch
    loop runs to the longest cell's ``epochs``; ``seed`` fixes the initial weights (shared by all cells) and the
    shuffling. Returns a :class:`ProbeGridFit` on ``train_x``'s device.
    """
    x = _as_groups(train_x, "train_x")
    if x.shape[1] < 2:
        raise ValueError(f"train_x has {x.shape[1]} rows; BatchNorm needs at least 2")
    check_labels(train_y, x.shape[1], "train_y", num_classes)
    if not configs or not all(isinstance(c, ProbeConfig) for c in configs):
        raise ValueError(f"configs must be a non-empty list of ProbeConfig (see probe_grid); got {configs!r}")
    depth = check_int(depth, "depth", 0)
    check_int(batch_size, "batch_size", 2)
    check_choice(optimizer, "optimizer", OPTIMIZERS)
    K = int(num_classes) if num_classes is not None else int(train_y.max()) + 1
    device, (G, n, D) = x.device, x.shape
    x, y = x.float(), train_y.to(device=device, dtype=torch.long)
    cells = list(configs) * G
    C = len(cells)
    params = [p.to(device).unsqueeze(0).repeat(C, *([1] * p.ndim)).requires_grad_()
              for p in init_probe_params(D, K, depth, hidden, seed)]
    is_matrix = [p.ndim == 3 for p in params]
    widths = [D] + [params[3 * i].shape[2] for i in range(depth)]
    running = [t for w in widths for t in (torch.zeros(C, w, device=device), torch.ones(C, w, device=device))]
    fit = ProbeGridFit(list(configs), depth, params, running, 0, torch.zeros(0))
    batches = minibatches(n, batch_size)
    fit.steps_per_epoch = len(batches)
    epochs = max(c.epochs for c in configs)
    # the whole schedule up front: [epochs * steps_per_epoch, C] absolute learning rates
    scale = batch_size / LR_REFERENCE_BATCH
    lrs = torch.tensor([[lr_at(c, ep + i / len(batches)) * scale for c in cells]
                        for ep in range(epochs) for i in range(len(batches))], device=device).reshape(-1, C)
    wd = torch.tensor([c.weight_decay for c in cells], device=device)
    state = [[torch.zeros_like(p) for p in params] for _ in range(1 if optimizer == "lars" else 2)]
    gen = torch.Generator().manual_seed(seed)
    sizes, step = [], 0
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen).to(device)
        live = torch.tensor([epoch < c.epochs for c in cells], device=device)
        for s, e in batches:
            idx = order[s:e]
            logits = fit.logits(x[:, idx], train=True)
            # sum over cells of each cell's mean loss: cell c's gradient is that of its own loss
            loss = F.cross_entropy(logits.reshape(-1, K), y[idx].repeat(C), reduction="sum") / (e - s)
            grads = torch.autograd.grad(loss, params)
            with torch.no_grad():
                before = [p.clone() for p in params]
                if optimizer == "lars":
                    lars_step_([p.data for p in params], list(grads), state[0], lrs[step], wd, is_matrix)
                else:
                    _adamw_step_([p.data for p in params], list(grads), state[0], state[1], step + 1, lrs[step], wd)
                sizes.append(torch.sqrt(sum(((p - q) ** 2).flatten(1).sum(1) for p, q in zip(params, before))))
                _update_running(running, fit._batch_stats, live)
            step += 1
    fit.params = [p.detach() for p in params]
    fit.step_sizes = torch.stack(sizes).cpu()
    return fit


def _update_running(running: list[Tensor], batch: list[Tensor], live: Tensor) -> None:
    """Exponential running averages ``[C, width]`` of BatchNorm statistics, for live cells only."""
    m = BN_MOMENTUM * live.to(running[0]).unsqueeze(1)
    for r, b in zip(running, batch, strict=True):
        r.mul_(1 - m).add_(m * b.detach())


def best_k(accuracies: Tensor, k: int = 5) -> dict:
    """OM's summary of a grid (App. B.3): mean and standard deviation (n - 1 in the denominator) of the ``k`` best
    cells' accuracies ``[C]``, with their indices best first: ``{"mean", "std", "indices"}``."""
    acc = torch.as_tensor(accuracies, dtype=torch.float64)
    if acc.ndim != 1 or acc.numel() == 0:
        raise ValueError(f"accuracies must be a vector [C] with one accuracy per grid cell; got {tuple(acc.shape)}")
    k = check_int(k, "k", 1, acc.numel())
    top = torch.sort(acc, descending=True, stable=True).indices[:k]
    vals = acc[top]
    return {"mean": float(vals.mean()), "std": float(vals.std()) if k > 1 else 0.0, "indices": top.tolist()}


# ---------------------------------------------------------------- one probe (a grid of one cell)
class LinearProbe(nn.Sequential):
    """``BatchNorm1d(dim, affine=False, eps=1e-6)`` + ``Linear(dim, num_classes)``: [B, dim] -> [B, num_classes]."""

    def __init__(self, dim: int, num_classes: int):
        super().__init__(nn.BatchNorm1d(dim, affine=False, eps=BN_EPS), nn.Linear(dim, num_classes))


#: The default one-probe recipe: converges on a few thousand features in seconds on a CPU (within a point of a
#: converged logistic regression on separable and near-separable cases; tested).
DEFAULT_RECIPE = {"optimizer": "adamw", "lr": 0.1, "weight_decay": 0.0, "epochs": 100, "warmup_epochs": 0,
                  "batch_size": 64}


def fit_linear_probe(train_x: Tensor, train_y: Tensor, *, num_classes: int | None = None,
                     epochs: int = DEFAULT_RECIPE["epochs"], lr: float = DEFAULT_RECIPE["lr"],
                     weight_decay: float = DEFAULT_RECIPE["weight_decay"],
                     batch_size: int = DEFAULT_RECIPE["batch_size"], seed: int = 0,
                     optimizer: str = DEFAULT_RECIPE["optimizer"],
                     warmup_epochs: int = DEFAULT_RECIPE["warmup_epochs"]) -> LinearProbe:
    """Train one :class:`LinearProbe` on (train_x [N, D], train_y [N]) by :func:`fit_probe_grid` with one cell.
    Returns it in eval mode on ``train_x``'s device."""
    check_features(train_x, "train_x", min_rows=2)
    fit = fit_probe_grid(train_x, train_y, [ProbeConfig(lr, weight_decay, epochs, warmup_epochs)],
                         optimizer=optimizer, batch_size=batch_size, seed=seed, num_classes=num_classes)
    with torch.random.fork_rng(devices=[]):      # nn.Linear's own init draws from the global RNG; it is overwritten
        probe = LinearProbe(train_x.shape[1], fit.params[-1].shape[1]).to(train_x.device)
    with torch.no_grad():
        probe[0].running_mean.copy_(fit.running[0][0])
        probe[0].running_var.copy_(fit.running[1][0])
        probe[1].weight.copy_(fit.params[-2][0].T)
        probe[1].bias.copy_(fit.params[-1][0])
    return probe.eval()


@torch.no_grad()
def probe_accuracy(probe: nn.Module, test_x: Tensor, test_y: Tensor) -> float:
    """Top-1 accuracy in [0, 1] of ``probe`` on ``test_x`` [M, D] against ``test_y`` [M]."""
    check_features(test_x, "test_x")
    check_labels(test_y, test_x.shape[0], "test_y")
    device = next(probe.parameters()).device
    pred = probe.eval()(test_x.to(device).float()).argmax(1)
    return float((pred.cpu() == test_y.cpu().long()).double().mean())


def linear_probe(train_x: Tensor, train_y: Tensor, test_x: Tensor, test_y: Tensor, *,
                 num_classes: int | None = None, **recipe) -> float:
    """Held-out top-1 accuracy in [0, 1] of a linear probe (OM 2.2) trained on (train_x [N, D], train_y [N]) and
    tested on (test_x [M, D], test_y [M]); ``recipe``: the keywords of :func:`fit_linear_probe`."""
    if isinstance(test_x, Tensor) and isinstance(train_x, Tensor) and test_x.ndim == 2 and train_x.ndim == 2 \
            and test_x.shape[1] != train_x.shape[1]:
        raise ValueError(f"train_x {tuple(train_x.shape)} and test_x {tuple(test_x.shape)} must have the same D")
    if num_classes is None and isinstance(test_y, Tensor) and test_y.numel() and isinstance(train_y, Tensor) \
            and train_y.numel():
        num_classes = int(max(int(train_y.max()), int(test_y.max()))) + 1
    probe = fit_linear_probe(train_x, train_y, num_classes=num_classes, **recipe)
    return probe_accuracy(probe, test_x, test_y)

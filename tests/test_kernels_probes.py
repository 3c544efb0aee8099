"""Tests for vitscope.kernels.probes (OM 2.2 probes, the batched grid) and vitscope.kernels.lars.

The references here do not use the kernel's training loop: scikit-learn's LogisticRegression for convergence, and
a plain one-model PyTorch loop (nn.BatchNorm1d + nn.Linear, torch.optim.AdamW or a LARS step written out below, the
schedule written out below) for the batched grid.
"""
import math

import numpy as np
import pytest
import torch
from torch import nn

from vitscope.kernels.lars import LARS, lars_step_
from vitscope.kernels.probes import (
    LinearProbe,
    ProbeConfig,
    best_k,
    fit_linear_probe,
    fit_probe_grid,
    init_probe_params,
    linear_probe,
    lr_at,
    minibatches,
    probe_grid,
)


def blobs(d, c, n, sep, seed=0, offset=5.0):
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(c, d, generator=g) * sep
    ytr, yte = torch.randint(0, c, (n,), generator=g), torch.randint(0, c, (n,), generator=g)
    xtr = centres[ytr] + torch.randn(n, d, generator=g) * 0.5 + offset
    xte = centres[yte] + torch.randn(n, d, generator=g) * 0.5 + offset
    return xtr, ytr, xte, yte


# ---------- convergence: within one point of a converged logistic regression ----------

@pytest.mark.parametrize("d,c,n,sep", [(2, 4, 400, 3.0),      # separable, 2-D (the case)
                                       (8, 10, 1000, 3.0),     # separable, 10 classes
                                       (4, 5, 500, 1.5),       # near-separable: LR reaches ~0.98
                                       (2, 3, 600, 0.6)])      # overlapping classes
def test_probe_matches_converged_logistic_regression(d, c, n, sep):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    xtr, ytr, xte, yte = blobs(d, c, n, sep)
    # weight decay 0 against (almost) no L2 penalty; the standardisation plays the BatchNorm's part
    ref = make_pipeline(StandardScaler(), LogisticRegression(C=1e4, max_iter=10_000)).fit(xtr.numpy(), ytr.numpy())
    ref_acc = ref.score(xte.numpy(), yte.numpy())
    assert linear_probe(xtr, ytr, xte, yte) >= ref_acc - 0.01


def test_probe_random_labels_near_chance_on_held_out():
    g = torch.Generator().manual_seed(1)
    xtr, xte = torch.randn(400, 64, generator=g), torch.randn(400, 64, generator=g)
    ytr, yte = torch.randint(0, 4, (400,), generator=g), torch.randint(0, 4, (400,), generator=g)
    acc = linear_probe(xtr, ytr, xte, yte)
    assert 0.15 <= acc <= 0.37   # chance is 0.25; the probe can memorise the train set but not generalise


# ---------- the batched grid equals each configuration trained alone ----------

def ref_lr(cfg, epoch_f):
    """The schedule written out: linear warm-up, half-cosine to 0 (MAE lr_sched)."""
    if epoch_f < cfg.warmup_epochs:
        return cfg.lr * epoch_f / cfg.warmup_epochs
    return cfg.lr * 0.5 * (1 + math.cos(math.pi * (epoch_f - cfg.warmup_epochs) / (cfg.epochs - cfg.warmup_epochs)))


def ref_lars_step(params, mus, lr, wd, momentum=0.9, tc=1e-3):
    """MAE's util/lars.py, one model, written out."""
    with torch.no_grad():
        for p, mu in zip(params, mus):
            dp = p.grad
            if p.ndim > 1:
                dp = dp + wd * p
                pn, un = torch.norm(p), torch.norm(dp)
                q = tc * pn / un if (pn > 0 and un > 0) else 1.0
                dp = dp * q
            mu.mul_(momentum).add_(dp)
            p.sub_(lr * mu)


def train_alone(x, y, cfg, *, depth, optimizer, batch_size, seed, K):
    """One configuration in a plain PyTorch loop: nn modules, the kernel's initial weights, the same shuffling."""
    D = x.shape[1]
    init = init_probe_params(D, K, depth, None, seed)
    layers, fan_in = [nn.BatchNorm1d(D, affine=False, eps=1e-6)], D
    for i in range(depth):
        lin = nn.Linear(fan_in, init[3 * i].shape[1], bias=False)
        bn = nn.BatchNorm1d(init[3 * i].shape[1], eps=1e-6)
        with torch.no_grad():
            lin.weight.copy_(init[3 * i].T)
            bn.weight.copy_(init[3 * i + 1]), bn.bias.copy_(init[3 * i + 2])
        layers += [lin, bn, nn.ReLU()]
        fan_in = lin.out_features
    head = nn.Linear(fan_in, K)
    with torch.no_grad():
        head.weight.copy_(init[-2].T), head.bias.copy_(init[-1])
    model = nn.Sequential(*layers, head)
    params = list(model.parameters())
    opt = torch.optim.AdamW(params, lr=0.0, weight_decay=cfg.weight_decay) if optimizer == "adamw" else None
    mus = [torch.zeros_like(p) for p in params]
    n = x.shape[0]
    spans = [(s, min(s + batch_size, n)) for s in range(0, n, batch_size) if min(s + batch_size, n) - s > 1]
    gen = torch.Generator().manual_seed(seed)
    model.train()
    for epoch in range(cfg.epochs):
        order = torch.randperm(n, generator=gen)
        for i, (s, e) in enumerate(spans):
            lr = ref_lr(cfg, epoch + i / len(spans)) * batch_size / 256
            idx = order[s:e]
            model.zero_grad()
            nn.functional.cross_entropy(model(x[idx]), y[idx]).backward()
            if opt is not None:
                opt.param_groups[0]["lr"] = lr
                opt.step()
            else:
                ref_lars_step(params, mus, lr, cfg.weight_decay)
    return model.eval()


GRID = [ProbeConfig(0.5, 0.0, 6, 2), ProbeConfig(0.5, 0.1, 4, 1), ProbeConfig(0.05, 0.05, 6, 0),
        ProbeConfig(2.0, 0.1, 5, 2)]


@pytest.mark.parametrize("optimizer,depth", [("adamw", 0), ("lars", 0), ("adamw", 2), ("lars", 1)])
def test_batched_grid_equals_each_configuration_alone(optimizer, depth):
    xtr, ytr, xte, yte = blobs(6, 4, 150, 1.0, seed=3)
    grid = GRID if optimizer == "lars" else [ProbeConfig(c.lr / 20, c.weight_decay, c.epochs, c.warmup_epochs)
                                             for c in GRID]
    fit = fit_probe_grid(xtr, ytr, grid, depth=depth, optimizer=optimizer, batch_size=32, seed=5, num_classes=4)
    acc = fit.accuracies(xte, yte)
    assert fit.steps_per_epoch == 5                       # 150 rows: 4 batches of 32 and one of 22
    for c, cfg in enumerate(grid):
        model = train_alone(xtr, ytr, cfg, depth=depth, optimizer=optimizer, batch_size=32, seed=5, K=4)
        with torch.no_grad():
            logits = model(xte)
        np.testing.assert_allclose(fit.logits(xte.unsqueeze(0))[c].detach().numpy(), logits.numpy(),
                                   rtol=1e-3, atol=1e-4)
        assert acc[c].item() == (logits.argmax(1) == yte).double().mean().item()


def test_grid_on_feature_sets_equals_one_grid_per_set():
    xtr, ytr, xte, yte = blobs(5, 3, 120, 1.0, seed=4)
    def other(x):                       # a second feature set: permuted, rescaled, shifted
        return x[:, [1, 0, 3, 2, 4]] * 3 - 1
    sets_tr, sets_te = torch.stack([xtr, other(xtr)]), torch.stack([xte, other(xte)])
    grid = probe_grid([1e-2, 1e-1], [0.0, 0.1], [3])
    both = fit_probe_grid(sets_tr, ytr, grid, optimizer="adamw", batch_size=16, num_classes=3)
    assert both.groups == 2 and both.accuracies(sets_te, yte).shape == (8,)
    for g in range(2):
        one = fit_probe_grid(sets_tr[g], ytr, grid, optimizer="adamw", batch_size=16, num_classes=3)
        torch.testing.assert_close(both.params[-2][4 * g:4 * g + 4], one.params[-2], rtol=1e-4, atol=1e-6)
        assert torch.equal(both.predict(sets_te)[4 * g:4 * g + 4], one.predict(sets_te[g]))


# ---------- schedule, weight decay, last batch (the issue-17 survivors) ----------

def test_learning_rate_schedule_values():
    cfg = ProbeConfig(0.4, 0.0, 10, 2)
    assert lr_at(cfg, 0.0) == 0.0 and lr_at(cfg, 1.0) == pytest.approx(0.2)       # warm-up: linear from 0
    assert lr_at(cfg, 2.0) == pytest.approx(0.4)                                   # peak at the end of warm-up
    assert lr_at(cfg, 6.0) == pytest.approx(0.2)                                   # half-way down the cosine
    assert lr_at(cfg, 9.99) < 1e-4 and lr_at(cfg, 10.0) == 0.0 and lr_at(cfg, 50.0) == 0.0
    assert lr_at(ProbeConfig(0.4, 0.0, 10), 0.0) == pytest.approx(0.4)             # no warm-up: start at the peak


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_training_follows_the_schedule(optimizer):
    # A constant learning rate keeps the last steps as large as the first; the cosine shrinks them towards 0.
    xtr, ytr, _, _ = blobs(8, 4, 256, 1.0)
    cfg = ProbeConfig(0.05 if optimizer == "adamw" else 1.0, 0.0, 20, 4)
    steps = fit_probe_grid(xtr, ytr, [cfg], optimizer=optimizer, batch_size=32).step_sizes[:, 0]
    per_epoch = steps.reshape(20, -1)
    assert steps.shape == (160,)
    assert per_epoch[0, 0] < 0.2 * per_epoch[3:5].mean()              # warm-up starts small
    assert per_epoch[-1, -1] < 0.02 * per_epoch[3:6].max()            # the cosine ends near 0


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_weight_decay_shrinks_the_weights(optimizer):
    xtr, ytr, _, _ = blobs(8, 4, 256, 1.0)
    lr, wd = (0.05, 5.0) if optimizer == "adamw" else (200.0, 1.0)
    fit = fit_probe_grid(xtr, ytr, [ProbeConfig(lr, 0.0, 10), ProbeConfig(lr, wd, 10)], optimizer=optimizer,
                         batch_size=32)
    norms = fit.params[-2].flatten(1).norm(dim=1)
    assert norms[1] < 0.9 * norms[0]


def test_no_one_row_last_batch():
    assert minibatches(129, 64) == [(0, 64), (64, 128)]
    assert minibatches(130, 64) == [(0, 64), (64, 128), (128, 130)]
    xtr, ytr, xte, yte = blobs(4, 3, 65, 3.0)
    fit = fit_probe_grid(xtr, ytr, [ProbeConfig(0.05, 0.0, 30)], optimizer="adamw", batch_size=64)
    assert fit.steps_per_epoch == 1
    assert all(bool(torch.isfinite(r).all()) for r in fit.running)   # a 1-row batch would give NaN running variance
    assert fit.accuracies(xte, yte)[0] > 0.9


# ---------- LARS ----------

def test_lars_optimizer_matches_written_out_rule():
    torch.manual_seed(0)
    w, b = torch.randn(5, 3, requires_grad=True), torch.randn(5, requires_grad=True)
    w_ref, b_ref = w.detach().clone().requires_grad_(), b.detach().clone().requires_grad_()
    opt = LARS([w, b], lr=0.7, weight_decay=0.1)
    mus = [torch.zeros(5, 3), torch.zeros(5)]
    for step in range(3):
        g = torch.Generator().manual_seed(step)
        gw, gb = torch.randn(5, 3, generator=g), torch.randn(5, generator=g)
        w.grad, b.grad, w_ref.grad, b_ref.grad = gw, gb, gw.clone(), gb.clone()
        opt.step()
        ref_lars_step([w_ref, b_ref], mus, 0.7, 0.1)
    torch.testing.assert_close(w, w_ref)
    torch.testing.assert_close(b, b_ref)


def test_lars_step_by_hand():
    # p = [3, 4] (norm 5), g = [0, 1], wd = 1: d = [3, 5], ||d|| = sqrt(34), q = 1e-3 * 5 / sqrt(34)
    p, g, mu = torch.tensor([[[3.0, 4.0]]]), torch.tensor([[[0.0, 1.0]]]), torch.zeros(1, 1, 2)
    lars_step_([p], [g], [mu], torch.tensor([2.0]), torch.tensor([1.0]), [True])
    q = 1e-3 * 5 / math.sqrt(34)
    torch.testing.assert_close(p, torch.tensor([[[3 - 2 * 3 * q, 4 - 2 * 5 * q]]]))
    # vectors: no decay, no trust ratio, momentum buffer carried
    v, gv, mv = torch.tensor([[1.0]]), torch.tensor([[2.0]]), torch.tensor([[1.0]])
    lars_step_([v], [gv], [mv], torch.tensor([0.5]), torch.tensor([9.0]), [False])
    assert mv.item() == pytest.approx(0.9 + 2.0) and v.item() == pytest.approx(1 - 0.5 * 2.9)


# ---------- summary, determinism, validation ----------

def test_best_k_hand_case():
    out = best_k(torch.tensor([0.5, 0.9, 0.7, 0.9, 0.1, 0.8]), k=3)
    assert out["indices"] == [1, 3, 5]
    assert out["mean"] == pytest.approx(2.6 / 3) and out["std"] == pytest.approx(np.std([0.9, 0.9, 0.8], ddof=1))
    with pytest.raises(ValueError, match="k must be"):
        best_k(torch.tensor([0.5, 0.6]), k=3)


def test_probe_deterministic_for_a_seed_and_global_rng_untouched():
    g = torch.Generator().manual_seed(2)
    x, y = torch.randn(200, 16, generator=g), torch.randint(0, 3, (200,), generator=g)
    torch.manual_seed(123)
    before = torch.random.get_rng_state()
    p1 = fit_linear_probe(x, y, epochs=5, seed=7)
    assert torch.equal(torch.random.get_rng_state(), before)
    p2 = fit_linear_probe(x, y, epochs=5, seed=7)
    p3 = fit_linear_probe(x, y, epochs=5, seed=8)
    assert isinstance(p1, LinearProbe) and not p1.training
    assert torch.equal(p1[1].weight, p2[1].weight)
    assert not torch.equal(p1[1].weight, p3[1].weight)
    bn = p1[0]
    assert not bn.affine and bn.eps == 1e-6


def test_probe_validation():
    x, y = torch.randn(20, 4), torch.randint(0, 2, (20,))
    bad = x.clone()
    bad[0, 0] = float("nan")
    with pytest.raises(ValueError, match="train_x"):
        linear_probe(bad, y, x, y)
    with pytest.raises(ValueError, match="test_x"):
        linear_probe(x, y, bad, y, epochs=1)
    with pytest.raises(ValueError, match="same D"):
        linear_probe(x, y, torch.randn(5, 3), y[:5])
    with pytest.raises(ValueError, match="warmup_epochs"):
        ProbeConfig(0.1, 0.0, 10, 10)
    with pytest.raises(ValueError, match="optimizer"):
        fit_probe_grid(x, y, [ProbeConfig(0.1, 0.0, 1)], optimizer="sgd")
    with pytest.raises(ValueError, match="configs"):
        fit_probe_grid(x, y, [])
    fit = fit_probe_grid(x, y, [ProbeConfig(0.1, 0.0, 1)], optimizer="adamw", batch_size=8)
    with pytest.raises(ValueError, match="D=3"):
        fit.predict(torch.randn(5, 3))

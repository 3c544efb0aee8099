"""vitscope.kernels.probes, .lars and .knn: values, messages, bounds and defaults checked exactly (issue 17: mutants
in them survived the convergence tests).

The references are written out here: the schedule and the reach as plain sums, the optimizer steps as
``torch.optim.AdamW`` and MAE's LARS rule in float64, BatchNorm and the probe's forward pass in float64 NumPy, the
k-NN vote as a float64 loop. Every validation message is compared whole (it names the argument to fix), every
documented bound is tried at the bound and one step past it, every default against the explicit value.
"""
from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from vitscope.kernels.knn import knn_accuracy, weighted_knn
from vitscope.kernels.lars import LARS, lars_step_
from vitscope.kernels.probes import (
    DEFAULT_RECIPE,
    ProbeConfig,
    ProbeGridFit,
    _adamw_step_,
    _batch_norm,
    _update_running,
    best_k,
    fit_linear_probe,
    fit_probe_grid,
    init_probe_params,
    lars_reach,
    linear_probe,
    lr_at,
    minibatches,
    probe_accuracy,
    probe_grid,
)

FINITE_HINT = "holds NaN or Inf values; check the model's outputs or recompute the cached features"


def raises(fn, message):
    with pytest.raises(ValueError) as err:
        fn()
    assert str(err.value) == message


def data(n=24, d=4, c=3, seed=0):
    gen = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % c
    return torch.randn(n, d, generator=gen) + 2 * F.one_hot(y, d).float(), y


# ------------------------------------------------------------------ config, grid, schedule, reach

def test_probe_config_bounds_and_messages():
    assert ProbeConfig(0.1, 0.0, 5).warmup_epochs == 0
    ProbeConfig(0.1, 0, 5, 4)                                            # warm-up = epochs - 1 and decay 0 accepted
    ProbeConfig(1e-9, 0.0, 1, 0)
    raises(lambda: ProbeConfig(0.0, 0.0, 5), "ProbeConfig.lr must be a number > 0; got 0.0")
    raises(lambda: ProbeConfig(0.1, -0.1, 5), "ProbeConfig.weight_decay must be a number >= 0; got -0.1")
    raises(lambda: ProbeConfig(0.1, "0", 5), "ProbeConfig.weight_decay must be a number >= 0; got '0'")
    raises(lambda: ProbeConfig(0.1, 0.0, 0), "ProbeConfig.epochs must be an int >= 1; got 0")
    raises(lambda: ProbeConfig(0.1, 0.0, 5, 5), "ProbeConfig.warmup_epochs must be an int in [0, 4]; got 5")
    raises(lambda: ProbeConfig(0.1, 0.0, 5, -1), "ProbeConfig.warmup_epochs must be an int in [0, 4]; got -1")


def test_probe_grid_order_types_and_default_warmup():
    grid = probe_grid([1, 2], [0, 0.5], [3.0, 4])
    assert [(c.lr, c.weight_decay, c.epochs, c.warmup_epochs) for c in grid] == [
        (1.0, 0.0, 3, 0), (1.0, 0.0, 4, 0), (1.0, 0.5, 3, 0), (1.0, 0.5, 4, 0),
        (2.0, 0.0, 3, 0), (2.0, 0.0, 4, 0), (2.0, 0.5, 3, 0), (2.0, 0.5, 4, 0)]
    assert all(type(c.lr) is float and type(c.weight_decay) is float and type(c.epochs) is int
               and type(c.warmup_epochs) is int for c in grid)
    assert probe_grid([0.1], [0.0], [5], [1, 2.0]) == [ProbeConfig(0.1, 0.0, 5, 1), ProbeConfig(0.1, 0.0, 5, 2)]


def ref_lr(lr, epochs, warmup, t):
    if t >= epochs:
        return 0.0
    if t < warmup:
        return lr * t / warmup
    return lr / 2 * (1 + math.cos(math.pi * (t - warmup) / (epochs - warmup)))


@pytest.mark.parametrize("warmup", [0, 1, 3])
def test_lr_at_on_a_fine_grid(warmup):
    cfg = ProbeConfig(0.3, 0.0, 4, warmup)
    for t in np.arange(0, 9, 0.125):
        assert lr_at(cfg, float(t)) == pytest.approx(ref_lr(0.3, 4, warmup, float(t)), rel=1e-12, abs=1e-15)
    assert lr_at(cfg, 4.0) == 0.0 and lr_at(cfg, 6.0) == 0.0 and lr_at(cfg, 8.0) == 0.0


def test_lars_reach_is_the_sum_of_the_schedule():
    cfg = ProbeConfig(0.2, 0.0, 3, 1)
    # 100 rows in batches of 32: (0,32) (32,64) (64,96) (96,100): 4 steps an epoch
    total = sum(ref_lr(0.2, 3, 1, ep + i / 4) for ep in range(3) for i in range(4))
    assert lars_reach(cfg, 100, 32) == pytest.approx(total * 32 / 256 * 1e-3 / (1 - 0.9), rel=1e-12)
    # 97 rows: the last batch of one row is dropped, 3 steps an epoch
    total = sum(ref_lr(0.2, 3, 1, ep + i / 3) for ep in range(3) for i in range(3))
    assert lars_reach(cfg, 97, 32) == pytest.approx(total * 32 / 256 * 1e-3 / (1 - 0.9), rel=1e-12)


def test_minibatches_exactly():
    assert minibatches(10, 4) == [(0, 4), (4, 8), (8, 10)]
    assert minibatches(9, 4) == [(0, 4), (4, 8)]
    assert minibatches(8, 4) == [(0, 4), (4, 8)]
    assert minibatches(2, 2) == [(0, 2)] and minibatches(3, 2) == [(0, 2)] and minibatches(1, 4) == []
    assert minibatches(5, 100) == [(0, 5)]


# ------------------------------------------------------------------ initial weights, BatchNorm, running statistics

def test_init_probe_params_exactly():
    gen = torch.Generator().manual_seed(7)
    w0 = (torch.rand(4, 3, generator=gen) * 2 - 1) * (1 / math.sqrt(4))
    w1 = (torch.rand(3, 3, generator=gen) * 2 - 1) * (1 / math.sqrt(3))
    head = torch.randn(3, 2, generator=gen).mul(0.01).clamp(-0.02, 0.02)
    got = init_probe_params(4, 2, depth=2, hidden=3, seed=7)
    want = [w0, torch.ones(3), torch.zeros(3), w1, torch.ones(3), torch.zeros(3), head, torch.zeros(2)]
    assert len(got) == 8
    for g, w in zip(got, want):
        assert g.dtype == torch.float32 and torch.equal(g, w)
    # defaults: depth 0 (head only), hidden = D, seed 0
    gen0 = torch.Generator().manual_seed(0)
    lin = init_probe_params(5, 3)
    assert len(lin) == 2 and torch.equal(lin[0], torch.randn(5, 3, generator=gen0).mul(0.01).clamp(-0.02, 0.02))
    assert torch.equal(lin[1], torch.zeros(3))
    assert [tuple(p.shape) for p in init_probe_params(5, 3, depth=1)] == [(5, 5), (5,), (5,), (5, 3), (3,)]
    assert torch.equal(init_probe_params(5, 3, 1, None, 0)[0], init_probe_params(5, 3, depth=1)[0])


def test_head_init_is_truncated_at_two_std():
    head = init_probe_params(64, 64, seed=3)[0]
    assert float(head.abs().max()) == pytest.approx(0.02, rel=1e-6)
    assert 0 < int((head.abs() == head.abs().max()).sum()) < 0.1 * head.numel()   # ~4.6 % beyond 2 std


def test_batch_norm_values():
    gen = torch.Generator().manual_seed(1)
    x = (torch.randn(2, 5, 3, generator=gen, dtype=torch.float64) * 1e-3)     # variance ~ eps: eps matters
    out, mean, var = _batch_norm(x, 1)
    xn = x.numpy()
    m, v = xn.mean(1, keepdims=True), xn.var(1, keepdims=True)
    np.testing.assert_allclose(out.numpy(), (xn - m) / np.sqrt(v + 1e-6), rtol=1e-12)
    np.testing.assert_allclose(mean.numpy(), m, rtol=1e-12)
    np.testing.assert_allclose(var.numpy(), v * 5 / 4, rtol=1e-12)             # the unbiased variance
    out2, _, _ = _batch_norm(x, 1, eps=0.0)
    np.testing.assert_allclose(out2.numpy(), (xn - m) / np.sqrt(v), rtol=1e-10)


def test_update_running_only_moves_live_cells():
    running = [torch.tensor([[1.0, 2.0], [3.0, 4.0]]), torch.tensor([[1.0], [1.0]])]
    batch = [torch.tensor([[11.0, 12.0], [13.0, 14.0]]), torch.tensor([[3.0], [5.0]])]
    _update_running(running, batch, torch.tensor([True, False]))
    torch.testing.assert_close(running[0], torch.tensor([[2.0, 3.0], [3.0, 4.0]]))
    torch.testing.assert_close(running[1], torch.tensor([[1.2], [1.0]]))


# ------------------------------------------------------------------ the batched forward pass

def _hand_fit(G=2, configs=2, D=3, H=4, K=2, dtype=torch.float64):
    gen = torch.Generator().manual_seed(5)
    C = G * configs
    r = lambda *s: torch.randn(*s, generator=gen, dtype=dtype)
    params = [r(C, D, H), r(C, H) + 1, r(C, H), r(C, H, K), r(C, K)]
    running = [r(C, D), r(C, D).abs() + 0.5, r(C, H), r(C, H).abs() + 0.5]
    cfgs = [ProbeConfig(0.1, 0.0, 1)] * configs
    return ProbeGridFit(cfgs, 1, params, running, 0, torch.zeros(0))


def _np_forward(fit, x, train):
    """x [G, M, D] -> [C, M, K] in float64 NumPy; cells are group-major (cell c uses feature set c // configs)."""
    p = [t.double().numpy() for t in fit.params]
    r = [t.double().numpy() for t in fit.running]
    out, stats = [], []
    for c in range(p[0].shape[0]):
        h = x[c // len(fit.configs)].double().numpy()
        if train:
            m, v = h.mean(0), h.var(0)
            h, st = (h - m) / np.sqrt(v + 1e-6), [m, v * len(h) / (len(h) - 1)]
        else:
            h, st = (h - r[0][c]) / np.sqrt(r[1][c] + 1e-6), []
        h = h @ p[0][c]
        if train:
            m, v = h.mean(0), h.var(0)
            h = (h - m) / np.sqrt(v + 1e-6)
            st += [m, v * len(h) / (len(h) - 1)]
        else:
            h = (h - r[2][c]) / np.sqrt(r[3][c] + 1e-6)
        h = np.maximum(h * p[1][c] + p[2][c], 0)
        out.append(h @ p[3][c] + p[4][c])
        stats.append(st)
    return np.stack(out), [np.stack([s[i] for s in stats]) for i in range(len(stats[0]))] if train else []


@pytest.mark.parametrize("train", [False, True])
def test_logits_match_a_float64_forward_pass(train):
    fit = _hand_fit()
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64) * 2 + 1
    assert fit.groups == 2
    ref, stats = _np_forward(fit, x, train)
    got = fit.logits(x, train=train)
    assert got.shape == (4, 6, 2)
    np.testing.assert_allclose(got.detach().numpy(), ref, rtol=1e-10, atol=1e-12)
    assert len(fit._batch_stats) == len(stats)
    for g, s in zip(fit._batch_stats, stats):
        np.testing.assert_allclose(g.numpy(), s, rtol=1e-10, atol=1e-12)


def test_predict_correct_and_accuracies():
    fit = _hand_fit()
    x = torch.randn(2, 6, 3, generator=torch.Generator().manual_seed(9), dtype=torch.float64)
    ref, _ = _np_forward(fit, x, False)
    pred = fit.predict(x)
    assert pred.dtype == torch.int64 and pred.tolist() == ref.argmax(-1).tolist()
    y = torch.tensor([0, 1, 1, 0, 1, 0], dtype=torch.int32)
    assert fit.correct(x, y).tolist() == (ref.argmax(-1) == y.numpy()).tolist()
    acc = fit.accuracies(x, y)
    assert acc.dtype == torch.float64 and acc.device.type == "cpu"
    assert acc.tolist() == pytest.approx((ref.argmax(-1) == y.numpy()).mean(1).tolist(), abs=1e-15)
    raises(lambda: fit.predict(torch.randn(2, 6, 5)), "x has D=5 but the probes were trained on D=3")
    raises(lambda: fit.predict(torch.randn(3, 6, 3)), "x holds 3 feature sets but the grid was trained on 2")
    raises(lambda: fit.predict(torch.randn(6, 3)), "x holds 1 feature sets but the grid was trained on 2")
    raises(lambda: fit.correct(x, y[:5]), "y has 5 labels but its features have 6 rows")
    nan = x.clone()
    nan[1, 2, 0] = float("nan")
    raises(lambda: fit.predict(nan), f"x (shape (2, 18)) {FINITE_HINT}")


# ------------------------------------------------------------------ optimizer steps

def test_adamw_step_matches_torch_adamw_per_cell():
    gen = torch.Generator().manual_seed(2)
    w = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64)
    b = torch.randn(2, 4, generator=gen, dtype=torch.float64)
    lr, wd = torch.tensor([0.1, 0.03]), torch.tensor([0.5, 0.0])
    refs = [[w[c].clone().requires_grad_(), b[c].clone().requires_grad_()] for c in range(2)]
    opts = [torch.optim.AdamW(refs[c], lr=float(lr[c]), weight_decay=float(wd[c])) for c in range(2)]
    state = [[torch.zeros_like(w), torch.zeros_like(b)] for _ in range(2)]
    for step in range(1, 4):
        gw = torch.randn(2, 3, 4, generator=gen, dtype=torch.float64) * 10.0 ** -step   # small: eps matters late
        gb = torch.randn(2, 4, generator=gen, dtype=torch.float64)
        _adamw_step_([w, b], [gw, gb], state[0], state[1], step, lr, wd)
        for c in range(2):
            refs[c][0].grad, refs[c][1].grad = gw[c].clone(), gb[c].clone()
            opts[c].step()
    for c in range(2):
        np.testing.assert_allclose(w[c].numpy(), refs[c][0].detach().numpy(), rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(b[c].numpy(), refs[c][1].detach().numpy(), rtol=1e-12, atol=1e-15)


def ref_lars(p, g, mu, lr, wd, momentum=0.9, tc=1e-3):
    """MAE's util/lars.py for one matrix, float64."""
    d = g + wd * p
    pn, dn = np.linalg.norm(p), np.linalg.norm(d)
    q = tc * pn / dn if pn > 0 and dn > 0 else 1.0
    mu = momentum * mu + q * d
    return p - lr * mu, mu


def test_lars_step_norms_are_per_cell_over_every_axis_and_keywords_pass():
    gen = torch.Generator().manual_seed(3)
    p = torch.randn(3, 2, 3, 2, generator=gen, dtype=torch.float64)
    p[2] = 0.0                                                           # a zero matrix: trust ratio 1
    g = torch.randn(3, 2, 3, 2, generator=gen, dtype=torch.float64)
    mu = torch.zeros_like(p)
    lr, wd = torch.tensor([0.5, 2.0, 0.25]), torch.tensor([0.1, 0.0, 0.3])
    want = [p[c].numpy().copy() for c in range(3)]
    mus = [np.zeros_like(w) for w in want]
    for _ in range(2):
        lars_step_([p], [g], [mu], lr, wd, [True], momentum=0.5, trust_coefficient=0.02)
        for c in range(3):
            want[c], mus[c] = ref_lars(want[c], g[c].numpy(), mus[c], float(lr[c]), float(wd[c]), 0.5, 0.02)
    for c in range(3):
        np.testing.assert_allclose(p[c].numpy(), want[c], rtol=1e-12, atol=1e-15)
        np.testing.assert_allclose(mu[c].numpy(), mus[c], rtol=1e-12, atol=1e-15)
    # a zero gradient and no decay: d = 0, trust ratio 1, nothing moves
    q = torch.ones(1, 2, 2, dtype=torch.float64)
    lars_step_([q], [torch.zeros_like(q)], [torch.zeros_like(q)], torch.tensor([1.0]), torch.tensor([0.0]), [True])
    assert torch.equal(q, torch.ones(1, 2, 2, dtype=torch.float64))


def test_lars_optimizer_defaults_keywords_and_skipped_parameters():
    w = torch.nn.Parameter(torch.randn(3, 2, generator=torch.Generator().manual_seed(4), dtype=torch.float64))
    unused = torch.nn.Parameter(torch.ones(2, dtype=torch.float64))
    opt = LARS([w, unused])
    assert opt.defaults == {"lr": 0.0, "weight_decay": 0.0, "momentum": 0.9, "trust_coefficient": 1e-3}
    # values exact in float32 (the optimizer passes lr and weight decay through float32 tensors)
    opt = LARS([w, unused], lr=0.375, weight_decay=0.25, momentum=0.5, trust_coefficient=0.0625)
    g = torch.randn(3, 2, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    want, mu = w.detach().numpy().copy(), np.zeros((3, 2))
    for _ in range(2):
        w.grad = g.clone()
        assert opt.step(lambda: 7.0) == 7.0
        want, mu = ref_lars(want, g.numpy(), mu, 0.375, 0.25, 0.5, 0.0625)
    np.testing.assert_allclose(w.detach().numpy(), want, rtol=1e-12)
    np.testing.assert_allclose(opt.state[w]["mu"].numpy(), mu, rtol=1e-12)
    assert torch.equal(unused.detach(), torch.ones(2, dtype=torch.float64)) and unused not in opt.state
    assert opt.step() is None


# ------------------------------------------------------------------ fitting the grid

def _one_step_reference(x, y, cfg, K, seed, batch_size):
    """One AdamW step of a linear probe on the whole (shuffled) batch, written with torch.optim and nn modules."""
    init = init_probe_params(x.shape[1], K, seed=seed)
    head = torch.nn.Linear(x.shape[1], K)
    with torch.no_grad():
        head.weight.copy_(init[0].T), head.bias.copy_(init[1])
    bn = torch.nn.BatchNorm1d(x.shape[1], affine=False, eps=1e-6)
    opt = torch.optim.AdamW(head.parameters(), lr=cfg.lr * batch_size / 256, weight_decay=cfg.weight_decay)
    order = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    F.cross_entropy(head(bn(x[order])), y[order]).backward()
    opt.step()
    return head, bn, init


def test_one_step_fit_matches_torch_and_records_its_step_size():
    x, y = data(n=16)
    cfg = ProbeConfig(3.0, 0.2, 1)
    fit = fit_probe_grid(x, y, [cfg], optimizer="adamw", batch_size=16, seed=3, num_classes=4)
    head, bn, init = _one_step_reference(x, y, cfg, 4, 3, 16)
    assert fit.steps_per_epoch == 1 and fit.step_sizes.shape == (1, 1) and fit.step_sizes.device.type == "cpu"
    torch.testing.assert_close(fit.params[-2][0], head.weight.detach().T, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fit.params[-1][0], head.bias.detach(), rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fit.running[0][0], bn.running_mean, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(fit.running[1][0], bn.running_var, rtol=1e-5, atol=1e-7)
    moved = torch.sqrt(((fit.params[-2][0] - init[0]) ** 2).sum() + ((fit.params[-1][0] - init[1]) ** 2).sum())
    assert float(fit.step_sizes[0, 0]) == pytest.approx(float(moved), rel=1e-5)
    assert not any(p.requires_grad for p in fit.params)


@pytest.mark.parametrize("optimizer", ["adamw", "lars"])
def test_a_finished_cell_stops_moving_and_stops_updating_its_statistics(optimizer):
    x, y = data(n=16)
    short, long = ProbeConfig(2.0, 0.1, 1), ProbeConfig(2.0, 0.1, 3)
    both = fit_probe_grid(x, y, [short, long], optimizer=optimizer, batch_size=8, seed=1)
    for c, cfg in enumerate((short, long)):
        alone = fit_probe_grid(x, y, [cfg], optimizer=optimizer, batch_size=8, seed=1)
        for a, b in zip(both.params + both.running, alone.params + alone.running):
            torch.testing.assert_close(a[c], b[0], rtol=1e-5, atol=1e-7)
    assert both.step_sizes.shape == (6, 2)
    assert both.step_sizes[2:, 0].tolist() == [0.0] * 4 and bool((both.step_sizes[:, 1] > 0).all())


def test_fit_defaults_are_the_documented_ones():
    x, y = data(n=300, d=3, c=3)
    cfg = [ProbeConfig(1.0, 0.0, 1)]
    default = fit_probe_grid(x, y, cfg)
    explicit = fit_probe_grid(x, y, cfg, depth=0, hidden=None, optimizer="lars", batch_size=256, seed=0,
                              num_classes=3)
    assert default.steps_per_epoch == 2 and default.depth == 0 and len(default.params) == 2   # 256 + 44 rows
    assert default.params[-1].shape == (1, 3)                            # K = max label + 1
    for a, b in zip(default.params + default.running, explicit.params + explicit.running):
        assert torch.equal(a, b)
    other = fit_probe_grid(x, y, cfg, seed=1)
    assert not torch.equal(other.params[-2], default.params[-2])
    adamw = fit_probe_grid(x, y, cfg, optimizer="adamw")
    assert not torch.allclose(adamw.params[-2], default.params[-2])
    assert fit_probe_grid(x, y, cfg, num_classes=5).params[-1].shape == (1, 5)
    wide = fit_probe_grid(x[:6], y[:6], cfg, depth=1, hidden=7, batch_size=2)
    assert [tuple(p.shape) for p in wide.params] == [(1, 3, 7), (1, 7), (1, 7), (1, 7, 3), (1, 3)]
    assert [tuple(r.shape) for r in wide.running] == [(1, 3), (1, 3), (1, 7), (1, 7)]


def test_fit_validation_bounds_and_messages():
    x, y = data(n=6)
    cfg = [ProbeConfig(0.1, 0.0, 1)]
    fit_probe_grid(x[:2], y[:2], cfg, batch_size=2, depth=0)           # 2 rows, batch 2, depth 0: the bounds
    raises(lambda: fit_probe_grid(x[:1], y[:1], cfg), "train_x has 1 rows; BatchNorm needs at least 2")
    raises(lambda: fit_probe_grid(x, y, []), "configs must be a non-empty list of ProbeConfig (see probe_grid); got []")
    raises(lambda: fit_probe_grid(x, y, cfg + [(0.1, 0.0, 1)]),
           "configs must be a non-empty list of ProbeConfig (see probe_grid); got "
           "[ProbeConfig(lr=0.1, weight_decay=0.0, epochs=1, warmup_epochs=0), (0.1, 0.0, 1)]")
    raises(lambda: fit_probe_grid(x, y, cfg, depth=-1), "depth must be an int >= 0; got -1")
    raises(lambda: fit_probe_grid(x, y, cfg, batch_size=1), "batch_size must be an int >= 2; got 1")
    raises(lambda: fit_probe_grid(x, y, cfg, optimizer="sgd"),
           "optimizer='sgd' is unknown; choose from ('lars', 'adamw')")
    raises(lambda: fit_probe_grid(x, y[:5], cfg), "train_y has 5 labels but its features have 6 rows")
    raises(lambda: fit_probe_grid(x, y, cfg, num_classes=2), "train_y holds label 2 >= num_classes=2")
    raises(lambda: fit_probe_grid(x[0], y, cfg), "train_x must be a tensor [n, D]; got (4,)")
    raises(lambda: fit_probe_grid(x.reshape(2, 3, 2, 2), y[:3], cfg),
           "train_x must be a tensor [n, D]; got (2, 3, 2, 2)")
    raises(lambda: fit_probe_grid(x.long(), y, cfg),
           "train_x must be floating point; got torch.int64 (convert with .float())")


# ------------------------------------------------------------------ best_k

def test_best_k_values_bounds_and_default():
    acc = [0.1, 0.7, 0.3, 0.9, 0.2, 0.6, 0.5]
    top5 = [0.9, 0.7, 0.6, 0.5, 0.3]
    out = best_k(acc)                                                     # a list of floats: read as float64
    assert out == best_k(torch.tensor(acc, dtype=torch.float64), k=5)
    assert out["indices"] == [3, 1, 5, 6, 2]
    assert out["mean"] == pytest.approx(np.mean(top5), rel=1e-15) and out["std"] == pytest.approx(
        np.std(top5, ddof=1), rel=1e-14)
    assert best_k(torch.tensor(acc, dtype=torch.float32), k=3)["mean"] == pytest.approx(
        np.mean(np.float32([0.9, 0.7, 0.6]).astype(np.float64)), rel=1e-15)
    assert best_k(acc, k=1) == {"mean": 0.9, "std": 0.0, "indices": [3]}
    assert best_k(acc, k=7)["indices"] == [3, 1, 5, 6, 2, 4, 0]
    raises(lambda: best_k(acc, k=8), "k must be an int in [1, 7]; got 8")
    raises(lambda: best_k(acc, k=0), "k must be an int in [1, 7]; got 0")
    raises(lambda: best_k(torch.zeros(2, 3)),
           "accuracies must be a vector [C] with one accuracy per grid cell; got (2, 3)")
    raises(lambda: best_k([]), "accuracies must be a vector [C] with one accuracy per grid cell; got (0,)")


def test_best_k_ties_go_to_the_lowest_index():
    acc = torch.full((40,), 0.5)                                          # many ties: an unstable sort reorders them
    acc[33] = 0.75
    assert best_k(acc, k=6)["indices"] == [33, 0, 1, 2, 3, 4]


# ------------------------------------------------------------------ one linear probe

def test_fit_linear_probe_is_the_one_cell_grid_and_defaults_are_the_recipe():
    x, y = data(n=40, d=4, c=3)
    probe = fit_linear_probe(x, y, epochs=3, lr=0.05, weight_decay=0.01, batch_size=16, seed=2, optimizer="lars",
                             warmup_epochs=1, num_classes=5)
    fit = fit_probe_grid(x, y, [ProbeConfig(0.05, 0.01, 3, 1)], optimizer="lars", batch_size=16, seed=2,
                         num_classes=5)
    assert not probe.training and probe[1].out_features == 5
    assert torch.equal(probe[0].running_mean, fit.running[0][0])
    assert torch.equal(probe[0].running_var, fit.running[1][0])
    assert torch.equal(probe[1].weight, fit.params[-2][0].T) and torch.equal(probe[1].bias, fit.params[-1][0])
    torch.testing.assert_close(probe(x), fit.logits(x.unsqueeze(0))[0], rtol=1e-6, atol=1e-6)
    assert DEFAULT_RECIPE == {"optimizer": "adamw", "lr": 0.1, "weight_decay": 0.0, "epochs": 100,
                              "warmup_epochs": 0, "batch_size": 64}
    default = fit_linear_probe(x[:8], y[:8])
    ref = fit_probe_grid(x[:8], y[:8], [ProbeConfig(0.1, 0.0, 100, 0)], optimizer="adamw", batch_size=64, seed=0)
    assert torch.equal(default[1].weight, ref.params[-2][0].T) and torch.equal(default[1].bias, ref.params[-1][0])
    assert default[1].out_features == 3
    fit_linear_probe(x[:2], y[:2], epochs=1)                             # 2 rows: the least BatchNorm takes
    raises(lambda: fit_linear_probe(x[:1], y[:1]), "train_x has 1 rows (shape (1, 4)); at least 2 needed")


def test_probe_accuracy_uses_the_running_statistics_and_float32():
    x, y = data(n=40, d=4, c=3)
    probe = fit_linear_probe(x, y, epochs=2)
    with torch.no_grad():
        want = float((probe.eval()(x[:10]).argmax(1) == y[:10]).double().mean())
    probe.train()                                                         # probe_accuracy must switch to eval
    assert probe_accuracy(probe, x[:10].double(), y[:10].int()) == want
    assert not probe.training
    raises(lambda: probe_accuracy(probe, x[:10], y[:9]), "test_y has 9 labels but its features have 10 rows")
    raises(lambda: probe_accuracy(probe, x[0], y[:1]), "test_x must be a tensor [n, D]; got (4,)")


def test_linear_probe_passes_its_recipe_and_infers_classes_from_both_splits():
    x, y = data(n=40, d=4, c=3)
    y_test = y[:10].clone()
    y_test[0] = 4                                                          # a class only the test split has
    got = linear_probe(x, y, x[:10], y_test, epochs=2, lr=0.05, batch_size=16, seed=1)
    probe = fit_linear_probe(x, y, num_classes=5, epochs=2, lr=0.05, batch_size=16, seed=1)
    assert got == probe_accuracy(probe, x[:10], y_test)
    raises(lambda: linear_probe(x, y, torch.randn(5, 3), y[:5]),
           "train_x (40, 4) and test_x (5, 3) must have the same D")


# ------------------------------------------------------------------ k-NN

def test_knn_float64_inputs_are_not_rounded_to_float32():
    # two references whose cosines to the query differ by ~1.5e-10: float32 rounds both to 1 and the tie goes to
    # class 0; float64 sees the nearer one (class 1)
    train = torch.tensor([[1.0, 2e-5], [1.0, 1e-5]], dtype=torch.float64)
    labels, query = torch.tensor([0, 1]), torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    assert weighted_knn(train, labels, query, k=2).tolist() == [1]
    assert weighted_knn(train.float(), labels, query.float(), k=2).tolist() == [0]
    assert weighted_knn(train, labels, query.float(), k=2).tolist() == [1]   # queries take the references' dtype
    half = weighted_knn(train.half(), labels, query.half(), k=1)              # float16 is promoted to float32
    assert half.dtype == torch.int64 and half.tolist() == [0]


def test_knn_takes_any_integer_label_dtype_and_defaults():
    gen = torch.Generator().manual_seed(0)
    train, labels, test = torch.randn(50, 3, generator=gen), torch.randint(0, 4, (50,), generator=gen), torch.randn(
        30, 3, generator=gen)
    ref = weighted_knn(train, labels, test, k=20, temperature=0.07, num_classes=None, chunk_size=None)
    assert torch.equal(weighted_knn(train, labels, test), ref)
    assert not torch.equal(weighted_knn(train, labels, test, k=1), ref)
    assert not torch.equal(weighted_knn(train, labels, test, temperature=10.0, k=50), ref)
    for dtype in (torch.int32, torch.int16, torch.uint8):
        assert torch.equal(weighted_knn(train, labels.to(dtype), test), ref)
    assert knn_accuracy(train, labels.int(), test, ref.int()) == 1.0


def _at_cosine(c, n):
    """n copies of the 2-D unit vector at cosine c to the query [1, 0]."""
    return torch.tensor([[c, math.sqrt(1 - c * c)]], dtype=torch.float64).repeat(n, 1)


def test_knn_default_k_is_20_and_default_temperature_is_007():
    query = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    # k: 10 references of class 0 at cosine 1, 11 of class 1 at cosine 0.997, 5 far ones. The 20 nearest give class
    # 0 (10 vs 10 * exp(-0.003 / 0.07) = 9.58); a 21st neighbour tips the vote to class 1 (10.54).
    train = torch.cat([_at_cosine(1.0, 10), _at_cosine(0.997, 11), _at_cosine(-1.0, 5)])
    labels = torch.tensor([0] * 10 + [1] * 11 + [2] * 5)
    assert weighted_knn(train, labels, query).tolist() == [0]
    assert weighted_knn(train, labels, query, k=21).tolist() == [1]
    # temperature: one reference of class 0 at cosine 1 against two of class 1 at 0.9 (and 17 opposite ones of
    # class 2): exp(1 / 0.07) beats 2 exp(0.9 / 0.07); at T = 1 the pair wins
    train = torch.cat([_at_cosine(1.0, 1), _at_cosine(0.9, 2), _at_cosine(-1.0, 17)])
    labels = torch.tensor([0, 1, 1] + [2] * 17)
    assert weighted_knn(train, labels, query).tolist() == [0]
    assert weighted_knn(train, labels, query, temperature=1.0).tolist() != [0]


def test_knn_bounds_and_messages():
    gen = torch.Generator().manual_seed(1)
    train, labels, test = torch.randn(10, 4, generator=gen), torch.arange(10) % 3, torch.randn(3, 4, generator=gen)
    weighted_knn(train, labels, test, k=10)
    weighted_knn(train, labels, test, k=1, num_classes=3, chunk_size=1)
    name = "k (neighbours; at most N, the number of train features)"
    raises(lambda: weighted_knn(train, labels, test, k=11), f"{name} must be an int in [1, 10]; got 11")
    raises(lambda: weighted_knn(train, labels, test, k=0), f"{name} must be an int in [1, 10]; got 0")
    raises(lambda: weighted_knn([[1.0]], labels, test), "train_feats must be a tensor [n, D]; got list")
    raises(lambda: weighted_knn(train, labels, test[0]), "test_feats must be a tensor [n, D]; got (4,)")
    nan = test.clone()
    nan[0, 1] = float("nan")
    raises(lambda: weighted_knn(train, labels, nan), f"test_feats (shape (3, 4)) {FINITE_HINT}")
    raises(lambda: weighted_knn(train, labels, torch.randn(3, 5)),
           "train_feats (10, 4) and test_feats (3, 5) must have the same feature dimension D")
    raises(lambda: weighted_knn(train, labels, test, k=3, num_classes=0), "num_classes must be an int >= 1; got 0")
    raises(lambda: weighted_knn(train, labels, test, k=3, num_classes=2), "train_labels holds label 2 >= num_classes=2")
    raises(lambda: weighted_knn(train, labels[:9], test, k=3),
           "train_labels has 9 labels but its features have 10 rows")
    raises(lambda: weighted_knn(train, labels, test, k=3, temperature=-1.0),
           "temperature must be a number > 0; got -1.0")
    raises(lambda: weighted_knn(train, labels, test, k=3, chunk_size=0), "chunk_size must be an int >= 1; got 0")
    raises(lambda: knn_accuracy(train, labels, test, labels[:2], k=3),
           "test_labels has 2 labels but its features have 3 rows")
    raises(lambda: knn_accuracy(train, labels, [[0.0] * 4], labels[:1], k=3),
           "test_feats must be a tensor [n, D]; got list")   # checked before the labels it is compared with


def test_lars_steps_float64_parameters_with_an_unrounded_learning_rate():
    # lr = 0.1 is not a float32 number: a float32 lr would move a float64 parameter by a different amount
    from vitscope.kernels.lars import LARS

    p = torch.nn.Parameter(torch.tensor([[3.0, 4.0]], dtype=torch.float64))
    p.grad = torch.tensor([[1.0, 0.0]], dtype=torch.float64)
    LARS([p], lr=0.1, weight_decay=0.0, momentum=0.0, trust_coefficient=1.0).step()
    # trust ratio |p| / |g| = 5, so the step is lr * 5 * g = 0.5 on the first entry, in float64
    assert p.detach()[0, 0].item() == 3.0 - 0.1 * 5.0

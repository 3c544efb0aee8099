"""Tests for vitscope.zoo: data, augmentations, the six objectives, the resumable trainer and the model card."""
import json

import numpy as np
import pytest
import timm
import torch
from safetensors.torch import load_file

from vitscope.zoo import augment
from vitscope.zoo.data import ATTR_NAMES, render_set
from vitscope.zoo.evaluate import knn_accuracy_for_weights, load_backbone
from vitscope.zoo.objectives import BACKBONE_ARCH, BACKBONE_KWARGS, OBJECTIVES, create_backbone, encode
from vitscope.zoo.objectives.beit import blockwise_mask, kmeans
from vitscope.zoo.objectives.clip import VOCAB, sample_captions, tokenize
from vitscope.zoo.objectives.common import ramped_view_kw
from vitscope.zoo.objectives.dino import koleo, sinkhorn_knopp
from vitscope.zoo.train import batch_indices, lr_at, main, train_model


@pytest.fixture(scope="module")
def scenes(tmp_path_factory):
    """1 scene per class (50 images at 64 px), cached in a temporary folder."""
    return render_set(1, 1000, cache_dir=tmp_path_factory.mktemp("zoo_cache"), progress=False)


# ---------- data and augmentations ----------

def test_render_set_is_cached_and_deterministic(tmp_path):
    a = render_set(2, 7, num_classes=3, cache_dir=tmp_path, progress=False)
    assert a.images.shape == (6, 3, 64, 64) and a.images.dtype == torch.uint8
    assert a.labels.tolist() == [0, 0, 1, 1, 2, 2] and a.attrs.shape == (6, len(ATTR_NAMES))
    assert a.masks.shape == (6, 64, 64) and a.masks.dtype == torch.uint8
    assert len(list((tmp_path / "data").glob("*.safetensors"))) == 1
    b = render_set(2, 7, num_classes=3, cache_dir=tmp_path / "other", progress=False)   # re-rendered
    assert torch.equal(a.images, b.images) and torch.equal(a.attrs, b.attrs)
    # rendered by two worker processes: the same pixels, attributes and masks in the same order
    c = render_set(2, 7, num_classes=3, cache_dir=tmp_path / "parallel", progress=False, workers=2)
    assert all(torch.equal(getattr(a, f), getattr(c, f)) for f in ("images", "attrs", "masks", "labels"))
    with pytest.raises(ValueError, match="workers"):
        render_set(2, 8, num_classes=3, cache_dir=tmp_path / "none", progress=False, workers=0)


def test_augmentations_are_generator_driven(scenes):
    x = scenes.images[:8].float() / 255
    views = [augment.multi_crop(x, torch.Generator().manual_seed(3), n_local=2) for _ in range(2)]
    assert [v.shape[-1] for v in views[0]] == [64, 64, 32, 32]
    assert all(torch.equal(a, b) for a, b in zip(*views))
    other = augment.multi_crop(x, torch.Generator().manual_seed(4), n_local=2)
    assert not torch.equal(views[0][0], other[0])
    assert all(float(v.min()) >= 0 and float(v.max()) <= 1 for v in views[0])


def test_background_swap_keeps_the_object(scenes):
    x, masks = scenes.images[:6].float() / 255, scenes.masks[:6]
    assert masks.shape == (6, 64, 64) and set(masks.unique().tolist()) <= {0, 1, 2}
    y = augment.background_swap(x, masks, torch.Generator().manual_seed(0), p=1.0)
    obj = (masks > 0).unsqueeze(1).expand_as(x)
    assert torch.equal(y[obj], x[obj])                       # object pixels untouched
    bg = ~obj
    assert all(not torch.equal(y[i][bg[i]], x[i][bg[i]]) for i in range(6))   # every background replaced
    assert torch.equal(augment.background_swap(x, masks, torch.Generator(), p=0.0), x)


def test_object_frame_enlarges_the_object_and_curriculum_ramps(scenes):
    x, masks = scenes.images[:10].float() / 255, scenes.masks[:10]
    g = torch.Generator().manual_seed(0)
    framed_masks = augment.object_frame(masks.unsqueeze(1).float().expand(-1, 3, -1, -1), masks, g, 64)[:, 0]
    assert framed_masks.shape == (10, 64, 64)
    assert float((framed_masks > 0.5).float().mean()) > float((masks > 0).float().mean())
    assert augment.object_frame(x, masks, torch.Generator().manual_seed(1), 32).shape == (10, 3, 32, 32)
    assert ramped_view_kw(0.0, 0.7, 0.5, 0.1, 0.5) == {"bg_swap_p": 0.0, "hue": 0.1}
    assert ramped_view_kw(0.25, 0.7, 0.5, 0.1, 0.5) == pytest.approx({"bg_swap_p": 0.35, "hue": 0.3})
    assert ramped_view_kw(0.9, 0.7, 0.5, 0.1, 0.5) == pytest.approx({"bg_swap_p": 0.7, "hue": 0.5})


def test_captions_use_the_vocabulary(scenes):
    caps = sample_captions(scenes.attrs, torch.Generator().manual_seed(0))
    assert len(caps) == len(scenes) and all(set(c.split()) <= set(VOCAB) for c in caps)
    ids = tokenize(caps)
    assert ids.shape[0] == len(caps) and int(ids.max()) < len(VOCAB) and bool((ids[:, 0] > 0).all())


def test_blockwise_mask_and_kmeans():
    m = blockwise_mask(16, 8, 0.4, torch.Generator().manual_seed(0))
    assert m.shape == (16, 64) and m.dtype == torch.bool
    assert 0.35 <= m.float().mean() <= 0.6
    x = torch.cat([torch.randn(50, 4) + 10, torch.randn(50, 4) - 10])
    c1, c2 = kmeans(x, 2, 5, seed=0), kmeans(x, 2, 5, seed=0)
    assert torch.equal(c1, c2) and sorted(c1[:, 0].round().tolist()) == [-10.0, 10.0]


def test_sinkhorn_knopp_is_the_entropic_balanced_assignment():
    """Converged, the output is diag(a) exp(S) diag(b) (log q - S additive in rows and columns) with row sums 1 and
    column sums N/K; three iterations (DINOv2's setting) already balance a batch that a mean-centred teacher would
    send to one prototype."""
    g = torch.Generator().manual_seed(0)
    s = torch.randn(12, 4, generator=g, dtype=torch.float64) * 3
    q = sinkhorn_knopp(s, 500)
    assert torch.allclose(q.sum(1), torch.ones(12, dtype=torch.float64), atol=1e-9)
    assert torch.allclose(q.sum(0), torch.full((4,), 3.0, dtype=torch.float64), atol=1e-9)
    resid = (q.log() - s).numpy()
    additive = resid.mean(1, keepdims=True) + resid.mean(0, keepdims=True) - resid.mean()
    assert abs(resid - additive).max() < 1e-9
    same = torch.randn(1, 8, generator=g).expand(32, 8) * 10 + 0.01 * torch.randn(32, 8, generator=g)
    q = sinkhorn_knopp(same, 3)
    assert torch.allclose(q.sum(1), torch.ones(32), atol=1e-5)
    assert q.sum(0).max() < 2 * 32 / 8          # softmax would put almost all 32 on one prototype


def test_koleo_matches_a_float64_nearest_neighbour_formula():
    x = torch.randn(10, 5, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    xn = (x / x.norm(dim=1, keepdim=True)).numpy()
    dist = np.sqrt(((xn[:, None] - xn[None]) ** 2).sum(-1))
    np.fill_diagonal(dist, np.inf)
    assert koleo(x).item() == pytest.approx(-np.log(dist.min(1) + 1e-8).mean(), rel=1e-12)
    assert koleo(x * 7.0).item() == pytest.approx(koleo(x).item(), rel=1e-12)     # scale-free (normalised rows)
    spread, bunched = torch.eye(4, dtype=torch.float64), torch.ones(4, 4, dtype=torch.float64) + 1e-3 * x[:4, :4]
    assert koleo(spread) < koleo(bunched)                                           # collapse is penalised


def test_schedules_and_batches():
    assert lr_at(0, 100, 1.0, 0.1, 0.01) == pytest.approx(0.1)
    assert lr_at(9, 100, 1.0, 0.1, 0.01) == pytest.approx(1.0)
    assert lr_at(99, 100, 1.0, 0.1, 0.01) == pytest.approx(0.01, abs=1e-3)
    rows = torch.cat([batch_indices(s, 8, 20, seed=0) for s in range(5)])   # 40 rows = 2 epochs of 20
    assert sorted(rows[:20].tolist()) == list(range(20)) and sorted(rows[20:].tolist()) == list(range(20))
    assert torch.equal(batch_indices(3, 8, 20, seed=0), batch_indices(3, 8, 20, seed=0))


def test_ema_update_is_the_convex_combination():
    from vitscope.zoo.objectives.common import ema_update
    torch.manual_seed(0)
    src, tgt = torch.nn.BatchNorm1d(4), torch.nn.BatchNorm1d(4)
    for p in (*src.parameters(), *tgt.parameters()):
        p.data.normal_()
    src.running_mean.fill_(3.0)
    expect = {k: 0.9 * t.detach().double() + 0.1 * s.detach().double()
              for (k, t), s in zip(tgt.named_parameters(), src.parameters())}
    ema_update(tgt, src, 0.9)
    for k, p in tgt.named_parameters():
        torch.testing.assert_close(p.double(), expect[k], rtol=0, atol=1e-6)
    assert torch.equal(tgt.running_mean, src.running_mean)     # buffers are copied, not averaged


# ---------- backbone and objectives ----------

def test_encode_matches_timm_forward_features():
    torch.manual_seed(0)
    bb = create_backbone().eval()
    x = torch.randn(2, 3, 64, 64)
    torch.testing.assert_close(encode(bb, x), bb.forward_features(x))
    assert encode(bb, torch.randn(2, 3, 32, 32)).shape == (2, 17, 192)   # DINO local crops


@pytest.mark.parametrize("name", list(OBJECTIVES))
def test_objective_trains_the_backbone(name, scenes, tmp_path):
    torch.manual_seed(0)
    obj = OBJECTIVES[name](create_backbone(depth=2), scenes.meta)
    obj.prepare(scenes, tmp_path)
    obj.train()
    opt = torch.optim.AdamW([p for p in obj.parameters() if p.requires_grad], lr=1e-3)
    before = {k: v.clone() for k, v in obj.backbone.state_dict().items()}
    images, labels, attrs = scenes.images[:16].float() / 255, scenes.labels[:16], scenes.attrs[:16]
    losses = []
    for step in range(4):
        # the same views every step (same generator seed): the loss on them must go down
        loss = obj.loss(images, labels, attrs, torch.Generator().manual_seed(0), progress=0.5,
                        masks=scenes.masks[:16])
        assert torch.isfinite(loss)
        opt.zero_grad()
        loss.backward()
        opt.step()
        obj.after_step(0.5)
        losses.append(loss.item())
    after = obj.backbone.state_dict()
    assert all(not torch.equal(before[k], after[k]) for k in ("patch_embed.proj.weight", "blocks.0.attn.qkv.weight"))
    if name != "dino":   # DINO's target moves with the teacher and the centre; its gradient check above suffices
        assert losses[-1] < losses[0], losses


# ---------- trainer: weights, card, resume ----------

CARD_FIELDS = {"name", "objective", "family", "backbone", "objective_hparams", "train_data", "steps", "batch_size",
               "optimizer", "seed", "wall_time_s", "device", "final_loss", "loss_curve", "eval", "weights"}


def test_quick_cli_writes_strict_loadable_weights_and_card(tmp_path):
    out, cache = tmp_path / "out", tmp_path / "cache"
    assert main(["--model", "zoo-supervised", "--quick", "--out", str(out), "--cache", str(cache),
                 "--no-progress", "--threads", str(torch.get_num_threads())]) == 0
    card = json.loads((out / "zoo-supervised.json").read_text())
    assert CARD_FIELDS <= set(card)
    assert card["steps"] == 3 and len(card["loss_curve"]["values"]) == 1
    assert card["eval"]["readout"] == "cls"
    for key in ("trained", "random_init"):
        assert set(card["eval"][key]) == {"cls", "gap"}
        for readout in ("cls", "gap"):
            assert set(card["eval"][key][readout]) == {"knn_top1", "linear_probe_top1"}
    assert card["eval"]["protocol"]["knn"] == {"k": 20, "temperature": 0.07}
    sd = load_file(str(out / "zoo-supervised.safetensors"))
    assert all(v.dtype == torch.float16 for v in sd.values())
    model = timm.create_model(BACKBONE_ARCH, **BACKBONE_KWARGS)
    model.load_state_dict({k: v.float() for k, v in sd.items()}, strict=True)
    assert isinstance(load_backbone(out / "zoo-supervised.safetensors"), torch.nn.Module)
    # the card's k-NN number is reproducible from the shipped file
    assert knn_accuracy_for_weights(out / "zoo-supervised.safetensors", cache_dir=cache) == \
        card["eval"]["trained"]["cls"]["knn_top1"]
    # budget overrides are part of the recorded recipe; an unknown one is refused by name
    tuned = train_model("supervised", out_dir=tmp_path / "tuned", cache_dir=cache, quick=True, progress=False,
                        overrides={"lr": 1e-4})
    assert tuned["optimizer"]["lr"] == 1e-4
    with pytest.raises(ValueError, match="lrate"):
        train_model("supervised", out_dir=tmp_path / "x", cache_dir=cache, quick=True, progress=False,
                    overrides={"lrate": 1e-4})
    # an existing card means "done": a second call skips training
    again = train_model("supervised", out_dir=out, cache_dir=cache, quick=True, progress=False)
    assert again == card


@pytest.mark.parametrize("name", ["mocov3"])
def test_resume_is_exact(name, tmp_path, capsys):
    kw = dict(quick=True, steps=4, progress=False)
    whole = train_model(name, out_dir=tmp_path / "a", cache_dir=tmp_path / "ca", **kw)
    assert train_model(name, out_dir=tmp_path / "b", cache_dir=tmp_path / "cb", stop_after=2, **kw) is None
    ck = torch.load(tmp_path / "cb" / name / "ckpt.pt", weights_only=True)
    assert ck["step"] == 2 and len(ck["losses"]) == 2
    resumed = train_model(name, out_dir=tmp_path / "b", cache_dir=tmp_path / "cb", **kw)
    assert "resuming" in capsys.readouterr().out
    assert resumed["loss_curve"] == whole["loss_curve"] and resumed["final_loss"] == whole["final_loss"]
    wa = load_file(str(tmp_path / "a" / f"zoo-{name}.safetensors"))
    wb = load_file(str(tmp_path / "b" / f"zoo-{name}.safetensors"))
    assert all(torch.equal(wa[k], wb[k]) for k in wa)

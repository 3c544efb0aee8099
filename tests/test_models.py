"""vitscope.models: registry integrity, every converter on a checkpoint in the official layout, loud failures.

Each converter test builds a small random model of the registry architecture, writes its weights in the
*official release* key layout (the inverse mapping is written here, independently of the converter), loads the
file through ``load_model`` (strict) and checks the outputs match the source model.
"""
from __future__ import annotations

import argparse
import dataclasses
import pickle
import re
import urllib.error

import pytest
import timm
import torch
from torch import nn

from vitscope.models import (
    CONVERTERS,
    MODELS,
    CheckpointError,
    CheckpointMismatchError,
    ConversionError,
    UnknownModelError,
    WeightsUnavailableError,
    create_model,
    get_cfg,
    list_models,
    load_model,
    read_checkpoint,
)

VIT = dict(img_size=32, patch_size=8, embed_dim=64, depth=2, num_heads=2)
RESNET = dict(layers=(1, 1, 1, 1))
CONVNEXT = dict(depths=(1, 1, 1, 1), dims=(16, 32, 64, 128))


def _perturb(model: nn.Module, seed: int = 0) -> nn.Module:
    """Make every parameter and BN statistic distinctive (LayerScale, biases, ...), so any mis-mapped key shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict().items():  # these tensors share storage with the model
            if not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.uniform_(0.5, 1.5, generator=g)
            else:
                t.add_(0.05 * torch.randn(t.shape, generator=g))
    return model.eval()


def _assert_same(src: nn.Module, loaded: nn.Module, size: int = 32) -> None:
    x = torch.randn(2, 3, size, size, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(src.forward_features(x), loaded.forward_features(x), atol=1e-5)
        assert torch.allclose(src(x), loaded(x), atol=1e-5)


def _roundtrip(name: str, path, src: nn.Module, size: int = 32, **overrides) -> nn.Module:
    """The converter alone yields exactly the source model's keys, and ``load_model`` reproduces its outputs."""
    converted = CONVERTERS[MODELS[name].converter](read_checkpoint(path))
    assert set(converted) == set(src.state_dict())
    loaded = load_model(name, weights=path, **overrides)
    _assert_same(src, loaded, size)
    return loaded


def _save(tmp_path, obj, name="ckpt.pth"):
    path = tmp_path / name
    torch.save(obj, path)
    return path


def _projector(prefix: str, dim: int, out: int = 16) -> dict:
    """A 2-layer projector/predictor MLP with BatchNorm, as MoCo-v3 and MSN heads have."""
    return {f"{prefix}0.weight": torch.randn(32, dim), f"{prefix}1.weight": torch.ones(32),
            f"{prefix}1.bias": torch.zeros(32), f"{prefix}1.running_mean": torch.zeros(32),
            f"{prefix}1.running_var": torch.ones(32), f"{prefix}3.weight": torch.randn(out, 32)}


# ----------------------------------------------------------------------------- registry

def test_registry_entries_are_complete_and_consistent():
    untrained_vitb = {f"random-vitb-{s}" for s in "abc"}     # the paper profiles' untrained baselines
    assert set(list_models("TM")) == {"fs", "clip", "dino", "mae", "mocov3", "beit"} | untrained_vitb
    om = {"msn", "mae-ft", "resnet50-dino", "resnet50-mocov3", "convnextv2-fcmae", "dino", "mae", "mocov3"}
    assert om | untrained_vitb == set(list_models("OM"))
    zoo = [f"zoo-{n}" for n in ("supervised", "clip", "dino", "mocov3", "mae", "beit")]
    cnn = ["zoo-cnn-supervised", "zoo-cnn-mocov3", "random-cnn-a"]    # OM Fig. 11: CNNs beside the zoo ViTs
    assert list_models("demo") == zoo + ["random-a", "random-b", "random-c"] + cnn
    for name, cfg in MODELS.items():
        assert cfg.name == name and cfg.display and cfg.license and cfg.notes
        assert cfg.converter in CONVERTERS, name
        assert timm.is_model(cfg.arch), name
        assert set(cfg.papers) <= {"TM", "OM", "demo"} and cfg.papers
        pre = cfg.preprocess
        assert len(pre.mean) == len(pre.std) == 3 and pre.crop <= pre.resize
        if cfg.source == "timm":
            assert cfg.timm_tag and cfg.url is None
            timm_cfg = timm.models.get_pretrained_cfg(cfg.timm_name)  # the tag exists in this timm
            assert timm_cfg is not None, name
            assert pre.mean == pytest.approx(timm_cfg.mean) and pre.std == pytest.approx(timm_cfg.std), name
        elif cfg.source == "url":
            assert cfg.timm_tag is None and cfg.url.startswith("https://") and cfg.filename in cfg.url
        elif cfg.source == "package":
            assert cfg.filename == f"{name}.safetensors" and cfg.timm_tag is None and cfg.url is None
            like = MODELS["random-cnn-a" if name.startswith("zoo-cnn-") else "random-a"]
            assert (cfg.arch, cfg.arch_kwargs) == (like.arch, like.arch_kwargs), name
            assert cfg.preprocess == MODELS["random-a"].preprocess, name
        else:
            assert cfg.source == "random" and cfg.family == "random" and cfg.timm_tag is None and cfg.url is None
    # The untrained baselines' seeds are their own: no zoo model (ViT or CNN) starts from one of them.
    from vitscope.models.registry import RANDOM_SEEDS
    from vitscope.zoo.cnn import CNN_SEEDS
    from vitscope.zoo.train import SEEDS
    random_seeds = [MODELS[f"random-{s}"].seed for s in "abc"] + [MODELS["random-cnn-a"].seed]
    assert random_seeds[:3] == list(RANDOM_SEEDS)
    assert not set(random_seeds) & (set(SEEDS.values()) | set(CNN_SEEDS.values()))
    assert len(set(SEEDS.values()) | set(CNN_SEEDS.values())) == len(SEEDS) + len(CNN_SEEDS)
    assert MODELS["clip"].arch == "vit_base_patch16_clip_quickgelu_224"  # not GELU
    assert MODELS["fs"].timm_tag == "augreg_in21k_ft_in1k"  # not the augreg2 default


def test_cfg_is_frozen_hashable_and_serialisable():
    cfg = get_cfg("beit")
    hash(cfg)
    assert pickle.loads(pickle.dumps(cfg)) == cfg
    assert dataclasses.asdict(cfg)["arch_kwargs"]["use_shared_rel_pos_bias"] is True
    with pytest.raises(TypeError):
        cfg.arch_kwargs["init_values"] = 1.0
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.arch = "x"


def test_unknown_name_suggests_closest_match():
    with pytest.raises(UnknownModelError, match="'dino'") as info:
        get_cfg("dnio")
    assert isinstance(info.value, KeyError) and "mocov3" in str(info.value)


# ----------------------------------------------------------------------------- converters, ViT

def test_mocov3_vit(tmp_path):
    src = _perturb(create_model("mocov3", **VIT))
    sd = {}
    for k, v in src.state_dict().items():
        sd[f"module.base_encoder.{k}"] = v
        sd[f"module.momentum_encoder.{k}"] = v + 1
    sd.update(_projector("module.base_encoder.head.", 64))
    sd.update(_projector("module.momentum_encoder.head.", 64))
    sd.update(_projector("module.predictor.", 16))
    path = _save(tmp_path, {"epoch": 300, "arch": "vit_base", "state_dict": sd,
                            "optimizer": {"state": {}, "param_groups": [{"lr": 1.5e-4, "params": [0, 1]}]}})
    _roundtrip("mocov3", path, src, **VIT)


def test_beit_pt22k_shared_rel_pos_bias(tmp_path):
    src = _perturb(create_model("beit", **VIT))
    assert src.rel_pos_bias is not None and src.pos_embed is None  # the pre-training build
    assert all(getattr(b.attn, "relative_position_bias_table", None) is None for b in src.blocks)
    sd = dict(src.state_dict())
    assert "rel_pos_bias.relative_position_bias_table" in sd and "blocks.0.gamma_1" in sd
    sd.update({"mask_token": torch.randn(1, 1, 64), "lm_head.weight": torch.randn(32, 64),
               "lm_head.bias": torch.randn(32),
               "rel_pos_bias.relative_position_index": src.rel_pos_bias.relative_position_index.clone()})
    path = _save(tmp_path, {"model": sd, "args": argparse.Namespace(model="beit_base_patch16_224_8k_vocab")})
    _roundtrip("beit", path, src, **VIT)


def test_msn_target_encoder(tmp_path):
    src = _perturb(create_model("msn", **VIT))
    target = {f"module.{k}": v for k, v in src.state_dict().items()}
    target.update(_projector("module.fc.", 64))
    online = {k: v + 1 for k, v in target.items()}  # the online encoder must not be the one loaded
    path = _save(tmp_path, {"encoder": online, "target_encoder": target, "prototypes": torch.randn(10, 16),
                            "epoch": 600, "lr": 1e-3})
    _roundtrip("msn", path, src, **VIT)


def test_mae_pretrained_drops_decoder(tmp_path):
    src = _perturb(create_model("mae", **VIT))
    sd = dict(src.state_dict())
    sd.update({"mask_token": torch.randn(1, 1, 32), "decoder_embed.weight": torch.randn(32, 64),
               "decoder_pos_embed": torch.randn(1, 17, 32), "decoder_blocks.0.norm1.weight": torch.randn(32),
               "decoder_pred.weight": torch.randn(192, 32)})
    _roundtrip("mae", _save(tmp_path, {"model": sd}), src, **VIT)


def test_mae_finetuned_avg_pool_fc_norm(tmp_path):
    src = _perturb(create_model("mae-ft", **VIT, num_classes=10))
    assert isinstance(src.norm, nn.Identity) and isinstance(src.fc_norm, nn.LayerNorm)
    path = _save(tmp_path, {"model": src.state_dict(), "args": argparse.Namespace(global_pool=True)})
    loaded = _roundtrip("mae-ft", path, src, **VIT, num_classes=10)
    assert loaded(torch.zeros(1, 3, 32, 32)).shape == (1, 10)


_CLIP_RULES = [  # timm name -> OpenAI CLIP name (under "visual."), written independently of the converter
    (r"^patch_embed\.proj\.weight$", "conv1.weight"), (r"^norm_pre\.", "ln_pre."), (r"^norm\.", "ln_post."),
    (r"^blocks\.(\d+)\.norm(\d)\.", r"transformer.resblocks.\1.ln_\2."),
    (r"^blocks\.(\d+)\.attn\.qkv\.(weight|bias)$", r"transformer.resblocks.\1.attn.in_proj_\2"),
    (r"^blocks\.(\d+)\.attn\.proj\.", r"transformer.resblocks.\1.attn.out_proj."),
    (r"^blocks\.(\d+)\.mlp\.fc1\.", r"transformer.resblocks.\1.mlp.c_fc."),
    (r"^blocks\.(\d+)\.mlp\.fc2\.", r"transformer.resblocks.\1.mlp.c_proj."),
]


def _to_openai_clip(sd: dict) -> dict:
    out = {}
    for k, v in sd.items():
        if k == "cls_token":
            out["visual.class_embedding"] = v[0, 0]
        elif k == "pos_embed":
            out["visual.positional_embedding"] = v[0]
        elif k == "head.weight":
            out["visual.proj"] = v.t().contiguous()
        elif k != "head.bias":  # CLIP's projection has no bias (the source model's is zeroed)
            new = next(re.sub(p, r, k) for p, r in _CLIP_RULES if re.search(p, k))
            out[f"visual.{new}"] = v
    # text tower and scalars: ignored by the converter, some with names that collide once "visual." is stripped
    out.update({"transformer.resblocks.0.attn.in_proj_weight": torch.randn(96, 32), "ln_final.weight":
                torch.ones(32), "positional_embedding": torch.randn(7, 32), "token_embedding.weight":
                torch.randn(50, 32), "text_projection": torch.randn(32, 16), "logit_scale": torch.tensor(4.6)})
    return out


def test_openai_clip_with_and_without_projection(tmp_path):
    src = _perturb(create_model("clip", **VIT, num_classes=16))
    assert type(src.blocks[0].mlp.act).__name__ == "QuickGELU"
    with torch.no_grad():
        src.head.bias.zero_()
    path = _save(tmp_path, _to_openai_clip(src.state_dict()))
    _roundtrip("clip", path, src, **VIT, num_classes=16)  # proj kept as head
    trunk = load_model("clip", weights=path, **VIT)  # registry default num_classes=0: proj dropped
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(src.forward_head(src.forward_features(x), pre_logits=True), trunk(x), atol=1e-5)


# ----------------------------------------------------------------------------- converters, CNNs and identity

def test_mocov3_resnet(tmp_path):
    src = _perturb(create_model("resnet50-mocov3", **RESNET))
    sd = {f"module.base_encoder.{k}": v for k, v in src.state_dict().items()}
    sd.update({f"module.momentum_encoder.{k}": v for k, v in src.state_dict().items()})
    sd.update(_projector("module.base_encoder.fc.", 2048))
    sd.update(_projector("module.predictor.", 16))
    _roundtrip("resnet50-mocov3", _save(tmp_path, {"state_dict": sd}), src, **RESNET)


def test_dino_resnet_loads_torchvision_weights(tmp_path):
    """The DINO release is a torchvision state dict: check against torchvision itself, full size."""
    torchvision = pytest.importorskip("torchvision")
    tv = _perturb(torchvision.models.resnet50(weights=None))
    tv.fc = nn.Identity()
    sd = {k: v for k, v in tv.state_dict().items() if not k.endswith("num_batches_tracked")}  # older layout
    path = _save(tmp_path, sd)
    assert set(CONVERTERS["dino_resnet"](read_checkpoint(path))) == set(tv.state_dict())
    loaded = load_model("resnet50-dino", weights=path)
    x = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(tv(x), loaded(x), atol=1e-5, rtol=1e-4)


def test_identity_timm_format(tmp_path):
    from safetensors.torch import save_file
    src = _perturb(create_model("random-a"))
    path = tmp_path / "random-a.safetensors"
    save_file(src.state_dict(), str(path))
    loaded = _roundtrip("random-a", path, src, size=64)
    assert not torch.equal(loaded.cls_token, load_model("random-a").cls_token)  # the file was really used
    conv = _perturb(create_model("convnextv2-fcmae", **CONVNEXT))
    _roundtrip("convnextv2-fcmae", _save(tmp_path, conv.state_dict()), conv, **CONVNEXT)


def test_timm_file_with_head_loads_into_headless_model(tmp_path):
    """Hub files for FS/CLIP carry a classifier the registry builds without (num_classes=0)."""
    src = _perturb(create_model("fs", **VIT, num_classes=10))
    loaded = load_model("fs", weights=_save(tmp_path, src.state_dict()), **VIT)
    x = torch.randn(2, 3, 32, 32)
    with torch.no_grad():
        assert torch.allclose(src.forward_features(x), loaded.forward_features(x), atol=1e-5)


def test_torchscript_archive_is_read(tmp_path):
    scripted = torch.jit.script(nn.Linear(3, 2))
    scripted.save(str(tmp_path / "jit.pt"))
    sd = read_checkpoint(tmp_path / "jit.pt")
    assert set(sd) == {"weight", "bias"} and torch.equal(sd["weight"], scripted.weight)


# ----------------------------------------------------------------------------- failures are loud

@pytest.fixture
def mocov3_file(tmp_path):
    src = create_model("mocov3", **VIT)
    return _save(tmp_path, {"state_dict": {f"module.base_encoder.{k}": v for k, v in src.state_dict().items()}})


def test_renamed_key_is_a_mismatch_naming_file_and_keys(mocov3_file, tmp_path):
    ckpt = torch.load(mocov3_file, weights_only=True)
    sd = ckpt["state_dict"]
    sd["module.base_encoder.blocks.0.attn.qkv_renamed.weight"] = sd.pop("module.base_encoder.blocks.0.attn.qkv.weight")
    path = _save(tmp_path, ckpt, "renamed.pth")
    with pytest.raises(CheckpointMismatchError) as info:
        load_model("mocov3", weights=path, **VIT)
    msg = str(info.value)
    assert str(path) in msg and "mocov3_vit" in msg
    assert "1 missing keys: blocks.0.attn.qkv.weight" in msg
    assert "1 unexpected keys: blocks.0.attn.qkv_renamed.weight" in msg


def test_shape_mismatch_is_reported(mocov3_file):
    with pytest.raises(CheckpointMismatchError, match=r"shape mismatches: cls_token: checkpoint \(1, 1, 64\)"):
        load_model("mocov3", weights=mocov3_file, **{**VIT, "embed_dim": 32})


def test_wrong_release_layout_is_a_mismatch(tmp_path):
    plain = _save(tmp_path, create_model("mocov3", **VIT).state_dict())
    with pytest.raises(CheckpointMismatchError, match="module.base_encoder."):
        load_model("mocov3", weights=plain, **VIT)


def test_missing_file_names_path_and_url(tmp_path):
    missing = tmp_path / "nope.pth.tar"
    with pytest.raises(FileNotFoundError) as info:
        load_model("mocov3", weights=missing)
    assert str(missing) in str(info.value) and MODELS["mocov3"].url in str(info.value)
    with pytest.raises(FileNotFoundError, match="huggingface.co/timm/vit_base_patch16_224.dino"):
        load_model("dino", weights=missing)


@pytest.mark.parametrize("name", ["corrupt.pth", "corrupt.safetensors"])
def test_corrupt_file_is_a_checkpoint_error(tmp_path, name):
    path = tmp_path / name
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    with pytest.raises(CheckpointError, match=re.escape(str(path))):
        load_model("random-a", weights=path)


def test_unsafe_pickle_is_refused_with_the_class_named(tmp_path):
    import fractions
    path = _save(tmp_path, {"model": {}, "best": fractions.Fraction(1, 2)})
    with pytest.raises(CheckpointError, match="fractions.Fraction.*add_safe_globals"):
        load_model("random-a", weights=path)


def test_random_models_are_deterministic_per_seed():
    state = torch.random.get_rng_state()
    a1, a2, b = load_model("random-a"), create_model("random-a"), load_model("random-b")
    assert torch.equal(torch.random.get_rng_state(), state)  # the caller's RNG is left alone
    assert all(torch.equal(v, a2.state_dict()[k]) for k, v in a1.state_dict().items())
    assert not torch.equal(a1.pos_embed, b.pos_embed)
    assert not a1.training and a1.patch_embed.proj.weight.shape == (192, 3, 8, 8)


def test_offline_download_is_a_clear_error(tmp_path, monkeypatch):
    def offline(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    with pytest.raises(WeightsUnavailableError) as info:
        load_model("msn")
    msg = str(info.value)
    assert MODELS["msn"].url in msg and str(tmp_path / "checkpoints" / "vitb16_600ep.pth.tar") in msg
    assert "weights=PATH" in msg


def test_downloaded_release_is_reused(tmp_path, monkeypatch):
    src = _perturb(create_model("msn", **VIT))
    (tmp_path / "checkpoints").mkdir()
    _save(tmp_path / "checkpoints", {"target_encoder": {f"module.{k}": v for k, v in src.state_dict().items()}},
          "vitb16_600ep.pth.tar")
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))
    monkeypatch.setattr(torch.hub, "download_url_to_file", lambda *a, **k: pytest.fail("downloaded again"))
    _assert_same(src, load_model("msn", **VIT))


def test_timm_hub_offline_is_a_clear_error(monkeypatch):
    real = timm.create_model

    def offline(name, pretrained=False, **kwargs):
        if pretrained:
            raise OSError("cannot reach the hub")
        return real(name, pretrained=False, **kwargs)

    monkeypatch.setattr(timm, "create_model", offline)
    with pytest.raises(WeightsUnavailableError, match=r"vit_base_patch16_224\.dino.*weights=PATH"):
        load_model("dino", **VIT)


# ----------------------------------------------------------------------------- DINO training checkpoint, CLIP dtype

def _dino_head(prefix: str, dim: int) -> dict:
    """DINOHead's keys (3-layer MLP, weight-normalised last layer), as main_dino.py saves them."""
    return {f"{prefix}mlp.0.weight": torch.randn(32, dim), f"{prefix}mlp.0.bias": torch.randn(32),
            f"{prefix}mlp.2.weight": torch.randn(32, 32), f"{prefix}mlp.2.bias": torch.randn(32),
            f"{prefix}mlp.4.weight": torch.randn(16, 32), f"{prefix}mlp.4.bias": torch.randn(16),
            f"{prefix}last_layer.weight_g": torch.ones(64, 1), f"{prefix}last_layer.weight_v": torch.randn(64, 16)}


@pytest.mark.parametrize("teacher_prefix", ["module.", ""])
def test_dino_resnet_training_checkpoint_uses_the_teacher(tmp_path, teacher_prefix):
    """main_dino.py's checkpoint: student (DDP: ``module.backbone.*``, ``module.head.*``) and teacher (DDP-wrapped
    when the backbone has BatchNorm, as ResNet-50 does, else bare ``backbone.*``). The teacher must be loaded; the
    student differs in every value, so reading it (or keeping any prefix) cannot pass."""
    teacher_src = _perturb(create_model("resnet50-dino", **RESNET), seed=0)
    student_src = _perturb(create_model("resnet50-dino", **RESNET), seed=1)
    student = {f"module.backbone.{k}": v for k, v in student_src.state_dict().items()}
    student.update(_dino_head("module.head.", 2048))
    teacher = {f"{teacher_prefix}backbone.{k}": v for k, v in teacher_src.state_dict().items()}
    teacher.update(_dino_head(f"{teacher_prefix}head.", 2048))
    ckpt = {"student": student, "teacher": teacher, "epoch": 800, "args": argparse.Namespace(arch="resnet50"),
            "optimizer": {"state": {}, "param_groups": [{"lr": 0.3, "params": [0]}]},
            "dino_loss": {"center": torch.randn(1, 64)}}
    path = _save(tmp_path, ckpt)
    converted = CONVERTERS["dino_resnet"](read_checkpoint(path))
    assert set(converted) == set(teacher_src.state_dict())
    for k, v in teacher_src.state_dict().items():
        assert torch.equal(converted[k], v), k
    _roundtrip("resnet50-dino", path, teacher_src, **RESNET)
    student_as_release = _save(tmp_path, {k[len("module.backbone."):]: v for k, v in student.items()
                                          if k.startswith("module.backbone.")}, "student.pth")
    with torch.no_grad():  # the two encoders really differ in output, so the round trip pins the teacher
        x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(1))
        assert not torch.allclose(load_model("resnet50-dino", weights=student_as_release, **RESNET)(x),
                                  teacher_src(x), atol=1e-3)


def test_dino_resnet_release_fills_missing_bn_counters():
    """The released file (torchvision names, no fc, no counters): every BN gets num_batches_tracked = 0."""
    src = create_model("resnet50-dino", **RESNET)
    release = {k: v for k, v in src.state_dict().items() if not k.endswith("num_batches_tracked")}
    converted = CONVERTERS["dino_resnet"](dict(release, **{"fc.weight": torch.randn(10, 2048)}))
    assert set(converted) == set(src.state_dict())
    counters = [k for k in converted if k.endswith("num_batches_tracked")]
    assert counters and all(converted[k].dtype == torch.long and int(converted[k]) == 0 for k in counters)


def test_openai_clip_fp16_release_is_upcast():
    """OpenAI ships fp16 weights; the converter returns float32 (a float32 model would otherwise round-trip them)."""
    src = create_model("clip", **VIT, num_classes=16)
    with torch.no_grad():
        src.head.bias.zero_()
    half = {k: v.half() if v.is_floating_point() else v for k, v in _to_openai_clip(src.state_dict()).items()}
    converted = CONVERTERS["openai_clip"](half)
    assert set(converted) == set(src.state_dict())
    assert all(v.dtype == torch.float32 for v in converted.values())
    assert torch.equal(converted["cls_token"], src.cls_token.detach().half().float())


class _Planted:
    """Unpickling this object creates a file: what a malicious checkpoint does with full unpickling."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        import pathlib
        return (pathlib.Path.touch, (pathlib.Path(self.marker),))


@pytest.mark.reliability("security", "a checkpoint whose unpickling would run code is refused; the code never runs")
def test_malicious_pickle_never_runs(tmp_path):
    marker = tmp_path / "pwned"
    path = tmp_path / "evil.pth"
    torch.save({"model": {}, "payload": _Planted(marker)}, path)
    with pytest.raises(CheckpointError, match="weights_only|safe"):
        load_model("random-a", weights=path)
    assert not marker.exists()
    # the same file, fully unpickled, would have planted the file: the test can fail
    torch.load(path, weights_only=False)
    assert marker.exists()


# ----------------------------------------------------------------------- converters, the releases' other wrappers

def _t(i: float) -> torch.Tensor:
    return torch.full((2,), float(i))


def _same(a: dict, b: dict) -> bool:
    return set(a) == set(b) and all(torch.equal(a[k], b[k]) for k in a)


def test_beit_reads_a_module_wrapped_file():
    """unilm's checkpoints wrap the weights in "model", some re-saves in "module": both are read."""
    inner = {"cls_token": _t(1), "mask_token": _t(2), "lm_head.weight": _t(3),
             "blocks.0.attn.relative_position_index": _t(4), "blocks.0.gamma_1": _t(5)}
    expected = {"cls_token": _t(1), "blocks.0.gamma_1": _t(5)}
    assert _same(CONVERTERS["beit_pt22k"]({"module": inner}), expected)
    assert _same(CONVERTERS["beit_pt22k"]({"model": inner}), expected)


def test_mocov3_vit_reads_a_file_saved_without_ddp():
    """A checkpoint saved from the unwrapped model has ``base_encoder.*`` without DDP's ``module.``."""
    sd = {"base_encoder.cls_token": _t(1), "base_encoder.head.0.weight": _t(2), "momentum_encoder.cls_token": _t(3),
          "predictor.0.weight": _t(4)}
    assert _same(CONVERTERS["mocov3_vit"]({"state_dict": sd}), {"cls_token": _t(1)})
    assert _same(CONVERTERS["mocov3_resnet"]({"state_dict": {"base_encoder.conv1.weight": _t(1),
                                                              "base_encoder.fc.0.weight": _t(2)}}),
                 {"conv1.weight": _t(1)})


def test_openai_clip_unwraps_state_dict_and_passes_timm_names_through():
    timm_names = {"cls_token": _t(1), "blocks.0.norm1.weight": _t(2)}
    assert _same(CONVERTERS["openai_clip"]({"state_dict": timm_names}), timm_names)
    src = create_model("clip", **VIT, num_classes=16)
    openai = _to_openai_clip(src.state_dict())
    direct, wrapped = CONVERTERS["openai_clip"](openai), CONVERTERS["openai_clip"]({"state_dict": openai})
    assert set(direct) >= set(src.state_dict()) - {"head.bias"} and _same(direct, wrapped)


def test_mocov3_resnet_refuses_a_file_without_the_base_encoder():
    with pytest.raises(ConversionError) as err:
        CONVERTERS["mocov3_resnet"]({"state_dict": {"conv1.weight": _t(1), "fc.weight": _t(2)}})
    assert str(err.value) == ("no key starts with any of ('module.base_encoder.', 'base_encoder.'); first keys are: "
                              "conv1.weight, fc.weight")


def test_dino_resnet_reads_a_state_dict_wrapper_and_keeps_unprefixed_names():
    sd = {"conv1.weight": _t(1), "bn1.running_mean": _t(2), "fc.weight": _t(3)}
    out = CONVERTERS["dino_resnet"]({"state_dict": sd})
    assert set(out) == {"conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked"}
    assert torch.equal(out["conv1.weight"], _t(1)) and out["bn1.num_batches_tracked"].item() == 0


def test_msn_keeps_the_encoder_with_or_without_ddp_prefix_and_drops_every_head():
    heads = {"fc.0.weight": _t(9), "pred.0.weight": _t(9), "predictor.0.weight": _t(9), "prototypes": _t(9)}
    trunk = {"cls_token": _t(1), "blocks.0.attn.qkv.weight": _t(2)}
    expected = dict(trunk)
    assert _same(CONVERTERS["msn"]({"target_encoder": {**trunk, **heads}}), expected)
    ddp = {f"module.{k}": v for k, v in {**trunk, **heads}.items()}
    assert _same(CONVERTERS["msn"]({"target_encoder": ddp, "encoder": {"x": _t(0)}}), expected)


def test_openai_clip_reads_a_ddp_prefixed_file_and_upcasts_only_floats():
    src = create_model("clip", **VIT, num_classes=16)
    openai = {k: v.half() if v.is_floating_point() else v for k, v in _to_openai_clip(src.state_dict()).items()}
    plain = CONVERTERS["openai_clip"](openai)
    ddp = CONVERTERS["openai_clip"]({f"module.{k}" if k.startswith("visual.") else k: v for k, v in openai.items()})
    assert _same(plain, ddp)
    with_int = CONVERTERS["openai_clip"]({**openai, "visual.counter": torch.tensor([3], dtype=torch.long)})
    assert with_int["counter"].dtype == torch.long
    assert all(v.dtype == torch.float32 for k, v in with_int.items() if k != "counter")


def test_layout_error_lists_the_first_five_keys():
    sd = {f"layer{i}.weight": _t(i) for i in range(7)}
    with pytest.raises(ConversionError) as err:
        CONVERTERS["mocov3_vit"](sd)
    assert str(err.value).endswith("first keys are: layer0.weight, layer1.weight, layer2.weight, layer3.weight, "
                                   "layer4.weight")


def test_dino_resnet_drops_the_head_of_an_unprefixed_teacher():
    out = CONVERTERS["dino_resnet"]({"teacher": {"conv1.weight": _t(1), "head.mlp.0.weight": _t(2),
                                                 "head.last_layer.weight_g": _t(3)}})
    assert _same(out, {"conv1.weight": _t(1)})

"""vitscope.models: the registry's derived values checked exactly (issue 17: mutants in them survived).

Cache keys, listings and error messages are built from ``ModelCfg``'s methods; a wrong key silently serves stale
features and a wrong message sends a user the wrong way, so each is compared with the string it must be, written
out here by hand.
"""
from __future__ import annotations

import dataclasses
import hashlib

import pytest
import torch

from vitscope.models import MODELS, UnknownModelError, get_cfg, loading, registry
from vitscope.models.registry import PACKAGED_WEIGHTS, FrozenDict, ModelCfg, Preprocess, file_digest


def test_file_digest_is_sha256_over_all_chunks(tmp_path):
    data = bytes(range(256)) * 41 + b"tail"  # 10 500 bytes: several 1 kB chunks and a short last one
    path = tmp_path / "blob.bin"
    path.write_bytes(data)
    expected = hashlib.sha256(data).hexdigest()
    assert file_digest(path, chunk=1000) == expected
    assert file_digest(path) == expected
    assert file_digest(str(path)) == expected


def test_frozen_dict_refuses_every_mutation_and_hashes_by_content():
    a = FrozenDict(x=1, y=(2, 3))
    for mutate in (lambda d: d.__setitem__("x", 2), lambda d: d.__delitem__("x"), lambda d: d.update(z=1),
                   lambda d: d.pop("x"), lambda d: d.setdefault("z", 1), lambda d: d.clear()):
        with pytest.raises(TypeError) as err:
            mutate(a)
        assert str(err.value) == ("registry arch_kwargs are read-only; pass overrides to create_model/load_model "
                                  "instead")
    assert a == {"x": 1, "y": (2, 3)}
    assert hash(a) == hash(FrozenDict(y=(2, 3), x=1)) == hash((("x", 1), ("y", (2, 3))))
    assert hash(a) != hash(FrozenDict(x=2, y=(2, 3)))


def test_model_cfg_freezes_plain_dict_kwargs_and_keeps_frozen_ones():
    plain = ModelCfg("t", "T", "random", ("demo",), "vit_tiny_patch16_224", arch_kwargs={"depth": 2}, source="random")
    assert isinstance(plain.arch_kwargs, FrozenDict) and plain.arch_kwargs == {"depth": 2}
    frozen = FrozenDict(depth=2)
    kept = ModelCfg("t", "T", "random", ("demo",), "vit_tiny_patch16_224", arch_kwargs=frozen, source="random")
    assert kept.arch_kwargs is frozen
    assert hash(plain) == hash(kept)


def test_unknown_model_error_prints_its_message_unquoted():
    assert str(UnknownModelError("unknown model 'x'.\nKnown: a")) == "unknown model 'x'.\nKnown: a"
    assert str(UnknownModelError()) == ""


def test_weights_identity_names_each_source_exactly(tmp_path):
    file = tmp_path / "w.safetensors"
    file.write_bytes(b"weights")
    digest = hashlib.sha256(b"weights").hexdigest()
    assert get_cfg("random-b").weights_identity() == "random:seed=101"
    assert get_cfg("fs").weights_identity() == "timm:vit_base_patch16_224.augreg_in21k_ft_in1k"
    mocov3 = get_cfg("mocov3")
    assert mocov3.weights_identity() == f"url:{mocov3.url}"
    for name in ("random-b", "fs", "mocov3", "zoo-supervised"):  # a local file replaces any source
        assert get_cfg(name).weights_identity(file) == "sha256:" + digest
        assert get_cfg(name).weights_identity(str(file)) == "sha256:" + digest
    shipped = get_cfg("zoo-supervised")
    assert shipped.weights_identity() == "sha256:" + hashlib.sha256(shipped.packaged_path().read_bytes()).hexdigest()
    missing = dataclasses.replace(shipped, filename="not-trained-yet.safetensors")
    assert missing.weights_identity() == "absent:not-trained-yet.safetensors"


def test_identity_is_every_field_that_changes_features():
    cfg = get_cfg("random-a")
    assert cfg.identity() == {
        "name": "random-a", "arch": "vit_tiny_patch16_224",
        "arch_kwargs": {"img_size": 64, "patch_size": 8, "embed_dim": 192, "depth": 6, "num_heads": 6,
                        "num_classes": 0},
        "converter": "identity", "weights": "random:seed=100",
        "preprocess": {"mean": (0.5, 0.5, 0.5), "std": (0.5, 0.5, 0.5), "resize": 64, "crop": 64,
                       "interpolation": "bicubic"}}
    assert type(cfg.identity()["arch_kwargs"]) is dict  # json-able, not the FrozenDict itself


def test_identity_uses_the_given_weights_file(tmp_path):
    file = tmp_path / "w.pth"
    file.write_bytes(b"other")
    assert get_cfg("random-a").identity(file)["weights"] == "sha256:" + hashlib.sha256(b"other").hexdigest()


def test_architecture_description_lists_geometry_in_order():
    assert get_cfg("random-a").architecture_description() == (
        "vit_tiny_patch16_224 (img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=6)")
    assert get_cfg("random-cnn-a").architecture_description() == "resnet18 (channels=(32, 64, 128, 192))"
    assert get_cfg("fs").architecture_description() == "vit_base_patch16_224"


def test_weights_description_per_source():
    assert get_cfg("fs").weights_description() == "timm hub: vit_base_patch16_224.augreg_in21k_ft_in1k"
    assert get_cfg("mocov3").weights_description() == "release file vit-b-300ep.pth.tar"
    assert get_cfg("zoo-dino").weights_description() == "shipped with vitscope: zoo-dino.safetensors"
    assert get_cfg("random-c").weights_description() == "random init (seed 102)"


def test_packaged_path_only_for_shipped_models():
    assert get_cfg("zoo-mae").packaged_path() == PACKAGED_WEIGHTS / "zoo-mae.safetensors"
    assert loading.packaged_path("zoo-mae") == PACKAGED_WEIGHTS / "zoo-mae.safetensors"
    with pytest.raises(ValueError) as err:
        get_cfg("random-a").packaged_path()
    assert str(err.value) == "model 'random-a' has source 'random'; only 'package' models ship weights"


def test_every_entry_is_a_frozen_hashable_cfg():
    for cfg in MODELS.values():
        assert isinstance(cfg.arch_kwargs, FrozenDict)
        assert isinstance(cfg.preprocess, Preprocess)
        hash(cfg)
    assert registry.get_cfg(MODELS["fs"]) is MODELS["fs"]


# ----------------------------------------------------------------------------- reader errors

_CAUSE = "invalid load key, '\\x00'"


@pytest.mark.parametrize("boilerplate", ["Weights only load failed. This file can still be loaded",
                                         "Please file an issue with the following so that we can make",
                                         "Check the documentation of torch.load to learn more",
                                         "(1) In PyTorch 2.6, we changed the default value",
                                         "(2) Alternatively, to load with `weights_only=True`"])
def test_read_failure_skips_each_torch_boilerplate_line(boilerplate):
    err = RuntimeError(f"{boilerplate}\n\n  {_CAUSE}\n")
    assert loading._read_failure(err) == (
        f"RuntimeError: {_CAUSE}. The file may be truncated or corrupt (re-download it), or not a "
        "PyTorch/safetensors checkpoint.")


def test_read_failure_names_the_refused_global():
    err = RuntimeError("Weights only load failed. Re-running `torch.load` with `weights_only` set to `False` "
                       "will likely succeed.\n"
                       "Please file an issue.\n"
                       "WeightsUnpickler error: Unsupported global: GLOBAL evil.Payload was not an allowed "
                       "global by default. Please use `torch.serialization.add_safe_globals([Payload])`.\n"
                       "Check the documentation of torch.load.")
    assert loading._read_failure(err) == (
        "safe loading (weights_only=True) refuses a Python object in it (WeightsUnpickler error: Unsupported "
        "global: GLOBAL evil.Payload was not an allowed global by default). If you trust the file, allowlist "
        "that class with torch.serialization.add_safe_globals([...]) and load again.")


def test_read_failure_keeps_the_first_line_when_all_is_boilerplate_and_clips_long_causes():
    only = RuntimeError("Weights only load failed.\nPlease file an issue.")
    assert loading._read_failure(only).startswith("RuntimeError: Weights only load failed.. The file may")
    assert loading._read_failure(ValueError("")) == (
        "ValueError: . The file may be truncated or corrupt (re-download it), or not a PyTorch/safetensors "
        "checkpoint.")
    long = OSError("x" * 400)
    assert loading._read_failure(long) == (
        f"OSError: {'x' * 300}. The file may be truncated or corrupt (re-download it), or not a "
        "PyTorch/safetensors checkpoint.")


def test_timm_hub_failure_passes_overrides_and_says_how_to_load_offline(monkeypatch):
    seen = {}

    def offline(cfg, pretrained, **overrides):
        seen.update(pretrained=pretrained, **overrides)
        raise ConnectionError("no route to host")

    monkeypatch.setattr(loading, "_timm_create", offline)
    monkeypatch.setattr(registry.ModelCfg, "weights_origin", lambda self: "ORIGIN")
    with pytest.raises(loading.WeightsUnavailableError) as err:
        loading.load_model("fs", depth=2)
    assert seen == {"pretrained": True, "depth": 2}
    assert str(err.value) == (
        "could not get the weights of model 'fs' from the timm hub tag 'vit_base_patch16_224.augreg_in21k_ft_in1k' "
        "(ConnectionError: no route to host). If you are offline, download the weights elsewhere (ORIGIN) and "
        "pass the file: load_model('fs', weights=PATH).")
    assert isinstance(err.value.__cause__, ConnectionError)


def test_create_model_of_a_random_entry_is_seeded_and_leaves_the_global_rng_alone():
    torch.manual_seed(5)
    before = torch.rand(1)
    torch.manual_seed(5)
    a = loading.create_model("random-a", depth=1)
    after = torch.rand(1)
    assert torch.equal(before, after)
    b = loading.create_model("random-a", depth=1)
    c = loading.create_model("random-b", depth=1)
    assert torch.equal(a.pos_embed, b.pos_embed)
    assert not torch.equal(a.pos_embed, c.pos_embed)
    assert len(a.blocks) == 1 and len(loading.create_model("fs", depth=1).blocks) == 1  # overrides reach timm


_OWN = ModelCfg("own", "Own", "random", ("demo",), "vit_tiny_patch16_224", source="random",
                preprocess=Preprocess(mean=(0.1, 0.2, 0.3), std=(0.4, 0.5, 0.6), resize=40, crop=32,
                                      interpolation="bilinear"))  # nothing like timm's defaults for the arch


@pytest.mark.parametrize("name", ["random-a", "fs", "clip", "beit", _OWN])
def test_timm_data_config_agrees_with_the_registry_preprocess(name):
    """timm's own data config (what ``timm.data.create_transform`` would use) is overlaid with our Preprocess."""
    import timm.data

    cfg = get_cfg(name)
    model = loading.create_model(name, depth=1)
    data = timm.data.resolve_data_config({}, model=model)
    pre = cfg.preprocess
    assert data["mean"] == pre.mean and data["std"] == pre.std and data["interpolation"] == pre.interpolation
    assert data["crop_pct"] == pytest.approx(pre.crop / pre.resize)


def test_list_models_filters_by_paper_and_rejects_unknown_papers():
    assert registry.list_models() == list(MODELS)
    demo = registry.list_models("demo")
    assert demo == [n for n, c in MODELS.items() if "demo" in c.papers] and "random-a" in demo and "fs" not in demo
    with pytest.raises(ValueError) as err:
        registry.list_models("XY")
    assert str(err.value) == "unknown paper 'XY'; expected one of ('TM', 'OM', 'demo')"


def test_kw_builds_a_frozen_dict():
    kw = registry._kw(depth=2, img_size=64)
    assert isinstance(kw, FrozenDict) and kw == {"depth": 2, "img_size": 64}


# ----------------------------------------------------------------------------- release downloads

def test_expected_path_is_under_torch_hub_and_only_for_url_entries(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path / "hub"))
    assert loading.expected_path("mocov3") == tmp_path / "hub" / "checkpoints" / "vit-b-300ep.pth.tar"
    with pytest.raises(ValueError) as err:
        loading.expected_path("fs")
    assert str(err.value) == "model 'fs' has source 'timm'; only 'url' models have a release file"


@pytest.mark.parametrize("hub_exists", [False, True])
def test_fetch_release_downloads_once_into_the_hub_checkpoints_dir(monkeypatch, tmp_path, hub_exists):
    hub = tmp_path / "deep" / "hub"
    if hub_exists:  # the checkpoints dir is there already (another release was fetched before)
        (hub / "checkpoints").mkdir(parents=True)
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(hub))
    calls = []

    def download(url, dst, progress=False):
        calls.append((url, dst, progress))
        with open(dst, "wb") as f:
            f.write(b"release")

    monkeypatch.setattr(torch.hub, "download_url_to_file", download)
    cfg = get_cfg("mocov3")
    target = hub / "checkpoints" / "vit-b-300ep.pth.tar"
    assert loading._fetch_release(cfg) == target
    assert calls == [(cfg.url, str(target), True)]
    assert loading._fetch_release(cfg) == target and len(calls) == 1  # cached: no second download
    assert target.read_bytes() == b"release"


def test_fetch_release_failure_says_where_to_put_the_file(monkeypatch, tmp_path):
    monkeypatch.setattr(torch.hub, "get_dir", lambda: str(tmp_path))

    def refused(url, dst, progress=False):
        raise PermissionError("403 Forbidden")

    monkeypatch.setattr(torch.hub, "download_url_to_file", refused)
    cfg = get_cfg("beit")
    target = tmp_path / "checkpoints" / "beit_base_patch16_224_pt22k.pth"
    with pytest.raises(loading.WeightsUnavailableError) as err:
        loading._fetch_release(cfg)
    assert str(err.value) == (
        f"could not download the weights of model 'beit' from {cfg.url} to {target} (PermissionError: 403 "
        f"Forbidden). Download the file by hand and either put it at {target} or pass "
        "load_model('beit', weights=PATH).")


# ----------------------------------------------------------------------------- reading and checking files

def test_weights_origin_of_shipped_and_random_entries():
    zoo = get_cfg("zoo-clip")
    assert zoo.weights_origin() == (f"{PACKAGED_WEIGHTS / 'zoo-clip.safetensors'} (shipped with vitscope; rebuild "
                                    "with `vitscope zoo train --model zoo-clip`)")
    assert get_cfg("random-b").weights_origin() == "random init, seed 101"
    assert loading.weights_origin("random-b") == "random init, seed 101"
    assert get_cfg("mocov3").weights_origin() == get_cfg("mocov3").url


def test_safetensors_and_legacy_pickles_are_read(tmp_path):
    from safetensors.torch import save_file

    sd = {"w": torch.arange(6.0).reshape(2, 3), "b": torch.tensor([1, 2])}
    save_file(sd, tmp_path / "w.safetensors")
    torch.save(sd, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)   # not a zip: not TorchScript
    assert not loading._is_torchscript(tmp_path / "legacy.pth")
    for name in ("w.safetensors", "legacy.pth"):
        got = loading.read_checkpoint(tmp_path / name)
        assert set(got) == {"w", "b"} and all(torch.equal(got[k], sd[k]) for k in sd)


def test_a_checkpoint_saved_on_a_gpu_is_read_on_the_cpu(tmp_path, monkeypatch):
    """Releases are saved from CUDA tensors; reading one on a machine without a GPU must map them to the CPU."""
    path = tmp_path / "cuda.pth"
    monkeypatch.setattr(torch.serialization, "location_tag", lambda storage: "cuda:0")  # what a GPU run writes
    torch.save({"w": torch.ones(3)}, path)
    monkeypatch.undo()
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="CUDA"):
            torch.load(path, weights_only=True)          # the file really says cuda:0
    got = loading.read_checkpoint(path)
    assert got["w"].device.type == "cpu" and torch.equal(got["w"], torch.ones(3))


class _Opaque:
    """A harmless class: safe loading must still refuse to build it from a file."""


def test_safe_loading_holds_even_when_the_environment_asks_for_unsafe_defaults(tmp_path, monkeypatch):
    """``weights_only=True`` is passed explicitly: TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD changes only the default."""
    path = tmp_path / "odd.pth"
    torch.save({"w": torch.ones(1), "extra": _Opaque()}, path)
    monkeypatch.setenv("TORCH_FORCE_NO_WEIGHTS_ONLY_LOAD", "1")
    with pytest.raises(loading.CheckpointError, match="refuses a Python object"):
        loading.read_checkpoint(path)


def test_a_file_holding_something_else_than_a_dict_is_refused(tmp_path):
    path = tmp_path / "list.pth"
    torch.save([torch.ones(1)], path)
    with pytest.raises(loading.CheckpointError) as err:
        loading.read_checkpoint(path)
    assert str(err.value) == f"checkpoint file {path} holds a list, not a state dict"


def _small_vit():
    return loading.create_model("random-a", depth=1, num_classes=0)


def test_mismatch_message_lists_ten_keys_then_counts_the_rest():
    model = _small_vit()
    sd = dict(model.state_dict())
    own = list(sd)
    for k in own[:11]:
        del sd[k]
    with pytest.raises(loading.CheckpointMismatchError) as err:
        loading.check_state_dict(sd, model, path="f.pth", cfg=get_cfg("random-a"))
    missing = sorted(own[:11])
    assert str(err.value) == (
        "checkpoint f.pth does not match model 'random-a' (timm vit_tiny_patch16_224, converter 'identity'):\n"
        f"  11 missing keys: {', '.join(missing[:10])}, ... (+1 more)\n"
        "  Expected the release from random init, seed 100; if arch overrides were given, check they match the file.")


def test_mismatch_message_for_ten_keys_lists_them_all_and_names_non_tensors():
    model = _small_vit()
    sd = dict(model.state_dict())
    own = list(sd)
    for k in own[:10]:
        del sd[k]
    sd[own[10]] = 3  # not a tensor: its "shape" is named as such
    with pytest.raises(loading.CheckpointMismatchError) as err:
        loading.check_state_dict(sd, model, path="f.pth", cfg=get_cfg("random-a"))
    lines = str(err.value).split("\n")
    assert lines[1] == f"  10 missing keys: {', '.join(sorted(own[:10]))}"
    assert lines[2] == (f"  1 shape mismatches: {own[10]}: checkpoint <int, not a tensor> vs model "
                        f"{tuple(model.state_dict()[own[10]].shape)}")


def test_only_unexpected_keys_are_a_mismatch_too():
    model = _small_vit()
    with pytest.raises(loading.CheckpointMismatchError, match="1 unexpected keys: extra"):
        loading.check_state_dict({**model.state_dict(), "extra": torch.ones(1)}, model, path="f",
                                 cfg=get_cfg("random-a"))
    loading.check_state_dict(dict(model.state_dict()), model, path="f", cfg=get_cfg("random-a"))  # exact: passes


def test_classifier_keys_are_dropped_only_for_a_headless_timm_model(caplog):
    headless, with_head = _small_vit(), loading.create_model("random-a", depth=1, num_classes=3)
    sd = {**headless.state_dict(), "head.weight": torch.ones(3, 192), "head.bias": torch.ones(3)}
    with caplog.at_level("INFO", logger="vitscope.models.loading"):
        kept = loading._drop_absent_classifier(sd, headless)
    assert set(kept) == set(headless.state_dict())
    assert caplog.messages == ["model has no classifier; ignoring checkpoint keys ['head.weight', 'head.bias']"]
    assert loading._drop_absent_classifier(sd, with_head) == sd
    plain = torch.nn.Linear(2, 2)  # not a timm model: no pretrained_cfg, nothing to decide
    assert loading._drop_absent_classifier(sd, plain) == sd


def test_load_model_moves_the_model_to_the_device():
    model = loading.load_model("random-a", device="meta", depth=1)
    assert model.pos_embed.device.type == "meta" and not model.training


def test_unknown_names_always_get_the_closest_name_and_the_full_list():
    import difflib

    closest = difflib.get_close_matches("qqqq", list(MODELS), n=1, cutoff=0.0)[0]  # far from every name
    with pytest.raises(UnknownModelError) as err:
        get_cfg("qqqq")
    assert str(err.value) == f"unknown model 'qqqq'. Did you mean {closest!r}? Known models: {', '.join(MODELS)}"


def test_fine_tuned_names_go_to_the_fine_tune_resolver(monkeypatch):
    import vitscope.finetune

    seen = []
    monkeypatch.setattr(vitscope.finetune, "resolve", lambda name: seen.append(name) or MODELS["fs"])
    assert get_cfg("zoo-dino+ft@3") is MODELS["fs"] and seen == ["zoo-dino+ft@3"]
    assert get_cfg("zoo-dino") is MODELS["zoo-dino"] and len(seen) == 1

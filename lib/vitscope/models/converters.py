"""Checkpoint converters: an official release's state dict -> the state dict of the registry's timm model.

Each converter is a pure function ``dict -> dict`` (no model needed). Input: whatever ``torch.load`` returned
(the state dict itself or a training checkpoint wrapping it under "model"/"state_dict"/"target_encoder"/...).
Output: a flat ``{timm_key: Tensor}`` that ``model.load_state_dict(..., strict=True)`` accepts. Converters drop
what the timm model has no place for (projectors, predictors, momentum copies, decoders, index buffers) and
never invent trained weights; a layout they do not recognise raises ``ConversionError``.
"""
from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping

import torch

StateDict = dict[str, torch.Tensor]


class ConversionError(ValueError):
    """The checkpoint does not have the layout this converter expects (loading reports it with the file name)."""


def _unwrap(ckpt: Mapping, keys: Iterable[str]) -> Mapping:
    """Descend into the first wrapper key present, repeatedly (e.g. {"model": {...}}, {"state_dict": {...}})."""
    keys = tuple(keys)
    while isinstance(ckpt, Mapping):
        inner = next((ckpt[k] for k in keys if isinstance(ckpt.get(k), Mapping)), None)
        if inner is None:
            return ckpt
        ckpt = inner
    return ckpt


def _strip_prefix(sd: Mapping, prefixes: Iterable[str], *, required: bool) -> StateDict:
    """Keep the keys under the first prefix that any key carries, with that prefix removed.

    With ``required`` a checkpoint carrying none of the prefixes is an error (it is not the expected release);
    otherwise it is returned unchanged.
    """
    prefixes = tuple(prefixes)
    for p in prefixes:
        if any(k.startswith(p) for k in sd):
            return {k[len(p):]: v for k, v in sd.items() if k.startswith(p)}
    if required:
        sample = ", ".join(list(sd)[:5])
        raise ConversionError(f"no key starts with any of {prefixes}; first keys are: {sample}")
    return dict(sd)


def _drop(sd: Mapping, prefixes: Iterable[str] = (), names: Iterable[str] = (), suffixes: Iterable[str] = ()):
    """``sd`` without the keys that start with a prefix, equal a name or end with a suffix."""
    prefixes, names, suffixes = tuple(prefixes), set(names), tuple(suffixes)
    return {k: v for k, v in sd.items()
            if not k.startswith(prefixes) and k not in names and not k.endswith(suffixes)}


def _fill_bn_counters(sd: StateDict) -> StateDict:
    """Add ``num_batches_tracked`` (0) next to every BatchNorm ``running_mean`` that lacks it.

    Releases saved from different torchvision versions carry this counter or not; it only matters when training
    with ``momentum=None`` and never changes eval outputs, so filling it cannot hide a real mismatch.
    """
    out = dict(sd)
    for k in sd:
        if k.endswith(".running_mean"):
            out.setdefault(k[: -len("running_mean")] + "num_batches_tracked", torch.tensor(0, dtype=torch.long))
    return out


# ----------------------------------------------------------------------------- ViT converters

def identity(ckpt: Mapping) -> StateDict:
    """timm-format files (hub downloads, our own safetensors): returned unchanged."""
    return dict(ckpt)


def mocov3_vit(ckpt: Mapping) -> StateDict:
    """MoCo-v3 ``vit-b-300ep.pth.tar`` -> timm ``vit_base_patch16_224`` (num_classes=0).

    The release holds ``{"state_dict": {"module.base_encoder.*", "module.momentum_encoder.*",
    "module.predictor.*"}}``. The base encoder is a timm ViT whose ``head`` is the 3-layer projector MLP: keep
    the base encoder, strip its prefix, drop ``head.*``. (The fixed sin-cos ``pos_embed`` is a stored parameter.)
    """
    sd = _strip_prefix(_unwrap(ckpt, ["state_dict"]), ["module.base_encoder.", "base_encoder."], required=True)
    return _drop(sd, prefixes=["head."])


def beit_pt22k(ckpt: Mapping) -> StateDict:
    """unilm ``beit_base_patch16_224_pt22k.pth`` -> timm ``beit_base_patch16_224`` built with
    ``use_shared_rel_pos_bias=True, use_rel_pos_bias=False, use_abs_pos_emb=False, init_values=0.1``.

    Names already match timm (``rel_pos_bias.relative_position_bias_table`` [(2W-1)^2+3, heads], ``gamma_1/2``,
    ``attn.q_bias/v_bias``); drop the masked-image-modelling parts (``mask_token``, ``lm_head.*``) and the
    ``relative_position_index`` buffers, which timm rebuilds from the window size.
    """
    sd = dict(_unwrap(ckpt, ["model", "module"]))
    return _drop(sd, prefixes=["lm_head."], names=["mask_token"], suffixes=["relative_position_index"])


def msn(ckpt: Mapping) -> StateDict:
    """MSN ``vitb16_600ep.pth.tar`` -> timm ``vit_base_patch16_224`` (num_classes=0).

    Use the EMA ``target_encoder`` (what MSN evaluates), strip the DDP ``module.`` prefix, drop the projection
    head ``fc.*`` and ``pred.*``. MSN's deit.py names (``patch_embed.proj``, ``cls_token``, ``pos_embed``,
    ``blocks.N.attn.qkv``, ``blocks.N.mlp.fc1``, ``norm``) are timm's, so nothing is renamed.
    """
    sd = _unwrap(ckpt, ["target_encoder"])
    sd = _strip_prefix(sd, ["module."], required=False)
    return _drop(sd, prefixes=["fc.", "pred.", "predictor."], names=["prototypes"])


def mae_pretrained(ckpt: Mapping) -> StateDict:
    """MAE pre-training file (``{"model": ...}``) -> timm ``vit_base_patch16_224`` (token pool, final norm).

    The released ``mae_pretrain_vit_base.pth`` is encoder-only; a full training checkpoint also has the decoder
    (``decoder_*``) and ``mask_token``, dropped here.
    """
    sd = dict(_unwrap(ckpt, ["model"]))
    return _drop(sd, prefixes=["decoder_"], names=["mask_token"])


def mae_finetuned(ckpt: Mapping) -> StateDict:
    """``mae_finetuned_vit_base.pth`` (``{"model": ...}``) -> timm ``vit_base_patch16_224`` with
    ``global_pool="avg"`` (``fc_norm`` after pooling, no final ``norm``) and the 1000-class ``head``."""
    return dict(_unwrap(ckpt, ["model"]))


def openai_clip(ckpt: Mapping) -> StateDict:
    """OpenAI CLIP (``visual.*`` names) -> timm ``vit_base_patch16_clip_quickgelu_224``; timm files pass through.

    Delegates the renaming to timm's ``_convert_openai_clip`` (conv1->patch_embed.proj, ln_pre->norm_pre,
    resblocks->blocks, in_proj->qkv, c_fc/c_proj->fc1/fc2, ln_post->norm, class/positional embedding reshaped),
    which turns ``visual.proj`` [D, E] (image->joint-space projection) into ``head.weight`` [E, D] plus a zero
    ``head.bias``. With num_classes=0 the model has no head: ``load_model`` drops classifier keys the model has
    no place for (as timm does), with num_classes=E they load as the projection. Text-tower keys are ignored.
    OpenAI ships fp16 weights; they are upcast to float32.
    """
    from timm.models.vision_transformer import _convert_openai_clip

    sd = _unwrap(ckpt, ["state_dict"])
    prefix = next((p for p in ("visual.", "module.visual.") if f"{p}class_embedding" in sd), None)
    if prefix is None:
        return dict(sd)  # already timm names (e.g. the timm hub file)
    out = _convert_openai_clip(dict(sd), None, prefix=prefix)  # `model` is unused by timm's function
    return {k: v.float() if v.is_floating_point() else v for k, v in out.items()}


# ----------------------------------------------------------------------------- ResNet converters

def mocov3_resnet(ckpt: Mapping) -> StateDict:
    """MoCo-v3 ``r-50-1000ep.pth.tar`` -> timm ``resnet50`` (num_classes=0; torchvision key names).

    Keep ``module.base_encoder.*`` minus ``fc.*`` (the projector MLP), drop momentum encoder and predictor.
    """
    sd = _strip_prefix(_unwrap(ckpt, ["state_dict"]), ["module.base_encoder.", "base_encoder."], required=True)
    return _fill_bn_counters(_drop(sd, prefixes=["fc."]))


def dino_resnet(ckpt: Mapping) -> StateDict:
    """DINO ``dino_resnet50_pretrain.pth`` (torchvision names, no fc) -> timm ``resnet50`` (num_classes=0).

    A full DINO training checkpoint is accepted too: its ``teacher`` is used, ``module.``/``backbone.`` stripped
    and the DINO ``head.*`` dropped.
    """
    sd = _unwrap(ckpt, ["teacher", "state_dict"])
    sd = _strip_prefix(sd, ["module.backbone.", "backbone."], required=False)
    return _fill_bn_counters(_drop(sd, prefixes=["fc.", "head."]))


CONVERTERS: dict[str, Callable[[Mapping], StateDict]] = {
    "identity": identity,
    "mocov3_vit": mocov3_vit,
    "beit_pt22k": beit_pt22k,
    "msn": msn,
    "mae_pretrained": mae_pretrained,
    "mae_finetuned": mae_finetuned,
    "openai_clip": openai_clip,
    "mocov3_resnet": mocov3_resnet,
    "dino_resnet": dino_resnet,
}

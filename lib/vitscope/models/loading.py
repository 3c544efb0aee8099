"""Building registry models and loading their weights: never a silent random init.

``load_model(name)`` gets weights from the entry's source (timm hub, official URL or seeded random init) or
from a local file (``weights=PATH``), converts them to timm names, checks every key and shape against the model
and loads strictly. Every failure names the model, the file and where the weights come from, and says what to do.
"""
from __future__ import annotations

import http.client
import logging
import zipfile
from collections.abc import Mapping
from pathlib import Path

import timm
import torch
import torch.hub
from torch import nn

from .converters import CONVERTERS, ConversionError
from .registry import PACKAGED_WEIGHTS, ModelCfg, get_cfg  # noqa: F401 (PACKAGED_WEIGHTS re-exported)

log = logging.getLogger(__name__)
_LIST_AT_MOST = 10  # keys listed per category in a mismatch message


class WeightsUnavailableError(RuntimeError):
    """The weights could not be fetched (offline, moved URL, hub error); pass ``weights=PATH`` instead."""


class CheckpointError(RuntimeError):
    """A checkpoint file that cannot be read (corrupt, truncated, not a checkpoint, unsafe pickle)."""


class CheckpointMismatchError(RuntimeError):
    """A checkpoint whose keys or shapes do not match the model after conversion."""


# ----------------------------------------------------------------------------- building

def create_model(cfg_or_name: str | ModelCfg, **arch_overrides) -> nn.Module:
    """The entry's architecture with random init, nothing downloaded; ``arch_overrides`` win over the entry's
    ``arch_kwargs`` (tests use them for tiny models). ``source="random"`` entries are seeded from ``cfg.seed``
    (same weights every call) without disturbing the caller's global RNG."""
    cfg = get_cfg(cfg_or_name)
    if not cfg.is_untrained:
        return _timm_create(cfg, pretrained=False, **arch_overrides)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        return _timm_create(cfg, pretrained=False, **arch_overrides)


def _timm_create(cfg: ModelCfg, pretrained: bool, **arch_overrides) -> nn.Module:
    """``timm.create_model`` with the entry's kwargs; the tagged name keeps ``model.pretrained_cfg`` right, and the
    overlay makes timm's data config agree with our ``Preprocess``."""
    pre = cfg.preprocess
    overlay = dict(mean=pre.mean, std=pre.std, interpolation=pre.interpolation, crop_pct=pre.crop / pre.resize)
    kwargs = {**cfg.arch_kwargs, **arch_overrides}
    return timm.create_model(cfg.timm_name, pretrained=pretrained, pretrained_cfg_overlay=overlay, **kwargs)


def weights_origin(cfg_or_name: str | ModelCfg) -> str:
    """Where an entry's weights come from, for messages (``ModelCfg.weights_origin``)."""
    return get_cfg(cfg_or_name).weights_origin()


def packaged_path(cfg_or_name: str | ModelCfg) -> Path:
    """The shipped weights file of a ``source="package"`` entry (``ModelCfg.packaged_path``)."""
    return get_cfg(cfg_or_name).packaged_path()


def expected_path(cfg_or_name: str | ModelCfg) -> Path:
    """Where ``load_model`` looks for (and downloads) a ``source="url"`` release: torch hub's checkpoints dir."""
    cfg = get_cfg(cfg_or_name)
    if cfg.source != "url":
        raise ValueError(f"model {cfg.name!r} has source {cfg.source!r}; only 'url' models have a release file")
    return Path(torch.hub.get_dir()) / "checkpoints" / cfg.filename


# ----------------------------------------------------------------------------- loading

def load_model(name: str | ModelCfg, weights: str | Path | None = None, device: str | torch.device = "cpu",
               **arch_overrides) -> nn.Module:
    """The registry model ``name`` with its weights, in eval mode on ``device``.

    ``weights=None`` uses the entry's source (timm hub, official URL cached under torch hub's checkpoints dir,
    a file shipped with vitscope, or seeded random init); ``weights=PATH`` loads a local file (.safetensors or
    torch pickle) through the entry's converter. Raises ``WeightsUnavailableError`` (cannot fetch),
    ``FileNotFoundError`` (no such file),
    ``CheckpointError`` (unreadable file) or ``CheckpointMismatchError`` (keys/shapes differ).
    """
    cfg = get_cfg(name)
    if weights is not None:
        model = _load_from_file(cfg, Path(weights), arch_overrides)
    else:
        model = _LOADERS[cfg.source](cfg, arch_overrides)
    return model.to(device).eval()


def _load_from_timm_hub(cfg: ModelCfg, arch_overrides: dict) -> nn.Module:
    try:
        return _timm_create(cfg, pretrained=True, **arch_overrides)
    except OSError as err:  # huggingface_hub and urllib errors are all OSError subclasses
        raise WeightsUnavailableError(
            f"could not get the weights of model {cfg.name!r} from the timm hub tag {cfg.timm_name!r} "
            f"({type(err).__name__}: {err}). If you are offline, download the weights elsewhere "
            f"({weights_origin(cfg)}) and pass the file: load_model({cfg.name!r}, weights=PATH).") from err


def _fetch_release(cfg: ModelCfg) -> Path:
    """The release file under torch hub's checkpoints dir, downloaded on first use."""
    path = expected_path(cfg)
    if path.is_file():
        return path
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        torch.hub.download_url_to_file(cfg.url, str(path), progress=True)
    except (OSError, http.client.HTTPException) as err:  # URLError/HTTPError/timeouts are OSError subclasses
        raise WeightsUnavailableError(
            f"could not download the weights of model {cfg.name!r} from {cfg.url} to {path} "
            f"({type(err).__name__}: {err}). Download the file by hand and either put it at {path} or pass "
            f"load_model({cfg.name!r}, weights=PATH).") from err
    return path


def _load_from_file(cfg: ModelCfg, path: Path, arch_overrides: dict) -> nn.Module:
    if not path.is_file():
        raise FileNotFoundError(
            f"weights file {path} for model {cfg.name!r} does not exist. The weights come from "
            f"{weights_origin(cfg)}; download them and pass weights=PATH.")
    ckpt = read_checkpoint(path)
    try:
        sd = CONVERTERS[cfg.converter](ckpt)
    except ConversionError as err:
        raise CheckpointMismatchError(
            f"checkpoint {path} is not in the layout converter {cfg.converter!r} expects for model "
            f"{cfg.name!r}: {err}. Expected the release from {weights_origin(cfg)}.") from err
    model = create_model(cfg, **arch_overrides)
    sd = _drop_absent_classifier(sd, model)
    check_state_dict(sd, model, path=path, cfg=cfg)
    model.load_state_dict(sd, strict=True)
    return model


#: How each weights source is loaded: the one place in loading that dispatches on ``ModelCfg.source``.
_LOADERS = {
    "timm": lambda cfg, kw: _load_from_timm_hub(cfg, kw),
    "url": lambda cfg, kw: _load_from_file(cfg, _fetch_release(cfg), kw),
    "package": lambda cfg, kw: _load_from_file(cfg, cfg.packaged_path(), kw),
    "random": lambda cfg, kw: create_model(cfg, **kw),
}


def read_checkpoint(path: str | Path) -> Mapping:
    """The object stored in ``path``: safetensors -> ``{name: Tensor}``; else ``torch.load(weights_only=True)``.

    Two allowances for real releases: ``argparse.Namespace`` (training args stored by MAE/BEiT-style scripts) is
    allowed in the pickle, and a TorchScript archive (OpenAI CLIP's ``ViT-B-16.pt``) is read with
    ``torch.jit.load`` and its state dict returned. Anything unreadable raises ``CheckpointError``.
    """
    path = Path(path)
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file
            return load_file(str(path), device="cpu")
        if _is_torchscript(path):
            return torch.jit.load(str(path), map_location="cpu").state_dict()
        import argparse
        with torch.serialization.safe_globals([argparse.Namespace]):
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # any reader failure means the file is unusable; keep the cause chained
        raise CheckpointError(f"cannot read checkpoint file {path}: {_read_failure(err)}") from err
    if not isinstance(obj, Mapping):
        raise CheckpointError(f"checkpoint file {path} holds a {type(obj).__name__}, not a state dict")
    return obj


def _read_failure(err: Exception) -> str:
    """One readable sentence for a reader error: the refused Python global, or the first line of the error."""
    boilerplate = ("Weights only load failed", "Please file an issue", "Check the documentation", "(1)", "(2)")
    lines = [ln.strip() for ln in str(err).splitlines() if ln.strip() and not ln.strip().startswith(boilerplate)]
    lines = lines or [str(err).splitlines()[0] if str(err) else ""]
    refused = next((ln for ln in lines if "Unsupported global" in ln), None)
    if refused:
        return (f"safe loading (weights_only=True) refuses a Python object in it ({refused.split('. ')[0]}). "
                "If you trust the file, allowlist that class with torch.serialization.add_safe_globals([...]) "
                "and load again.")
    return (f"{type(err).__name__}: {lines[0][:300]}. The file may be truncated or corrupt (re-download it), "
            "or not a PyTorch/safetensors checkpoint.")


def _is_torchscript(path: Path) -> bool:
    """TorchScript archives are zip files with a ``constants.pkl`` record (plain torch.save zips have none)."""
    if not zipfile.is_zipfile(path):
        return False
    with zipfile.ZipFile(path) as zf:
        return any(n.endswith("/constants.pkl") for n in zf.namelist())


def _drop_absent_classifier(sd: dict, model: nn.Module) -> dict:
    """Drop classifier keys (``head.*``, ``fc.*``, ``head.fc.*``) when the model was built without a classifier.

    This is timm's own rule for num_classes=0 (a hub file for CLIP/FS carries a head the registry does not build);
    only the model's declared classifier module is affected, never trunk weights.
    """
    name = getattr(model, "pretrained_cfg", {}).get("classifier")
    if not name:
        return sd
    prefix = f"{name}."
    if any(k.startswith(prefix) for k in model.state_dict()):
        return sd
    dropped = [k for k in sd if k.startswith(prefix)]
    if dropped:
        log.info("model has no classifier; ignoring checkpoint keys %s", dropped)
    return {k: v for k, v in sd.items() if k not in dropped}


def check_state_dict(sd: Mapping, model: nn.Module, *, path, cfg: ModelCfg) -> None:
    """Raise ``CheckpointMismatchError`` unless ``sd`` has exactly the model's keys with the model's shapes."""
    own = model.state_dict()
    missing = sorted(set(own) - set(sd))
    unexpected = sorted(set(sd) - set(own))
    shapes = [f"{k}: checkpoint {_shape(sd[k])} vs model {tuple(own[k].shape)}"
              for k in own if k in sd and _shape(sd[k]) != tuple(own[k].shape)]
    if not (missing or unexpected or shapes):
        return
    parts = [f"checkpoint {path} does not match model {cfg.name!r} (timm {cfg.timm_name}, "
             f"converter {cfg.converter!r}):"]
    for label, items in (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", shapes)):
        if items:
            shown = ", ".join(items[:_LIST_AT_MOST]) + (f", ... (+{len(items) - _LIST_AT_MOST} more)"
                                                        if len(items) > _LIST_AT_MOST else "")
            parts.append(f"  {len(items)} {label}: {shown}")
    parts.append(f"  Expected the release from {weights_origin(cfg)}; if arch overrides were given, check they "
                 "match the file.")
    raise CheckpointMismatchError("\n".join(parts))


def _shape(v) -> tuple | str:
    return tuple(v.shape) if isinstance(v, torch.Tensor) else f"<{type(v).__name__}, not a tensor>"

"""Model registry and loading: paper name -> timm architecture + weights + converter + preprocessing.

>>> from vitscope.models import list_models, load_model
>>> list_models("TM")
['fs', 'clip', 'dino', 'mae', 'mocov3', 'beit']
>>> model = load_model("random-a")          # offline demo stand-in; real entries fetch or take weights=PATH
"""
from .converters import CONVERTERS, ConversionError
from .loading import (
    CheckpointError,
    CheckpointMismatchError,
    WeightsUnavailableError,
    create_model,
    expected_path,
    load_model,
    packaged_path,
    read_checkpoint,
    weights_origin,
)
from .registry import MODELS, ModelCfg, Preprocess, UnknownModelError, get_cfg, list_models

__all__ = [
    "CONVERTERS", "MODELS", "CheckpointError", "CheckpointMismatchError", "ConversionError", "ModelCfg",
    "Preprocess", "UnknownModelError", "WeightsUnavailableError", "create_model", "expected_path", "get_cfg",
    "list_models", "load_model", "packaged_path", "read_checkpoint", "weights_origin",
]

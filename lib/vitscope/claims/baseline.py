"""Which model of a list is the untrained baseline that a claim's trained models are compared with."""
from __future__ import annotations

from .. import models as registry


def untrained_baseline(model_names, like=None) -> str | None:
    """The first untrained (``family="random"``) model among ``model_names`` with the same architecture and build
    arguments as ``like`` (a registry name; default: the first trained model of the list), or ``None``."""
    cfgs = [registry.get_cfg(m) for m in model_names]
    trained = [c for c in cfgs if c.family != "random"]
    ref = registry.get_cfg(like) if like is not None else (trained[0] if trained else None)
    for c in cfgs:
        if c.family == "random" and (ref is None or (c.arch, c.arch_kwargs) == (ref.arch, ref.arch_kwargs)):
            return c.name
    return None

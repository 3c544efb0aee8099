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


#: The profile key naming the untrained seeds whose spread is the seed noise floor (see :mod:`.verdict`).
SEEDS_KEY = "baselines"


def noise_seeds(profile) -> list[str]:
    """The untrained seeds a profile names for the seed noise floor (its top-level ``baselines`` list), checked:
    every name is an untrained (``family="random"``) registry model and all share one architecture. ``[]`` when the
    profile names none (then the bootstrap is the only noise measure)."""
    names = list(profile.raw.get(SEEDS_KEY) or [])
    cfgs = [registry.get_cfg(m) for m in names]
    trained = [c.name for c in cfgs if c.family != "random"]
    if trained:
        raise ValueError(f"Profile {profile.name!r}: {SEEDS_KEY} lists trained models {trained}; it names untrained "
                         "seeds of one architecture (family 'random', e.g. random-a, random-b, random-c)")
    if len({(c.arch, repr(c.arch_kwargs)) for c in cfgs}) > 1:
        raise ValueError(f"Profile {profile.name!r}: the {SEEDS_KEY} {names} differ in architecture; the seed floor "
                         "compares seeds of one architecture, so list seeds of the models' architecture only")
    if len(names) == 1:
        raise ValueError(f"Profile {profile.name!r}: {SEEDS_KEY} names one seed ({names[0]}); a seed spread needs "
                         "at least two (three for CKA, which compares pairs of seeds)")
    return names


def usable_seeds(measured, seeds) -> tuple[str, ...]:
    """``seeds`` when there are at least two (a spread needs two), else ``()``: no seed floor, as without seeds.
    Every seed must be among the ``measured`` models (a mapping or a list of names)."""
    seeds = tuple(seeds)
    missing = [s for s in seeds if s not in measured]
    if missing:
        raise ValueError(f"seeds {missing} are not among the measured models {list(measured)}; measure them on the "
                         "same profile (check_claims adds the profile's baselines)")
    return seeds if len(seeds) >= 2 else ()

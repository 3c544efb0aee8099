"""The verdict rule: when a paper's claim *holds*, *does not hold*, is *inconclusive* or *cannot be checked*.

One rule for every claim and every page (the Claims page writes it out):

1. *cannot be checked* when the profile lacks the models or data the claim compares;
2. the claim's **effect** (a contrast the paper predicts to be positive or negative) gets a bootstrap interval
   (over images, or over CKA minibatches; :mod:`vitscope.kernels.stats`). If the interval includes zero the
   difference is within noise: *inconclusive*;
3. where the profile names untrained **seeds** of the claim's architecture (its ``baselines`` key), the effect must
   also clear their **seed floor**: the whole interval must lie beyond ``±floor``, where ``floor`` is the largest
   value the same contrast takes when its models are replaced by untrained seeds
   (:func:`vitscope.kernels.stats.seed_floor`; for "model minus untrained" the largest |difference| between two
   seeds). Otherwise an untrained network differs from itself by as much: *inconclusive*. Without seeds the
   bootstrap is the only noise measure, and the page says so;
4. the **baseline contrast** is the effect minus the same effect with the untrained ViT of the same architecture
   put in place of the trained side the claim is about (e.g. "DINO vs MoCo-v3" minus "DINO vs random-a"). If it is
   missing, within noise (its interval includes 0, or reaches inside its own seed floor: how far the contrast moves
   when the baseline is swapped for another untrained seed, i.e. what it would show if the trained side were one
   more seed), or of the other sign, an untrained network already produces the effect: *inconclusive*;
5. otherwise the effect's sign decides: the predicted sign *holds*, the opposite sign *does not hold*.

Why the seed floor is the largest seed-to-seed difference, not a bootstrap or a standard deviation over seeds: a
profile has a handful of seeds (three in the demo), so a standard deviation rests on two degrees of freedom and a
bootstrap over three seeds has ten distinct resamples; the observed extreme needs no distributional assumption and
reads directly as "an untrained network shows a difference this large between two of its own seeds". Why the
interval must clear it (rather than the estimate alone): image sampling and seed are separate noise sources, and a
verdict should survive both at once.
"""
from __future__ import annotations

from dataclasses import dataclass

HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, CANNOT_CHECK = "holds", "does not hold", "inconclusive", "cannot be checked"
VERDICTS = (HOLDS, DOES_NOT_HOLD, INCONCLUSIVE, CANNOT_CHECK)

#: Bootstrap resamples per interval: enough that the 2.5 % / 97.5 % quantiles move by well under the effects'
#: widths between seeds, and cheap on a 2-core laptop.
N_RESAMPLES = 2000
#: Two-sided confidence level of every interval on the pages.
CONFIDENCE = 0.95
#: One fixed seed, so a page's intervals are the same every time it is executed.
SEED = 0


@dataclass(frozen=True)
class Interval:
    """An estimate with its bootstrap interval over ``n`` resampling units (``unit``: "images", "minibatches")."""

    estimate: float
    low: float
    high: float
    n: int
    unit: str

    @classmethod
    def from_bootstrap(cls, result: dict, unit: str) -> Interval:
        """From a :mod:`vitscope.kernels.stats` result ``{"estimate", "low", "high", "n"}``."""
        return cls(result["estimate"], result["low"], result["high"], result["n"], unit)

    @property
    def sign(self) -> int:
        """+1 / -1 when the interval lies wholly above / below zero; 0 when it includes zero or is undefined."""
        return self.clears(0.0)

    def clears(self, floor: float) -> int:
        """+1 / -1 when the interval lies wholly above ``+floor`` / below ``-floor``; 0 when it reaches inside
        ``[-floor, floor]`` or is undefined (NaN bound or floor)."""
        if self.low > floor:
            return 1
        if self.high < -floor:
            return -1
        return 0    # within the floor, or NaN (comparisons with NaN are False)


@dataclass(frozen=True)
class ClaimResult:
    """One judged comparison of a claim on one profile.

    ``claim``: the catalogue id; ``subject``: what was compared (a group contrast or one model);
    ``measure``: the effect in words; ``expected``: the sign the paper predicts (+1 or -1);
    ``effect`` and ``baseline`` (see the module docstring) with their intervals; ``reason``: why the verdict;
    ``floor`` and ``baseline_floor``: the seed floors the two must clear, from the untrained ``seeds`` (``None`` and
    ``()`` where the profile names no seeds).
    """

    claim: str
    subject: str
    verdict: str
    reason: str
    measure: str = ""
    expected: int = 1
    effect: Interval | None = None
    baseline: Interval | None = None
    baseline_model: str | None = None
    floor: float | None = None
    baseline_floor: float | None = None
    seeds: tuple[str, ...] = ()


def _seeds(seeds) -> str:
    return ", ".join(f"`{s}`" for s in seeds) or "the untrained seeds"


def decide(effect: Interval | None, baseline: Interval | None, expected: int, baseline_model: str | None = None,
           floor: float | None = None, baseline_floor: float | None = None, seeds=()) -> tuple[str, str]:
    """The rule of the module docstring: ``(verdict, reason)`` for an effect, its baseline contrast, the sign the
    paper predicts (``expected``: +1 or -1) and, where the profile has untrained seeds, the seed floors of the
    effect and of the baseline contrast (``None``: no seeds, the bootstrap is the only noise measure)."""
    if expected not in (1, -1):
        raise ValueError(f"expected must be +1 or -1 (the sign the paper predicts); got {expected!r}")
    for name, value in (("floor", floor), ("baseline_floor", baseline_floor)):
        if value is not None and not value >= 0:
            raise ValueError(f"{name} must be a number >= 0 (a seed floor) or None (no seeds); got {value!r}")
    if effect is None:
        return CANNOT_CHECK, "the profile lacks the models or data this comparison needs"
    pct = f"{100 * CONFIDENCE:g} %"
    if effect.sign == 0:
        return INCONCLUSIVE, f"within noise: the {pct} interval of the effect includes 0"
    if floor is not None and effect.clears(floor) == 0:
        return INCONCLUSIVE, (f"within seed noise: the interval reaches inside ±{floor:.4f}, the most that "
                              f"{_seeds(seeds)} give for the same contrast")
    name = f"`{baseline_model}`" if baseline_model else "an untrained ViT"
    if baseline is None:
        return INCONCLUSIVE, "no untrained baseline of the same architecture in this profile"
    if baseline.sign != effect.sign:
        how = "within noise of" if baseline.sign == 0 else "the other way from"
        return INCONCLUSIVE, f"the untrained baseline explains it: the effect beyond {name} is {how} 0"
    if baseline_floor is not None and baseline.clears(baseline_floor) != effect.sign:
        return INCONCLUSIVE, (f"the untrained baseline explains it: the effect beyond {name} is within seed noise "
                              f"(±{baseline_floor:.4f}, from {_seeds(seeds)})")
    clear = f"the {pct} interval clears 0" + (" and the seed floor" if floor is not None else "")
    if effect.sign == expected:
        return HOLDS, f"{clear}, and the effect exceeds {name}'s"
    return DOES_NOT_HOLD, f"{clear} on the side opposite to the paper's, beyond {name}'s"


def judge(claim: str, subject: str, measure: str, effect: Interval | None, baseline: Interval | None,
          expected: int, baseline_model: str | None = None, floor: float | None = None,
          baseline_floor: float | None = None, seeds=()) -> ClaimResult:
    """A :class:`ClaimResult` with the verdict of :func:`decide`."""
    verdict, reason = decide(effect, baseline, expected, baseline_model, floor, baseline_floor, seeds)
    return ClaimResult(claim, subject, verdict, reason, measure, expected, effect, baseline, baseline_model, floor,
                       baseline_floor, tuple(seeds))


def cannot_check(claim: str, subject: str, reason: str) -> ClaimResult:
    """A claim the profile cannot test, with the reason (e.g. which group of models it lacks)."""
    return ClaimResult(claim, subject, CANNOT_CHECK, reason)


def paired_contrast(values: dict, weights: dict[str, float], unit: str = "images") -> Interval:
    """``sum_m weights[m] * mean(values[m])`` with its percentile bootstrap interval over the shared rows, one draw
    of rows for every term (paired). ``values``: ``{name: float [N]}`` on the same N rows in the same order; ``unit``
    names what a row is ("images", "queries", "pairs", "regions", "objects"): the bootstrap resamples it, and the
    claims table shows it after ``n``."""
    import torch

    from ..kernels.stats import bootstrap_contrast

    names = list(weights)
    sizes = {len(values[m]) for m in names}
    if len(sizes) != 1:
        raise ValueError(f"{names} hold different numbers of {unit} {sorted(sizes)}; the paired bootstrap needs the "
                         f"same {unit} for every model (extract them on the same profile)")
    w = torch.tensor([weights[m] for m in names], dtype=torch.float64)    # float64: 1/3 is not exact in float32
    res = bootstrap_contrast(torch.stack([torch.as_tensor(values[m], dtype=torch.float64) for m in names]), w,
                             n_resamples=N_RESAMPLES, seed=SEED, confidence=CONFIDENCE)
    return Interval.from_bootstrap(res, unit)


def group_weights(high: list[str], low: list[str], base: str | None) -> tuple[dict, dict | None]:
    """The weights of "mean of ``high`` minus mean of ``low``" (the paper ranks ``high`` above ``low``) and of its
    baseline contrast, "mean of ``high`` minus the untrained ``base``" (``None`` without one): the untrained model
    takes the place of the side the paper ranks lower. Returns ``(effect_w, beyond_w)`` for :func:`judge_contrast`."""
    if not high or not low or set(high) & set(low):
        raise ValueError(f"group_weights needs two disjoint, non-empty groups; got {high} and {low}")
    up = {m: 1 / len(high) for m in high}
    return {**up, **{m: -1 / len(low) for m in low}}, ({**up, base: -1.0} if base else None)


def judge_contrast(claim: str, subject: str, measure: str, values: dict, effect_w: dict, beyond_w: dict | None,
                   expected: int, base: str | None, seed_stats=None, seeds=(), unit: str = "images") -> ClaimResult:
    """One verdict from per-row ``values`` ({slot: float [N]}, the same N ``unit`` in every slot): the effect
    contrast ``effect_w`` and its baseline contrast ``beyond_w`` (``None``: no untrained model) by
    :func:`paired_contrast`, judged by :func:`judge`. With ``seed_stats`` (float [S]: the statistic on each
    untrained seed or seed pair) both get their seed floor (:func:`vitscope.kernels.stats.seed_floor`)."""
    import torch

    from ..kernels.stats import seed_floor

    def floor(w):
        if seed_stats is None or w is None:
            return None
        return seed_floor(seed_stats, torch.tensor(list(w.values()), dtype=torch.float64))
    beyond = paired_contrast(values, beyond_w, unit) if beyond_w else None
    return judge(claim, subject, measure, paired_contrast(values, effect_w, unit), beyond, expected, base,
                 floor(effect_w), floor(beyond_w), tuple(seeds))


def judge_depth_contrast(claim: str, subject: str, measure: str, values_at, choose, model: str, base: str | None,
                         seeds=(), *, sign: float = 1.0, expected: int = 1, unit: str = "images") -> ClaimResult:
    """A within-model depth contrast (TM Table 1: does a model peak at its last block?), judged like
    :func:`judge_contrast`, with a seed floor.

    ``choose(m)`` -> ``(last, other)``: the two blocks of model ``m`` compared (e.g. its last block and its best
    earlier one, chosen on ``m``'s own rows); ``values_at(m, block)`` -> float [N]: the per-row statistic (same N rows
    for every model). Effect: ``sign * (mean at last - mean at other)`` of ``model``; beyond: the same contrast
    minus the untrained ``base``'s (its blocks chosen by the same rule). Seed floor: the statistic ``d_s`` (the same
    contrast, blocks chosen the same way) on each untrained seed; both floors are the spread ``max d_s - min d_s``
    (:func:`vitscope.kernels.stats.seed_floor` with weights [1, -1]): how much the contrast moves with the
    initialisation alone. Fewer than two seeds: no floor.
    """
    def slots(m, prefix=""):
        last, other = choose(m)
        return {f"{prefix}last": values_at(m, last), f"{prefix}other": values_at(m, other)}

    values, w = slots(model), {"last": sign, "other": -sign}
    beyond_w = None
    if base is not None:
        values |= slots(base, "base_")
        beyond_w = {**w, "base_last": -sign, "base_other": sign}
    floor = depth_seed_floor(values_at, choose, seeds, sign)
    beyond = paired_contrast(values, beyond_w, unit) if beyond_w else None
    return judge(claim, subject, measure, paired_contrast(values, w, unit), beyond, expected, base, floor,
                 floor if beyond_w else None, tuple(seeds) if floor is not None else ())


def depth_seed_floor(values_at, choose, seeds, sign: float = 1.0) -> float | None:
    """The seed floor of a within-model depth contrast: on each untrained seed ``s``, the contrast
    ``d_s = sign * (mean at last - mean at other)`` with ``(last, other) = choose(s)`` and the rows of
    ``values_at(s, block)``; the floor is their spread ``max d_s - min d_s`` (:func:`vitscope.kernels.stats.seed_floor`
    with weights [1, -1]). ``None`` with fewer than two seeds (a spread needs two)."""
    import torch

    from ..kernels.stats import seed_floor

    if len(seeds) < 2:
        return None
    d = []
    for s in seeds:
        last, other = choose(s)
        d.append(sign * (float(torch.as_tensor(values_at(s, last), dtype=torch.float64).mean())
                         - float(torch.as_tensor(values_at(s, other), dtype=torch.float64).mean())))
    return seed_floor(d, [1.0, -1.0])

"""Shared helpers for the benchmarks: best-of timing, interleaved comparisons and a record of one comparison."""
from __future__ import annotations

import time


def best_of(fn, repeat: int = 3) -> float:
    """The fastest of ``repeat`` runs of ``fn()`` in seconds (the least disturbed by other load)."""
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return min(times)


def best_of_interleaved(fns: dict, repeat: int = 3, warmup: bool = True) -> dict[str, float]:
    """``{name: fastest seconds}`` of the ``fns`` run in turn, ``repeat`` rounds (after one warm-up round).

    Interleaving keeps a ratio fair on a shared machine: a burst of load from other processes hits both sides of
    a comparison instead of only the one that happened to run during it.
    """
    for fn in fns.values() if warmup else ():
        fn()
    times = {name: [] for name in fns}
    for _ in range(repeat):
        for name, fn in fns.items():
            t0 = time.perf_counter()
            fn()
            times[name].append(time.perf_counter() - t0)
    return {name: min(t) for name, t in times.items()}


def record(name: str, ours: float, baseline_name: str, baseline: float, max_abs_diff: float, tolerance: float,
           target: str = "", target_ratio: float | None = None, **sizes) -> dict:
    """One benchmark's result: times in s, speed-up (baseline / ours), whether the answers agree and whether the
    speed-up meets ``target_ratio`` (``None``: no target, only a comparison)."""
    agrees = bool(max_abs_diff <= tolerance)
    ratio = baseline / ours
    row = {"benchmark": name, "ours_s": round(ours, 4), "baseline": baseline_name, "baseline_s": round(baseline, 4),
           "speedup": round(ratio, 3), "max_abs_diff": float(max_abs_diff), "tolerance": tolerance,
           "agrees": agrees, "target": target, "target_ratio": target_ratio,
           "meets_target": None if target_ratio is None else bool(ratio >= target_ratio), "sizes": sizes}
    print(f"{name}: ours {ours:.3f} s, {baseline_name} {baseline:.3f} s, ratio x{ratio:.2f}"
          f"{'  (target ' + target + ')' if target else ''}; max |diff| {max_abs_diff:.2e} "
          f"{'OK' if agrees else 'DISAGREES'} (tol {tolerance:g})")
    return row

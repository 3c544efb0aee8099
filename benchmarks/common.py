"""Shared helpers for the benchmarks: best-of timing and a record of one comparison."""
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


def record(name: str, ours: float, baseline_name: str, baseline: float, max_abs_diff: float, tolerance: float,
           target: str = "", **sizes) -> dict:
    """One benchmark's result: times in s, speed-up (baseline / ours), and whether the answers agree."""
    agrees = bool(max_abs_diff <= tolerance)
    row = {"benchmark": name, "ours_s": round(ours, 4), "baseline": baseline_name, "baseline_s": round(baseline, 4),
           "speedup": round(baseline / ours, 3), "max_abs_diff": float(max_abs_diff), "tolerance": tolerance,
           "agrees": agrees, "target": target, "sizes": sizes}
    print(f"{name}: ours {ours:.3f} s, {baseline_name} {baseline:.3f} s, ratio x{baseline / ours:.2f}"
          f"{'  (target ' + target + ')' if target else ''}; max |diff| {max_abs_diff:.2e} "
          f"{'OK' if agrees else 'DISAGREES'} (tol {tolerance:g})")
    return row

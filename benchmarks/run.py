"""Benchmarks: each against its baseline in the same run, on the same inputs, checking that the answers agree.

    make bench                  # or: python benchmarks/run.py [--quick] [--only cka e2e knn capture book]

Prints each ratio and writes ``benchmarks/results/latest.json`` with the machine's description: a run with
``--only`` replaces the rows it measured and keeps the others (each row records when and where it was measured).
Exits non-zero when any answer disagrees with its baseline. Targets live here, never in unit tests (timings vary
by machine). ``--quick`` (smaller sizes, a smoke run) skips the whole-book benchmark.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_book
import bench_capture
import bench_cka
import bench_e2e_cka
import bench_knn

RESULTS = Path(__file__).parent / "results" / "latest.json"
BENCHMARKS = ("cka", "e2e", "knn", "capture", "book")


def machine() -> dict:
    """CPU/GPU model, threads and the versions of every library a figure depends on."""
    from importlib.metadata import PackageNotFoundError, version
    cpu = platform.processor()
    if Path("/proc/cpuinfo").exists():
        cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                    if line.startswith("model name")), cpu)
    versions = {}
    for package in ("torch", "timm", "numpy", "vitscope", "pytorch-cka", "torch-cka", "faiss-cpu", "scikit-learn"):
        try:
            versions[package] = version(package)
        except PackageNotFoundError:
            versions[package] = None
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "versions": versions,
            "load_average_1min": os.getloadavg()[0] if hasattr(os, "getloadavg") else None}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, about a minute); no book")
    ap.add_argument("--only", nargs="*", default=list(BENCHMARKS), choices=BENCHMARKS)
    args = ap.parse_args(argv)
    here = machine()
    rows = []
    if "cka" in args.only:
        rows += bench_cka.run(**({"layers": 8, "n": 256} if args.quick else {}))
    if "e2e" in args.only:
        rows += bench_e2e_cka.run(**({"models": bench_e2e_cka.ZOO[:2], "n_images": 64} if args.quick else {}))
    if "knn" in args.only:
        rows += bench_knn.run(**({"n_train": 5000, "n_test": 200} if args.quick else {}))
    if "capture" in args.only:
        rows += bench_capture.run(**({"archs": ("vit_small_patch16_224",), "batch": 8} if args.quick else {}))
    if "book" in args.only and not args.quick:
        rows += bench_book.run()
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S%z")
    for row in rows:
        row.update(quick=args.quick, measured_at=stamp, load_average_1min=here["load_average_1min"])
    old = json.loads(RESULTS.read_text()) if RESULTS.exists() else {}
    fresh = {row["benchmark"] for row in rows}
    kept = [row for row in old.get("results", []) if row["benchmark"] not in fresh]
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": here, "results": kept + rows}, indent=1) + "\n")
    bad = [r["benchmark"] for r in rows if not r["agrees"]]
    print(f"wrote {RESULTS}; " + (f"DISAGREE: {bad}" if bad else "all answers agree with their baselines"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

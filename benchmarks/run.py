"""Benchmarks: each against its baseline in the same run, on the same inputs, checking that the answers agree.

    make bench                  # or: python benchmarks/run.py [--quick] [--only cka knn capture]

Prints each ratio and writes ``benchmarks/results/latest.json`` with the machine's description. Exits non-zero
when any answer disagrees with its baseline. Targets live here, never in unit tests (timings vary by machine).
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).parent))
import bench_capture
import bench_cka
import bench_knn

RESULTS = Path(__file__).parent / "results" / "latest.json"


def machine() -> dict:
    import numpy
    import timm
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() \
        else platform.processor()
    return {"cpu": cpu, "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
            "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
            "python": platform.python_version(), "torch": torch.__version__, "timm": timm.__version__,
            "numpy": numpy.__version__}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run, about a minute)")
    ap.add_argument("--only", nargs="*", default=["cka", "knn", "capture"])
    args = ap.parse_args(argv)
    rows = []
    if "cka" in args.only:
        rows += bench_cka.run(**({"layers": 8, "n": 256} if args.quick else {}))
    if "knn" in args.only:
        rows += bench_knn.run(**({"n_train": 5000, "n_test": 200} if args.quick else {}))
    if "capture" in args.only:
        rows += bench_capture.run(**({"archs": ("vit_small_patch16_224",), "batch": 4} if args.quick else {}))
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps({"machine": machine(), "quick": args.quick, "results": rows}, indent=1))
    bad = [r["benchmark"] for r in rows if not r["agrees"]]
    print(f"wrote {RESULTS}; " + (f"DISAGREE: {bad}" if bad else "all answers agree with their baselines"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())

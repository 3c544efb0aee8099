"""The whole demo book, cold (empty cache: every page executes) then warm (nothing changed: nothing executes),
in a temporary copy of the project with its own ``VITSCOPE_HOME`` / ``VITSCOPE_CACHE`` (as tests/test_book.py's
fixture does), broken down by stage from ``<cache>/book/timings.jsonl``. The warm target is the issue's <= 90 s;
the answer check: the warm build executes no page and fails none."""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from vitscope.book.build import copy_sources

REPO = Path(__file__).resolve().parents[1]
def _build(root: Path, profile: str) -> tuple[float, dict]:
    env = {**os.environ, "VITSCOPE_HOME": str(root), "VITSCOPE_CACHE": str(root / "cache")}
    timings = root / "cache" / "book" / "timings.jsonl"
    before = len(timings.read_text().splitlines()) if timings.exists() else 0
    t0 = time.perf_counter()
    # as `make book` runs it on the 2-core reference machine: two pages at once
    done = subprocess.run([sys.executable, "-m", "vitscope.cli", "book", "--profile", profile, "--jobs", "2"],
                          cwd=root, env=env,
                          capture_output=True, text=True, check=False)
    seconds = time.perf_counter() - t0
    if done.returncode != 0:
        print(done.stdout[-3000:], done.stderr[-3000:])
    rows = [json.loads(line) for line in timings.read_text().splitlines()[before:]] if timings.exists() else []
    stages = {row["stage"]: row for row in rows}
    jobs = stages.get("execute", {}).get("jobs", [])
    slowest = sorted(jobs, key=lambda j: -j["seconds"])[:5]
    return seconds, {"exit_code": done.returncode,
                     "stages_s": {name: row["seconds"] for name, row in stages.items()},
                     "jobs": {status: sum(j["status"] == status for j in jobs)
                              for status in ("executed", "skipped", "failed")},
                     "slowest_pages": [{"output": Path(j["output"]).name, "seconds": j["seconds"]} for j in slowest]}


def run(profile: str = "demo") -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="vitscope-bench-book-") as tmp:
        root = Path(tmp)
        copy_sources(root, REPO)
        cold_s, cold = _build(root, profile)
        warm_s, warm = _build(root, profile)
    print(f"book cold: {cold_s:.1f} s {cold}\nbook warm: {warm_s:.1f} s {warm}")
    agrees = (cold["exit_code"] == 0 and warm["exit_code"] == 0 and warm["jobs"]["executed"] == 0
              and cold["jobs"]["failed"] == 0 and warm["jobs"]["failed"] == 0)
    return [{"benchmark": f"book_{profile}", "cold_s": round(cold_s, 1), "warm_s": round(warm_s, 1),
             "speedup": round(cold_s / warm_s, 2), "cold": cold, "warm": warm, "target": "warm <= 90 s",
             "target_ratio": None, "meets_target": bool(warm_s <= 90), "agrees": bool(agrees),
             "max_abs_diff": None, "tolerance": None,
             "check": "warm build executes no page; no page fails", "sizes": {"profile": profile}}]

"""Tables and the figure of the Performance page (notebooks/about_performance.ipynb), read from
``results/latest.json``; the page never runs a benchmark. Lives beside the results it reads."""
from __future__ import annotations

import json
from pathlib import Path

import matplotlib.pyplot as plt
import pandas as pd
from matplotlib.ticker import NullFormatter

RESULTS = Path(__file__).parent / "results" / "latest.json"


def load(path: Path = RESULTS) -> dict:
    """The latest results: ``{"machine": {...}, "results": [row, ...]}``."""
    return json.loads(Path(path).read_text())


def comparisons(results: dict) -> pd.DataFrame:
    """One row per timed comparison against a baseline (the bf16 rows are effects, not timings)."""
    rows = [r for r in results["results"] if "speedup" in r and "baseline" in r]
    frame = pd.DataFrame(rows)
    frame["target"] = frame["target"].replace("", "none (comparison only)")
    frame["meets target"] = frame["meets_target"].map({True: "yes", False: "NO", None: "-"})
    return frame[["benchmark", "ours_s", "baseline", "baseline_s", "speedup", "target", "meets target", "agrees",
                  "max_abs_diff", "tolerance", "load_average_1min"]].rename(columns={
        "ours_s": "vitscope (s)", "baseline_s": "baseline (s)", "speedup": "ratio (baseline / vitscope)",
        "max_abs_diff": "max |difference|", "load_average_1min": "load (1 min)"})


def _reason(row: dict, machine: dict) -> str:
    if row["benchmark"].startswith("capture_vs_unfused"):
        b = row["sizes"]["breakdown"]
        products = {k[:-2]: v for k, v in b.items() if k not in ("total_s", "forward_and_hooks_s")}
        top = ", ".join(f"{k} {v:.2f} s" for k, v in sorted(products.items(), key=lambda kv: -kv[1]))
        return (f"of one instrumented capture's {b['total_s']:.2f} s, the forward pass took "
                f"{b['forward_and_hooks_s']:.2f} s and the products {sum(products.values()):.2f} s ({top}); "
                "each product reads every captured tensor once more, and those memory-bound passes share the same "
                f"{machine['cpu_count']} CPU cores as the forward pass")
    if row["benchmark"].startswith("e2e_all_pairs"):
        s = row["sizes"]
        passes = s["pairs"] * 2 - s["models"]          # pytorch-cka: both models of a pair, one on a self-pair
        return (f"the ceiling is {passes / s['models']:.0f}x ({passes} forward passes against {s['models']}); "
                "vitscope's extraction also decodes the images once per model and writes the feature store")
    return "measured below its target on this machine"


def misses(results: dict) -> pd.DataFrame:
    """The comparisons that miss their target, with the measured shortfall and the reason read from the data."""
    rows = [r for r in results["results"] if r.get("meets_target") is False]
    return pd.DataFrame([{"benchmark": r["benchmark"], "ratio": r.get("speedup"), "target": r["target"],
                          "why": _reason(r, results["machine"])} for r in rows],
                        columns=["benchmark", "ratio", "target", "why"])


def book(results: dict) -> pd.DataFrame:
    """Cold and warm demo-book builds by stage (empty if the book benchmark has not run)."""
    rows = []
    for r in results["results"]:
        if r["benchmark"].startswith("book_"):
            for build in ("cold", "warm"):
                stages = r[build]["stages_s"]
                rows.append({"build": build, "total (s)": r[f"{build}_s"], "execute (s)": stages.get("execute"),
                             "html (s)": stages.get("html"), "pages executed": r[build]["jobs"]["executed"],
                             "pages up to date": r[build]["jobs"]["skipped"]})
    return pd.DataFrame(rows)


def bf16_effects(results: dict) -> pd.DataFrame:
    """bf16 autocast's effect on each analysis, per architecture: [analysis, measure, value]."""
    rows = []
    for r in results["results"]:
        if r["benchmark"].startswith("bf16_effect["):
            arch = r["benchmark"][len("bf16_effect["):-1]
            for key, value in r.items():
                if key not in ("benchmark", "agrees", "sizes", "quick", "measured_at", "load_average_1min"):
                    rows.append({"architecture": arch, "measure": key.replace("_", " "), "bf16 vs float32": value})
    return pd.DataFrame(rows)


def machine(results: dict) -> pd.DataFrame:
    """The machine and library versions the figures were measured with."""
    m = results["machine"]
    rows = [("CPU", m["cpu"]), ("CPU cores", m["cpu_count"]), ("torch threads", m["torch_threads"]),
            ("GPU", m["gpu"] or "none"), ("Python", m["python"])]
    rows += [(name, v or "not installed") for name, v in m.get("versions", {}).items()]
    return pd.DataFrame(rows, columns=["", "value"])


def speedup_figure(results: dict):
    """Horizontal bars: each comparison's ratio (baseline time / vitscope time, log scale), its target marked."""
    frame = pd.DataFrame([r for r in results["results"] if "speedup" in r and "baseline" in r])
    fig, ax = plt.subplots(figsize=(8, 0.45 * len(frame) + 1.2))
    colours = ["tab:red" if m is False else "tab:blue" for m in frame["meets_target"]]
    ax.barh(frame["benchmark"], frame["speedup"], color=colours)
    for i, target in enumerate(frame["target_ratio"]):
        if pd.notna(target):
            ax.plot([target, target], [i - 0.4, i + 0.4], color="black", lw=2)
    ax.axvline(1.0, color="grey", lw=0.8, ls="--")
    ax.set_xscale("log")
    ticks = [t for t in (0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 50, 100)
             if frame["speedup"].min() / 2 <= t <= frame["speedup"].max() * 2]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(NullFormatter())            # log-axis minor labels overlap the major ones
    ax.invert_yaxis()
    ax.set_xlabel("baseline time / vitscope time (log scale)\n> 1: vitscope faster; black tick: target")
    fig.tight_layout()
    return fig

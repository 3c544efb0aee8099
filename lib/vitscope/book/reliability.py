"""The Reliability page's data: which faults, bad inputs and attacks the test suite tries, and what held.

The inventory comes from the suite itself: tests marked ``@pytest.mark.reliability(kind, what)`` (see
``tests/conftest.py``). Collecting them (:func:`inventory`) lists what is tried; every test run records the
outcomes (:func:`record_results`), which :func:`table` joins to the inventory with the run's date.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from ..paths import cache_root, project_root

#: Set by :func:`inventory` for the collect-only run: where the conftest writes the marked tests.
INVENTORY_ENV = "VITSCOPE_RELIABILITY_INVENTORY"


def results_path() -> Path:
    return cache_root() / "tests" / "reliability.json"


def write_json(path, rows) -> None:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(rows, indent=1))
    tmp.replace(path)


def record_results(rows: list[dict]) -> None:
    """Merge this run's outcomes (``test, kind, what, outcome``) into the recorded results, stamped with the time."""
    path = results_path()
    old = {r["test"]: r for r in json.loads(path.read_text())} if path.is_file() else {}
    now = time.strftime("%Y-%m-%d %H:%M", time.localtime())
    old.update({r["test"]: {**r, "run": now} for r in rows})
    write_json(path, sorted(old.values(), key=lambda r: r["test"]))


def inventory(tests_dir: Path | None = None) -> list[dict]:
    """Every reliability test of the suite (``test, kind, what``), from a ``pytest --collect-only`` run."""
    tests_dir = tests_dir or project_root() / "tests"
    if not tests_dir.is_dir():
        raise FileNotFoundError(f"No test suite at {tests_dir}: the Reliability page needs a source checkout "
                                "(git clone the repository; VITSCOPE_HOME points at it).")
    with tempfile.TemporaryDirectory() as tmp:
        target = Path(tmp) / "inventory.json"
        env = {**os.environ, INVENTORY_ENV: str(target)}
        run = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                              str(tests_dir)], env=env, capture_output=True, text=True, cwd=tests_dir.parent)
        if not target.is_file():
            raise RuntimeError(f"Collecting the test suite failed:\n{run.stdout[-2000:]}\n{run.stderr[-2000:]}")
        return json.loads(target.read_text())


def table(tests_dir: Path | None = None):
    """The inventory joined with the last recorded outcome of each test (``not run yet`` when none)."""
    import pandas as pd

    rows = pd.DataFrame(inventory(tests_dir), columns=["test", "kind", "what"])
    path = results_path()
    last = pd.DataFrame(json.loads(path.read_text()) if path.is_file() else [],
                        columns=["test", "kind", "what", "outcome", "run"])
    out = rows.merge(last[["test", "outcome", "run"]], on="test", how="left")
    out["outcome"] = out["outcome"].fillna("not run yet")
    out["run"] = out["run"].fillna("")
    return out.sort_values(["kind", "test"]).reset_index(drop=True)


#: The packages issue 17 holds to a mutation score, and the score each must reach (percent of non-equivalent
#: mutants killed by that package's fast tests).
MUTATION_PACKAGES = ("kernels", "extract", "models", "data", "sections")
MUTATION_TARGET = 90.0


def mutation_scores_path() -> Path:
    """``tests/mutation_scores.json``: written by ``tools/mutate.py --record`` (hours of CPU), read by the book."""
    return project_root() / "tests" / "mutation_scores.json"


#: Coverage of the interval a sampled mutation score is reported with.
MUTATION_CONFIDENCE = 0.95


def mutation_estimate(killed: int, judged: int, not_run: int, sample_killed: int = 0,
                      sample_judged: int = 0) -> tuple[float, float, float] | None:
    """A package's mutation score in percent, ``(score, low, high)``, from what ran and a random sample of the rest.

    ``killed`` of ``judged`` mutants ran (the sample's included); ``not_run`` did not. With nothing left unrun the
    score is exact (low = high = score). Otherwise the unrun mutants are taken to be killed at the rate of a uniform
    random sample drawn from them before it ran (``sample_killed`` of ``sample_judged``; ``tools/mutate.py
    --sample``): score = (killed + p * not_run) / (judged + not_run), and the interval puts the ends of p's Wilson
    interval (:data:`MUTATION_CONFIDENCE`) in its place. A partial run with no sample gives None: a run cut short
    judged the mutants mutmut orders first (those with the fastest tests), which are no sample of the rest.
    """
    from ..kernels.stats import wilson_interval

    total = judged + not_run
    if not_run == 0:
        score = 100.0 * killed / judged if judged else None
        return None if score is None else (score, score, score)
    if sample_judged == 0:
        return None
    p = sample_killed / sample_judged
    low, high = wilson_interval(sample_killed, sample_judged, MUTATION_CONFIDENCE)
    return tuple(100.0 * (killed + q * not_run) / total for q in (p, low, high))


def mutation_verdict(estimate: tuple[float, float, float] | None, target: float = MUTATION_TARGET,
                     cut_short: bool = False) -> str:
    """"yes" when the whole interval reaches ``target``, "no" when none of it does, else "inconclusive"; "partial
    run" when there is no estimate (the same reading as the claims ledger's: a verdict must clear the noise);
    "sample cut short" when ``cut_short`` (some drawn mutants never ran: the slowest go last, so the rest are no
    longer a uniform sample and their interval cannot back a verdict)."""
    if cut_short:
        return "sample cut short"
    if estimate is None:
        return "partial run"
    _, low, high = estimate
    return "yes" if low >= target else "no" if high < target else "inconclusive"


def mutation_table(path: Path | None = None):
    """One row per target package: the last recorded ``make mutate`` counts and score, or "not measured yet".

    Columns: package; mutants (non-equivalent, all of them); run (those that ran); sampled (how many of the run
    were a random sample of the unrun ones, 0 for none); equivalent, killed, survived, no tests; score (percent,
    exact when everything ran, else estimated by :func:`mutation_estimate`); low and high (its interval, equal to
    the score when exact); target met (:func:`mutation_verdict`); commit; date. The counts are
    read from the committed file, never recomputed by the book.
    """
    import pandas as pd

    path = path or mutation_scores_path()
    recorded = json.loads(path.read_text()) if path.is_file() else {}
    rows = []
    for pkg in MUTATION_PACKAGES:
        r = recorded.get(pkg)
        if r is None:
            rows.append({"package": pkg, "target met": "not measured yet"})
            continue
        not_run = r.get("not run", 0)
        judged = r["mutants"] - not_run
        sample = r.get("sample") or {}
        estimate = mutation_estimate(r["killed"], judged, not_run, sample.get("killed", 0), sample.get("judged", 0))
        cut_short = sample.get("judged", 0) < sample.get("drawn", 0)
        score, low, high = estimate if estimate else (None, None, None)
        rows.append({"package": pkg, "mutants": r["mutants"], "run": judged, "sampled": sample.get("judged", 0),
                     "equivalent": r["equivalent"], "killed": r["killed"], "survived": r["survived"],
                     "no tests": r["no tests"], "score": score, "low": low, "high": high,
                     "target met": mutation_verdict(estimate, cut_short=cut_short),
                     "commit": r.get("commit", ""), "date": r.get("date", "")})
    columns = ["package", "mutants", "run", "sampled", "equivalent", "killed", "survived", "no tests", "score",
               "low", "high", "target met", "commit", "date"]
    return pd.DataFrame(rows, columns=columns)


def mutation_summary(scores) -> str:
    """The Reliability page's sentence on :func:`mutation_table`: how many packages were measured, how (all mutants
    or a sample), which reach the target with their whole interval, which are inconclusive, what is not measured."""
    measured = scores[scores["target met"] != "not measured yet"]

    def names(verdict):
        return list(measured.package[measured["target met"] == verdict])

    sampled = list(measured.package[measured.sampled.fillna(0) > 0])
    parts = [f"**{len(measured)}** of {len(scores)} packages measured"
             + (f" ({', '.join(sampled)} from a random sample of the mutants that had not run)" if sampled else "")]
    for verdict, text in [("yes", "reach{s} the {t:.0f} % target with the whole interval"),
                          ("inconclusive", "{have} an interval that straddles {t:.0f} %: a larger sample decides"),
                          ("no", "fall{s} short of {t:.0f} %"),
                          ("sample cut short", "{have} a sample whose slowest mutants did not run: its estimate "
                                               "leans on the faster ones, no verdict"),
                          ("partial run", "{have} a run cut short and no sample yet: no score")]:
        found = names(verdict)
        if found:
            one = len(found) == 1
            parts.append(f"**{len(found)}** ({', '.join(found)}) " + text.format(
                s="es" if one and verdict == "yes" else "s" if one else "", have="has" if one else "have",
                t=MUTATION_TARGET))
    missing = list(scores.package[scores["target met"] == "not measured yet"])
    text = "; ".join(parts) + "."
    if missing:
        text += f" Not measured yet: {', '.join(missing)}."
    recorded = "; ".join(f"{r.package} at commit {r.commit} on {r.date}" for r in measured.itertuples())
    return text + (f" Recorded: {recorded}." if recorded else "")

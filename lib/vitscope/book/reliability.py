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


def mutation_table(path: Path | None = None):
    """One row per target package: the last recorded ``make mutate`` counts and score, or "not measured yet".

    Columns: package, mutants (that ran), not run (a run cut short: out of the score, and "target met" then says
    "partial run"), equivalent, killed, survived, no tests, score (percent of the mutants that ran), target met,
    commit, date. The scores are read from the committed file, never recomputed by the book.
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
        score, not_run = r.get("score"), r.get("not run", 0)
        met = ("partial run" if not_run                      # a partial score is never met
               else "yes" if score is not None and score >= MUTATION_TARGET else "no")
        rows.append({"package": pkg, "mutants": r["mutants"] - not_run, "not run": not_run,
                     "equivalent": r["equivalent"], "killed": r["killed"], "survived": r["survived"],
                     "no tests": r["no tests"], "score": score, "target met": met,
                     "commit": r.get("commit", ""), "date": r.get("date", "")})
    columns = ["package", "mutants", "not run", "equivalent", "killed", "survived", "no tests", "score",
               "target met", "commit", "date"]
    return pd.DataFrame(rows, columns=columns)

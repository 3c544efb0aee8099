"""Mutation testing of vitscope with mutmut 3 (issue 17): run it, then print the score per package and the survivors.

    python tools/mutate.py                          # everything but the zoo trainer, fast tests (hours on 2 cores)
    python tools/mutate.py --only data/transforms.py --tests tests/test_data.py     # one module: a minute
    python tools/mutate.py --report [--diffs]       # the last run's table again, with each survivor's diff

Why a runner: mutmut imports the mutated copy from ``src/`` (or the root), while vitscope lives in ``lib/`` and is
installed editable, so run in place every test would import the unmutated package and every mutant would survive.
The runner lays the package out as ``src/vitscope`` in a scratch folder (``<cache>/mutate``), with the tests and
the project files they read, writes mutmut's settings (``tools/mutmut.toml``) into that folder's pyproject.toml
and runs ``mutmut run`` there. The checkout is never modified, so it is safe while others work in it.

Score = killed / (mutants - equivalent), per package; a timeout counts as killed (the tests noticed). Equivalent
mutants are listed, each with its reason, in ``tests/equivalent_mutants.md`` and reviewed like code.
"""
from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import subprocess
import sys
from collections import Counter, defaultdict
from pathlib import Path

import tomllib

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "tools" / "mutmut.toml"
EQUIVALENTS = ROOT / "tests" / "equivalent_mutants.md"
TARGET_PACKAGES = ("kernels", "extract", "models", "data", "sections")  # issue 17: >= 90 % each
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}
MUTANT_NAME = re.compile(r"`(vitscope\.[\w.]+__mutmut_\d+)`")


def default_workdir() -> Path:
    cache = os.environ.get("VITSCOPE_CACHE")
    base = (Path(cache) if Path(cache).is_absolute() else ROOT / cache) if cache else ROOT / "cache"
    return base / "mutate"


def _toml_value(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    raise TypeError(f"cannot write {value!r} to TOML")


def mutmut_settings(only: list[str], tests: list[str]) -> dict:
    """tools/mutmut.toml's table, narrowed to ``only`` (paths under lib/vitscope) and ``tests`` when given."""
    settings = tomllib.loads(SETTINGS.read_text())["tool"]["mutmut"]
    if only:
        patterns = []
        for item in only:
            item = item.strip("/")
            if not (ROOT / "lib" / "vitscope" / item).exists():
                raise SystemExit(f"--only {item!r}: no lib/vitscope/{item}. Name a package (data) or a module "
                                 "(data/transforms.py) under lib/vitscope.")
            patterns.append(f"src/vitscope/{item}" + ("" if item.endswith(".py") else "/*"))
        settings["only_mutate"] = patterns
    if tests:
        settings["pytest_add_cli_args_test_selection"] = [*tests, "-m", "not slow"]
    return settings


def prepare(workdir: Path, settings: dict, resume: bool) -> None:
    """A fresh scratch project: src/vitscope, tests/, the files tests read, pyproject.toml with mutmut's table."""
    if workdir.exists() and not resume:
        shutil.rmtree(workdir)
    workdir.mkdir(parents=True, exist_ok=True)
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", ".hypothesis", ".pytest_cache")
    src = workdir / "src" / "vitscope"
    if src.exists():
        shutil.rmtree(src)
    shutil.copytree(ROOT / "lib" / "vitscope", src, ignore=ignore)
    for name in ["tests", *settings.get("also_copy", [])]:
        path, target = ROOT / name, workdir / name
        if target.is_dir():
            shutil.rmtree(target)
        if path.is_dir():
            shutil.copytree(path, target, ignore=ignore)
        elif path.is_file():
            shutil.copy2(path, target)
    pytest_table = tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["pytest"]["ini_options"]
    lines = ["[tool.pytest.ini_options]", *(f"{k} = {_toml_value(v)}" for k, v in pytest_table.items()),
             "", "[tool.mutmut]", *(f"{k} = {_toml_value(v)}" for k, v in settings.items())]
    (workdir / "pyproject.toml").write_text("\n".join(lines) + "\n")


def run_mutmut(workdir: Path, max_children: int) -> int:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSCOPE_")}  # paths resolve in workdir
    env.pop("PYTHONPATH", None)
    mutmut = Path(sys.executable).with_name("mutmut")
    return subprocess.call([str(mutmut), "run", "--max-children", str(max_children)], cwd=workdir, env=env)


def equivalent_mutants() -> set[str]:
    return set(MUTANT_NAME.findall(EQUIVALENTS.read_text())) if EQUIVALENTS.exists() else set()


def collect(workdir: Path) -> dict[str, str]:
    """{mutant name: status} from the .meta files mutmut leaves next to each mutated module."""
    from mutmut.stats import status_by_exit_code

    status = {}
    for meta in sorted((workdir / "mutants").rglob("*.py.meta")):
        for name, code in json.loads(meta.read_text())["exit_code_by_key"].items():
            status[name] = status_by_exit_code[code]
    return status


def package_of(name: str) -> str:
    """vitscope.data.transforms.x_eval_transform__mutmut_3 -> 'data'; a top-level module is its own package."""
    parts = name.split(".")
    return parts[1] if len(parts) > 3 else parts[1] + " (module)"


def report(workdir: Path, diffs: bool, fail_under: float | None) -> int:
    status = collect(workdir)
    if not status:
        print(f"No mutmut results under {workdir / 'mutants'}: run without --report first.")
        return 1
    equivalent = equivalent_mutants()
    stale = sorted(equivalent - set(status))
    by_package: dict[str, Counter] = defaultdict(Counter)
    survivors: dict[str, list[str]] = defaultdict(list)
    for name, st in status.items():
        pkg = package_of(name)
        if name in equivalent:
            by_package[pkg]["equivalent"] += 1
            continue
        by_package[pkg]["mutants"] += 1
        if st in DETECTED:
            by_package[pkg]["killed"] += 1
        elif st in NOT_RUN:
            by_package[pkg]["not run"] += 1
        else:
            by_package[pkg][st] += 1
            survivors[pkg].append(f"{name}  [{st}]")
    print(f"\nmutmut results in {workdir}  (score = killed / (mutants - equivalent - not run))\n")
    header = f"{'package':<18}{'mutants':>8}{'equiv':>7}{'killed':>8}{'survived':>9}{'no tests':>9}{'other':>7}" \
             f"{'score':>8}"
    print(header + "\n" + "-" * len(header))
    failing = []
    for pkg in sorted(by_package):
        c = by_package[pkg]
        judged = c["mutants"] - c["not run"]
        other = judged - c["killed"] - c["survived"] - c["no tests"]
        score = 100.0 * c["killed"] / judged if judged else float("nan")
        print(f"{pkg:<18}{c['mutants']:>8}{c['equivalent']:>7}{c['killed']:>8}{c['survived']:>9}"
              f"{c['no tests']:>9}{other:>7}{score:>7.1f}%" + (f"  ({c['not run']} not run)" if c["not run"] else ""))
        if fail_under is not None and pkg in TARGET_PACKAGES and judged and score < fail_under:
            failing.append(f"{pkg} {score:.1f}%")
    if stale:
        print(f"\n{len(stale)} mutant(s) listed as equivalent no longer exist (the function changed): review "
              f"{EQUIVALENTS.relative_to(ROOT)}: " + ", ".join(stale))
    for pkg in sorted(survivors):
        print(f"\nsurvivors in {pkg}:")
        for line in sorted(survivors[pkg], key=_natural):
            print("  " + line)
            if diffs:
                name = line.split()[0]
                mutmut = Path(sys.executable).with_name("mutmut")
                shown = subprocess.run([str(mutmut), "show", name], cwd=workdir, capture_output=True, text=True,
                                        check=False)
                print("    " + (shown.stdout or shown.stderr).strip().replace("\n", "\n    "))
    if failing:
        print(f"\nbelow {fail_under}%: " + ", ".join(failing))
        return 1
    return 0


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="PATH",
                        help="mutate only these packages/modules under lib/vitscope (e.g. data, data/transforms.py)")
    parser.add_argument("--tests", nargs="+", default=[], metavar="TEST",
                        help="run only these tests (default: all fast tests)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="parallel mutant workers")
    parser.add_argument("--workdir", type=Path, default=None, help="scratch folder (default: <cache>/mutate)")
    parser.add_argument("--resume", action="store_true", help="keep the scratch folder's earlier results")
    parser.add_argument("--report", action="store_true", help="only print the last run's results")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    parser.add_argument("--fail-under", type=float, default=None,
                        help=f"exit 1 if a package of {TARGET_PACKAGES} scores below this percentage")
    args = parser.parse_args(argv)
    workdir = (args.workdir or default_workdir()).resolve()
    if not args.report:
        prepare(workdir, mutmut_settings(args.only, args.tests), args.resume)
        code = run_mutmut(workdir, args.max_children)
        if code:
            print(f"mutmut run exited with {code}; the results so far follow.")
    return report(workdir, args.diffs, args.fail_under)


if __name__ == "__main__":
    sys.exit(main())

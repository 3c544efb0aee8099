"""Mutation testing of vitscope with mutmut 3 (issue 17): run it, then print the score per package and the survivors.

    python tools/mutate.py                          # kernels, extract, models, data, sections (hours on 2 cores)
    python tools/mutate.py --only extract           # one package, against the tests tools/mutmut.toml names for it
    python tools/mutate.py --only data/transforms.py --tests tests/test_data.py     # one module: a minute
    python tools/mutate.py --report [--diffs]       # the last run's table again, with each survivor's diff
    python tools/mutate.py --only extract --rerun   # after writing tests: only the survivors again
    python tools/mutate.py --only extract --report --record    # the scores into tests/mutation_scores.json
    python tools/mutate.py --only sections --sample 300         # a random sample of the unrun mutants: minutes

Why a runner: mutmut imports the mutated copy from ``src/`` (or the root), while vitscope lives in ``lib/`` and is
installed editable, so run in place every test would import the unmutated package and every mutant would survive.
The runner lays the package out as ``src/vitscope`` in a scratch folder (``<cache>/mutate/<package>``), with the
tests and the project files they read, writes mutmut's settings (``tools/mutmut.toml``) into that folder's
pyproject.toml and runs ``mutmut run`` there. The checkout is never modified, so it is safe while others work in it.

Score = killed / (mutants - equivalent), per package; a timeout counts as killed (the tests noticed). Equivalent
mutants are listed, each with its reason, in ``tests/equivalent_mutants.md`` and reviewed like code.

A whole package takes hours on 2 cores, so ``--sample N`` runs N mutants drawn uniformly at random (``--seed``) from
those that have not run, and the score of the rest is estimated from theirs, with a Wilson interval
(:func:`vitscope.book.reliability.mutation_estimate`). The sample's kill rate is frozen in ``sample.json`` when its
run ends: tests written afterwards for its survivors raise the score of the mutants that ran, never the estimate for
the unrun ones (they were written for the sample, so the sample would no longer speak for the rest). Draw a new
sample to estimate again.
"""
from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import subprocess
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import tomllib

from vitscope.book.reliability import MUTATION_CONFIDENCE, mutation_estimate, mutation_scores_path, mutation_verdict
from vitscope.book.reliability import MUTATION_PACKAGES as TARGET_PACKAGES  # issue 17: >= 90 % each

ROOT = Path(__file__).resolve().parents[1]
SETTINGS = ROOT / "tools" / "mutmut.toml"
EQUIVALENTS = ROOT / "tests" / "equivalent_mutants.md"
SCORES = mutation_scores_path()  # tests/mutation_scores.json, committed: a full run takes hours, the book reads it
DETECTED = {"killed", "timeout", "segfault", "caught by type check"}
NOT_RUN = {"not checked", "skipped", "check was interrupted by user"}
MUTMUT = Path(sys.executable).with_name("mutmut")  # the venv's mutmut, whatever PATH says
SAMPLE_FILE = "sample.json"  # in the scratch folder: the last --sample draw and its frozen kill rate
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
    if not tests and only:
        tests = package_tests(only)
    if tests:
        settings["pytest_add_cli_args_test_selection"] = [*tests, "-m", "not slow"]
    return settings


def package_tests(only: list[str]) -> list[str]:
    """The test files tools/mutmut.toml names for the packages in ``only`` (globs expanded, sorted, unique)."""
    table = tomllib.loads(SETTINGS.read_text()).get("tool", {}).get("vitscope-mutate", {}).get("tests", {})
    packages = {package_of_path(item) for item in only}
    unknown = sorted(packages - set(table))
    if unknown:
        raise SystemExit(f"--only {', '.join(unknown)}: tools/mutmut.toml names no tests for it; add it to "
                         "[tool.vitscope-mutate.tests] or pass --tests.")
    files = {str(path.relative_to(ROOT)) for pkg in packages for pattern in table[pkg] for path in ROOT.glob(pattern)}
    return sorted(files)


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


def run_mutmut(workdir: Path, max_children: int, names: list[str] = ()) -> int:
    """``mutmut run`` in ``workdir``; with ``names``, only those mutants, run again whatever their last result."""
    return subprocess.call([str(MUTMUT), "run", "--max-children", str(max_children), *names], cwd=workdir,
                           env=_mutmut_env())


def _mutmut_env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("VITSCOPE_")}  # paths resolve in workdir
    env.pop("PYTHONPATH", None)
    return env


def undetected(workdir: Path) -> list[str]:
    """The mutants of the last run that no test detected (survived, no tests, ...) or that did not run (the run
    was cut short): what ``--rerun`` runs (again). With a sample drawn, the unrun mutants stay unrun: the sample
    speaks for them, and running some would leave a remainder that is no longer the sample's population."""
    equivalent = equivalent_mutants()  # out of every score: running them again would change nothing
    sampled = read_sample(workdir) is not None
    return sorted(name for name, st in collect(workdir).items()
                  if st not in DETECTED and name not in equivalent and not (sampled and st in NOT_RUN))


def read_sample(workdir: Path) -> dict | None:
    """The scratch folder's last sample or None: ``{"seed", "drawn": [names], "packages": {package: {"pool",
    "drawn", "judged", "killed"}}}`` (judged and killed once :func:`freeze_sample` has run)."""
    path = workdir / SAMPLE_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def _last_sample(workdir: Path) -> dict:
    sample = read_sample(workdir)
    if sample is None:
        raise SystemExit(f"No sample in {workdir}: draw one with --sample N first.")
    return sample


def _unrun(names, status: dict[str, str], equivalent: set[str]) -> list[str]:
    """The non-equivalent ``names`` whose last status in ``status`` says they have not run."""
    return [n for n in names if status.get(n) in NOT_RUN and n not in equivalent]


def _draw(pool: list[str], size: int, seed: int) -> list[str]:
    return sorted(random.Random(seed).sample(pool, min(size, len(pool))), key=_natural)


def unfinished_sample(workdir: Path) -> list[str]:
    """The last sample's drawn mutants that have not run yet (the run was cut short); [] when none."""
    sample = _last_sample(workdir)
    return _unrun(sample["drawn"], collect(workdir), equivalent_mutants())


def generate_mutants(workdir: Path) -> None:
    """Let mutmut write every mutant and collect which tests reach which function, running no mutant: ``mutmut
    run`` with a name that matches nothing stops with an assertion right after those two steps (mutmut 3.8)."""
    subprocess.run([str(MUTMUT), "run", "vitscope.no_such_module.x_none__mutmut_0"], cwd=workdir, env=_mutmut_env(),
                   capture_output=True, text=True)
    if not collect(workdir):
        raise SystemExit(f"mutmut wrote no mutants under {workdir / 'mutants'}; run without --sample to see why.")


def draw_sample(workdir: Path, size: int, seed: int) -> list[str]:
    """``size`` mutant names drawn uniformly without replacement (``random.Random(seed)``) from the non-equivalent
    mutants that have not run; the draw goes to ``sample.json`` (kill rate filled in by :func:`freeze_sample`)."""
    status = collect(workdir)
    if not status:
        generate_mutants(workdir)
        status = collect(workdir)
    pool = sorted(_unrun(status, status, equivalent_mutants()))
    if not pool:
        raise SystemExit(f"Every mutant in {workdir} has run: nothing to sample; --report prints the exact score.")
    drawn = _draw(pool, size, seed)
    in_pool, in_draw = Counter(map(package_of, pool)), Counter(map(package_of, drawn))
    packages = {pkg: {"pool": in_pool[pkg], "drawn": in_draw[pkg]} for pkg in sorted(in_pool)}
    (workdir / SAMPLE_FILE).write_text(json.dumps({"seed": seed, "packages": packages, "drawn": drawn}, indent=1))
    return drawn


def extend_sample(workdir: Path, size: int, seed: int) -> list[str]:
    """Add ``size`` mutants to the last sample, drawn uniformly without replacement from the non-equivalent mutants
    still unrun. Those are the first draw's pool less what it drew, so the union stays a uniform sample of that
    pool: a larger sample narrows the interval, where a fresh draw would throw the first one's evidence away."""
    sample = _last_sample(workdir)
    status, equivalent = collect(workdir), equivalent_mutants()
    if _unrun(sample["drawn"], status, equivalent):
        raise SystemExit(f"The sample in {workdir} was cut short: finish it first with --finish-sample.")
    pool = sorted(_unrun(status, status, equivalent))
    if not pool:
        raise SystemExit(f"Every mutant in {workdir} has run: nothing to add; --report prints the exact score.")
    more = _draw(pool, size, seed)
    for pkg, n in Counter(map(package_of, more)).items():
        sample["packages"].setdefault(pkg, {"pool": 0, "drawn": 0})["drawn"] += n
    sample["drawn"] = sorted(sample["drawn"] + more, key=_natural)
    sample.setdefault("extended", []).append({"seed": seed, "size": len(more)})
    (workdir / SAMPLE_FILE).write_text(json.dumps(sample, indent=1))
    return more


def freeze_sample(workdir: Path) -> None:
    """Write the sample's kill rate per package as its run left it (killed and judged among the drawn mutants that
    ran, equivalents out)."""
    sample = read_sample(workdir)
    status, equivalent = collect(workdir), equivalent_mutants()
    for pkg, counts in sample["packages"].items():
        ran = [status[n] for n in sample["drawn"] if package_of(n) == pkg and n in status and n not in equivalent
               and status[n] not in NOT_RUN]
        counts.update(judged=len(ran), killed=sum(st in DETECTED for st in ran))
    (workdir / SAMPLE_FILE).write_text(json.dumps(sample, indent=1))


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


def mutant_diff(workdir: Path, name: str) -> str:
    """The unified diff of one mutant, read in-process (``mutmut show`` per survivor re-imports mutmut each time)."""
    from mutmut.mutation.diff_apply import get_diff_for_mutant

    parts = module_of(name).split(".")
    for candidate in (Path("src", *parts).with_suffix(".py"), Path("src", *parts, "__init__.py")):
        if (workdir / candidate).exists():
            break
    cwd = Path.cwd()
    try:
        os.chdir(workdir)  # mutmut reads mutants/<path> relative to the working directory
        return get_diff_for_mutant(name, path=candidate)
    except Exception as error:  # noqa: BLE001 - a diff that cannot be read must not hide the rest of the report
        return f"(no diff: {error})"
    finally:
        os.chdir(cwd)


def module_of(name: str) -> str:
    """vitscope.data.fetch.x_verify__mutmut_3 -> 'vitscope.data.fetch' (the module a mutant belongs to)."""
    return name.split("__mutmut_")[0].rsplit(".", 1)[0]


def package_of_path(item: str) -> str:
    """An --only item under lib/vitscope ('data', 'data/transforms.py') -> its package ('data')."""
    return item.strip("/").split("/")[0]


def judged_of(counts: Counter) -> int:
    """The mutants that ran: all of a package's non-equivalent mutants less those a cut-short run never reached."""
    return counts["mutants"] - counts["not run"]


def package_of(name: str) -> str:
    """vitscope.data.transforms.x_eval_transform__mutmut_3 -> 'data'; a top-level module is its own package."""
    parts = name.split(".")
    return parts[1] if len(parts) > 3 else parts[1] + " (module)"


def tally(status: dict[str, str], equivalent: set[str],
          sample: dict | None = None) -> tuple[dict[str, Counter], dict[str, list[str]]]:
    """Counts per package (mutants, equivalent, killed, not run, and each surviving status) and the survivors;
    with a frozen ``sample`` (:func:`freeze_sample`), also its "sample pool", "sample judged" and "sample killed"."""
    by_package: dict[str, Counter] = defaultdict(Counter)
    for pkg, counts in (sample or {}).get("packages", {}).items():
        by_package[pkg].update({f"sample {k}": counts.get(k, 0) for k in ("pool", "drawn", "judged", "killed")})
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
    return by_package, survivors


def cut_short(counts: Counter) -> bool:
    """Whether some of the sample's drawn mutants never ran (the slowest go last: the rest are no longer uniform)."""
    return counts["sample judged"] < counts["sample drawn"]


def score_of(counts: Counter) -> float:
    """Killed / judged (mutants less those not run), in percent; NaN when nothing was judged."""
    judged = judged_of(counts)
    return 100.0 * counts["killed"] / judged if judged else float("nan")


def estimate_of(counts: Counter) -> tuple[float, float, float] | None:
    """The package's score with its interval, exact or estimated from the sample (see ``mutation_estimate``)."""
    return mutation_estimate(counts["killed"], judged_of(counts), counts["not run"], counts["sample killed"],
                             counts["sample judged"])


def record(workdir: Path, by_package: dict[str, Counter], path: Path) -> None:
    """Merge this run's per-package counts into ``path`` (the Reliability page's table), with commit and tests."""
    settings = tomllib.loads((workdir / "pyproject.toml").read_text())["tool"]["mutmut"]
    tests = [t for t in settings.get("pytest_add_cli_args_test_selection", []) if t.startswith("tests")]
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True, text=True,
                            check=False).stdout.strip()
    rows = json.loads(path.read_text()) if path.is_file() else {}
    for pkg, c in by_package.items():
        judged = judged_of(c)
        rows[pkg] = {"mutants": c["mutants"], "equivalent": c["equivalent"], "killed": c["killed"],
                     "survived": judged - c["killed"] - c["no tests"], "no tests": c["no tests"],
                     "not run": c["not run"], "score": round(score_of(c), 1) if judged else None,
                     "tests": tests, "commit": commit, "date": time.strftime("%Y-%m-%d")}
        if c["sample judged"]:  # the unrun mutants' score is estimated from it (the page's table)
            rows[pkg]["sample"] = {k: c[f"sample {k}"] for k in ("pool", "drawn", "judged", "killed")}
    path.write_text(json.dumps(dict(sorted(rows.items())), indent=1) + "\n")
    shown = path.relative_to(ROOT) if path.is_relative_to(ROOT) else path
    print(f"\nrecorded {', '.join(sorted(by_package))} in {shown}")


def report(workdir: Path, diffs: bool, fail_under: float | None, record_to: Path | None = None) -> int:
    status = collect(workdir)
    if not status:
        print(f"No mutmut results under {workdir / 'mutants'}: run without --report first.")
        return 1
    equivalent = equivalent_mutants()
    modules = {module_of(name) for name in status}  # what this run mutated
    stale = sorted(e for e in equivalent - set(status) if module_of(e) in modules)
    by_package, survivors = tally(status, equivalent, read_sample(workdir))
    print(f"\nmutmut results in {workdir}  (score = killed / (mutants - equivalent - not run))\n")
    header = f"{'package':<18}{'mutants':>8}{'equiv':>7}{'killed':>8}{'survived':>9}{'no tests':>9}{'other':>7}" \
             f"{'score':>8}"
    print(header + "\n" + "-" * len(header))
    failing = []
    for pkg in sorted(by_package):
        c = by_package[pkg]
        judged = judged_of(c)
        other = judged - c["killed"] - c["survived"] - c["no tests"]
        score = score_of(c)
        print(f"{pkg:<18}{c['mutants']:>8}{c['equivalent']:>7}{c['killed']:>8}{c['survived']:>9}"
              f"{c['no tests']:>9}{other:>7}{score:>7.1f}%" + (f"  ({c['not run']} not run)" if c["not run"] else ""))
        estimate = estimate_of(c)
        if c["not run"] and estimate:
            print(f"{'':<18}all {c['mutants']}, the {c['not run']} unrun estimated from a random sample of "
                  f"{c['sample judged']} (of {c['sample pool']}): {estimate[0]:.1f}% "
                  f"[{estimate[1]:.1f}, {estimate[2]:.1f}] ({MUTATION_CONFIDENCE:.0%} Wilson)")
            if cut_short(c):
                print(f"{'':<18}warning: {c['sample drawn'] - c['sample judged']} of the {c['sample drawn']} drawn "
                      "did not run (the run was cut short); the estimate leans on the faster ones")
        if fail_under is None or pkg not in TARGET_PACKAGES:
            continue
        verdict = mutation_verdict(estimate, fail_under, cut_short=cut_short(c))
        if verdict != "yes":
            shown = f"{estimate[0]:.1f}% [{estimate[1]:.1f}, {estimate[2]:.1f}]" if estimate else "no sample"
            failing.append(f"{pkg} {shown}" + ("" if verdict in ("no", "inconclusive") else f" ({verdict})"))
    if stale:
        print(f"\n{len(stale)} mutant(s) listed as equivalent no longer exist (the function changed): review "
              f"{EQUIVALENTS.relative_to(ROOT)}: " + ", ".join(stale))
    for pkg in sorted(survivors):
        print(f"\nsurvivors in {pkg}:")
        for line in sorted(survivors[pkg], key=_natural):
            print("  " + line)
            if diffs:
                print("    " + mutant_diff(workdir, line.split()[0]).strip().replace("\n", "\n    "))
    if record_to is not None:
        record(workdir, by_package, record_to)
    if failing:
        print(f"\nnot clearly at or above {fail_under}% (the whole interval must be): " + ", ".join(failing))
        return 1
    return 0


def _natural(text: str):
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", text)]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", nargs="+", default=[], metavar="PATH",
                        help="mutate only these packages/modules under lib/vitscope (e.g. data, data/transforms.py)")
    parser.add_argument("--tests", nargs="+", default=[], metavar="TEST",
                        help="run only these tests (default: the tests tools/mutmut.toml names for the --only "
                             "packages, else all fast tests)")
    parser.add_argument("--max-children", type=int, default=os.cpu_count() or 2, help="parallel mutant workers")
    parser.add_argument("--workdir", type=Path, default=None,
                        help="one scratch folder for all of --only (default: <cache>/mutate/<package> each)")
    parser.add_argument("--resume", action="store_true", help="keep the scratch folder's earlier results")
    parser.add_argument("--report", action="store_true", help="only print the last run's results")
    parser.add_argument("--rerun", action="store_true",
                        help="run the mutants not known to be killed (survivors, no tests, not run) again, e.g. "
                             "after adding tests; mutmut also forgets the kills of functions the new tests reach, "
                             "so run --rerun until nothing is left to run")
    parser.add_argument("--diffs", action="store_true", help="print each survivor's diff")
    parser.add_argument("--fail-under", type=float, default=None,
                        help=f"exit 1 unless every package of {TARGET_PACKAGES} that ran scores at least this "
                             "percentage, all of its interval when the score is estimated from a sample")
    parser.add_argument("--sample", type=int, default=None, metavar="N",
                        help="run N mutants drawn at random from those not run yet (all of them on a fresh folder) "
                             "and estimate the rest's score from them; keeps earlier results")
    parser.add_argument("--seed", type=int, default=0, help="the --sample draw's seed")
    parser.add_argument("--extend-sample", type=int, default=None, metavar="N",
                        help="add N mutants (drawn with --seed from those still unrun) to the last sample and run "
                             "them: a larger uniform sample, a narrower interval")
    parser.add_argument("--finish-sample", action="store_true",
                        help="run the last sample's drawn mutants that did not run (it was cut short), then "
                             "re-estimate: the same draw, so it stays a uniform sample")
    parser.add_argument("--record", action="store_true",
                        help=f"merge the per-package scores into {SCORES} (the Reliability page)")
    args = parser.parse_args(argv)
    record_to = SCORES if args.record else None
    if args.workdir is not None:  # one scratch folder for whatever --only names
        return run_one(args.workdir.resolve(), args.only, args, record_to)
    # One scratch folder per package (<cache>/mutate/<package>), each against its own tests, one after another.
    by_package: dict[str, list[str]] = defaultdict(list)
    for item in args.only or TARGET_PACKAGES:
        by_package[package_of_path(item)].append(item)
    codes = [run_one(default_workdir() / pkg, items, args, record_to) for pkg, items in by_package.items()]
    return max(codes)


def run_one(workdir: Path, only: list[str], args, record_to: Path | None) -> int:
    """Run (or re-run, or only report) one scratch folder, then print its report."""
    if args.sample is not None or args.finish_sample or args.extend_sample is not None:
        prepare(workdir, mutmut_settings(only, args.tests), resume=True)
        if args.finish_sample:
            names = unfinished_sample(workdir)
            print(f"finishing the last sample: {len(names)} of its drawn mutants have not run")
        elif args.extend_sample is not None:
            names = extend_sample(workdir, args.extend_sample, args.seed)
            print(f"adding {len(names)} mutants to the last sample (seed {args.seed})")
        else:
            names = draw_sample(workdir, args.sample, args.seed)
            print(f"running a random sample of {len(names)} unrun mutants (seed {args.seed})")
        if not names:
            freeze_sample(workdir)
            return report(workdir, args.diffs, args.fail_under, record_to)
        code = run_mutmut(workdir, args.max_children, names)
        freeze_sample(workdir)
        if code:
            print(f"mutmut run exited with {code}; the results so far follow.")
        return report(workdir, args.diffs, args.fail_under, record_to)
    names = undetected(workdir) if args.rerun else []
    if args.rerun and not names:
        print(f"No undetected mutants in {workdir}: nothing to run again.")
    elif args.rerun or not args.report:
        prepare(workdir, mutmut_settings(only, args.tests), resume=args.resume or args.rerun)
        if names:
            print(f"running {len(names)} undetected mutants again against today's tests")
        code = run_mutmut(workdir, args.max_children, names)
        if code:
            print(f"mutmut run exited with {code}; the results so far follow.")
    return report(workdir, args.diffs, args.fail_under, record_to)


if __name__ == "__main__":
    sys.exit(main())

"""The mutation-testing scores: tools/mutate.py's tally and record, and the Reliability page's table of them.

A full ``make mutate`` takes hours, so the book only reads the committed ``tests/mutation_scores.json``; these tests
check the counting on hand-made mutmut results and the round trip from the runner's record to the page's table.
"""
from __future__ import annotations

import importlib.util
import json
import math
from collections import Counter
from pathlib import Path

import pytest

from vitscope.book import reliability

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def mutate():
    spec = importlib.util.spec_from_file_location("mutate_tool", ROOT / "tools" / "mutate.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


STATUS = {
    "vitscope.kernels.cka.x_hsic0__mutmut_1": "killed",
    "vitscope.kernels.cka.x_hsic0__mutmut_2": "timeout",      # the tests noticed: a kill
    "vitscope.kernels.cka.x_hsic0__mutmut_3": "survived",
    "vitscope.kernels.cka.x_hsic0__mutmut_4": "survived",     # listed as equivalent below
    "vitscope.kernels.cka.x_hsic0__mutmut_5": "not checked",  # not run: out of the score
    "vitscope.extract.store.x_get__mutmut_1": "no tests",
    "vitscope.extract.store.x_get__mutmut_2": "killed",
    "vitscope.paths.x_cache_root__mutmut_1": "killed",
}


def test_tally_counts_kills_survivors_equivalents_and_not_run(mutate):
    by_package, survivors = mutate.tally(STATUS, {"vitscope.kernels.cka.x_hsic0__mutmut_4"})
    kernels, extract = by_package["kernels"], by_package["extract"]
    assert (kernels["mutants"], kernels["equivalent"], kernels["killed"], kernels["survived"],
            kernels["not run"]) == (4, 1, 2, 1, 1)
    assert mutate.score_of(kernels) == pytest.approx(100 * 2 / 3)
    assert (extract["mutants"], extract["killed"], extract["no tests"]) == (2, 1, 1)
    assert mutate.score_of(extract) == 50.0
    assert by_package["paths (module)"]["killed"] == 1
    assert survivors["kernels"] == ["vitscope.kernels.cka.x_hsic0__mutmut_3  [survived]"]
    assert survivors["extract"] == ["vitscope.extract.store.x_get__mutmut_1  [no tests]"]
    assert math.isnan(mutate.score_of(Counter()))


def test_record_merges_packages_and_the_page_reads_them(mutate, tmp_path, monkeypatch):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "pyproject.toml").write_text(
        '[tool.mutmut]\npytest_add_cli_args_test_selection = ["tests/test_kernels_cka.py", "-m", "not slow"]\n')
    scores = tmp_path / "mutation_scores.json"
    scores.write_text(json.dumps({"data": {"mutants": 10, "equivalent": 0, "killed": 9, "survived": 1,
                                           "no tests": 0, "not run": 0, "score": 90.0, "tests": [],
                                           "commit": "abc", "date": "2026-01-01"}}))
    by_package, _ = mutate.tally(STATUS, {"vitscope.kernels.cka.x_hsic0__mutmut_4"})
    mutate.record(workdir, {"kernels": by_package["kernels"]}, scores)
    rows = json.loads(scores.read_text())
    assert set(rows) == {"data", "kernels"}  # data kept from the earlier run
    assert rows["kernels"]["score"] == pytest.approx(66.7)
    assert rows["kernels"]["tests"] == ["tests/test_kernels_cka.py"]
    assert (rows["kernels"]["killed"], rows["kernels"]["survived"], rows["kernels"]["not run"]) == (2, 1, 1)

    table = reliability.mutation_table(scores).set_index("package")
    assert list(table.index) == list(reliability.MUTATION_PACKAGES)
    assert table.loc["data", "target met"] == "yes"  # 90.0 is the target itself
    assert table.loc["kernels", "target met"] == "partial run"
    assert table.loc["kernels", "mutants"] == 4 and table.loc["kernels", "run"] == 3  # not run: out of the score
    assert math.isnan(table.loc["kernels", "score"])  # a partial run without a sample has no score
    assert table.loc["sections", "target met"] == "not measured yet"


def test_the_committed_scores_file_is_readable_when_present():
    table = reliability.mutation_table()
    assert list(table.package) == list(reliability.MUTATION_PACKAGES)
    measured = table[table["target met"] != "not measured yet"]
    scored = measured[measured["target met"] != "partial run"]   # a partial run without a sample has no score
    assert ((scored.low >= 0) & (scored.low <= scored.score) & (scored.score <= scored.high)
            & (scored.high <= 100)).all()
    assert measured[measured["target met"] == "partial run"].score.isna().all()
    assert (measured.killed <= measured.mutants).all()


# ---------------------------------------------------------------- scores estimated from a random sample
def test_mutation_estimate_by_hand():
    # everything ran: exact, no interval
    assert reliability.mutation_estimate(45, 50, 0) == (90.0, 90.0, 90.0)
    # 100 ran (90 killed), 300 did not; a sample of 50 of the 300 killed 45 (p = 0.9) before it ran, so the 400
    # are estimated at (90 + 0.9 * 300) / 400 = 90 %, and the ends put Wilson's 45/50 bounds in p's place
    score, low, high = reliability.mutation_estimate(90, 100, 300, sample_killed=45, sample_judged=50)
    assert score == pytest.approx(90.0)
    from vitscope.kernels.stats import wilson_interval
    lo_p, hi_p = wilson_interval(45, 50, reliability.MUTATION_CONFIDENCE)
    assert (low, high) == pytest.approx((100 * (90 + lo_p * 300) / 400, 100 * (90 + hi_p * 300) / 400))
    assert low < score < high
    # a partial run with no sample says nothing about the rest
    assert reliability.mutation_estimate(90, 100, 300) is None
    assert reliability.mutation_estimate(0, 0, 0) is None


@pytest.mark.parametrize("estimate, verdict", [
    ((95.0, 91.0, 97.0), "yes"), ((90.0, 90.0, 90.0), "yes"), ((89.0, 85.0, 89.9), "no"),
    ((91.0, 88.0, 94.0), "inconclusive"), (None, "partial run"),
])
def test_mutation_verdict_needs_the_whole_interval(estimate, verdict):
    assert reliability.mutation_verdict(estimate) == verdict


def _fake_workdir(tmp_path, status):
    """A scratch folder with one mutmut .meta file holding ``status`` (exit codes mutmut would write)."""
    codes = {"killed": 1, "survived": 0, "not checked": None, "no tests": 33}
    meta = tmp_path / "mutants" / "src" / "vitscope" / "kernels" / "cka.py.meta"
    meta.parent.mkdir(parents=True)
    meta.write_text(json.dumps({"exit_code_by_key": {k: codes[v] for k, v in status.items()}}))
    return tmp_path


def test_collect_reads_mutmut_exit_codes(mutate, tmp_path):
    # mutmut is an optional extra (make mutate installs it); the sampling tests below replace collect instead
    pytest.importorskip("mutmut")
    kinds = ["killed", "survived", "not checked", "no tests"]
    status = {f"vitscope.kernels.cka.x_hsic0__mutmut_{i}": kind for i, kind in enumerate(kinds, 1)}
    assert mutate.collect(_fake_workdir(tmp_path, status)) == status


def test_sample_is_drawn_from_the_unrun_seeded_and_frozen_at_its_end(mutate, tmp_path, monkeypatch):
    names = [f"vitscope.kernels.cka.x_hsic0__mutmut_{i}" for i in range(1, 41)]
    status = {n: ("killed" if i < 10 else "not checked") for i, n in enumerate(names)}
    status[names[39]] = "not checked"
    workdir = _fake_workdir(tmp_path, status)
    monkeypatch.setattr(mutate, "collect", lambda _: status)
    monkeypatch.setattr(mutate, "equivalent_mutants", lambda: {names[39]})
    drawn = mutate.draw_sample(workdir, 12, seed=5)
    assert len(drawn) == 12 and set(drawn) <= set(names[10:39])        # unrun, never an equivalent
    assert drawn == mutate.draw_sample(workdir, 12, seed=5) != mutate.draw_sample(workdir, 12, seed=6)
    drawn = mutate.draw_sample(workdir, 12, seed=5)
    assert mutate.read_sample(workdir)["packages"] == {"kernels": {"pool": 29, "drawn": 12}}
    # the sampled run: 9 of 12 killed, 1 survived, 2 cut short (not judged)
    after = {**status, **{n: "killed" for n in drawn[:9]}, drawn[9]: "survived"}
    monkeypatch.setattr(mutate, "collect", lambda _: after)
    mutate.freeze_sample(workdir)
    frozen = mutate.read_sample(workdir)["packages"]["kernels"]
    assert (frozen["judged"], frozen["killed"]) == (10, 9)
    # --rerun leaves the unrun alone once a sample speaks for them, and runs the survivor
    assert mutate.undetected(workdir) == [drawn[9]]
    # tests written later kill the survivor: the mutants that ran gain, the sample's rate stays as it was
    later = {**after, drawn[9]: "killed"}
    by_package, _ = mutate.tally(later, {names[39]}, mutate.read_sample(workdir))
    c = by_package["kernels"]
    assert (c["mutants"], c["killed"], c["not run"], c["sample judged"], c["sample killed"]) == (39, 20, 19, 10, 9)
    score, low, high = mutate.estimate_of(c)
    assert score == pytest.approx(100 * (20 + 0.9 * 19) / 39)


def test_sample_of_a_fully_run_folder_is_refused(mutate, tmp_path, monkeypatch):
    status = {"vitscope.kernels.cka.x_hsic0__mutmut_1": "killed"}
    workdir = _fake_workdir(tmp_path, status)
    monkeypatch.setattr(mutate, "collect", lambda _: status)
    monkeypatch.setattr(mutate, "equivalent_mutants", set)
    with pytest.raises(SystemExit, match="nothing to sample"):
        mutate.draw_sample(workdir, 5, seed=0)


def test_record_keeps_the_sample_and_the_page_estimates_from_it(mutate, tmp_path):
    workdir = tmp_path / "work"
    workdir.mkdir()
    (workdir / "pyproject.toml").write_text("[tool.mutmut]\n")
    counts = Counter({"mutants": 400, "killed": 90, "survived": 10, "not run": 300, "sample pool": 350,
                      "sample drawn": 50, "sample judged": 50, "sample killed": 45})
    scores = tmp_path / "scores.json"
    mutate.record(workdir, {"sections": counts}, scores)
    sample = json.loads(scores.read_text())["sections"]["sample"]
    assert sample == {"pool": 350, "drawn": 50, "judged": 50, "killed": 45}
    row = reliability.mutation_table(scores).set_index("package").loc["sections"]
    assert (row["mutants"], row["run"], row["sampled"]) == (400, 100, 50)
    assert row["score"] == pytest.approx(90.0)
    assert row["low"] < 90.0 < row["high"] and row["target met"] == "inconclusive"


def test_a_sample_cut_short_gets_no_verdict(tmp_path):
    scores = tmp_path / "scores.json"
    scores.write_text(json.dumps({"extract": {
        "mutants": 1000, "equivalent": 0, "killed": 500, "survived": 20, "no tests": 0, "not run": 470,
        "sample": {"pool": 500, "drawn": 50, "judged": 30, "killed": 30}}}))
    table = reliability.mutation_table(scores).set_index("package")
    assert table.loc["extract", "target met"] == "sample cut short"
    assert table.loc["extract", "score"] == pytest.approx(100 * (500 + 470) / 1000)   # still shown, flagged
    assert "extract" in reliability.mutation_summary(table.reset_index())


def test_fail_under_refuses_a_sample_cut_short(mutate, tmp_path, monkeypatch, capsys):
    # 30 run and killed, 70 unrun; the sample drew 20 of them and judged 10 (all killed): the estimate alone is high,
    # but a cut-short sample is no longer uniform, so --fail-under must not pass it
    names = [f"vitscope.kernels.cka.x_hsic0__mutmut_{i}" for i in range(1, 101)]
    status = {n: ("killed" if i < 30 else "not checked") for i, n in enumerate(names)}
    sample = {"seed": 1, "drawn": names[30:50], "packages": {"kernels": {"pool": 70, "drawn": 20, "judged": 10,
                                                                          "killed": 10}}}
    monkeypatch.setattr(mutate, "collect", lambda _: status)
    monkeypatch.setattr(mutate, "read_sample", lambda _: sample)
    monkeypatch.setattr(mutate, "equivalent_mutants", set)
    assert mutate.report(tmp_path, diffs=False, fail_under=50.0) == 1
    assert "kernels" in capsys.readouterr().out.split("not clearly at or above 50.0%")[1]
    sample["packages"]["kernels"]["judged"] = 20
    sample["packages"]["kernels"]["killed"] = 20
    assert mutate.report(tmp_path, diffs=False, fail_under=50.0) == 0


def test_mutation_verdict_of_a_cut_short_sample():
    assert reliability.mutation_verdict((99.0, 98.0, 100.0), cut_short=True) == "sample cut short"
    assert reliability.mutation_verdict((99.0, 98.0, 100.0), cut_short=False) == "yes"


def test_finishing_a_sample_runs_only_its_drawn_mutants_left_unrun(mutate, tmp_path, monkeypatch):
    names = [f"vitscope.kernels.cka.x_hsic0__mutmut_{i}" for i in range(1, 21)]
    status = {n: "not checked" for n in names}
    monkeypatch.setattr(mutate, "collect", lambda _: status)
    monkeypatch.setattr(mutate, "equivalent_mutants", lambda: {names[5]})
    with pytest.raises(SystemExit, match="No sample in"):
        mutate.unfinished_sample(tmp_path)
    drawn = mutate.draw_sample(tmp_path, 8, seed=3)
    status.update({drawn[0]: "killed", drawn[1]: "survived"})        # the run was cut short after two
    assert mutate.unfinished_sample(tmp_path) == drawn[2:]            # the same draw, never a fresh one
    status.update({n: "killed" for n in drawn})
    assert mutate.unfinished_sample(tmp_path) == []


def test_extending_a_sample_adds_unrun_mutants_and_keeps_the_first_pool(mutate, tmp_path, monkeypatch):
    names = [f"vitscope.kernels.cka.x_hsic0__mutmut_{i}" for i in range(1, 31)]
    status = {n: "not checked" for n in names}
    monkeypatch.setattr(mutate, "collect", lambda _: status)
    monkeypatch.setattr(mutate, "equivalent_mutants", set)
    with pytest.raises(SystemExit, match="No sample in"):
        mutate.extend_sample(tmp_path, 5, seed=1)
    first = mutate.draw_sample(tmp_path, 10, seed=3)
    status[first[0]] = "killed"
    with pytest.raises(SystemExit, match="finish it first"):
        mutate.extend_sample(tmp_path, 5, seed=1)
    status.update({n: "killed" for n in first[:9]} | {first[9]: "survived"})
    more = mutate.extend_sample(tmp_path, 5, seed=4)
    assert len(more) == 5 and not set(more) & set(first)              # only mutants the first draw left
    sample = mutate.read_sample(tmp_path)
    assert sample["packages"]["kernels"] == {"pool": 30, "drawn": 15}  # the first pool, both draws
    assert set(sample["drawn"]) == set(first) | set(more)
    status.update({n: "killed" for n in more})
    mutate.freeze_sample(tmp_path)
    frozen = mutate.read_sample(tmp_path)["packages"]["kernels"]
    assert (frozen["judged"], frozen["killed"]) == (15, 14)

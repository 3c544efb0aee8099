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
    assert table.loc["kernels", "mutants"] == 3 and table.loc["kernels", "not run"] == 1  # not run: out of the score
    assert table.loc["sections", "target met"] == "not measured yet"


def test_the_committed_scores_file_is_readable_when_present():
    table = reliability.mutation_table()
    assert list(table.package) == list(reliability.MUTATION_PACKAGES)
    measured = table[table["target met"] != "not measured yet"]
    assert ((measured.score >= 0) & (measured.score <= 100)).all()
    assert (measured.killed <= measured.mutants).all()

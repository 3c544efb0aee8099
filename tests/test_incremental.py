"""Incremental book builds: a page executes only when something it depends on changed; failures are isolated.

A tiny project (two notebooks, two models) in a temporary folder, executed with the real papermill matrix.
"""
from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import nbformat
import pytest

from vitscope.book import build as build_mod
from vitscope.book.build import Page, personalise, run_matrix
from vitscope.paths import cache_root, data_root, project_root
from vitscope.profiles import load_profile

pytestmark = pytest.mark.slow

PER_MODEL = """
from vitscope.extract.store import FeatureStore
import torch
store = FeatureStore()
key = {"model": model, "what": "a cached product"}
hit = store.get(model, "demo_product", key)
if hit is None:
    store.put(model, "demo_product", key, {"x": torch.ones(2)})
if model == fail_on:
    raise RuntimeError(f"deliberate failure for {model}")
print("ran for", model)
"""


def _notebook(path: Path, params: str, body: str) -> None:
    nb = nbformat.v4.new_notebook()
    nb.cells = [nbformat.v4.new_markdown_cell("# Template title\nText."),
                nbformat.v4.new_code_cell(params, metadata={"tags": ["parameters"]}),
                nbformat.v4.new_code_cell(body)]
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    path.write_text(nbformat.writes(nb))


@pytest.fixture
def project(tmp_path, monkeypatch):
    root = tmp_path / "project"
    (root / "notebooks").mkdir(parents=True)
    (root / "profiles").mkdir()
    _notebook(root / "notebooks" / "page_model.ipynb", 'model = "x"\nprofile = "tiny"\nfail_on = None', PER_MODEL)
    _notebook(root / "notebooks" / "page_all.ipynb", 'profile = "tiny"', 'print("cross-model page")')
    (root / "profiles" / "tiny.yml").write_text("name: tiny\nmodels: [random-a, random-b]\n")
    weights = root / "weights"
    weights.mkdir()
    for m in ("random-a", "random-b"):
        (weights / f"{m}.bin").write_bytes(m.encode())
    monkeypatch.setenv("VITSCOPE_HOME", str(root))
    monkeypatch.setenv("VITSCOPE_CACHE", str(root / "cache"))
    # the weights of the two models are files of this project: changing one must re-execute its pages only
    monkeypatch.setattr(build_mod, "model_identities", lambda models: {
        m: {"weights": hashlib.sha256((weights / f"{m}.bin").read_bytes()).hexdigest()} for m in models})
    # the page furniture (reproduce box, environment record) is tested with the real book in test_book.py
    monkeypatch.setattr(build_mod, "decorate", lambda path, job, profile, error="": personalise(path, job.title))
    return root


PAGES = (Page("page_model", "TM", "Per model", per_model=True, stage=0),
         Page("page_all", "TM", "All models", per_model=False, stage=1))


def _run(**kw):
    outcomes = run_matrix(load_profile("tiny"), pages=PAGES, log=lambda *_: None, **kw)
    return {str(o.job.output): o.status for o in outcomes}


def test_paths_follow_the_environment_not_the_working_directory(project, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert project_root() == project
    assert cache_root() == project / "cache"
    assert data_root() == project / "cache" / "data"
    monkeypatch.setenv("VITSCOPE_DATA", "elsewhere")   # relative: against the project checkout, never the cwd
    assert data_root().is_absolute() and data_root().name == "elsewhere"


def test_second_build_executes_nothing_and_changed_weights_rerun_only_their_pages(project):
    first = _run()
    assert set(first.values()) == {"executed"} and len(first) == 3
    # the per-model pages wrote their products under the project cache, not under book/generated/...
    assert (project / "cache" / "random-a").is_dir()
    assert not list((project / "book" / "generated").rglob("demo_product*"))
    assert set(_run().values()) == {"skipped"}

    (project / "weights" / "random-b.bin").write_bytes(b"new weights")
    third = _run()
    assert third == {"book/generated/page_model/random-a.ipynb": "skipped",
                     "book/generated/page_model/random-b.ipynb": "executed",
                     "book/generated/page_all.ipynb": "executed"}

    # a cached product the page read disappears: that page (only) executes again
    for sidecar in (project / "cache" / "random-a").glob("demo_product-*.json"):
        sidecar.unlink()
    fourth = _run()
    assert fourth["book/generated/page_model/random-a.ipynb"] == "executed"
    assert fourth["book/generated/page_model/random-b.ipynb"] == "skipped"

    # the notebook itself changes: all of its pages execute again
    nb = project / "notebooks" / "page_all.ipynb"
    nb.write_text(nb.read_text().replace("cross-model page", "cross-model page, edited"))
    fifth = _run()
    assert fifth["book/generated/page_all.ipynb"] == "executed"
    assert fifth["book/generated/page_model/random-a.ipynb"] == "skipped"


@pytest.mark.reliability("fault", "a failing notebook: the other pages build, its page shows the error, it is retried")
def test_a_failing_page_does_not_stop_the_others_and_is_retried(project):
    nb = project / "notebooks" / "page_model.ipynb"
    nb.write_text(nb.read_text().replace("fail_on = None", "fail_on = 'random-a'"))
    first = _run()
    assert first["book/generated/page_model/random-a.ipynb"] == "failed"
    assert first["book/generated/page_model/random-b.ipynb"] == "executed"
    assert first["book/generated/page_all.ipynb"] == "executed"
    executed = json.loads((project / "book/generated/page_model/random-a.ipynb").read_text())
    errors = [o for c in executed["cells"] for o in c.get("outputs", []) if o["output_type"] == "error"]
    assert errors and "deliberate failure" in errors[0]["evalue"]
    # not stamped: the next build retries the failed page and only it
    assert _run() == {"book/generated/page_model/random-a.ipynb": "failed",
                      "book/generated/page_model/random-b.ipynb": "skipped",
                      "book/generated/page_all.ipynb": "skipped"}


def test_parallel_and_submitit_local_executors_give_the_same_pages(project):
    assert set(_run(n_jobs=2).values()) == {"executed"}
    out = project / "book/generated/page_model/random-b.ipynb"
    assert "ran for random-b" in out.read_text()
    out.unlink()
    assert _run(executor="submitit-local") == {"book/generated/page_model/random-a.ipynb": "skipped",
                                               "book/generated/page_model/random-b.ipynb": "executed",
                                               "book/generated/page_all.ipynb": "skipped"}
    assert "ran for random-b" in out.read_text()


def test_pages_no_longer_planned_are_removed(project):
    _run()
    stale = project / "book/generated/page_model/random-z.ipynb"
    stale.write_text("{}")
    _run()
    assert not stale.exists() and os.path.exists(project / "book/generated/page_model/random-a.ipynb")


@pytest.mark.reliability("bad input", "a papermill parameter the notebook does not declare")
def test_an_unknown_parameter_fails_its_page_with_the_known_ones_named(project):
    from vitscope.book.execute import UnknownParameterError, check_parameters

    with pytest.raises(UnknownParameterError, match="has no parameter 'modle'.*Did you mean 'model'"):
        check_parameters(project / "notebooks" / "page_model.ipynb", {"modle": "random-a"})
    check_parameters(project / "notebooks" / "page_model.ipynb", {"model": "random-a", "profile": "tiny"})

"""Shared fixtures: a tiny synthetic ImageNet-style root and a tiny timm ViT."""
from __future__ import annotations

import pytest
import timm
import torch

from vitscope.data import load_manifest, write_imagefolder_twin

TINY_VIT = dict(img_size=32, patch_size=8, embed_dim=48, depth=3, num_heads=3, num_classes=0)


@pytest.fixture(scope="session")
def manifest():
    return load_manifest("imagenet50")


@pytest.fixture(scope="session")
def synthetic_root(tmp_path_factory, manifest):
    """5 classes x 6 images at 48 px, written in the ImageNet folder layout."""
    root = tmp_path_factory.mktemp("synthetic")
    return write_imagefolder_twin(root, manifest.wnids[:5], 6, size=48, seed=0, progress=False)


@pytest.fixture
def tiny_vit():
    torch.manual_seed(0)
    return timm.create_model("vit_tiny_patch16_224", **TINY_VIT).eval()


# --- Reliability inventory -------------------------------------------------------------------------------------
# Tests that inject a fault, feed a bad input or try an attack carry ``@pytest.mark.reliability(kind, what)``.
# Their outcomes are recorded in <cache>/tests/reliability.json after every run, and the book's Reliability page
# lists them from the suite itself (collect-only), so the page cannot go stale.
RELIABILITY_KINDS = ("fault", "bad input", "security")


def pytest_configure(config):
    config.addinivalue_line("markers", "reliability(kind, what): a fault injected, a bad input or an attack tried "
                                       f"(kind in {RELIABILITY_KINDS}); listed on the book's Reliability page")


def _reliability(item):
    mark = item.get_closest_marker("reliability")
    if mark is None:
        return None
    kind, what = mark.args
    if kind not in RELIABILITY_KINDS:
        raise ValueError(f"{item.nodeid}: reliability kind {kind!r}; choose from {RELIABILITY_KINDS}")
    return {"test": item.nodeid, "kind": kind, "what": what}


def pytest_collection_finish(session):
    from vitscope.book.reliability import INVENTORY_ENV, write_json

    target = __import__("os").environ.get(INVENTORY_ENV)
    if target:
        write_json(target, [r for r in map(_reliability, session.items) if r])


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    entry = _reliability(item)
    if entry and (report.when == "call" or report.outcome != "passed"):
        session = item.session
        results = session.stash.setdefault(_RESULTS, {})
        if report.when == "call" or item.nodeid not in results:
            results[item.nodeid] = {**entry, "outcome": report.outcome}


_RESULTS = pytest.StashKey[dict]()


def pytest_sessionfinish(session):
    from vitscope.book.reliability import record_results

    results = session.stash.get(_RESULTS, {})
    if results:
        record_results(list(results.values()))

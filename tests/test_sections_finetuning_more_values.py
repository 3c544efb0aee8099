"""OM 2.3 (sections.finetuning), the entry points: ``ensure``, ``grams``, ``flip_table``, ``probe_results`` and the
two catalogue checks with training, extraction and the other sections replaced by recorded fakes: which names
each step is given, in which order, and what reaches the claim functions."""
from __future__ import annotations

import pandas as pd

from vitscope.claims.verdict import CANNOT_CHECK
from vitscope.profiles import Profile
from vitscope.sections import cka as cka_section
from vitscope.sections import finetuning as sec
from vitscope.sections import invariance, probes

BASES = ["zoo-dino", "zoo-mae", "random-a"]


def _profile(**extra) -> Profile:
    return Profile("t", {"models": ["zoo-dino"], "finetune": {"models": list(BASES)}, **extra})


def test_ensure_fine_tunes_the_profiles_models(monkeypatch):
    run = _profile()
    calls = []
    monkeypatch.setattr(sec.ft, "ensure", lambda models, profile, progress: calls.append(
        (models, profile, progress)) or ["x+ft"])
    assert sec.ensure(run) == ["x+ft"]
    assert sec.ensure(run, progress=False) == ["x+ft"]
    assert calls == [(BASES, run, True), (BASES, run, False)]


def test_grams_once_per_model_with_the_cka_protocol(monkeypatch):
    run = _profile()
    calls = []
    monkeypatch.setattr(cka_section, "model_grams", lambda m, p, *, device=None, store=None, progress=True: (
        calls.append((m, p, device, store, progress)) or f"g:{m}"))
    out = sec.grams(["zoo-dino", "zoo-dino+ft", "zoo-dino"], run, device="d", store="s")
    assert out == {"zoo-dino": "g:zoo-dino", "zoo-dino+ft": "g:zoo-dino+ft"}
    assert calls == [("zoo-dino", run, "d", "s", False), ("zoo-dino+ft", run, "d", "s", False)]
    calls.clear()
    sec.grams(["zoo-mae"], run, progress=True)
    assert calls == [("zoo-mae", run, None, None, True)]


def test_flip_table_runs_every_base_and_its_fine_tuned_twin(monkeypatch):
    run = _profile()
    calls = []

    def fake(m, profile, **kw):
        calls.append((m, profile, kw))
        return pd.DataFrame({"model": [m], "index": [len(calls)]})

    monkeypatch.setattr(invariance, "per_image", fake)
    out = sec.flip_table(["zoo-dino", "zoo-mae", "zoo-dino"], run, device="d", store="s")
    assert [c[0] for c in calls] == ["zoo-dino", "zoo-dino+ft", "zoo-mae", "zoo-mae+ft"]
    assert all(c[1] is run and c[2] == {"device": "d", "store": "s"} for c in calls)
    assert out.model.tolist() == ["zoo-dino", "zoo-dino+ft", "zoo-mae", "zoo-mae+ft"]
    assert out["index"].tolist() == [1, 2, 3, 4] and out.index.tolist() == [0, 1, 2, 3]


def test_probe_results_on_reconstruction_bases_and_the_baseline(monkeypatch):
    run = _profile()
    calls = []
    monkeypatch.setattr(probes, "compute", lambda models, profile, **kw: calls.append((models, profile, kw)) or "r")
    assert sec.probe_results(["zoo-dino", "zoo-mae", "zoo-beit", "random-a"], run, device="d") == "r"
    assert calls == [(["zoo-mae", "zoo-mae+ft", "zoo-beit", "zoo-beit+ft", "random-a", "random-a+ft"], run,
                      {"device": "d"})]
    calls.clear()
    sec.probe_results(["zoo-mae", "zoo-dino"], run)
    assert calls == [(["zoo-mae", "zoo-mae+ft"], run, {})]


def test_check_cka_claims_flow(monkeypatch):
    run = _profile()
    rec = {}
    monkeypatch.setattr(sec, "ensure", lambda profile, progress=True: rec.update(ensure=(profile, progress)) or [
        "zoo-dino+ft", "zoo-mae+ft", "random-a+ft"])
    monkeypatch.setattr(sec, "grams", lambda names, profile, *, device=None, store=None: rec.update(
        grams=(names, profile, device, store)) or "G")
    monkeypatch.setattr(cka_section, "batch_terms", lambda g: rec.update(terms=g) or "T")
    monkeypatch.setattr(sec, "cka_checks", lambda terms, bases: rec.update(checks=(terms, bases)) or ["rows"])
    assert sec.check_cka_claims(["ignored"], run, device="d", store="s", progress=True) == ["rows"]
    assert rec == {"ensure": (run, True),
                   "grams": (["zoo-dino", "zoo-mae", "random-a", "zoo-dino+ft", "zoo-mae+ft", "random-a+ft"], run,
                             "d", "s"),
                   "terms": "G", "checks": ("T", BASES)}


def test_check_dynamics_claims_flow(monkeypatch):
    rec = []
    monkeypatch.setattr(sec, "ensure", lambda profile, progress=True: rec.append(("ensure", progress)) or [])
    monkeypatch.setattr(sec, "path_table", lambda bases: rec.append(("path_table", bases)) or "P")
    monkeypatch.setattr(sec, "path_check", lambda t: rec.append(("path_check", t)) or ["path"])
    monkeypatch.setattr(sec, "flip_table", lambda bases, profile, **kw: rec.append(("flip_table", bases, kw)) or "F")
    monkeypatch.setattr(sec, "flip_check", lambda t, bases: rec.append(("flip_check", t, bases)) or ["flip"])
    monkeypatch.setattr(sec, "probe_results", lambda bases, profile, **kw: rec.append(("probes", bases, kw)) or "R")
    monkeypatch.setattr(sec, "marginal_check", lambda r, bases: rec.append(("marginal", r, bases)) or ["marg"])
    assert sec.check_dynamics_claims(None, _profile(probes={}), device="d", store="s") == ["path", "flip", "marg"]
    assert rec == [("ensure", False), ("path_table", BASES), ("path_check", "P"),
                   ("flip_table", BASES, {"device": "d", "store": "s"}), ("flip_check", "F", BASES),
                   ("probes", BASES, {"device": "d", "store": "s"}), ("marginal", "R", BASES)]
    rec.clear()
    rows = sec.check_dynamics_claims(None, _profile(), progress=True)
    assert rows[:2] == ["path", "flip"] and rec[0] == ("ensure", True)
    assert [(r.claim, r.subject, r.verdict, r.reason) for r in rows[2:]] == [
        ("OM-2.3e", "reconstruction (PT) minus (FT)", CANNOT_CHECK, "the profile has no probes section")]
    assert [r.reason for r in sec.check_dynamics_claims(None, Profile("x", {}))] == [
        "the profile has no finetune section"] * 3
    assert [(r.claim, r.subject) for r in sec.check_dynamics_claims(None, Profile("x", {}))] == [
        ("OM-2.3c", "fine-tuned models"), ("OM-2.3d", "fine-tuned models"), ("OM-2.3e", "fine-tuned models")]

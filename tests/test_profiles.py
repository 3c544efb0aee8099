"""Profiles: what a profile file may say, and where relative dataset roots resolve."""
from __future__ import annotations

import pytest

from vitscope.paths import data_root
from vitscope.profiles import load_profile


@pytest.mark.reliability("bad input", "a profile YAML with a typo in a key")
def test_profile_typo_is_an_error_naming_the_key_and_the_fix(tmp_path):
    from vitscope.profiles import ProfileError, load_profile

    path = tmp_path / "typo.yml"
    path.write_text("name: typo\nmodels: [random-a]\ncka:\n  batch_sise: 32\n")
    with pytest.raises(ProfileError, match="unknown key 'batch_sise' in section 'cka'.*Did you mean 'batch_size'"):
        load_profile(path)
    path.write_text("name: typo\nmodel: [random-a]\n")
    with pytest.raises(ProfileError, match="unknown key 'model'.*Did you mean 'models'"):
        load_profile(path)


def test_relative_dataset_roots_resolve_under_the_data_root(monkeypatch, tmp_path):
    monkeypatch.setenv("VITSCOPE_DATA", str(tmp_path / "data"))
    demo = load_profile("demo")
    expected = tmp_path / "data" / "synthetic-imagenet50"
    assert demo.dataset_root("imagenet50") == data_root() / "synthetic-imagenet50" == expected


def test_all_models_adds_section_models_once():
    demo = load_profile("demo")
    names = demo.all_models()
    assert names[:len(demo.models)] == demo.models and len(names) == len(set(names))
    assert set(demo.section("cka")["models"]) <= set(names)

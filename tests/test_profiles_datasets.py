"""Profile.dataset_spec / dataset_root / dataset_names: the one place a section reads a dataset entry."""
from __future__ import annotations

import pytest

from vitscope.profiles import MissingProfileKey, Profile, ProfileError, load_profile


def _profile(tmp_path, **datasets) -> Profile:
    path = tmp_path / "p.yml"
    lines = ["name: p", "models: [random-a]", "datasets:"]
    lines += [f"  {k}: {{{', '.join(f'{kk}: {vv}' for kk, vv in v.items())}}}" for k, v in datasets.items()]
    path.write_text("\n".join(lines) + "\n")
    return load_profile(path)


def test_dataset_spec_is_a_copy_of_the_entry(tmp_path):
    p = _profile(tmp_path, coco={"manifest": "coco_val2017", "root": "c", "synthetic": "{size: 48}"})
    spec = p.dataset_spec("coco")
    assert spec == {"manifest": "coco_val2017", "root": "c", "synthetic": {"size": 48}}
    spec["synthetic"]["size"] = 1
    assert p.dataset_spec("coco")["synthetic"] == {"size": 48} and p.is_synthetic("coco")
    assert p.dataset_names == ["coco"]


def test_a_missing_dataset_names_the_file_the_setting_and_the_closest_name(tmp_path):
    p = _profile(tmp_path, spair={"manifest": "spair71k", "root": "s"})
    with pytest.raises(MissingProfileKey) as err:
        p.dataset_spec("spiar", named_by="keypoints.dataset")
    text = str(err.value)
    assert str(tmp_path / "p.yml") in text and "'spiar'" in text and "keypoints.dataset" in text
    assert "Did you mean 'spair'" in text and not text.startswith('"')       # not KeyError's quoted repr
    assert isinstance(err.value, KeyError) and isinstance(err.value, ProfileError)


def test_an_entry_without_root_or_manifest_names_the_key(tmp_path):
    p = _profile(tmp_path, davis={"manifest": "davis2017"}, bare={"root": "b"})
    with pytest.raises(MissingProfileKey, match=r"lacks the key\(s\) root \(datasets\.davis\.root\)"):
        p.dataset_root("davis")
    with pytest.raises(MissingProfileKey, match=r"datasets\.bare\.manifest"):
        p.dataset_spec("bare")
    with pytest.raises(MissingProfileKey, match="defines no dataset 'x'"):      # a profile built in code: no file
        Profile("t", {"models": []}).dataset_spec("x")


def test_dataset_root_expands_variables_and_resolves_relative_roots(tmp_path, monkeypatch):
    monkeypatch.setenv("VITSCOPE_DATA", str(tmp_path / "data"))
    monkeypatch.setenv("H11_ROOT", str(tmp_path / "real"))
    monkeypatch.delenv("H11_UNSET", raising=False)
    p = _profile(tmp_path, rel={"manifest": "m", "root": "twins/rel"}, env={"manifest": "m", "root": "'${H11_ROOT}/x'"},
                 unset={"manifest": "m", "root": "'${H11_UNSET}/x'"})
    assert p.dataset_root("rel") == tmp_path / "data" / "twins" / "rel"
    assert p.dataset_root("env") == tmp_path / "real" / "x"
    with pytest.raises(EnvironmentError, match="unset environment variable"):
        p.dataset_root("unset")

"""vitscope.data.stamps, value by value (issue 17: mutants of mark_complete survived): the stamp's exact text, what
it compares equal to, and that no temporary file is left beside it."""
from __future__ import annotations

from vitscope.data.stamps import STAMP_NAME, is_complete, mark_complete

META = {"generator_version": 2, "wnids": ("n01", "n02"), "per_class": 3, "size": 32}


def test_mark_complete_writes_the_arguments_as_indented_json_and_nothing_else(tmp_path):
    mark_complete(tmp_path, META)
    assert STAMP_NAME == "synthetic.json"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.json"]
    assert (tmp_path / "synthetic.json").read_text() == (
        '{\n "generator_version": 2,\n "wnids": [\n  "n01",\n  "n02"\n ],\n "per_class": 3,\n "size": 32\n}')


def test_is_complete_only_for_the_same_arguments(tmp_path):
    assert not is_complete(tmp_path, META)                       # no stamp yet
    mark_complete(tmp_path, META)
    assert is_complete(tmp_path, META)                           # tuples compare equal to the lists JSON reads back
    assert is_complete(str(tmp_path), dict(META, wnids=["n01", "n02"]))
    assert not is_complete(tmp_path, dict(META, size=64))
    mark_complete(tmp_path, dict(META, size=64))                 # a new stamp replaces the old one whole
    assert is_complete(tmp_path, dict(META, size=64)) and not is_complete(tmp_path, META)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["synthetic.json"]


def test_a_damaged_stamp_means_incomplete(tmp_path):
    (tmp_path / STAMP_NAME).write_text('{"generator_version": 2, "wnids": [')
    assert not is_complete(tmp_path, META)

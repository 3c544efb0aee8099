"""vitscope.data.manifest, value by value (issue 17: mutants of load_fetch_spec, load_manifest, _parse_downloads and
_manifest_path survived).

Hand-written manifests in tmp_path: every field read back (and each default when it is left out), and each missing
or wrong field refused with its whole message (mutmut rewrites message strings as ``XX...XX``).
"""
from __future__ import annotations

from pathlib import Path

import pytest

from vitscope.data.manifest import (
    Download,
    FetchSpec,
    Manifest,
    _parse_downloads,
    available_manifests,
    load_fetch_spec,
    load_manifest,
)

SHA = "0123456789abcdef" * 4
_KEYS = "('file', 'url', 'sha256', 'bytes', 'extract', 'into', 'creates', 'note')"
_INSIDE = "must be a relative path inside the dataset root (no leading '/', no '..', forward slashes)."


def _write(folder: Path, name: str, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    path.write_text(text)
    return path


# ----------------------------------------------------------------------------------------------- load_fetch_spec
def test_fetch_spec_of_an_empty_manifest_takes_every_default(tmp_path):
    path = _write(tmp_path, "bare.yml", "")
    assert load_fetch_spec(path) == FetchSpec(name="bare", title="bare", format=None, licence="unknown",
                                              downloads=(), layout=(), access=None, path=path)


def test_fetch_spec_title_defaults_to_the_name_and_empty_access_is_none(tmp_path):
    path = _write(tmp_path, "file-stem.yml", "name: toy\naccess: ''\nlayout: []\ndownloads: []\n")
    assert load_fetch_spec(path) == FetchSpec(name="toy", title="toy", format=None, licence="unknown",
                                              downloads=(), layout=(), access=None, path=path)


def test_fetch_spec_reads_every_field(tmp_path):
    path = _write(tmp_path, "full.yml", f"""name: toy
title: Toy data
format: imagefolder
licence: CC0
access: |
  Log in first.
layout: [a/b, c]
downloads:
  - file: t.tar.gz
    url: https://example.org/t.tar.gz
    sha256: {SHA}
    bytes: 1234
    extract: tar
    into: data
    creates: [data/x, data/y]
    note: a remark
  - file: plain.txt
    url: http://example.org/plain.txt
    sha256: null
    extract: none
    creates: plain.txt
""")
    assert load_fetch_spec(path) == FetchSpec(
        name="toy", title="Toy data", format="imagefolder", licence="CC0",
        downloads=(Download(file="t.tar.gz", url="https://example.org/t.tar.gz", sha256=SHA, bytes=1234,
                            extract="tar", into="data", creates=("data/x", "data/y")),
                   Download(file="plain.txt", url="http://example.org/plain.txt", sha256=None, bytes=None,
                            extract="none", into=".", creates=("plain.txt",))),
        layout=("a/b", "c"), access="Log in first.\n", path=path)


def test_fetch_spec_by_name_from_a_directory_and_by_yaml_path(tmp_path):
    yml = _write(tmp_path / "m", "toy.yml", "name: toy\n")
    yaml_ = _write(tmp_path / "m", "other.yaml", "title: Other\n")
    assert load_fetch_spec("toy", tmp_path / "m").path == yml
    spec = load_fetch_spec(yaml_)
    assert (spec.name, spec.title, spec.path) == ("other", "Other", yaml_)
    assert available_manifests(tmp_path / "m") == ["toy"]          # only .yml files are listed by name


def test_unknown_manifest_lists_the_known_ones_and_the_closest(tmp_path):
    _write(tmp_path / "m", "toy.yml", "name: toy\n")
    _write(tmp_path / "m", "alpha.yml", "name: alpha\n")
    for load in (load_fetch_spec, load_manifest):
        with pytest.raises(FileNotFoundError) as err:
            load("toi", tmp_path / "m")
        assert str(err.value) == (f"No dataset manifest 'toi' (looked for {tmp_path / 'm' / 'toi.yml'}). "
                                  "Known manifests: alpha, toy. Did you mean 'toy'?")
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError) as err:
        load_fetch_spec(tmp_path / "empty" / "x.yml", tmp_path / "empty")
    assert str(err.value) == (f"No dataset manifest '{tmp_path / 'empty' / 'x.yml'}' (looked for "
                              f"{tmp_path / 'empty' / 'x.yml'}). Known manifests: none.")


@pytest.mark.parametrize("layout", ["[../up]", "[/abs]", "['a\\\\b']", "['']"])
def test_fetch_spec_layout_must_stay_inside_the_root(tmp_path, layout):
    path = _write(tmp_path, "m.yml", f"layout: {layout}\n")
    value = {"[../up]": "../up", "[/abs]": "/abs", "['a\\\\b']": "a\\\\b", "['']": ""}[layout]
    with pytest.raises(ValueError) as err:
        load_fetch_spec(path)
    assert str(err.value) == f"Manifest {path}: layout = {value!r} {_INSIDE}"


# ----------------------------------------------------------------------------------------------- downloads
def _entries(tmp_path, body: str):
    return load_fetch_spec(_write(tmp_path, "m.yml", "downloads:\n" + body))


@pytest.mark.parametrize("body, message", [
    ("  file: f.zip\n", "'downloads' must be a list of {file, url, sha256, ...} entries."),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n  - file: g.zip\n",
     "downloads[1] lacks ['url', 'extract'] (each needs file, url, sha256, extract)."),
    ("  - null\n", "downloads[0] lacks ['file', 'url', 'extract'] (each needs file, url, sha256, extract)."),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n    extrakt: zip\n    zz: 1\n",
     f"downloads[0] has unknown key(s) ['extrakt', 'zz'] (known: {_KEYS}). Did you mean 'extract'?"),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n    qqqqq: 1\n",
     f"downloads[0] has unknown key(s) ['qqqqq'] (known: {_KEYS})."),
    ("  - file: a/f.zip\n    url: https://e.org/f\n    extract: zip\n",
     "downloads[0].file = 'a/f.zip' must be a plain file name."),
    ("  - file: 'a\\f.zip'\n    url: https://e.org/f\n    extract: zip\n",
     "downloads[0].file = 'a\\\\f.zip' must be a plain file name."),
    ("  - file: ..\n    url: https://e.org/f\n    extract: zip\n",
     "downloads[0].file = '..' must be a plain file name."),
    ("  - file: .hidden\n    url: https://e.org/f\n    extract: zip\n",
     "downloads[0].file = '.hidden' must be a plain file name."),
    ("  - file: f.zip\n    url: ftp://e.org/f\n    extract: zip\n",
     "downloads[0].url = 'ftp://e.org/f' must be an http(s) URL."),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n    sha256: " + SHA.upper() + "\n",
     f"downloads[0].sha256 = {SHA.upper()!r} is not 64 lower-case hex digits (write null when the publisher "
     "gives no checksum)."),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n    sha256: " + SHA[:-1] + "\n",
     f"downloads[0].sha256 = {SHA[:-1]!r} is not 64 lower-case hex digits (write null when the publisher "
     "gives no checksum)."),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: rar\n",
     "downloads[0].extract = 'rar'; use one of ('zip', 'tar', 'none')."),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n    into: ../x\n",
     f"downloads[0].into = '../x' {_INSIDE}"),
    ("  - file: f.zip\n    url: https://e.org/f\n    extract: zip\n    creates: [ok, /etc]\n",
     f"downloads[0].creates = '/etc' {_INSIDE}"),
])
def test_download_entries_are_refused_with_the_whole_message(tmp_path, body, message):
    with pytest.raises((ValueError, TypeError)) as err:
        _entries(tmp_path, body)
    assert str(err.value) == f"Manifest {tmp_path / 'm.yml'}: {message}"
    assert type(err.value) is (TypeError if "must be a list" in message else ValueError)


def test_parse_downloads_names_the_path_it_is_given():
    with pytest.raises(ValueError) as err:
        _parse_downloads({"downloads": [{"file": "f"}]}, Path("where/m.yml"))
    assert str(err.value) == ("Manifest where/m.yml: downloads[0] lacks ['url', 'extract'] "
                              "(each needs file, url, sha256, extract).")
    assert _parse_downloads({}, Path("m.yml")) == () == _parse_downloads({"downloads": None}, Path("m.yml"))


def test_download_values_are_converted(tmp_path):
    spec = _entries(tmp_path, "  - file: 7\n    url: https://e.org/f\n    extract: zip\n    bytes: '42'\n"
                              "    into: a/b\n    creates: a/b/c\n")
    assert spec.downloads == (Download(file="7", url="https://e.org/f", sha256=None, bytes=42, extract="zip",
                                       into="a/b", creates=("a/b/c",)),)


# ----------------------------------------------------------------------------------------------- load_manifest
_MANIFEST = """name: toy
format: imagefolder
split: val
selection: {rule: first_n_sorted, per_class: '3'}
classes:
  - {wnid: n01, name: one}
  - {wnid: n02, name: two}
"""


def test_manifest_defaults_title_licence_source_and_downloads(tmp_path):
    path = _write(tmp_path, "toy.yml", _MANIFEST)
    m = load_manifest(path)
    assert m == Manifest(name="toy", title="toy", format="imagefolder", split="val",
                         classes=(("n01", "one"), ("n02", "two")), per_class=3, licence="unknown")
    assert (m.source, m.path, m.downloads) == ({}, path, ())
    assert (m.wnids, m.class_names) == (["n01", "n02"], ["one", "two"])


def test_manifest_reads_title_licence_source_and_downloads(tmp_path):
    path = _write(tmp_path, "toy.yml", _MANIFEST + "title: Toy\nlicence: CC-BY\nsource: {url: https://e.org}\n"
                  "downloads:\n  - {file: f.zip, url: 'https://e.org/f.zip', extract: zip}\n")
    m = load_manifest("toy", tmp_path)
    assert (m.title, m.licence, m.source, m.path) == ("Toy", "CC-BY", {"url": "https://e.org"}, path)
    assert m.downloads == (Download(file="f.zip", url="https://e.org/f.zip", sha256=None, bytes=None,
                                    extract="zip"),)


def test_manifest_lacking_fields_names_them(tmp_path):
    path = _write(tmp_path, "m.yml", "name: toy\nselection: {rule: first_n_sorted}\n")
    with pytest.raises(ValueError) as err:
        load_manifest(path)
    assert str(err.value) == f"Manifest {path} lacks the field(s) ['format', 'split', 'classes']."


@pytest.mark.parametrize("selection, shown", [("{rule: random, per_class: 3}", "'random'"),
                                              ("{per_class: 3}", "None")])
def test_manifest_with_another_selection_rule_is_refused(tmp_path, selection, shown):
    path = _write(tmp_path, "m.yml", _MANIFEST.replace("{rule: first_n_sorted, per_class: '3'}", selection))
    with pytest.raises(ValueError) as err:
        load_manifest(path)
    assert str(err.value) == f"Manifest {path}: unsupported selection rule {shown} (supported: 'first_n_sorted')."


def test_manifest_download_errors_name_the_manifest(tmp_path):
    path = _write(tmp_path, "m.yml", _MANIFEST + "downloads: {file: f}\n")
    with pytest.raises(TypeError) as err:
        load_manifest(path)
    assert str(err.value) == f"Manifest {path}: 'downloads' must be a list of {{file, url, sha256, ...}} entries."

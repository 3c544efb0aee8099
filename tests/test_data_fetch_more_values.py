"""vitscope.data.fetch, value by value (issue 17: mutants of _transfer, download, fetch_download, _unpacked,
verify_report and fetch_command survived the loopback-server tests).

No network: ``urllib.request.urlopen`` is replaced by a scripted response (for ``_transfer``), ``_transfer`` by a
scripted attempt (for ``download``), ``download`` by a writer of the file's bytes (for ``fetch_download`` and
``fetch_command``). Every logged line, reported problem and argument passed on is compared whole.
"""
from __future__ import annotations

import hashlib
import io
import os
import tarfile
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from vitscope.data import fetch
from vitscope.data.fetch import FetchError, Problem, TransferInterrupted
from vitscope.data.manifest import Download, FetchSpec

URL = "https://example.org/files/x.bin"


# ----------------------------------------------------------------------------------------------- _transfer
class _Response:
    def __init__(self, status: int, body: bytes, headers: dict):
        self.status, self.headers, self._body = status, headers, io.BytesIO(body)
        self.read_sizes = []

    def read(self, n):
        self.read_sizes.append(n)
        return self._body.read(n)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


@pytest.fixture
def server(monkeypatch):
    """``server.answer(status, body, headers)`` scripts the next response; ``server.requests`` holds what was asked."""
    class Server:
        requests, response, error = [], None, None

        def answer(self, status, body=b"", headers=None, error=None):
            self.response, self.error = _Response(status, body, headers or {}), error

    srv = Server()

    def urlopen(request, timeout):
        srv.requests.append((request.full_url, dict(request.header_items()), timeout))
        if srv.error is not None:
            raise srv.error
        return srv.response

    monkeypatch.setattr(urllib.request, "urlopen", urlopen)
    return srv


def test_transfer_fetches_a_new_file_whole(tmp_path, server):
    body = bytes(range(256)) * 40
    part = tmp_path / "x.bin.part"
    server.answer(200, body, {"Content-Length": str(len(body))})
    fetch._transfer(URL, part, len(body), False, 12.5)
    assert part.read_bytes() == body
    assert server.requests == [(URL, {"User-agent": "vitscope-data-fetch"}, 12.5)]
    assert server.response.read_sizes == [1 << 20, 1 << 20]


def test_transfer_resumes_from_the_bytes_already_there(tmp_path, server):
    body = b"0123456789" * 10
    part = tmp_path / "x.bin.part"
    part.write_bytes(body[:30])
    server.answer(206, body[30:], {"Content-Length": "70", "Content-Range": "bytes 30-99/100"})
    fetch._transfer(URL, part, 100, False, 60)
    assert part.read_bytes() == body
    assert server.requests[0][1] == {"User-agent": "vitscope-data-fetch", "Range": "bytes=30-"}


def test_transfer_restarts_when_the_server_ignores_the_range(tmp_path, server):
    body = b"abcdefghij" * 5
    part = tmp_path / "x.bin.part"
    part.write_bytes(b"stale")
    server.answer(200, body, {"Content-Length": "50"})
    fetch._transfer(URL, part, None, False, 60)
    assert part.read_bytes() == body


def test_transfer_drops_a_part_longer_than_the_file(tmp_path, server):
    part = tmp_path / "x.bin.part"
    part.write_bytes(b"z" * 20)
    server.answer(200, b"y" * 10, {"Content-Length": "10"})
    fetch._transfer(URL, part, 10, False, 60)
    assert part.read_bytes() == b"y" * 10
    assert "Range" not in server.requests[0][1]


def test_transfer_refuses_a_resume_from_another_byte(tmp_path, server):
    part = tmp_path / "x.bin.part"
    part.write_bytes(b"a" * 30)
    server.answer(206, b"b" * 80, {"Content-Length": "80", "Content-Range": "bytes 20-99/100"})
    with pytest.raises(FetchError) as err:
        fetch._transfer(URL, part, 100, False, 60)
    assert str(err.value) == (f"{URL} answered a resume from byte 30 with Content-Range 'bytes 20-99/100'; "
                              f"delete {part} and fetch again.")
    assert part.read_bytes() == b"a" * 30
    server.answer(206, b"b" * 70, {"Content-Length": "70"})                        # no Content-Range at all
    with pytest.raises(FetchError) as err:
        fetch._transfer(URL, part, 100, False, 60)
    assert str(err.value) == (f"{URL} answered a resume from byte 30 with Content-Range None; "
                              f"delete {part} and fetch again.")


def test_transfer_refuses_a_size_other_than_the_manifests(tmp_path, server):
    part = tmp_path / "x.bin.part"
    server.answer(200, b"q" * 12, {"Content-Length": "12"})
    with pytest.raises(FetchError) as err:
        fetch._transfer(URL, part, 10, False, 60)
    assert str(err.value) == (f"{URL} offers 12 bytes but the manifest expects 10: the published file changed or "
                              "the URL is wrong.")
    assert not part.exists()


def test_transfer_reports_a_cut_connection_and_keeps_the_bytes(tmp_path, server):
    part = tmp_path / "x.bin.part"
    server.answer(200, b"k" * 60, {"Content-Length": "100"})
    with pytest.raises(TransferInterrupted) as err:
        fetch._transfer(URL, part, None, False, 60)
    assert str(err.value) == f"the connection to {URL} ended after 60 of 100 bytes"
    assert part.read_bytes() == b"k" * 60
    server.answer(200, b"k" * 60, {})                  # no Content-Length: the manifest's size is the total
    with pytest.raises(TransferInterrupted) as err:
        fetch._transfer(URL, part, 61, False, 60)
    assert str(err.value) == f"the connection to {URL} ended after 60 of 61 bytes"


def test_transfer_http_errors(tmp_path, server):
    part = tmp_path / "x.bin.part"
    server.answer(0, error=urllib.error.HTTPError(URL, 404, "Not Found", {}, None))
    with pytest.raises(FetchError) as err:
        fetch._transfer(URL, part, None, False, 60)
    assert str(err.value) == f"{URL} answered HTTP 404 Not Found."
    server.answer(0, error=urllib.error.HTTPError(URL, 416, "Range Not Satisfiable", {}, None))
    with pytest.raises(FetchError) as err:                                     # 416 on a fresh file is an error
        fetch._transfer(URL, part, None, False, 60)
    assert str(err.value) == f"{URL} answered HTTP 416 Range Not Satisfiable."
    part.write_bytes(b"all of it")
    fetch._transfer(URL, part, 9, False, 60)                                   # ...and "done" on a resume
    assert part.read_bytes() == b"all of it"


def test_transfer_progress_bar_counts_bytes_in_binary_units(tmp_path, server, capsys):
    body = b"p" * (3 << 20)
    part = tmp_path / "x.bin.part"
    server.answer(200, body, {"Content-Length": str(len(body))})
    fetch._transfer(URL, part, None, True, 60)
    err = capsys.readouterr().err
    assert "x.bin: 100%" in err and "| 3.00M/3.00M [" in err
    part.write_bytes(body[:1 << 20])
    server.answer(206, body[1 << 20:], {"Content-Length": str(2 << 20), "Content-Range": "bytes 1048576-"})
    fetch._transfer(URL, part, None, False, 60)
    assert capsys.readouterr().err == ""                                      # progress=False: silent
    assert part.read_bytes() == body


# ----------------------------------------------------------------------------------------------- download
def _script_transfer(monkeypatch, outcomes):
    """Replace ``_transfer``: each call appends its arguments to the returned list and raises the next outcome."""
    calls = []

    def transfer(url, part, expected_bytes, progress, timeout):
        calls.append((url, part, expected_bytes, progress, timeout))
        part.write_bytes(part.read_bytes() + b"+" if part.exists() else b"+")
        outcome = outcomes.pop(0)
        if outcome is not None:
            raise outcome

    monkeypatch.setattr(fetch, "_transfer", transfer)
    return calls


def test_download_refuses_other_schemes():
    with pytest.raises(FetchError) as err:
        fetch.download("file:///etc/passwd", Path("x.part"))
    assert str(err.value) == "Refusing to fetch 'file:///etc/passwd': only http(s) URLs are fetched."


def test_download_creates_folders_and_passes_its_arguments(tmp_path, monkeypatch):
    calls = _script_transfer(monkeypatch, [None])
    part = tmp_path / "a" / "b" / "x.bin.part"
    assert fetch.download("http://e.org/x.bin", part) == part
    assert calls == [("http://e.org/x.bin", part, None, True, 60)]
    calls = _script_transfer(monkeypatch, [None])
    fetch.download(URL, part, expected_bytes=7, retries=0, progress=False, timeout=3)
    assert calls == [(URL, part, 7, False, 3)]


def test_download_retries_then_keeps_the_bytes_for_a_resume(tmp_path, monkeypatch):
    part = tmp_path / "x.bin.part"
    calls = _script_transfer(monkeypatch, [TransferInterrupted("cut")] * 4)
    with pytest.raises(TransferInterrupted) as err:
        fetch.download(URL, part, retries=3, progress=False)
    assert len(calls) == 4
    assert str(err.value) == (f"x.bin: cut. Kept 4 bytes in {part}; run the same command again to resume from "
                              "there.")
    calls = _script_transfer(monkeypatch, [OSError("reset"), None])
    assert fetch.download(URL, part, retries=1, progress=False) == part and len(calls) == 2


def test_download_does_not_retry_an_http_error(tmp_path, monkeypatch):
    calls = _script_transfer(monkeypatch, [urllib.error.HTTPError(URL, 403, "Forbidden", {}, None), None])
    with pytest.raises(FetchError) as err:
        fetch.download(URL, tmp_path / "x.bin.part", retries=2)
    assert str(err.value) == f"{URL} answered HTTP 403 Forbidden." and len(calls) == 1


# ----------------------------------------------------------------------------------------------- fetch_download
def _targz(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
    return buf.getvalue()


BODY = _targz({"pack/a.txt": b"alpha", "pack/b.txt": b"beta"})
SHA = hashlib.sha256(BODY).hexdigest()


def _serve(monkeypatch, files: dict[str, bytes]):
    """Replace ``download``: writes ``files[url]`` into the part file; returns the recorded calls."""
    calls = []

    def download(url, part, *, expected_bytes=None, retries=2, progress=True, timeout=60):
        calls.append(dict(url=url, part=part, expected_bytes=expected_bytes, retries=retries, progress=progress))
        if url not in files:
            raise FetchError(f"{url} answered HTTP 404 Not Found.")
        part.write_bytes(files[url])
        return part

    monkeypatch.setattr(fetch, "download", download)
    return calls


def _d(sha=SHA, extract="tar", file="p.tar.gz", creates=("data/pack/a.txt",), nbytes=len(BODY)):
    return Download(file=file, url=f"https://e.org/{file}", sha256=sha, bytes=nbytes, extract=extract, into="data",
                    creates=creates)


def test_fetch_download_downloads_verifies_and_unpacks_then_skips(tmp_path, monkeypatch):
    calls, logs = _serve(monkeypatch, {"https://e.org/p.tar.gz": BODY}), []
    d, root, dl = _d(), tmp_path / "root", tmp_path / "root" / "downloads"
    fetch.fetch_download(d, root, log=logs.append)
    assert calls == [dict(url=d.url, part=dl / "p.tar.gz.part", expected_bytes=len(BODY), retries=2, progress=True)]
    assert logs == [f"[fetch] {d.url} -> {dl / 'p.tar.gz'}",
                    f"[fetch] unpacking p.tar.gz into {root / 'data'}"]
    assert sorted(p.name for p in dl.iterdir()) == ["p.tar.gz", "p.tar.gz.extracted", "p.tar.gz.lock"]
    assert (dl / "p.tar.gz.extracted").read_text() == SHA + "\n"
    assert (root / "data" / "pack" / "b.txt").read_bytes() == b"beta"
    logs.clear()
    fetch.fetch_download(d, root, retries=5, progress=False, log=logs.append)
    assert len(calls) == 1
    assert logs == [f"[fetch] {dl / 'p.tar.gz'}: present and verified.",
                    f"[fetch] p.tar.gz: already unpacked into {root / 'data'}."]


def test_fetch_download_passes_retries_and_progress_and_says_where_it_resumes(tmp_path, monkeypatch):
    calls, logs = _serve(monkeypatch, {"https://e.org/p.tar.gz": BODY}), []
    root = tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "p.tar.gz.part").write_bytes(BODY[:17])
    fetch.fetch_download(_d(nbytes=None), root, retries=0, progress=False, log=logs.append)
    assert calls[0]["retries"] == 0 and calls[0]["progress"] is False and calls[0]["expected_bytes"] is None
    assert logs[0] == f"[fetch] https://e.org/p.tar.gz -> {root / 'downloads' / 'p.tar.gz'} (resuming at byte 17)"


def test_fetch_download_records_the_checksum_the_publisher_does_not_give(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://e.org/p.tar.gz": BODY})
    logs, root = [], tmp_path / "root"
    fetch.fetch_download(_d(sha=None), root, log=logs.append)
    assert (root / "downloads" / "p.tar.gz.sha256").read_text() == SHA + "\n"
    assert (root / "downloads" / "p.tar.gz.extracted").read_text() == SHA + "\n"
    assert logs[1] == (f"[fetch] p.tar.gz: the publisher gives no checksum; recorded sha256 {SHA} so that verify "
                       "detects later corruption. Consider pinning it in the manifest.")


def test_fetch_download_unpacks_a_file_placed_by_hand_without_any_checksum(tmp_path, monkeypatch):
    calls, logs, root = _serve(monkeypatch, {}), [], tmp_path / "root"
    (root / "downloads").mkdir(parents=True)
    (root / "downloads" / "p.tar.gz").write_bytes(BODY)
    fetch.fetch_download(_d(sha=None), root, log=logs.append)
    assert calls == []
    assert (root / "downloads" / "p.tar.gz.extracted").read_text() == SHA + "\n"
    assert (root / "data" / "pack" / "a.txt").read_bytes() == b"alpha"
    # nothing pinned it: its checksum is recorded now, so a later verify can tell corruption
    assert (root / "downloads" / "p.tar.gz.sha256").read_text() == SHA + "\n"
    assert logs[0] == (f"[fetch] {root / 'downloads' / 'p.tar.gz'}: present; the publisher gives no checksum; "
                       f"recorded sha256 {SHA} so that verify detects later corruption.")
    (root / "downloads" / "p.tar.gz").write_bytes(BODY + b"!")
    assert [p.issue.split(":")[0] for p in fetch.verify_report(_spec([_d(sha=None)]), root)] == ["corrupt"]


def test_fetch_download_moves_a_corrupt_download_aside_and_does_not_unpack(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://e.org/p.tar.gz": BODY + b"!"})
    root, bad = tmp_path / "root", hashlib.sha256(BODY + b"!").hexdigest()
    final, corrupt = root / "downloads" / "p.tar.gz", root / "downloads" / "p.tar.gz.corrupt"
    with pytest.raises(FetchError) as err:
        fetch.fetch_download(_d(), root, log=lambda m: None)
    assert str(err.value) == (
        f"p.tar.gz: downloaded sha256 {bad} differs from {SHA} (the manifest). Not unpacked; moved aside to "
        f"{corrupt}. Run the fetch again; if it fails the same way, the file at https://e.org/p.tar.gz is not the "
        "one the manifest pins: check the publisher's page before editing the manifest.")
    assert corrupt.read_bytes() == BODY + b"!" and not final.exists() and not (root / "data").exists()


def test_fetch_download_replaces_a_file_corrupted_on_disk(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://e.org/p.tar.gz": BODY})
    logs, root = [], tmp_path / "root"
    final = root / "downloads" / "p.tar.gz"
    final.parent.mkdir(parents=True)
    final.write_bytes(b"rotten")
    fetch.fetch_download(_d(), root, log=logs.append)
    rotten = hashlib.sha256(b"rotten").hexdigest()
    assert logs[0] == (f"[fetch] {final}: sha256 {rotten} differs from {SHA} (the manifest); moved aside to "
                       f"{final}.corrupt, downloading again.")
    assert final.read_bytes() == BODY and not Path(f"{final}.corrupt").exists()


def test_fetch_download_of_a_plain_file_lands_in_place_and_is_not_unpacked(tmp_path, monkeypatch):
    _serve(monkeypatch, {"https://e.org/notes.txt": b"text"})
    root = tmp_path / "root"
    sha = hashlib.sha256(b"text").hexdigest()
    fetch.fetch_download(_d(sha=sha, extract="none", file="notes.txt", creates=(), nbytes=4), root,
                         log=lambda m: None)
    assert (root / "data" / "notes.txt").read_bytes() == b"text"
    assert sorted(p.name for p in (root / "downloads").iterdir()) == ["notes.txt.lock"]


def test_unpacked_needs_the_marker_of_this_checksum_and_every_created_path(tmp_path):
    d = _d(creates=("data/x", "data/y"))
    (tmp_path / "downloads").mkdir()
    (tmp_path / "data").mkdir()
    marker = tmp_path / "downloads" / "p.tar.gz.extracted"
    (tmp_path / "data" / "x").touch()
    (tmp_path / "data" / "y").touch()
    assert not fetch._unpacked(d, tmp_path, SHA)                  # every path there, but no marker
    marker.write_text(SHA + "\n")
    assert fetch._unpacked(d, tmp_path, SHA)
    assert not fetch._unpacked(d, tmp_path, None)
    assert not fetch._unpacked(d, tmp_path, "f" * 64)             # the marker of another archive
    (tmp_path / "data" / "y").unlink()
    assert not fetch._unpacked(d, tmp_path, SHA)


# ----------------------------------------------------------------------------------------------- verify_report
def _spec(root_downloads, *, access=None, layout=(), fmt="toy", path=Path("toy.yml")):
    return FetchSpec(name="toy", title="Toy", format=fmt, licence="CC0", downloads=tuple(root_downloads),
                     layout=tuple(layout), access=access, path=path)


def test_verify_report_lists_each_problem_with_its_fix(tmp_path):
    root, dl = tmp_path / "root", tmp_path / "root" / "downloads"
    dl.mkdir(parents=True)
    (root / "data").mkdir()
    good, notunpacked, corrupt = _d(file="good.tar.gz"), _d(file="raw.tar.gz", creates=("data/r",)), _d(file="bad.zip")
    gone, half, half2 = _d(file="gone.tar.gz"), _d(file="half.zip", nbytes=10), _d(file="half2.zip", nbytes=None)
    missing, plain = _d(file="missing.zip"), _d(file="plain.txt", extract="none", creates=("data/pack/a.txt",))
    for name in ("good.tar.gz", "raw.tar.gz"):
        (dl / name).write_bytes(BODY)
    (dl / "good.tar.gz.extracted").write_text(SHA + "\n")
    (root / "data" / "pack").mkdir()
    (root / "data" / "pack" / "a.txt").write_bytes(b"alpha")
    (dl / "bad.zip").write_bytes(b"rotten")
    (dl / "gone.tar.gz.extracted").write_text(SHA + "\n")        # unpacked, then the archive was deleted
    (dl / "half.zip.part").write_bytes(b"12345")
    (dl / "half2.zip.part").write_bytes(b"123")
    (dl / "missing.zip.corrupt").write_bytes(b"x")
    (dl / "plain.txt.extracted").write_text(SHA + "\n")          # a marker never makes a plain file present
    spec = _spec([good, notunpacked, corrupt, gone, half, half2, missing, plain], access="  Ask the owner.\n",
                 layout=["data/pack", "data/lay"])
    fetch_fix = f"run `vitscope data fetch toy --root {root}`"
    rotten = hashlib.sha256(b"rotten").hexdigest()
    assert fetch.verify_report(spec, root) == [
        Problem(str(dl / "raw.tar.gz"), f"downloaded but not unpacked into {root / 'data'}", fetch_fix),
        Problem(str(root / "data" / "r"), "missing, expected from raw.tar.gz", f"{fetch_fix} (unpacks it again)"),
        Problem(str(dl / "bad.zip"), f"corrupt: sha256 {rotten}, expected {SHA} (the manifest)",
                f"{fetch_fix} (moves it aside and downloads it again)"),
        Problem(str(dl / "half.zip"), "partial download (5 of 10 bytes in half.zip.part)",
                f"{fetch_fix} (resumes from there)"),
        Problem(str(dl / "half2.zip"), "partial download (3 bytes in half2.zip.part)",
                f"{fetch_fix} (resumes from there)"),
        Problem(str(dl / "missing.zip"), "missing (from https://e.org/missing.zip); missing.zip.corrupt holds a "
                "download that failed its checksum", fetch_fix),
        Problem(str(root / "data" / "plain.txt"), "missing (from https://e.org/plain.txt)", fetch_fix),
        Problem(str(root / "data" / "lay"), "missing", "Ask the owner."),
    ]


def test_verify_report_names_a_recorded_checksum_and_a_missing_root(tmp_path):
    root, dl = tmp_path / "root", tmp_path / "root" / "downloads"
    dl.mkdir(parents=True)
    (dl / "p.tar.gz").write_bytes(b"rotten")
    (dl / "p.tar.gz.sha256").write_text(SHA + "\n")
    rotten = hashlib.sha256(b"rotten").hexdigest()
    assert fetch.verify_report(_spec([_d(sha=None)]), root) == [Problem(
        str(dl / "p.tar.gz"), f"corrupt: sha256 {rotten}, expected {SHA} ({dl / 'p.tar.gz.sha256'} (recorded at "
        "first fetch; the publisher gives none))", f"run `vitscope data fetch toy --root {root}` (moves it aside "
        "and downloads it again)")]
    gone = tmp_path / "nowhere"
    assert fetch.verify_report(_spec([_d()]), gone) == [
        Problem(str(gone), "the dataset root does not exist", f"run `vitscope data fetch toy --root {gone}`")]
    assert str(Problem("p", "gone", "do x")) == "p: gone. Fix: do x"


def test_verify_report_checks_the_class_folders_of_an_imagefolder_manifest(tmp_path):
    manifest = tmp_path / "toy.yml"
    manifest.write_text("name: toy\nformat: imagefolder\nsplit: train\nselection: {rule: first_n_sorted, "
                        "per_class: 2}\nclasses:\n  - {wnid: n01, name: one}\n  - {wnid: n02, name: two}\n")
    root = tmp_path / "root"
    (root / "train" / "n01").mkdir(parents=True)
    assert fetch.verify_report(_spec([], access="Log in.", fmt="imagefolder", path=manifest), root) == [
        Problem(str(root / "train"), "1 of 2 class folders missing (n02)", "Log in."),
        Problem(str(root / "train"), "1 class folder(s) hold fewer than the 2 images the selection takes: n01 (0)",
                "Log in.")]


# ----------------------------------------------------------------------------------------------- fetch_command
def _manifest(tmp_path, downloads: str = "", extra: str = "") -> Path:
    path = tmp_path / "m" / "toy.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f"name: toy\ntitle: Toy data\n{extra}" + (f"downloads:\n{downloads}" if downloads else ""))
    return path


_ENTRY = f"""  - file: p.tar.gz
    url: https://e.org/p.tar.gz
    sha256: {SHA}
    bytes: {len(BODY)}
    extract: tar
    into: data
    creates: [data/pack/a.txt]
"""


def test_fetch_command_writes_its_log_and_the_verify_report_to_out(tmp_path, monkeypatch, capsys):
    calls = _serve(monkeypatch, {"https://e.org/p.tar.gz": BODY})
    out, root = io.StringIO(), tmp_path / "root"
    assert fetch.fetch_command(str(_manifest(tmp_path, _ENTRY)), root, retries=4, progress=False, out=out) == 0
    assert (calls[0]["retries"], calls[0]["progress"]) == (4, False)
    dl = root / "downloads"
    assert out.getvalue().splitlines() == [f"[fetch] https://e.org/p.tar.gz -> {dl / 'p.tar.gz'}",
                                           f"[fetch] unpacking p.tar.gz into {root / 'data'}",
                                           f"[verify] toy: {root} is complete and verified."]
    assert capsys.readouterr() == ("", "")


def test_fetch_command_reports_failures_on_stderr_and_returns_1(tmp_path, monkeypatch, capsys):
    _serve(monkeypatch, {})
    out, root = io.StringIO(), tmp_path / "root"
    assert fetch.fetch_command(str(_manifest(tmp_path, _ENTRY)), root, out=out) == 1
    captured = capsys.readouterr()
    assert captured.err == "[fetch] FAILED p.tar.gz: https://e.org/p.tar.gz answered HTTP 404 Not Found.\n"
    assert captured.out == ""
    assert out.getvalue().splitlines()[1:] == [
        f"[verify] {root / 'downloads' / 'p.tar.gz'}: missing (from https://e.org/p.tar.gz). "
        f"Fix: run `vitscope data fetch toy --root {root}`"]


def test_fetch_command_prints_access_instructions_instead_of_downloading(tmp_path, capsys):
    out, root = io.StringIO(), tmp_path / "root"
    root.mkdir()
    path = _manifest(tmp_path, extra="access: |\n  Log in at example.org.\nlayout: [train]\n")
    assert fetch.fetch_command(str(path), root, out=out) == 1
    assert out.getvalue().splitlines() == [
        "[fetch] Toy data cannot be downloaded by vitscope. Log in at example.org.",
        f"[verify] {root / 'train'}: missing. Fix: Log in at example.org."]
    assert capsys.readouterr() == ("", "")


def test_fetch_command_refuses_unknown_and_empty_manifests_with_2(tmp_path, capsys):
    out = io.StringIO()
    missing = tmp_path / "nope.yml"
    assert fetch.fetch_command(str(missing), tmp_path, out=out) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"[fetch] No dataset manifest {str(missing)!r} (looked for {missing}). Known manifests: ")
    path = _manifest(tmp_path)
    assert fetch.fetch_command(str(path), tmp_path, out=out) == 2
    assert capsys.readouterr() == ("", f"[fetch] manifest 'toy' ({path}) lists no downloads: nothing to fetch.\n")
    assert out.getvalue() == ""
    assert fetch.verify_command(str(missing), tmp_path, out=out) == 2
    assert capsys.readouterr().err.startswith(f"[verify] No dataset manifest {str(missing)!r}")
    assert os.listdir(tmp_path) == ["m"]


def test_verify_reads_an_unpacked_archive_without_any_checksum_as_complete(tmp_path):
    # no checksum pinned or recorded: the archive's own sha256 is what its .extracted marker must hold
    root, dl = tmp_path / "root", tmp_path / "root" / "downloads"
    dl.mkdir(parents=True)
    (dl / "p.tar.gz").write_bytes(BODY)
    (dl / "p.tar.gz.extracted").write_text(SHA + "\n")
    (root / "data" / "pack").mkdir(parents=True)
    (root / "data" / "pack" / "a.txt").write_bytes(b"alpha")
    assert fetch.verify_report(_spec([_d(sha=None)]), root) == []
    (dl / "p.tar.gz.extracted").write_text("0" * 64 + "\n")
    assert [p.issue for p in fetch.verify_report(_spec([_d(sha=None)]), root)] == [
        f"downloaded but not unpacked into {root / 'data'}"]

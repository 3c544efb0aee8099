"""`vitscope data fetch` / `verify` against a loopback HTTP server: good, corrupt, cut and hostile archives."""
from __future__ import annotations

import hashlib
import io
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from vitscope.data.archives import Member, UnsafeArchiveError, check_members
from vitscope.data.fetch import fetch_command, verify_command
from vitscope.data.manifest import available_manifests, load_fetch_spec, load_manifest

FILES = {"pack/a.txt": b"alpha\n" * 1000, "pack/sub/b.bin": bytes(range(256)) * 300}


# ----------------------------------------------------------------------------------------------- fixtures
class _Handler(BaseHTTPRequestHandler):
    """Serves ``server.files``; honours ``Range: bytes=N-``; cuts the first response of ``server.cut`` paths."""

    def log_message(self, *args):   # keep pytest output clean
        pass

    def do_GET(self):
        srv = self.server
        body = srv.files.get(self.path)
        range_header = self.headers.get("Range")
        srv.requests.append((self.path, range_header))
        if body is None:
            self.send_error(404)
            return
        start = 0
        m = re.fullmatch(r"bytes=(\d+)-", range_header or "")
        if m and srv.honour_range:
            start = int(m.group(1))
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if self.path in srv.cut:           # drop the connection after K bytes, once
            k = srv.cut.pop(self.path)
            self.wfile.write(payload[:k])
            self.wfile.flush()
            self.close_connection = True
            return
        self.wfile.write(payload)


@pytest.fixture
def server():
    srv = ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
    srv.files, srv.requests, srv.cut, srv.honour_range = {}, [], {}, True
    srv.url = f"http://127.0.0.1:{srv.server_address[1]}"
    thread = threading.Thread(target=srv.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    yield srv
    srv.shutdown()
    srv.server_close()


def _zip(members: dict[str, bytes]) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w") as zf:
        for name, data in members.items():
            zf.writestr(name, data)
    return buf.getvalue()


def _tar(entries: list[tuple]) -> bytes:
    """``entries``: ``(name, bytes)`` for files, ``(name, "symlink", target)`` for links."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tf:
        for entry in entries:
            info = tarfile.TarInfo(entry[0])
            if len(entry) == 3:
                info.type, info.linkname = tarfile.SYMTYPE, entry[2]
                tf.addfile(info)
            else:
                info.size = len(entry[1])
                tf.addfile(info, io.BytesIO(entry[1]))
    return buf.getvalue()


def _manifest(tmp_path: Path, server, file: str, body: bytes, *, kind: str, sha: str | None = "auto",
              creates=("pack/a.txt", "pack/sub/b.bin"), serve: bytes | None = None) -> Path:
    """Serve ``serve`` (default ``body``) at ``/<file>`` and write a manifest pinning ``body``'s sha256."""
    server.files[f"/{file}"] = body if serve is None else serve
    digest = hashlib.sha256(body).hexdigest() if sha == "auto" else sha
    path = tmp_path / "manifests" / "toy.yml"
    path.parent.mkdir(parents=True, exist_ok=True)
    creates_yaml = "".join(f"\n      - data/{c}" for c in creates)   # creates: relative to the root
    path.write_text(f"""name: toy
title: toy data
format: toy
downloads:
  - file: {file}
    url: {server.url}/{file}
    sha256: {digest if digest else 'null'}
    bytes: {len(body)}
    extract: {kind}
    into: data
    creates:{creates_yaml or ' []'}
""")
    return path


def _tree(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*")}


@pytest.fixture
def root(tmp_path):
    """A root three folders deep, so that an escaping member lands inside tmp_path where the test can see it."""
    path = tmp_path / "a" / "b" / "c" / "root"
    path.mkdir(parents=True)
    return path


# ----------------------------------------------------------------------------------------------- good archives
@pytest.mark.parametrize("kind", ["zip", "tar"])
def test_good_archive_is_fetched_unpacked_and_verified(tmp_path, server, root, kind, capsys):
    body = _zip(FILES) if kind == "zip" else _tar(list(FILES.items()))
    manifest = _manifest(tmp_path, server, f"pack.{'zip' if kind == 'zip' else 'tar.gz'}", body, kind=kind)
    assert fetch_command(str(manifest), root, progress=False) == 0
    for name, data in FILES.items():
        assert (root / "data" / name).read_bytes() == data
    assert not [p for p in (root / "data").iterdir() if p.name.startswith(".vitscope-extract")]   # staging gone
    assert verify_command(str(manifest), root) == 0
    n_requests = len(server.requests)
    assert fetch_command(str(manifest), root, progress=False) == 0      # a re-run downloads nothing
    assert len(server.requests) == n_requests


def test_plain_file_lands_in_place_and_unpinned_sha_is_recorded(tmp_path, server, root):
    body = b"ground truth pickle stand-in" * 10
    manifest = _manifest(tmp_path, server, "gnd_toy.pkl", body, kind="none", sha=None, creates=())
    assert fetch_command(str(manifest), root, progress=False) == 0
    assert (root / "data" / "gnd_toy.pkl").read_bytes() == body
    recorded = (root / "downloads" / "gnd_toy.pkl.sha256").read_text().strip()
    assert recorded == hashlib.sha256(body).hexdigest()
    (root / "data" / "gnd_toy.pkl").write_bytes(body[:-1] + b"!")      # later corruption is caught by the record
    assert verify_command(str(manifest), root) == 1


# ----------------------------------------------------------------------------------------------- corruption
@pytest.mark.reliability("fault", "a download with the wrong sha256: reported, moved aside, never unpacked")
def test_corrupt_download_is_reported_moved_aside_and_not_unpacked(tmp_path, server, root, capsys):
    good = _zip(FILES)
    bad = bytearray(good)
    bad[len(bad) // 2] ^= 0xFF                                            # same size, one byte flipped
    manifest = _manifest(tmp_path, server, "pack.zip", good, kind="zip", serve=bytes(bad))
    assert fetch_command(str(manifest), root, progress=False) == 1
    err = capsys.readouterr().err
    assert "pack.zip" in err and "differs from " + hashlib.sha256(good).hexdigest() in err
    assert not (root / "downloads" / "pack.zip").exists()
    assert (root / "downloads" / "pack.zip.corrupt").read_bytes() == bytes(bad)
    assert not (root / "data").exists() or not _tree(root / "data")      # nothing unpacked
    assert verify_command(str(manifest), root) == 1
    out = capsys.readouterr().out
    assert "pack.zip: missing" in out and f"vitscope data fetch toy --root {root}" in out


@pytest.mark.reliability("fault", "a dataset file corrupted on disk after fetching: detected and fetched again")
def test_file_corrupted_on_disk_is_detected_then_replaced(tmp_path, server, root, capsys):
    body = _zip(FILES)
    manifest = _manifest(tmp_path, server, "pack.zip", body, kind="zip")
    assert fetch_command(str(manifest), root, progress=False) == 0
    archive = root / "downloads" / "pack.zip"
    archive.write_bytes(body[:100] + b"X" + body[101:])
    capsys.readouterr()
    assert verify_command(str(manifest), root) == 1
    out = capsys.readouterr().out
    assert f"{archive}: corrupt" in out and "vitscope data fetch toy" in out
    assert fetch_command(str(manifest), root, progress=False) == 0
    assert archive.read_bytes() == body


# ----------------------------------------------------------------------------------------------- interrupted transfer
@pytest.mark.reliability("fault", "a transfer cut midway resumes with an HTTP Range request")
def test_cut_transfer_is_kept_and_resumed_with_a_range_request(tmp_path, server, root, capsys):
    body = _zip({f"pack/{i}.bin": bytes([i]) * 5000 for i in range(40)})
    k = len(body) // 3
    manifest = _manifest(tmp_path, server, "pack.zip", body, kind="zip", creates=("pack/0.bin",))
    server.cut["/pack.zip"] = k
    assert fetch_command(str(manifest), root, retries=0, progress=False) == 1
    assert "run the same command again to resume" in capsys.readouterr().err
    part = root / "downloads" / "pack.zip.part"
    assert part.stat().st_size == k and not (root / "data" / "pack").exists()
    assert fetch_command(str(manifest), root, retries=0, progress=False) == 0
    assert ("/pack.zip", f"bytes={k}-") in server.requests
    got = (root / "downloads" / "pack.zip").read_bytes()
    assert hashlib.sha256(got).hexdigest() == hashlib.sha256(body).hexdigest()
    assert not part.exists() and (root / "data" / "pack" / "39.bin").read_bytes() == bytes([39]) * 5000


@pytest.mark.reliability("fault", "a server that ignores Range requests: the download starts over, still verified")
def test_one_fetch_resumes_on_its_own_and_survives_a_server_ignoring_range(tmp_path, server, root):
    body = _tar([(f"pack/{i}.bin", bytes([i]) * 3000) for i in range(30)])
    manifest = _manifest(tmp_path, server, "pack.tar.gz", body, kind="tar", creates=("pack/0.bin",))
    server.cut["/pack.tar.gz"] = len(body) // 2
    assert fetch_command(str(manifest), root, retries=1, progress=False) == 0
    assert [r for _, r in server.requests] == [None, f"bytes={len(body) // 2}-"]
    # A server that answers a Range request with the whole file (200): the .part must restart, not be appended to.
    root2 = root.parent / "root2"
    server.honour_range, server.requests[:] = False, []
    server.cut["/pack.tar.gz"] = 1000
    assert fetch_command(str(manifest), root2, retries=1, progress=False) == 0
    assert (root2 / "downloads" / "pack.tar.gz").read_bytes() == body


# ----------------------------------------------------------------------------------------------- hostile archives
HOSTILE = {
    "dotdot-zip": ("zip", lambda: _zip({"pack/a.txt": b"ok", "../../../../escaped.txt": b"pwned"})),
    "dotdot-tar": ("tar", lambda: _tar([("pack/a.txt", b"ok"), ("../../../../escaped.txt", b"pwned")])),
    "symlink-relative": ("tar", lambda: _tar([("pack/a.txt", b"ok"), ("pack/link", "symlink", "../../../../.."),
                                              ("pack/link/escaped.txt", b"pwned")])),
}


@pytest.mark.reliability("security", "archives with ../ members, absolute paths or escaping symlinks are refused whole")
@pytest.mark.parametrize("case", sorted(HOSTILE) + ["symlink-absolute"])
def test_hostile_archive_is_refused_and_nothing_is_written(tmp_path, server, root, case, capsys):
    if case == "symlink-absolute":
        kind, body = "tar", _tar([("pack/a.txt", b"ok"), ("pack/link", "symlink", str(tmp_path)),
                                  ("pack/link/escaped.txt", b"pwned")])
    else:
        kind, body = HOSTILE[case][0], HOSTILE[case][1]()
    manifest = _manifest(tmp_path, server, f"evil.{'zip' if kind == 'zip' else 'tar.gz'}", body, kind=kind,
                         creates=("pack/a.txt",))
    before = _tree(tmp_path)
    assert fetch_command(str(manifest), root, progress=False) == 1
    assert "refusing the whole archive" in capsys.readouterr().err
    assert not list(tmp_path.rglob("escaped.txt"))
    new = _tree(tmp_path) - before
    assert all(p.startswith(str(root.relative_to(tmp_path))) for p in new), new   # nothing outside the root
    assert not (root / "data" / "pack").exists()                            # not even the harmless member
    assert not list((root / "data").glob(".vitscope-extract*"))


@pytest.mark.reliability("security", "archive member checks: traversal, links, devices and writes through links")
@pytest.mark.parametrize("members", [
    [Member("/etc/passwd", "file")],
    [Member("C:\\evil.txt", "file")],
    [Member("a\\..\\..\\evil.txt", "file")],
    [Member("x", "symlink", ".."), ],
    [Member("sub", "dir"), Member("x", "symlink", "."), Member("y", "symlink", "x/sub/../..")],
    [Member("y", "symlink", "x/.."), Member("x", "symlink", ".")],            # a later link re-aims an earlier one
    [Member("x", "symlink", "sub"), Member("x", "file")],                    # a file written onto a link
    [Member("h", "hardlink", "../outside")],
    [Member("h", "hardlink", "not/in/archive")],
    [Member("dev", "other")],
])
def test_check_members_refuses(members):
    with pytest.raises(UnsafeArchiveError):
        check_members(members, "test.tar")


def test_check_members_accepts_links_that_stay_inside():
    ok = [Member("./d/", "dir"), Member("d/f", "file"), Member("d/l", "symlink", "f"),
          Member("up", "symlink", "d/../d"), Member("h", "hardlink", "d/f")]
    assert [m.name for m in check_members(ok)] == ["d", "d/f", "d/l", "up", "h"]


# ----------------------------------------------------------------------------------------------- manifests
@pytest.mark.reliability("bad input", "a dataset root missing class folders: verify lists them with the fix")
def test_imagenet_fetch_explains_access_and_verify_lists_missing_classes(tmp_path, capsys):
    assert fetch_command("imagenet50", tmp_path / "empty", progress=False) == 1
    out = capsys.readouterr().out
    assert "image-net.org" in out and "does not exist" in out
    partial = tmp_path / "partial"
    for wnid in load_manifest("imagenet50").wnids[:5]:                      # 5 classes x 6 files (contents unread)
        (partial / "train" / wnid).mkdir(parents=True)
        for i in range(6):
            (partial / "train" / wnid / f"{wnid}_{i}.JPEG").write_bytes(b"")
    assert verify_command("imagenet50", partial) == 1
    out = capsys.readouterr().out
    assert "45 of 50 class folders missing" in out and "5 class folder(s) hold fewer than the 100" in out


def test_every_shipped_manifest_parses_and_archives_have_a_size():
    for name in available_manifests():
        spec = load_fetch_spec(name)
        for d in spec.downloads:
            assert d.url.startswith(("http://", "https://")) and d.file
    assert load_manifest("imagenet50").downloads == ()


@pytest.mark.reliability("bad input", "malformed download entries in a manifest")
@pytest.mark.parametrize("line, message", [
    ("    into: ../elsewhere\n", "inside the dataset root"),
    ("    creates: [/etc]\n", "inside the dataset root"),
    ("    sha256: abc\n", "64 lower-case hex"),
    ("    extrakt: zip\n", "unknown key"),
    ("    url: file:///etc/passwd\n", "http"),
])
def test_manifest_download_entries_are_validated(tmp_path, line, message):
    path = tmp_path / "m.yml"
    entry = "  - file: f.zip\n    extract: zip\n" + line
    if "url:" not in line:
        entry += "    url: https://example.org/f.zip\n"
    path.write_text("name: m\ndownloads:\n" + entry)
    with pytest.raises(ValueError, match=message):
        load_fetch_spec(path)

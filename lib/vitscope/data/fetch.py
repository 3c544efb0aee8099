"""``vitscope data fetch NAME --root DIR`` and ``vitscope data verify NAME --root DIR``, driven by the manifests.

Fetching is resumable and never trusts what it got: each file is downloaded to ``<file>.part`` (an interrupted
transfer resumes with an HTTP ``Range`` request from the bytes already there), its SHA-256 is compared with the
manifest's, and only then renamed to its final name. A mismatch is moved aside to ``<file>.corrupt`` and never
unpacked. Archives are unpacked by :func:`vitscope.data.archives.safe_extract`. ``verify`` lists what is missing or
corrupt, one line per problem, each naming the file and the command or place that fixes it.

Layout of a dataset root::

    <root>/downloads/<archive>              verified archives (and <archive>.part / .corrupt while fixing)
    <root>/downloads/<archive>.extracted    the SHA-256 of the archive last unpacked (so a re-run skips it)
    <root>/downloads/<file>.sha256          what the first fetch got, for files whose publisher gives no checksum
    <root>/<into>/...                       what the archives unpack to; ``extract: none`` files land here directly
"""
from __future__ import annotations

import contextlib
import hashlib
import http.client
import os
import sys
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path

from .archives import UnsafeArchiveError, safe_extract
from .manifest import Download, FetchSpec, load_fetch_spec, load_manifest

DOWNLOADS = "downloads"
_CHUNK = 1 << 20
_TIMEOUT_S = 60


class FetchError(RuntimeError):
    """A download could not be completed or did not match its manifest."""


class TransferInterrupted(FetchError):
    """The connection ended before the whole file arrived; the bytes received are kept for a resume."""


@dataclass(frozen=True)
class Problem:
    """One line of a verify report: which file, what is wrong with it, and what fixes it."""

    path: str
    issue: str
    fix: str

    def __str__(self) -> str:
        return f"{self.path}: {self.issue}. Fix: {self.fix}"


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def _write_text_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


@contextlib.contextmanager
def _lock(path: Path):
    """An exclusive lock file, so two fetches of the same file into the same root do not interleave their bytes."""
    try:
        import fcntl
    except ImportError:       # Windows: no advisory locks; concurrent fetches into one root are the user's call
        yield
        return
    with open(path, "a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


# ----------------------------------------------------------------------------------------------- downloading
def _transfer(url: str, part: Path, expected_bytes: int | None, progress: bool, timeout: float) -> None:
    """One attempt: append to ``part`` from where it ends (``Range``), or restart it when the server ignores that.

    Raises :class:`TransferInterrupted` when fewer bytes arrive than announced, :class:`FetchError` on an HTTP
    error or a size that contradicts the manifest.
    """
    have = part.stat().st_size if part.exists() else 0
    if expected_bytes is not None and have > expected_bytes:   # longer than the real file: nothing to resume from
        part.unlink()
        have = 0
    headers = {"User-Agent": "vitscope-data-fetch"}
    if have:
        headers["Range"] = f"bytes={have}-"
    try:
        response = urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError as err:
        if err.code == 416 and have:   # nothing left to send: the .part already holds the whole file
            return
        raise FetchError(f"{url} answered HTTP {err.code} {err.reason}.") from err
    with response:
        length = response.headers.get("Content-Length")
        if have and response.status == 206:
            start = (response.headers.get("Content-Range") or "").removeprefix("bytes ").split("-")[0]
            if start != str(have):
                raise FetchError(f"{url} answered a resume from byte {have} with Content-Range "
                                 f"{response.headers.get('Content-Range')!r}; delete {part} and fetch again.")
            mode = "ab"
        else:                          # 200: the server sends the whole file (it ignored or does not support Range)
            have, mode = 0, "wb"
        total = have + int(length) if length is not None else expected_bytes
        if expected_bytes is not None and total is not None and total != expected_bytes:
            raise FetchError(f"{url} offers {total} bytes but the manifest expects {expected_bytes}: the published "
                             "file changed or the URL is wrong.")
        from tqdm.auto import tqdm

        with open(part, mode) as out, tqdm(total=total, initial=have, unit="B", unit_scale=True, unit_divisor=1024,
                                           desc=part.name.removesuffix(".part"), disable=not progress) as bar:
            while chunk := response.read(_CHUNK):
                out.write(chunk)
                bar.update(len(chunk))
            out.flush()
            os.fsync(out.fileno())
    got = part.stat().st_size
    if total is not None and got < total:
        raise TransferInterrupted(f"the connection to {url} ended after {got} of {total} bytes")


def download(url: str, part: Path, *, expected_bytes: int | None = None, retries: int = 2, progress: bool = True,
             timeout: float = _TIMEOUT_S) -> Path:
    """Download ``url`` into ``part``, resuming from the bytes already there, retrying ``retries`` times.

    Returns ``part`` holding the complete transfer (not yet checksummed). An interruption that outlasts the
    retries raises :class:`TransferInterrupted` and keeps the bytes, so the next call resumes.
    """
    if not url.startswith(("http://", "https://")):
        raise FetchError(f"Refusing to fetch {url!r}: only http(s) URLs are fetched.")
    part.parent.mkdir(parents=True, exist_ok=True)
    for attempt in range(retries + 1):
        try:
            _transfer(url, part, expected_bytes, progress, timeout)
            return part
        except (TransferInterrupted, OSError, http.client.HTTPException) as err:
            if isinstance(err, urllib.error.HTTPError):
                raise FetchError(f"{url} answered HTTP {err.code} {err.reason}.") from err
            if attempt == retries:
                kept = part.stat().st_size if part.exists() else 0
                raise TransferInterrupted(f"{part.name.removesuffix('.part')}: {err}. Kept {kept} bytes in {part}; "
                                          "run the same command again to resume from there.") from err
    return part


# ----------------------------------------------------------------------------------------------- one manifest entry
def _final_path(d: Download, root: Path) -> Path:
    """Archives are kept under ``downloads/``; a plain file (``extract: none``) lands where it is used."""
    return root / d.into / d.file if d.extract == "none" else root / DOWNLOADS / d.file


def _sha_record(d: Download, root: Path) -> Path:
    """Where the first fetch records the sha256 of a file whose publisher gives none."""
    return root / DOWNLOADS / f"{d.file}.sha256"


def _expected_sha(d: Download, root: Path) -> tuple[str | None, str]:
    """The checksum a file must have, and where it comes from: the manifest, else what the first fetch recorded."""
    if d.sha256:
        return d.sha256, "the manifest"
    record = _sha_record(d, root)
    if record.is_file():
        return record.read_text().strip(), f"{record} (recorded at first fetch; the publisher gives none)"
    return None, "nowhere (the publisher gives none)"


def _unpacked(d: Download, root: Path, sha: str | None) -> bool:
    marker = root / DOWNLOADS / f"{d.file}.extracted"
    return (marker.is_file() and sha is not None and marker.read_text().strip() == sha
            and all((root / c).exists() for c in d.creates))


def fetch_download(d: Download, root: Path, *, retries: int = 2, progress: bool = True,
                   log=print) -> None:
    """Bring one manifest entry to a verified, unpacked state under ``root`` (a no-op when it already is)."""
    final = _final_path(d, root)
    (root / DOWNLOADS).mkdir(parents=True, exist_ok=True)
    final.parent.mkdir(parents=True, exist_ok=True)
    part, corrupt = final.with_name(final.name + ".part"), final.with_name(final.name + ".corrupt")
    with _lock(root / DOWNLOADS / f"{d.file}.lock"):
        expected, origin = _expected_sha(d, root)
        if final.is_file():
            actual = sha256_file(final)
            if expected is not None and actual != expected:
                os.replace(final, corrupt)
                log(f"[fetch] {final}: sha256 {actual} differs from {expected} ({origin}); moved aside to {corrupt}, "
                    "downloading again.")
            elif expected is None:   # placed by hand, nothing to check against: record it as a download would
                _write_text_atomic(_sha_record(d, root), actual + "\n")
                log(f"[fetch] {final}: present; the publisher gives no checksum; recorded sha256 {actual} so that "
                    "verify detects later corruption.")
            else:
                log(f"[fetch] {final}: present and verified.")
        if not final.is_file():
            log(f"[fetch] {d.url} -> {final}" + (f" (resuming at byte {part.stat().st_size})" if part.exists() else ""))
            download(d.url, part, expected_bytes=d.bytes, retries=retries, progress=progress)
            actual = sha256_file(part)
            if expected is not None and actual != expected:
                os.replace(part, corrupt)
                raise FetchError(
                    f"{final.name}: downloaded sha256 {actual} differs from {expected} ({origin}). Not unpacked; "
                    f"moved aside to {corrupt}. Run the fetch again; if it fails the same way, the file at {d.url} "
                    f"is not the one the manifest pins: check the publisher's page before editing the manifest.")
            if expected is None:
                _write_text_atomic(_sha_record(d, root), actual + "\n")
                log(f"[fetch] {final.name}: the publisher gives no checksum; recorded sha256 {actual} so that "
                    "verify detects later corruption. Consider pinning it in the manifest.")
            os.replace(part, final)
            corrupt.unlink(missing_ok=True)
        if d.extract == "none":
            return
        sha, _ = _expected_sha(d, root)         # the manifest's, or the record made above: never None here
        if _unpacked(d, root, sha):
            log(f"[fetch] {final.name}: already unpacked into {root / d.into}.")
            return
        log(f"[fetch] unpacking {final.name} into {root / d.into}")
        safe_extract(final, d.extract, root / d.into)
        _write_text_atomic(root / DOWNLOADS / f"{d.file}.extracted", sha + "\n")


# ----------------------------------------------------------------------------------------------- verify
def _fix_command(spec: FetchSpec, root: Path) -> str:
    return f"run `vitscope data fetch {spec.name} --root {root}`"


def _imagefolder_problems(name: str, root: Path, fix: str) -> list[Problem]:
    """Class folders and per-class counts of an ImageNet-style manifest (the selection needs N files per class)."""
    from .imagefolder import IMAGE_EXTENSIONS

    manifest = load_manifest(name)
    split = root / manifest.split if (root / manifest.split).is_dir() else root
    missing, short = [], []
    for wnid in manifest.wnids:
        folder = split / wnid
        if not folder.is_dir():
            missing.append(wnid)
            continue
        n = sum(1 for p in folder.iterdir() if p.suffix.lower() in IMAGE_EXTENSIONS)
        if n < manifest.per_class:
            short.append(f"{wnid} ({n})")
    problems = []
    if missing:
        shown = ", ".join(missing[:5]) + (", ..." if len(missing) > 5 else "")
        problems.append(Problem(str(split), f"{len(missing)} of {len(manifest.wnids)} class folders missing "
                                f"({shown})", fix))
    if short:
        shown = ", ".join(short[:5]) + (", ..." if len(short) > 5 else "")
        problems.append(Problem(str(split), f"{len(short)} class folder(s) hold fewer than the "
                                f"{manifest.per_class} images the selection takes: {shown}", fix))
    return problems


def verify_report(spec: FetchSpec, root: Path) -> list[Problem]:
    """What is missing or corrupt under ``root`` for this manifest; an empty list means complete and verified."""
    root = Path(root).expanduser()
    fix = spec.access.strip() if spec.access else _fix_command(spec, root)
    if not root.is_dir():
        return [Problem(str(root), "the dataset root does not exist", fix)]
    problems = []
    for d in spec.downloads:
        final = _final_path(d, root)
        part, corrupt = final.with_name(final.name + ".part"), final.with_name(final.name + ".corrupt")
        expected, origin = _expected_sha(d, root)
        fetch = _fix_command(spec, root)
        if final.is_file():
            actual = sha256_file(final)
            if expected is not None and actual != expected:
                problems.append(Problem(str(final), f"corrupt: sha256 {actual}, expected {expected} ({origin})",
                                        f"{fetch} (moves it aside and downloads it again)"))
                continue
            if d.extract != "none" and not _unpacked(d, root, expected or actual):
                problems.append(Problem(str(final), f"downloaded but not unpacked into {root / d.into}", fetch))
        elif d.extract != "none" and _unpacked(d, root, expected):
            pass   # unpacked and the archive deleted afterwards to save space: the creates-paths are what count
        elif part.is_file():
            problems.append(Problem(str(final), f"partial download ({part.stat().st_size}"
                                    f"{'' if d.bytes is None else f' of {d.bytes}'} bytes in {part.name})",
                                    f"{fetch} (resumes from there)"))
        else:
            note = f"; {corrupt.name} holds a download that failed its checksum" if corrupt.is_file() else ""
            problems.append(Problem(str(final), f"missing (from {d.url}){note}", fetch))
        for created in d.creates:
            if not (root / created).exists() and (final.is_file() or _unpacked(d, root, expected)):
                problems.append(Problem(str(root / created), f"missing, expected from {d.file}",
                                        f"{fetch} (unpacks it again)"))
    for rel in spec.layout:
        if not (root / rel).exists():
            problems.append(Problem(str(root / rel), "missing", fix))
    if spec.format == "imagefolder":
        problems += _imagefolder_problems(str(spec.path), root, fix)
    return problems


# ----------------------------------------------------------------------------------------------- commands
def verify_command(name: str, root, *, out=None) -> int:
    """``vitscope data verify NAME --root DIR``: print the report; 0 when complete, 1 when anything is wrong."""
    try:
        spec = load_fetch_spec(name)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"[verify] {err}", file=sys.stderr)
        return 2
    out = out or sys.stdout
    root = Path(root).expanduser()
    problems = verify_report(spec, root)
    for p in problems:
        print(f"[verify] {p}", file=out)
    if not problems:
        print(f"[verify] {spec.name}: {root} is complete and verified.", file=out)
    return 1 if problems else 0


def fetch_command(name: str, root, *, retries: int = 2, progress: bool = True, out=None) -> int:
    """``vitscope data fetch NAME --root DIR``: download, verify and unpack every entry, then verify the root.

    Returns 0 when the root verifies, 1 when anything failed (each failure printed with its fix), 2 for an
    unknown or malformed manifest. Data behind an account (``access:`` in the manifest) is not downloaded: the
    instructions for obtaining and placing it are printed instead.
    """
    try:
        spec = load_fetch_spec(name)
    except (FileNotFoundError, ValueError, TypeError) as err:
        print(f"[fetch] {err}", file=sys.stderr)
        return 2
    out = out or sys.stdout
    root = Path(root).expanduser()
    if not spec.downloads and not spec.access:
        print(f"[fetch] manifest {spec.name!r} ({spec.path}) lists no downloads: nothing to fetch.", file=sys.stderr)
        return 2
    if spec.access:
        print(f"[fetch] {spec.title} cannot be downloaded by vitscope. {spec.access.strip()}", file=out)
    failed = 0
    for d in spec.downloads:
        try:
            fetch_download(d, root, retries=retries, progress=progress, log=lambda m: print(m, file=out))
        except (FetchError, UnsafeArchiveError, OSError) as err:
            failed += 1
            print(f"[fetch] FAILED {d.file}: {err}", file=sys.stderr)
    status = verify_command(name, root, out=out)
    return 1 if failed or status else 0

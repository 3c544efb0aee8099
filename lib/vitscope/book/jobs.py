"""The papermill matrix as a set of jobs, and what each job depends on (for incremental rebuilds).

A job is one execution of one notebook: a per-model page once per model, a cross-model page once per profile.
Its *fingerprint* digests everything that can change what the executed page shows:

- the notebook file, the papermill parameters and the profile file;
- the package's code (every ``.py`` under ``lib/vitscope``: coarse, but a kernel fix must re-run its pages);
- the identity of every model the page uses (weights sha256 for shipped or local files, seed for random ones);
- the versions of the libraries that can change numbers (:data:`NUMERIC_LIBRARIES`);
- the cached products the page read last time (their sidecars' digests): a recomputed or deleted product
  re-executes the pages that read it.

A stamp (``<cache>/book/stamps/<job>.json``) records the fingerprint of the last successful execution; a job
whose stamp matches and whose output exists is skipped.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import metadata
from pathlib import Path

from ..extract.store import READ_LOG_ENV  # noqa: F401  (re-exported: the book sets it per job)
from ..paths import cache_root
from ..profiles import Profile

#: Libraries whose version can change a page's numbers or figures. tqdm or ipywidgets cannot.
NUMERIC_LIBRARIES = ("torch", "torchvision", "timm", "numpy", "scipy", "scikit-learn", "pandas", "matplotlib",
                     "seaborn", "pillow", "captum", "safetensors")


@dataclass(frozen=True)
class Job:
    """One papermill execution: ``notebook`` (stem in ``notebooks/``) with ``params`` into ``output``."""

    notebook: str
    output: Path            # relative to the project root, e.g. book/generated/tm_4_3_attention_distance/dino.ipynb
    params: dict = field(hash=False)
    title: str
    models: tuple[str, ...]  # the models whose identity the page depends on
    stage: int = 0           # jobs of a stage may read products written by earlier stages
    inputs: tuple[str, ...] = ()   # other things the page reads (:func:`input_digests`)

    @property
    def slug(self) -> str:
        return str(self.output.with_suffix("")).replace(os.sep, "__")


def _digest(*parts) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


def _file_digest(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


@lru_cache(maxsize=None)
def code_digest() -> str:
    """Digest of the package's Python sources (computed once per process)."""
    package = Path(__file__).resolve().parents[1]
    files = sorted(p for p in package.rglob("*.py") if "__pycache__" not in p.parts)
    return _digest([(str(p.relative_to(package)), _file_digest(p)) for p in files])


def library_versions() -> dict[str, str]:
    """Installed versions of :data:`NUMERIC_LIBRARIES` (``"absent"`` when not installed)."""
    out = {}
    for name in NUMERIC_LIBRARIES:
        try:
            out[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            out[name] = "absent"
    return out


def model_identities(models) -> dict[str, dict]:
    """Cache identity of each model (weights digest or seed), as the feature store keys it."""
    from ..sections.common import model_identity

    return {m: model_identity(m) for m in models}


def input_digests(inputs, root: Path) -> dict[str, str]:
    """Digests of a page's other inputs: files, folders (their ``.py`` files) or globs relative to the project root,
    ``@cache/<path>`` under the cache root, and ``@installed-packages`` (every installed distribution and its
    version: a page about the environment depends on all of them)."""
    out = {}
    for item in inputs:
        if "*" in item:       # a glob under the project root: every matching file
            files = sorted(p for p in root.glob(item) if p.is_file())
            out[item] = _digest([(str(p.relative_to(root)), _file_digest(p)) for p in files])
            continue
        if item == "@installed-packages":
            dists = sorted({(d.metadata["Name"] or "").lower(): d.version for d in metadata.distributions()}.items())
            out[item] = _digest(dists)
            continue
        path = cache_root() / item.removeprefix("@cache/") if item.startswith("@cache/") else root / item
        if path.is_dir():
            files = sorted(p for p in path.rglob("*.py") if "__pycache__" not in p.parts)
            out[item] = _digest([(str(p.relative_to(path)), _file_digest(p)) for p in files])
        else:
            out[item] = _file_digest(path) if path.is_file() else "missing"
    return out


def stamp_path(job: Job) -> Path:
    return cache_root() / "book" / "stamps" / f"{job.slug}.json"


def read_products(log: Path) -> dict[str, str]:
    """``{sidecar path: digest}`` of the feature-store entries listed in a page's read log."""
    if not log.is_file():
        return {}
    entries = sorted(set(filter(None, log.read_text().splitlines())))
    return {e: (_file_digest(Path(e)) if Path(e).is_file() else "missing") for e in entries}


def fingerprint(job: Job, root: Path, profile: Profile, identities: dict[str, dict]) -> dict:
    """Everything the executed page depends on, except the products it reads (see :func:`is_current`)."""
    return {
        "notebook": _file_digest(root / "notebooks" / f"{job.notebook}.ipynb"),
        "params": job.params,
        "profile": _digest(profile.raw),
        "code": code_digest(),
        "models": {m: identities[m] for m in job.models},
        "libraries": library_versions(),
        "inputs": input_digests(job.inputs, root),
    }


def is_current(job: Job, root: Path, print_: dict) -> bool:
    """True when the job's output exists and its stamp holds ``print_`` and unchanged read products."""
    path = stamp_path(job)
    if not (root / job.output).is_file() or not path.is_file():
        return False
    stamp = json.loads(path.read_text())
    if stamp.get("fingerprint") != json.loads(json.dumps(print_, sort_keys=True, default=str)):
        return False
    return all(Path(p).is_file() and _file_digest(Path(p)) == d for p, d in stamp.get("products", {}).items())


def write_stamp(job: Job, print_: dict, products: dict[str, str]) -> None:
    """Record a successful execution (written atomically: a killed build never leaves a valid-looking stamp)."""
    path = stamp_path(job)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"fingerprint": print_, "products": products, "output": str(job.output)},
                              indent=1, sort_keys=True, default=str))
    tmp.replace(path)

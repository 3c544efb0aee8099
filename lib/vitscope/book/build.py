"""Run the notebooks of a profile with papermill, write ``_toc.yml`` and build the site with Jupyter Book.

The book never executes notebooks itself (``execute_notebooks: off``): papermill runs each notebook once per
model (or once per profile for cross-model pages) into ``book/generated/``, and Jupyter Book only renders.
"""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..models import get_cfg
from ..profiles import Profile, load_profile, project_root

GENERATED = Path("book") / "generated"


@dataclass(frozen=True)
class Page:
    """One notebook of the book: per model (one executed copy per model) or cross-model (one per profile)."""

    notebook: str        # stem in notebooks/
    part: str            # the paper it belongs to (a TOC caption)
    title: str
    per_model: bool
    sections: tuple["Page", ...] = ()   # pages nested under this one in the TOC (e.g. its per-model copies)


PARTS = {"TM": "Teaching Matters (Walmer et al., CVPR 2023)",
         "OM": "Objectives Matter (Shekhar et al., ICLR 2023 workshop)",
         "About": "About"}

PAGES = (
    Page("tm_4_3_overview", "TM", "4.3 Average attention distance", per_model=False, sections=(
        Page("tm_4_3_attention_distance", "TM", "4.3 Average attention distance", per_model=True),)),
    Page("om_2_1_cka", "OM", "2.1 Layer-wise CKA between models", per_model=False),
    Page("about_zoo", "About", "The mini-zoo", per_model=False),
    Page("about_models", "About", "The models", per_model=False),
)


def _outputs(page: Page, profile: Profile) -> list[tuple[Path, dict, str]]:
    """(output notebook, papermill parameters, page title) for every execution of ``page``."""
    if page.per_model:
        return [(GENERATED / page.notebook / f"{m}.ipynb", {"model": m, "profile": profile.name},
                 f"{page.title}: {get_cfg(m).display}") for m in profile.models]
    return [(GENERATED / f"{page.notebook}.ipynb", {"profile": profile.name}, page.title)]


def _flatten(pages) -> list[Page]:
    return [q for p in pages for q in (p, *_flatten(p.sections))]


def personalise(path: Path, title: str) -> None:
    """Give an executed copy its own title and hide the parameter cells (DESIGN.md §7, pitfall 6).

    The template's first markdown line is ``# <anything>``; it becomes ``# <title>`` so per-model pages do
    not share one title. Papermill's ``injected-parameters`` cell gets the ``remove-cell`` tag.
    """
    nb = json.loads(path.read_text())
    for cell in nb["cells"]:
        tags = cell.setdefault("metadata", {}).setdefault("tags", [])
        if "injected-parameters" in tags and "remove-cell" not in tags:
            tags.append("remove-cell")
    first_md = next(c for c in nb["cells"] if c["cell_type"] == "markdown")
    src = "".join(first_md["source"]).split("\n", 1)
    first_md["source"] = f"# {title}\n" + (src[1] if len(src) > 1 else "")
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_matrix(profile: Profile, root: Path | None = None, pages=PAGES, log=print) -> list[Path]:
    """Execute every page of the book for ``profile`` with papermill; returns the executed notebooks."""
    import papermill as pm

    root = root or project_root()
    done = []
    for page in _flatten(pages):
        for out, params, title in _outputs(page, profile):
            dest = root / out
            dest.parent.mkdir(parents=True, exist_ok=True)
            t0 = time.perf_counter()
            log(f"[vitscope book] {page.notebook} {params} -> {out}")
            pm.execute_notebook(str(root / "notebooks" / f"{page.notebook}.ipynb"), str(dest), parameters=params,
                                kernel_name="python3", cwd=str(dest.parent), progress_bar=False)
            personalise(dest, title)
            log(f"[vitscope book]   done in {time.perf_counter() - t0:.1f} s")
            done.append(dest)
    return done


def toc(profile: Profile, pages=PAGES) -> dict:
    """The Jupyter Book table of contents for ``profile`` (a ``jb-book`` dict)."""
    def entries(page):
        files = [str(out.with_suffix("")) for out, _, _ in _outputs(page, profile)]
        children = [e for child in page.sections for e in entries(child)]
        if children and len(files) == 1:
            return [{"file": files[0], "sections": children}]
        return [{"file": f} for f in files] + children

    parts = []
    for key, caption in PARTS.items():
        chapters = [e for page in pages if page.part == key for e in entries(page)]
        if key == "About":
            chapters.append({"file": "book/about/reproducing"})
        parts.append({"caption": caption, "chapters": chapters})
    return {"format": "jb-book", "root": "book/intro", "parts": parts}


def write_toc(profile: Profile, root: Path | None = None, pages=PAGES) -> Path:
    path = (root or project_root()) / "_toc.yml"
    header = f"# Written by `vitscope book --profile {profile.name}`; edit vitscope/book/build.py, not this file.\n"
    path.write_text(header + yaml.safe_dump(toc(profile, pages), sort_keys=False))
    return path


def build_html(root: Path | None = None, strict: bool = True) -> Path:
    """``jupyter-book build`` with warnings as errors (``-W -n --keep-going``); returns ``_build/html``."""
    root = root or project_root()
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [str(jb) if jb.exists() else "jupyter-book", "build", str(root), "--path-output", str(root)]
    if strict:
        cmd += ["-W", "-n", "--keep-going"]
    subprocess.run(cmd, check=True)
    return root / "_build" / "html"


def build_book(profile_name: str = "demo", execute: bool = True, root: Path | None = None) -> Path:
    """The whole job: papermill matrix, table of contents, HTML."""
    root = root or project_root()
    profile = load_profile(profile_name)
    if execute:
        shutil.rmtree(root / GENERATED, ignore_errors=True)
        run_matrix(profile, root)
    write_toc(profile, root)
    return build_html(root)

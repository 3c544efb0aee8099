"""Run the notebooks of a profile with papermill, write ``_toc.yml`` and build the site with Jupyter Book.

The book never executes notebooks itself (``execute_notebooks: off``): papermill runs each notebook once per
model (or once per profile for cross-model pages) into ``book/generated/``, and Jupyter Book only renders.
A page is re-executed only when something it depends on changed (:mod:`vitscope.book.jobs`), so a rebuild
with nothing changed executes nothing.
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from ..models import get_cfg
from ..paths import project_root
from ..profiles import Profile, load_profile
from .execute import Outcome, read_log_path, run_jobs
from .jobs import Job, fingerprint, is_current, model_identities, read_products, write_stamp

GENERATED = Path("book") / "generated"


@dataclass(frozen=True)
class Page:
    """One notebook of the book: per model (one executed copy per model) or cross-model (one per profile).

    ``stage`` orders execution: a page may read products cached by pages of earlier stages (the overview of a
    section reuses its per-model pages' extractions; the claims ledger reads every section). ``depends_on``
    says which models' weights the page depends on: ``"profile"`` (every model the profile names), ``"zoo"``
    (the shipped mini-zoo) or ``"none"``.
    """

    notebook: str        # stem in notebooks/
    part: str            # the paper it belongs to (a TOC caption)
    title: str
    per_model: bool
    sections: tuple["Page", ...] = ()   # pages nested under this one in the TOC (e.g. its per-model copies)
    stage: int = 1
    depends_on: str = "profile"
    inputs: tuple[str, ...] = ()   # more files or folders it reads (see vitscope.book.jobs.input_digests)


PARTS = {"TM": "Teaching Matters (Walmer et al., CVPR 2023)",
         "OM": "Objectives Matter (Shekhar et al., ICLR 2023 workshop)",
         "Teach": "For teachers",
         "About": "About"}

PAGES = (
    Page("tm_4_1_overview", "TM", "4.1 CLS attention maps", per_model=False, sections=(
        Page("tm_4_1_cls_attention", "TM", "4.1 CLS attention maps", per_model=True, stage=0),)),
    Page("tm_4_2_overview", "TM", "4.2 Aligned Aggregated Attention Maps", per_model=False, sections=(
        Page("tm_4_2_aaam", "TM", "4.2 Aligned Aggregated Attention Maps", per_model=True, stage=0),)),
    Page("tm_4_3_overview", "TM", "4.3 Average attention distance", per_model=False, sections=(
        Page("tm_4_3_attention_distance", "TM", "4.3 Average attention distance", per_model=True, stage=0),)),
    Page("tm_4_4_overview", "TM", "4.4 Attention IoU with salient objects", per_model=False, sections=(
        Page("tm_4_4_attention_iou", "TM", "4.4 Attention IoU with salient objects", per_model=True, stage=0),)),
    Page("tm_5_1_last_layer_cka", "TM", "5.1 Last-block CKA between models", per_model=False),
    Page("tm_5_2_overview", "TM", "5.2 Cluster purity of global features", per_model=False, sections=(
        Page("tm_5_2_purity", "TM", "5.2 Cluster purity of global features", per_model=True, stage=0),)),
    Page("tm_5_3_overview", "TM", "5.3 Cluster purity of objects and parts", per_model=False, sections=(
        Page("tm_5_3_region_purity", "TM", "5.3 Cluster purity of objects and parts", per_model=True, stage=0),)),
    Page("tm_6_1_overview", "TM", "6.1 k-NN classification per layer", per_model=False, sections=(
        Page("tm_6_1_knn", "TM", "6.1 k-NN classification per layer", per_model=True, stage=0),)),
    Page("tm_6_1_retrieval_overview", "TM", "6.1 Image retrieval per layer", per_model=False, sections=(
        Page("tm_6_1_retrieval", "TM", "6.1 Image retrieval per layer", per_model=True, stage=0),)),
    Page("tm_6_2_davis_overview", "TM", "6.2 DAVIS video label propagation per layer", per_model=False, sections=(
        Page("tm_6_2_davis", "TM", "6.2 DAVIS video label propagation per layer", per_model=True, stage=0),)),
    Page("tm_6_2_keypoints_overview", "TM", "6.2 SPair-71k keypoint correspondence per layer", per_model=False,
         sections=(Page("tm_6_2_keypoints", "TM", "6.2 SPair-71k keypoint correspondence per layer", per_model=True,
                        stage=0),)),
    Page("tm_6_3_table1", "TM", "6.3 Table 1: downstream tasks side by side with the paper", per_model=False),
    Page("om_2_1_cka", "OM", "2.1 Layer-wise CKA between models", per_model=False),
    # its CNNs are named by its profile section, not by `models`: their weights are inputs of their own
    Page("om_2_1_architecture", "OM", "2.1 Objective or architecture? CKA across ViTs and CNNs", per_model=False,
         inputs=("lib/vitscope/zoo/weights/zoo-cnn-*.safetensors",)),
    Page("om_2_2_probes", "OM", "2.2 Linear, non-linear and multi-layer probes", per_model=False, stage=0),
    Page("om_2_2_knn", "OM", "2.2 k-NN per block: CLS and GAP", per_model=False),
    Page("om_2_2_invariance", "OM", "2.2 Invariance to flips and other augmentations", per_model=False),
    # stage 0: it fine-tunes the models the dynamics page (stage 1) reads, beside the per-model pages
    Page("om_2_3_finetuned_cka", "OM", "2.3 CKA before and after fine-tuning", per_model=False, stage=0),
    Page("om_2_3_dynamics", "OM", "2.3 Fine-tuning dynamics: path efficiency, marginal information, flips",
         per_model=False),
    Page("om_app_b1_cka_convergence", "OM", "B.1 Minibatch CKA: batch size and number of examples", per_model=False),
    Page("om_app_c_detection", "OM", "C Frozen and fine-tuned backbones for detection", per_model=False, stage=0),
    Page("om_app_f_agreement", "OM", "F Do models agree on their predictions?", per_model=False),
    # the ledger collects the verdicts the section pages displayed: it runs after them and depends on their outputs
    Page("about_claims", "About", "Claims ledger", per_model=False, stage=2, depends_on="none",
         inputs=("book/generated/tm_*.ipynb", "book/generated/tm_*/*.ipynb", "book/generated/om_*.ipynb")),
    Page("about_zoo", "About", "The mini-zoo", per_model=False, stage=0, depends_on="zoo"),
    Page("about_models", "About", "The models", per_model=False, depends_on="none"),
    Page("about_environment", "About", "Environment", per_model=False, depends_on="none",
         inputs=("requirements.lock", "pyproject.toml", "@installed-packages")),
    Page("about_reliability", "About", "Reliability", per_model=False, depends_on="none",
         inputs=("tests", "@cache/tests/reliability.json")),
    Page("about_performance", "About", "Performance", per_model=False, depends_on="none",
         inputs=("benchmarks/results/latest.json", "benchmarks/report.py")),
)

#: Hand-written pages (Markdown under book/), listed in the TOC after the executed pages of their part:
#: a file, or ``(file, (section files...))`` for a chapter with nested pages.
STATIC_PAGES = {
    "Teach": ("book/about/objectives",
              ("book/exercises/index", ("book/exercises/tm_4_3", "book/exercises/om_2_1", "book/exercises/zoo")),
              "book/glossary", "book/about/references"),
    "About": ("book/about/reproducing",),
}


def _static_entry(entry) -> dict:
    if isinstance(entry, str):
        return {"file": entry}
    file, sections = entry
    return {"file": file, "sections": [{"file": f} for f in sections]}


def _page_models(page: Page, profile: Profile) -> tuple[str, ...]:
    if page.depends_on == "none":
        return ()
    if page.depends_on == "zoo":
        from ..models import list_models

        return tuple(list_models("demo"))
    return tuple(profile.all_models())


def plan(profile: Profile, pages=PAGES) -> list[Job]:
    """Every papermill execution of ``pages`` for ``profile``, in execution order."""
    jobs = []
    for page in _flatten(pages):
        if page.per_model:
            jobs += [Job(page.notebook, GENERATED / page.notebook / f"{m}.ipynb", {"model": m, "profile": profile.name},
                         f"{page.title}: {get_cfg(m).display}", (m,), page.stage, page.inputs) for m in profile.models]
        else:
            jobs.append(Job(page.notebook, GENERATED / f"{page.notebook}.ipynb", {"profile": profile.name},
                            page.title, _page_models(page, profile), page.stage, page.inputs))
    # Within a stage the cross-model pages start first: they are the long ones (fine-tuning, detection, the zoo's
    # recheck), and started last they would leave one worker idle at the stage's end.
    return sorted(jobs, key=lambda j: (j.stage, "model" in j.params))


def _flatten(pages) -> list[Page]:
    return [q for p in pages for q in (p, *_flatten(p.sections))]


def personalise(path: Path, title: str) -> None:
    """Give an executed copy its own title and hide the parameter cells (else every per-model page would show the
    template's defaults).

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


def _markdown_cell(text: str, tag: str) -> dict:
    return {"cell_type": "markdown", "metadata": {"tags": [tag]}, "source": text}


def decorate(path: Path, job: Job, profile: Profile, error: str = "") -> None:
    """Add what every executed page carries: its own title, a box saying it failed (if it did), the reproduce
    box (the exact papermill command, computed from the job's parameters) and the environment record."""
    from ..environment import environment_markdown, environment_record
    from .reproduce import reproduce_markdown

    personalise(path, job.title)
    nb = json.loads(path.read_text())
    cells = nb["cells"]
    first_md = next(i for i, c in enumerate(cells) if c["cell_type"] == "markdown")
    head = []
    if error:
        head.append(_markdown_cell(
            f"```{{error}} This page failed to execute\n`{error}`\n\nThe outputs below stop at the failing cell, "
            "whose traceback is shown. Every other page of the book was built; `vitscope book` lists the failures "
            "and exits non-zero.\n```\n", "vitscope-error"))
    head.append(_markdown_cell(reproduce_markdown(job.notebook, job.params, profile.name), "vitscope-reproduce"))
    cells[first_md + 1:first_md + 1] = head
    cells.append(_markdown_cell(environment_markdown(environment_record(profile.name, profile.device)),
                                "vitscope-environment"))
    path.write_text(json.dumps(nb, indent=1, ensure_ascii=False) + "\n")


def run_matrix(profile: Profile, root: Path | None = None, pages=PAGES, *, n_jobs: int = 1, executor: str = "local",
               force: bool = False, log=print) -> list[Outcome]:
    """Execute the pages of ``profile`` whose dependencies changed since their last successful execution.

    Returns one :class:`~vitscope.book.execute.Outcome` per job (``skipped`` when up to date). A failed job
    does not stop the others; it is never stamped, so the next build retries it.
    """
    root = root or project_root()
    jobs = plan(profile, pages)
    identities = model_identities(sorted({m for j in jobs for m in j.models}))
    outcomes = []
    for stage in sorted({j.stage for j in jobs}):
        # fingerprinted stage by stage: a later stage may depend on pages an earlier stage just wrote
        batch = [j for j in jobs if j.stage == stage]
        prints = {j: fingerprint(j, root, profile, identities) for j in batch}
        due = [j for j in batch if force or not is_current(j, root, prints[j])]
        for j in batch:
            if j not in due:
                log(f"[vitscope book] up to date: {j.output}")
                outcomes.append(Outcome(j, "skipped"))
        for o in run_jobs(root, due, n_jobs=n_jobs, executor=executor, gpu=profile.device == "cuda", log=log):
            decorate(root / o.job.output, o.job, profile, o.error)
            if o.status == "executed":
                write_stamp(o.job, prints[o.job], read_products(read_log_path(root, o.job)))
            outcomes.append(o)
    _remove_stale(root, jobs)
    return outcomes


def _remove_stale(root: Path, jobs: list[Job]) -> None:
    """Delete executed notebooks no job produces any more (a model dropped from the profile, a renamed page)."""
    keep = {root / j.output for j in jobs}
    for path in (root / GENERATED).rglob("*.ipynb"):
        if path not in keep and ".ipynb_checkpoints" not in path.parts:
            path.unlink()


def summary(outcomes: list[Outcome]) -> str:
    """A plain-text table of the run: counts, time, and every failure with its error."""
    counts = {s: sum(o.status == s for o in outcomes) for s in ("executed", "skipped", "failed")}
    seconds = sum(o.seconds for o in outcomes)
    lines = [f"[vitscope book] {counts['executed']} executed, {counts['skipped']} up to date, "
             f"{counts['failed']} failed; {seconds:.0f} s of notebook execution"]
    for o in outcomes:
        if o.status == "failed":
            lines.append(f"  FAILED  {o.job.output}  {o.error}")
    return "\n".join(lines)


def toc(profile: Profile, pages=PAGES) -> dict:
    """The Jupyter Book table of contents for ``profile`` (a ``jb-book`` dict)."""
    def entries(page):
        files = [str(j.output.with_suffix("")) for j in plan(profile, (Page(**{**page.__dict__, "sections": ()}),))]
        children = [e for child in page.sections for e in entries(child)]
        if children and len(files) == 1:
            return [{"file": files[0], "sections": children}]
        return [{"file": f} for f in files] + children

    parts = []
    for key, caption in PARTS.items():
        chapters = [e for page in pages if page.part == key for e in entries(page)]
        chapters += [_static_entry(e) for e in STATIC_PAGES.get(key, ())]
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


#: What a copy of the project needs to build the book on its own: the Reliability page collects ``tests/``, the
#: Environment page reads the lock, the Performance page ``benchmarks/``.
BOOK_SOURCES = ("_config.yml", "book", "notebooks", "profiles", "data_manifests", "benchmarks", "tests",
                "requirements.lock", "pyproject.toml")


def copy_sources(dest: Path, source: Path | None = None) -> Path:
    """Copy the book's sources (:data:`BOOK_SOURCES`, without executed pages or caches) from ``source`` (default:
    the project root) into ``dest``, and link ``lib/`` (the objectives page includes the zoo's code from it).
    Point ``VITSCOPE_HOME``/``VITSCOPE_CACHE`` at ``dest`` to build there; returns ``dest``."""
    import shutil

    source = source or project_root()
    for name in BOOK_SOURCES:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dest / name,
                            ignore=shutil.ignore_patterns("generated", ".ipynb_checkpoints", "__pycache__"))
        else:
            shutil.copy(src, dest / name)
    (dest / "lib").symlink_to(source / "lib")
    return dest


def build_book(profile_name: str = "demo", execute: bool = True, root: Path | None = None, *, n_jobs: int = 1,
               executor: str = "local", force: bool = False) -> tuple[Path, list[Outcome]]:
    """The whole job: papermill matrix (only what changed, unless ``force``), table of contents, HTML.

    Returns the HTML folder and the outcome of every job; the site is built even when some jobs failed.
    """
    root = root or project_root()
    profile = load_profile(profile_name)
    outcomes = []
    if execute:
        t0 = time.perf_counter()
        outcomes = run_matrix(profile, root, n_jobs=n_jobs, executor=executor, force=force)
        print(summary(outcomes))
        _record_timing(outcomes, "execute", time.perf_counter() - t0)
    write_toc(profile, root)
    t0 = time.perf_counter()
    html = build_html(root)
    _record_timing([], "html", time.perf_counter() - t0)
    return html, outcomes


def _record_timing(outcomes: list[Outcome], stage: str, seconds: float) -> None:
    """Append the stage's wall time (and per-page times) to ``<cache>/book/timings.jsonl`` for the benchmarks."""
    from ..paths import cache_root

    path = cache_root() / "book" / "timings.jsonl"
    path.parent.mkdir(parents=True, exist_ok=True)
    row = {"time": time.time(), "stage": stage, "seconds": round(seconds, 2),
           "jobs": [{"output": str(o.job.output), "status": o.status, "seconds": round(o.seconds, 2)}
                    for o in outcomes]}
    with open(path, "a") as f:
        f.write(json.dumps(row) + "\n")

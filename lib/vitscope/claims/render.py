"""Claims as page content: one MyST block per page (``show``) and tidy tables for the Claims page."""
from __future__ import annotations

import dataclasses
import importlib
from collections.abc import Iterable

import pandas as pd
from IPython.display import Markdown

from .catalogue import CLAIMS, PAPERS, Claim, get_claim
from .verdict import CONFIDENCE, N_RESAMPLES, ClaimResult, Interval


def _interval(iv: Interval | None) -> str:
    if iv is None:
        return "–"
    return f"{iv.estimate:+.3f} [{iv.low:+.3f}, {iv.high:+.3f}]"


def _floor(value: float | None) -> str:
    return "–" if value is None else f"±{value:.4f}"


def results_table(results: Iterable[ClaimResult]) -> pd.DataFrame:
    """One row per judged comparison: ``claim, subject, measure, verdict, effect, low, high, seed_floor,
    baseline_model, beyond_baseline, beyond_low, beyond_high, beyond_seed_floor, seeds, n, unit, reason`` (numbers
    NaN where there is none; ``seeds`` the untrained seeds of the floors, comma-separated, "" without)."""
    nan = float("nan")
    rows = []
    for r in results:
        e, b = r.effect, r.baseline
        rows.append({"claim": r.claim, "subject": r.subject, "measure": r.measure, "verdict": r.verdict,
                     "effect": e.estimate if e else nan, "low": e.low if e else nan, "high": e.high if e else nan,
                     "seed_floor": nan if r.floor is None else r.floor,
                     "baseline_model": r.baseline_model, "beyond_baseline": b.estimate if b else nan,
                     "beyond_low": b.low if b else nan, "beyond_high": b.high if b else nan,
                     "beyond_seed_floor": nan if r.baseline_floor is None else r.baseline_floor,
                     "seeds": ", ".join(r.seeds), "n": e.n if e else None, "unit": e.unit if e else None,
                     "reason": r.reason})
    return pd.DataFrame(rows)


def _cite(claim: Claim) -> str:
    return f"{claim.paper} §{claim.section}, {claim.figure}"


def _claim_block(claim: Claim, results: list[ClaimResult]) -> str:
    pct = f"{100 * CONFIDENCE:g} %"
    base = next((r.baseline_model for r in results if r.baseline_model), None)
    beyond = f"Beyond untrained `{base}` [{pct}]" if base else "Beyond untrained baseline"
    lines = [f"**{claim.id}** ({_cite(claim)}): {claim.statement}", "",
             f"| Compared | Effect [{pct} interval] (seed floor) | {beyond} (seed floor) | Verdict |",
             "|---|---|---|---|"]
    for r in results:
        n = f" ({r.effect.n} {r.effect.unit})" if r.effect else ""
        subject = f"{r.subject}: {r.measure}" if r.measure else r.subject
        lines.append(f"| {subject}{n} | {_interval(r.effect)} ({_floor(r.floor)}) | {_interval(r.baseline)} "
                     f"({_floor(r.baseline_floor)}) | **{r.verdict}**: {r.reason} |")
    return "\n".join(lines)


RULE = ("A claim **holds** or **does not hold** only when the bootstrap interval of its effect excludes 0 *and* the "
        "effect exceeds what an untrained ViT of the same architecture gives (the column *beyond untrained*: the "
        "effect minus the same effect with the untrained model in place of the trained one); otherwise it is "
        "**inconclusive**. Intervals: {pct} percentile bootstrap, {n} resamples, fixed seed.{seeds} The rule and its "
        "reasons are on the page *Claims ledger*.")

SEEDS_RULE = (" Both intervals must also lie wholly beyond their **seed floor** (±, from the untrained seeds "
              "{seeds}): the effect's is the most the same contrast reaches with untrained seeds in place of its "
              "models; the beyond-untrained contrast's is how far it moves when the baseline is swapped for another "
              "seed. A difference an untrained network shows between two of its own seeds is not evidence of training.")

NO_SEEDS_RULE = (" This profile names no untrained seeds (its `baselines` key), so the bootstrap over images or "
                 "minibatches is the only noise measure here: seed-to-seed variation is not accounted for.")


def rule_note(seeds: Iterable[str] | None) -> str:
    """The verdict rule in one paragraph, naming the untrained ``seeds`` that set the seed floors; ``[]`` says the
    profile has none (the bootstrap is the only noise measure), ``None`` leaves seeds unmentioned."""
    if seeds is None:
        seeds_text = ""
    else:
        seeds = list(seeds)
        seeds_text = SEEDS_RULE.format(seeds=", ".join(f"`{s}`" for s in seeds)) if seeds else NO_SEEDS_RULE
    return RULE.format(pct=f"{100 * CONFIDENCE:g} %", n=N_RESAMPLES, seeds=seeds_text)


def show(results: Iterable[ClaimResult]) -> Markdown:
    """The claims a page checks, as MyST Markdown: per claim its statement and citation, then a table of every
    comparison (effect with interval, the same beyond the untrained baseline, their seed floors, n, verdict and why).

    Call it as the last line of a notebook cell, e.g. ``claims.show(attention_distance.check_claims(models, run))``.
    """
    results = list(results)
    if not results:
        return Markdown("No claim of the papers is checked on this page.")
    by_claim: dict[str, list[ClaimResult]] = {}
    for r in results:
        by_claim.setdefault(r.claim, []).append(r)
    judged = [r for r in results if r.effect is not None]    # cannot-check rows carry no seeds either way
    note = rule_note(list(dict.fromkeys(s for r in judged for s in r.seeds)) if judged else None)
    blocks = [f"```{{note}}\n{note}\n```"] + [_claim_block(get_claim(c), rs) for c, rs in by_claim.items()]
    return ClaimsDisplay("\n\n".join(blocks) + "\n", results)


#: The MIME type under which a page's output carries its judged claims, for the Claims ledger to collect.
CLAIMS_MIME = "application/vnd.vitscope.claims+json"


class ClaimsDisplay:
    """What :func:`show` returns: Markdown for the page, plus the results themselves as JSON in the same output,
    so the Claims ledger collects every page's verdicts from the executed notebooks instead of recomputing them."""

    def __init__(self, markdown: str, results: list[ClaimResult]):
        self.markdown, self.results = markdown, results

    def _repr_mimebundle_(self, include=None, exclude=None):
        return {"text/markdown": self.markdown, CLAIMS_MIME: [to_json(r) for r in self.results]}

    @property
    def data(self) -> str:     # the Markdown text, as IPython's Markdown objects expose it
        return self.markdown


def to_json(result: ClaimResult) -> dict:
    """A JSON-serialisable dict of ``result`` (intervals as dicts); :func:`from_json` inverts it."""
    return dataclasses.asdict(result)


def from_json(data: dict) -> ClaimResult:
    fields = dict(data)
    for name in ("effect", "baseline"):
        if fields.get(name) is not None:
            fields[name] = Interval(**fields[name])
    fields["seeds"] = tuple(fields.get("seeds", ()))
    return ClaimResult(**fields)


def collect(notebooks: Iterable) -> list[ClaimResult]:
    """Every claim result the executed ``notebooks`` (paths) displayed through :func:`show`, in order, each
    (claim, subject) once."""
    import json
    from pathlib import Path

    seen, out = set(), []
    for path in notebooks:
        nb = json.loads(Path(path).read_text())
        for cell in nb.get("cells", []):
            for output in cell.get("outputs", []):
                for data in output.get("data", {}).get(CLAIMS_MIME, []):
                    result = from_json(data)
                    if (result.claim, result.subject) not in seen:
                        seen.add((result.claim, result.subject))
                        out.append(result)
    return out


def _resolve(dotted: str):
    module, name = dotted.rsplit(".", 1)
    return getattr(importlib.import_module(module), name)


def run_checks(profile, *, device=None, store=None) -> list[ClaimResult]:
    """Run every distinct check of the catalogue on ``profile`` (each reuses the feature cache)."""
    results = []
    for dotted in dict.fromkeys(c.check for c in CLAIMS.values() if c.check):
        results += _resolve(dotted)(None, profile, device=device, store=store)
    return results


def ledger(results: Iterable[ClaimResult] = ()) -> pd.DataFrame:
    """Every catalogued claim with its page and its headline verdict on the profile the ``results`` came from.

    Columns ``paper, section, figure, id, statement, page, verdict``. The headline is the claim's first result
    (the group comparison; per-model rows follow it on the claim's page). A claim with no check reads
    "no check yet", with no page "no page yet".
    """
    first: dict[str, ClaimResult] = {}
    for r in results:
        first.setdefault(r.claim, r)
    rows = []
    for c in CLAIMS.values():
        verdict = first[c.id].verdict if c.id in first else ("not run" if c.check else "no check yet")
        rows.append({"paper": c.paper, "section": c.section, "figure": c.figure, "id": c.id,
                     "statement": c.statement, "page": c.page or "no page yet", "verdict": verdict})
    return pd.DataFrame(rows)


def coverage(table: pd.DataFrame) -> pd.DataFrame:
    """Counts per paper from a :func:`ledger` table: claims, with a page, with a check, and per verdict."""
    out = table.assign(with_page=table.page != "no page yet",
                       with_check=~table.verdict.isin(["no check yet"]))
    counts = out.groupby("paper").agg(claims=("id", "size"), with_page=("with_page", "sum"),
                                      with_check=("with_check", "sum"))
    verdicts = pd.crosstab(out.paper, out.verdict)
    return counts.join(verdicts).fillna(0).astype(int).rename(index=PAPERS)



def book_results(profile_name: str, root=None) -> list[ClaimResult]:
    """The claims judged by the executed pages of the book (``book/generated``) for ``profile_name``, read from
    their outputs (see :class:`ClaimsDisplay`); empty when the book has not been executed for that profile."""
    import json

    from ..paths import project_root

    folder = (root or project_root()) / "book" / "generated"
    pages = []
    for path in sorted(folder.rglob("*.ipynb")) if folder.is_dir() else []:
        params = json.loads(path.read_text()).get("metadata", {}).get("papermill", {}).get("parameters", {})
        if params.get("profile") == profile_name and not path.stem.startswith("about_"):
            pages.append(path)
    # A claim's results from its own catalogue page come first, so its headline row (e.g. Table 1's count over
    # tasks) is the one the ledger reads, not a per-model row another page displayed for the same claim.
    home = {c.id: c.page for c in CLAIMS.values()}
    per_page = [(path, collect([path])) for path in pages]
    at_home = [(path.stem, path.parent.name) for path, _ in per_page]
    ordered = [r for (_, rs), names in zip(per_page, at_home) for r in rs if home.get(r.claim) in names]
    ordered += [r for (_, rs), names in zip(per_page, at_home) for r in rs if home.get(r.claim) not in names]
    seen: set = set()
    return [r for r in ordered if not ((r.claim, r.subject) in seen or seen.add((r.claim, r.subject)))]

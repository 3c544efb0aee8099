"""What every executed page says about where its numbers come from."""
from __future__ import annotations

from IPython.display import Markdown

from .. import models
from ..profiles import Profile


def page_notice(profile: Profile, model_names: list[str]) -> Markdown:
    """A MyST admonition stating the profile, the data and (loudly) any randomly initialised weights.

    Rendered by MyST-NB from the cell's ``text/markdown`` output, so it is produced by running code and
    follows whatever models the page was executed for.
    """
    cfgs = [models.get_cfg(m) for m in model_names]
    random = [c.name for c in cfgs if c.source == "random"]
    datasets = ", ".join(f"{k} ({'synthetic twin' if profile.is_synthetic(k) else 'real data'})"
                         for k in profile.raw.get("datasets", {}))
    lines = [f"Profile **{profile.name}**: {profile.raw.get('title', '')}. Data: {datasets}. "
             f"Models: {', '.join(f'`{c.name}` ({c.display})' for c in cfgs)}."]
    kind = "note"
    if random:
        kind = "warning"
        lines.append(f"The weights of {', '.join(f'`{r}`' for r in random)} are **random** (untrained, seeded "
                     "initialisation): these numbers show the pipeline at work, not what training teaches. "
                     "Compare with the paper only after running the `paper` profile on real checkpoints.")
    if any(profile.is_synthetic(k) for k in profile.raw.get("datasets", {})):
        lines.append("This is a miniature, offline replication: small ViTs on synthetic scenes written in the real "
                     "benchmark formats, not the papers' ViT-B/16 on ImageNet.")
    body = "\n\n".join(lines)
    return Markdown(f"```{{{kind}}}\n{body}\n```\n")

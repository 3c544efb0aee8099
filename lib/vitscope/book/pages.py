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
    named = ", ".join(f"`{r}`" for r in random)
    if random and len(random) == len(cfgs):
        kind = "warning"
        lines.append(f"The weights of {named} are **random** (untrained, seeded initialisation): these numbers "
                     "show the pipeline at work, not what training teaches. Compare with the paper only after "
                     "running the `paper` profile on real checkpoints.")
    elif random:
        lines.append(f"{named}: the random-init baseline (untrained, seeded), shown for reference: what the "
                     "architecture reports before any training.")
    if any(c.source == "package" for c in cfgs):
        from ..zoo.cards import LEARNED_MARGIN, not_learned
        lines.append("The `zoo-*` models are vitscope's mini-zoo, trained offline on synthetic scenes; their model "
                     "cards are on the page *The mini-zoo*.")
        weak = not_learned([c.name for c in cfgs])
        if weak:
            kind = "warning"
            lines.append(f"Not learned yet: {', '.join(f'`{w}`' for w in weak)}. Held-out k-NN accuracy less than "
                         f"{100 * LEARNED_MARGIN:.0f} points above the model's own random initialisation (see the "
                         "model cards): within the CPU training budget this objective has not learned much, so "
                         "read these numbers as close to an untrained network's.")
    if any(profile.is_synthetic(k) for k in profile.raw.get("datasets", {})):
        lines.append("This is a miniature, offline replication: small ViTs on synthetic scenes written in the real "
                     "benchmark formats, not the papers' ViT-B/16 on ImageNet.")
    body = "\n\n".join(lines)
    return Markdown(f"```{{{kind}}}\n{body}\n```\n")

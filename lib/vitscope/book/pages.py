"""What every executed page says about where its numbers come from, and what its models' cards disclose."""
from __future__ import annotations

from IPython.display import Markdown

from .. import models
from ..profiles import Profile


def _card_notices(names: list[str]) -> tuple[list[str], bool]:
    """Sentences flagging zoo models whose card shows a loss at the objective's trivial level, no learning (k-NN
    gain under ``LEARNED_MARGIN``) or little learning (under ``WEAK_GAIN``); and whether any is a warning."""
    from ..zoo.cards import LEARNED_MARGIN, WEAK_GAIN, card_flags

    flags = card_flags(names)
    lines, warn = [], False
    weak = [n for n, f in flags.items() if f["not_learned"]]
    if weak:
        warn = True
        lines.append(f"Not learned yet: {', '.join(f'`{w}`' for w in weak)}. Held-out k-NN accuracy less than "
                     f"{100 * LEARNED_MARGIN:.0f} points above the model's own random initialisation (see the "
                     "model cards): within the CPU training budget this objective has not learned much, so "
                     "read these numbers as close to an untrained network's.")
    little = [n for n, f in flags.items() if f["learned_little"]]
    if little:
        gains = ", ".join(f"`{n}` {100 * flags[n]['knn_gain']:+.1f}" for n in little)
        lines.append(f"Learned little: held-out k-NN gain over the model's own random initialisation under "
                     f"{100 * WEAK_GAIN:.0f} points ({gains} points). Differences between these models and the "
                     "untrained baseline can be small: compare them with that baseline, not only with each other.")
    trivial = [n for n, f in flags.items() if f["at_trivial_loss"]]
    if trivial:
        warn = True
        detail = ", ".join(f"`{n}` final loss {flags[n]['final_loss']:.3f}, trivial level "
                           f"{flags[n]['trivial_loss']:.3f} ({flags[n]['trivial_formula']})" for n in trivial)
        lines.append(f"Loss at its trivial level: {detail}. The objective's own loss ended where a network with a "
                     "constant output starts, so the objective itself was barely optimised; whatever the model "
                     "learned came from elsewhere (see its model card). Do not read it as a trained example of its "
                     "objective.")
    return lines, warn


def page_notice(profile: Profile, model_names: list[str]) -> Markdown:
    """A MyST admonition stating the profile, the data, (loudly) any randomly initialised weights, and what the
    zoo models' cards disclose (trivial loss, no or little learning).

    Rendered by MyST-NB from the cell's ``text/markdown`` output, so it is produced by running code and
    follows whatever models the page was executed for.
    """
    cfgs = [models.get_cfg(m) for m in model_names]
    random = [c.name for c in cfgs if c.is_untrained]
    datasets = ", ".join(f"{k} ({'synthetic twin' if profile.is_synthetic(k) else 'real data'})"
                         for k in profile.dataset_names)
    lines = [(f"Profile **{profile.name}**: {profile.raw.get('title', '')}. Data: {datasets}. "
              f"Models: {', '.join(f'`{c.name}` ({c.display})' for c in cfgs)}.")]
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
    if any(c.is_shipped for c in cfgs):
        lines.append("The `zoo-*` models are vitscope's mini-zoo, trained offline on synthetic scenes; their model "
                     "cards are on the page *The mini-zoo*.")
        card_lines, warn = _card_notices([c.name for c in cfgs])
        lines += card_lines
        kind = "warning" if warn else kind
    if any(profile.is_synthetic(k) for k in profile.dataset_names):
        lines.append("This is a miniature, offline replication: small ViTs on synthetic scenes written in the real "
                     "benchmark formats, not the papers' ViT-B/16 on ImageNet.")
    body = "\n\n".join(lines)
    return Markdown(f"```{{{kind}}}\n{body}\n```\n")

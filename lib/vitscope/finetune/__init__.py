"""Supervised fine-tuning of registry backbones (Objectives Matter §2.3, App. B.5) and the ``+ft`` model names.

``finetune(model, profile=...)`` trains (or finds) the run of ``model`` under its default recipe
(:mod:`.recipes`: OM Table 5 for the papers' checkpoints, a short recipe for the demo's mini-zoo); :mod:`.train`
holds the loop. The registry (:func:`vitscope.models.get_cfg`) resolves two suffixes through :func:`resolve`:

* ``<base>+ft``: the backbone after the last epoch of the finished default-recipe run of ``<base>``;
* ``<base>+ft@<e>``: the backbone after epoch ``e`` of that run (``e`` = 1 ... epochs).

The base entry's row stays the only description of the architecture: a fine-tuned entry copies it and points its
weights at the run's file. A name whose run is absent raises :class:`FinetuneMissingError` naming the command that
makes it. Detection (OM App. C) loads a fine-tuned backbone the same way: ``load_model("zoo-mae+ft")``.
"""
from __future__ import annotations

import hashlib
import json
import re
import shutil
from dataclasses import dataclass
from pathlib import Path

from ..models.registry import ModelCfg
from ..paths import cache_root
from .recipes import DEMO, PAPER, QUICK, RECIPES, Recipe, default_recipe, get_recipe

SUFFIX = "+ft"
_NAME = re.compile(r"^(?P<base>.+?)\+ft(?:@(?P<epoch>\d+))?$")


class FinetuneMissingError(FileNotFoundError):
    """A ``+ft`` model whose fine-tuning run has not been made (or not finished) yet."""


def parse(name: str) -> tuple[str, int | None] | None:
    """``"zoo-mae+ft@3"`` -> ``("zoo-mae", 3)``; ``"zoo-mae+ft"`` -> ``("zoo-mae", None)``; other names -> None."""
    m = _NAME.match(name) if isinstance(name, str) else None
    return (m["base"], int(m["epoch"]) if m["epoch"] else None) if m else None


def profile_for(recipe: Recipe) -> str:
    """The profile whose command line makes runs of ``recipe`` (for messages)."""
    return "paper" if recipe.data == "imagefolder" else "demo"


def run_dir(base: str, recipe: Recipe | None = None, *, arch_overrides: dict | None = None, weights=None) -> Path:
    """``<cache>/finetune/<base>/<recipe>-<digest>``: the digest covers the pre-trained weights' identity
    (:meth:`ModelCfg.identity`), every recipe value and the build overrides."""
    from ..models import get_cfg

    cfg = get_cfg(base)
    recipe = recipe or default_recipe(cfg)
    key = json.dumps({"identity": cfg.identity(weights), "recipe": recipe.as_dict(),
                      "arch_overrides": arch_overrides or {}}, sort_keys=True, default=str)
    return cache_root() / "finetune" / cfg.name / f"{recipe.name}-{hashlib.sha256(key.encode()).hexdigest()[:12]}"


def finetune(model: str, *, profile=None, recipe: str | Recipe | None = None, epochs: int | None = None,
             device: str | None = None, force: bool = False, progress: bool = True, arch_overrides=None,
             stop_after_epoch: int | None = None) -> dict | None:
    """Fine-tune ``model`` (a registry name) and return the run's card; a finished run is returned as is.

    ``profile`` (name or :class:`~vitscope.profiles.Profile`) gives the device (unless ``device``) and, for the
    paper recipe, the ImageNet root (its ``finetune.dataset``). ``recipe``: a name or :class:`Recipe` (default:
    the model's, :func:`.recipes.default_recipe`); ``epochs`` overrides its epochs (another run folder, which the
    ``+ft`` name does not refer to). ``force`` deletes the run folder first. ``stop_after_epoch``: return ``None``
    after that epoch's checkpoint (resume tests).
    """
    from ..models import get_cfg
    from ..profiles import Profile, load_profile
    from .train import CARD, train_run

    cfg = get_cfg(model)
    prof = profile if isinstance(profile, Profile) or profile is None else load_profile(profile)
    rec = get_recipe(recipe) if isinstance(recipe, str) else (recipe or default_recipe(cfg))
    if epochs is not None:
        rec = rec.with_epochs(epochs)
    run = run_dir(cfg.name, rec, arch_overrides=arch_overrides)
    if force and run.exists():
        shutil.rmtree(run)
    if (run / CARD).is_file():
        return json.loads((run / CARD).read_text())
    data_root = None
    if rec.data == "imagefolder":
        if prof is None or "dataset" not in prof.raw.get("finetune", {}):
            raise ValueError(f"recipe {rec.name!r} reads an ImageFolder: pass a profile whose finetune section "
                             "names its dataset (profiles/paper.yml: finetune.dataset)")
        data_root = prof.dataset_root(prof.section("finetune")["dataset"])
    dev = device or (prof.device if prof is not None else "cpu")
    return train_run(cfg.name, run, rec, device=dev, data_root=data_root, arch_overrides=arch_overrides,
                     identity=cfg.identity(), progress=progress, stop_after_epoch=stop_after_epoch)


def ensure(models, profile=None, *, progress: bool = True) -> list[str]:
    """Fine-tune each of ``models`` that has no finished default-recipe run; returns their ``+ft`` names."""
    for m in models:
        finetune(m, profile=profile, progress=progress)
    return [f"{m}{SUFFIX}" for m in models]


def card(name: str) -> dict:
    """The training card of a ``+ft`` name's run (or of a base name's default run)."""
    base = parse(name)[0] if parse(name) else name
    path = run_dir(base) / "card.json"
    if not path.is_file():
        raise _missing(base, None, path)
    return json.loads(path.read_text())


def trajectory_files(base: str) -> list[Path]:
    """The per-epoch backbone files of ``base``'s finished default-recipe run, epoch 1 ... E."""
    c = card(base)
    run = run_dir(base)
    return [run / f for f in c["weights"]]


def _missing(base: str, epoch, path: Path) -> FinetuneMissingError:
    from ..models import get_cfg

    prof = profile_for(default_recipe(get_cfg(base)))
    what = f"{base}{SUFFIX}" + (f"@{epoch}" if epoch else "")
    return FinetuneMissingError(f"model {what!r} has not been fine-tuned yet (no {path}). Make it with "
                                f"`vitscope finetune {base} --profile {prof}` (or vitscope.finetune.finetune"
                                f"({base!r}, profile={prof!r})).")


@dataclass(frozen=True)
class FinetunedCfg(ModelCfg):
    """A registry entry for a fine-tuned backbone: the base row with its weights pointed at a run's epoch file.

    The weights are a vitscope-written safetensors file in timm names (``converter="identity"``, ``source``
    "package": loaded from :meth:`packaged_path` like a shipped file); their identity is the file's sha256."""

    base: str = ""
    epoch: int = 0
    weights_file: str = ""

    @property
    def is_shipped(self) -> bool:
        return False

    def packaged_path(self) -> Path:
        return Path(self.weights_file)

    def weights_description(self) -> str:
        return f"fine-tuned by vitscope from {self.base} (epoch {self.epoch}): {self.weights_file}"

    def weights_origin(self) -> str:
        prof = profile_for(default_recipe(get_base(self.base)))
        return f"{self.weights_file} (made by `vitscope finetune {self.base} --profile {prof}`)"


def get_base(name: str) -> ModelCfg:
    from ..models.registry import MODELS, get_cfg

    return MODELS[name] if name in MODELS else get_cfg(name)


def resolve(name: str) -> FinetunedCfg:
    """The registry entry of a ``<base>+ft`` / ``<base>+ft@<e>`` name (see the module docstring)."""
    base, epoch = parse(name)
    cfg = get_base(base)
    run = run_dir(base)
    card_path = run / "card.json"
    if not card_path.is_file():
        raise _missing(base, epoch, card_path)
    epochs = json.loads(card_path.read_text())["epochs"]
    e = epochs if epoch is None else epoch
    if not 1 <= e <= epochs:
        raise ValueError(f"model {name!r}: epoch {e} is outside the run's epochs 1..{epochs}")
    path = run / f"epoch-{e:03d}.safetensors"
    if not path.is_file():
        raise _missing(base, epoch, path)
    fields = {k: getattr(cfg, k) for k in ModelCfg.__dataclass_fields__}
    fields.update(name=name, display=f"{cfg.display} (FT{'' if epoch is None else f' @{e}'})", source="package",
                  converter="identity", filename=path.name,
                  notes=f"{cfg.display} fine-tuned by vitscope ({default_recipe(cfg).name} recipe), epoch {e}")
    return FinetunedCfg(**fields, base=base, epoch=e, weights_file=str(path))


__all__ = ["DEMO", "PAPER", "QUICK", "RECIPES", "SUFFIX", "FinetuneMissingError", "FinetunedCfg", "Recipe", "card",
           "default_recipe", "ensure", "finetune", "get_recipe", "parse", "resolve", "run_dir", "trajectory_files"]

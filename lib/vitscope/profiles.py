"""Profiles (``profiles/*.yml``): which models, datasets and sizes a run uses. Data, not code paths."""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from .data import ImageFolderSubset, eval_transform, load_manifest, write_imagefolder_twin
from .hints import did_you_mean
from .paths import data_root, project_root


def profile_dir() -> Path:
    return project_root() / "profiles"


#: What a profile may say: top-level keys, each section's keys, and a dataset entry's keys. A typo is an error
#: naming the key and the closest known one, never a silently ignored setting. A new section registers here.
TOP_LEVEL_KEYS = ("name", "title", "description", "device", "datasets", "models", "baselines")
SECTION_KEYS = {
    "attention_distance": ("dataset",),
    "cls_attention": ("dataset", "n_examples"),
    "aaam": ("dataset",),
    "cka": ("dataset", "models", "batch_size", "max_examples", "tokens", "sites", "order", "mode"),
    "last_layer_cka": ("dataset", "models", "batch_size", "max_examples", "order"),
    "purity": ("dataset", "models", "k", "n_init", "max_iter", "seed", "algorithm", "noise"),
    "knn": ("dataset", "folds", "ks", "k", "temperature"),
    "invariance": ("dataset", "augmentations"),
    "agreement": ("models", "ks"),
    "probes": ("dataset", "models", "test_fraction", "optimizer", "batch_size", "lrs", "weight_decays", "epochs",
               "warmup_epochs", "depths", "best_k"),
    "cka_convergence": ("dataset", "models", "batch_sizes", "examples", "layers", "tokens", "repeats"),
    "finetune": ("models", "dataset"),
    "architecture": ("dataset", "same_objective", "different_objective", "baseline", "batch_size", "max_examples",
                     "tokens", "order", "bins", "far_distance"),
    "attention_iou": ("dataset", "n_images", "mass", "split_seed", "captum_images", "captum_steps", "captum_target"),
    "keypoints": ("dataset", "split", "pairs_per_category", "seed", "alphas", "alpha", "similarity"),
    "region_purity": ("parts_dataset", "objects_dataset", "models", "per_supercategory", "object_images", "overlap",
                      "min_fraction", "k", "noise"),
    "retrieval": ("datasets", "crop_queries", "setups"),
    "davis": ("dataset", "n_last_frames", "neighbourhood", "topk", "temperature", "blocks"),
    "detection": ("models", "modes", "train_dataset", "train_split", "val_dataset", "val_split", "recipe", "areas"),
    "table1": ("models", "retrieval_dataset", "retrieval_setup", "alpha"),
}
DATASET_KEYS = ("manifest", "root", "synthetic", "per_class", "num_classes")
#: What every dataset entry must say: every reader needs the manifest (its format and files) and the root (where).
REQUIRED_DATASET_KEYS = ("manifest", "root")


class ProfileError(ValueError):
    """A profile file that says something vitscope does not understand."""


class MissingProfileKey(ProfileError, KeyError):
    """A profile that lacks a key a page needs (a dataset entry, its root): a :class:`ProfileError`, and a
    ``KeyError`` for callers that look a name up."""

    __str__ = BaseException.__str__     # KeyError's own __str__ would print the message in quotes


def _check_keys(where: str, given, known, path) -> None:
    for key in given:
        if key not in known:
            raise ProfileError(f"Profile {path}: unknown key {key!r} in {where}. Known keys there: "
                               f"{', '.join(known)}." + did_you_mean(str(key), list(known)))


def validate(raw: dict, path) -> None:
    """Check every key of a parsed profile against :data:`TOP_LEVEL_KEYS`, :data:`SECTION_KEYS` and
    :data:`DATASET_KEYS`."""
    if not isinstance(raw, dict):
        raise ProfileError(f"Profile {path} is not a YAML mapping.")
    _check_keys("the top level", raw, (*TOP_LEVEL_KEYS, *SECTION_KEYS), path)
    if "models" not in raw:
        raise ProfileError(f"Profile {path} lists no models.")
    for section, known in SECTION_KEYS.items():
        if section in raw:
            _check_keys(f"section {section!r}", raw[section] or {}, known, path)
    for name, spec in (raw.get("datasets") or {}).items():
        _check_keys(f"dataset {name!r}", spec or {}, DATASET_KEYS, path)


@dataclass(frozen=True)
class Profile:
    name: str
    raw: dict
    #: The file the profile was read from; ``None`` for one built in code (a test's).
    path: Path | None = field(default=None, compare=False)

    @property
    def source(self) -> str:
        """The profile in an error message: its name and, if it came from a file, the file."""
        return f"Profile {self.name!r}" + (f" ({self.path})" if self.path is not None else "")

    @property
    def models(self) -> list[str]:
        return list(self.raw["models"])

    def all_models(self) -> list[str]:
        """Every model the profile names: its ``models``, its untrained ``baselines`` (the seeds of the claims'
        noise floor) and any section's own ``models`` list, in order, each once."""
        names = list(self.models)
        names += [m for m in self.raw.get("baselines", []) if m not in names]
        for value in self.raw.values():
            if isinstance(value, dict) and isinstance(value.get("models"), list):
                names += [m for m in value["models"] if m not in names]
        return names

    @property
    def device(self) -> str:
        return self.raw.get("device", "cpu")

    def section(self, key: str) -> dict:
        if key not in self.raw:
            raise KeyError(f"Profile {self.name!r} has no {key!r} section.")
        return dict(self.raw[key])

    @property
    def dataset_names(self) -> list[str]:
        """The names of the profile's ``datasets`` entries, in file order."""
        return list(self.raw.get("datasets") or {})

    def dataset_spec(self, name: str, named_by: str | None = None) -> dict:
        """A copy of the profile's ``datasets.<name>`` entry (keys :data:`DATASET_KEYS`; ``manifest`` and ``root``
        always there). Its ``manifest`` names the format (:func:`vitscope.data.manifest.load_fetch_spec`); the
        reader of that format opens it at :meth:`dataset_root`, writing the ``synthetic`` twin first if given.

        Raises :class:`MissingProfileKey` naming the profile file and the missing key; ``named_by`` (e.g.
        ``"davis.dataset"``) says which setting asked for ``name``."""
        specs = self.raw.get("datasets") or {}
        if name not in specs:
            via = f" ({named_by} names it)" if named_by else ""
            raise MissingProfileKey(f"{self.source} defines no dataset {name!r}{via}: add an entry `{name}:` with "
                                    f"{' and '.join(REQUIRED_DATASET_KEYS)} under `datasets:`, or use one of "
                                    f"{sorted(specs)}." + did_you_mean(str(name), list(specs)))
        spec = specs[name] or {}
        missing = [key for key in REQUIRED_DATASET_KEYS if key not in spec]
        if missing:
            raise MissingProfileKey(f"{self.source}: dataset {name!r} lacks the key(s) {', '.join(missing)} "
                                    f"(datasets.{name}.{missing[0]}); every dataset entry names its manifest (e.g. "
                                    "coco_val2017) and its root folder.")
        return copy.deepcopy(dict(spec))     # a page cannot change the profile behind later pages

    def dataset_root(self, dataset: str) -> Path:
        """The dataset's root folder: ``${VAR}`` expanded, ``~`` expanded, and a relative ``root`` taken relative
        to :func:`vitscope.paths.data_root`."""
        spec = self.dataset_spec(dataset)
        expanded = os.path.expandvars(str(spec["root"]))
        if "$" in expanded:
            raise EnvironmentError(f"{self.source}: dataset {dataset!r} root {spec['root']!r} names an "
                                   "unset environment variable; export it (e.g. IMAGENET_ROOT=/data/imagenet).")
        root = Path(expanded).expanduser()
        return root if root.is_absolute() else data_root() / root

    def is_synthetic(self, dataset: str) -> bool:
        return "synthetic" in self.dataset_spec(dataset)

    def dataset(self, dataset: str, preprocess):
        """The profile's subset of ``dataset`` with a model's eval transform (writes a synthetic twin if due)."""
        spec = self.dataset_spec(dataset)
        manifest = load_manifest(spec["manifest"])
        root = self.dataset_root(dataset)
        if "synthetic" in spec:
            syn = spec["synthetic"]
            write_imagefolder_twin(root, manifest.wnids, spec.get("per_class", manifest.per_class),
                                   split=manifest.split, size=syn.get("size", 96), seed=syn.get("seed", 0),
                                   progress=False)   # a page shows no progress bar on stderr
        return ImageFolderSubset(root, manifest, transform=eval_transform(preprocess),
                                 per_class=spec.get("per_class"), num_classes=spec.get("num_classes"))


def available_profiles() -> list[str]:
    return sorted(p.stem for p in profile_dir().glob("*.yml"))


def load_profile(name_or_path) -> Profile:
    """Load ``profiles/<name>.yml`` (or a path to a profile file)."""
    path = Path(name_or_path)
    if path.suffix not in (".yml", ".yaml"):
        path = profile_dir() / f"{name_or_path}.yml"
    if not path.is_file():
        known = available_profiles()
        raise FileNotFoundError(f"No profile {str(name_or_path)!r} ({path}). Known: {', '.join(known)}."
                                + did_you_mean(name_or_path, known))
    raw = yaml.safe_load(path.read_text())
    validate(raw, path)
    return Profile(name=raw.get("name", path.stem), raw=raw, path=path)

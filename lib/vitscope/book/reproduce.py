"""The "Reproduce this page" box: the exact papermill command behind a page, and how its profile departs from the
paper's protocol.

:func:`reproduce_markdown` is a pure function of (notebook, papermill parameters, profile name): ``build.py``
calls it after papermill and injects the block into the executed page. Everything it prints is computed from the
parameters, ``profiles/*.yml`` (:func:`vitscope.profiles.load_profile`), the data manifests and the model registry;
nothing is typed here except which profile sections a notebook reads (:data:`NOTEBOOK_SECTIONS`).

papermill's command line (papermill 2.x, ``papermill.cli``) has three ways to pass a value:

* ``-p name value``: the value is parsed: ``True``/``False``/``None``, an int, a float, otherwise a string;
* ``-r name value``: the value is kept as a raw string (needed for a string such as ``"8"`` or ``"nan"``);
* ``-y "name: value"``: YAML, the only way to pass a list or a dict.

:func:`papermill_command` picks, per value, the form that gives the notebook back exactly that value.
"""
from __future__ import annotations

import re
import shlex
from functools import cache

import yaml

from ..data import load_manifest
from ..data.manifest import load_fetch_spec
from ..models import get_cfg
from ..profiles import Profile, load_profile

#: The profile that states the papers' protocol; every other profile is compared with it.
PAPER_PROFILE = "paper"

#: Which sections of a profile each notebook reads (besides ``models``, ``device`` and the datasets those sections
#: name). A notebook missing here is an error: add it when you add the notebook.
NOTEBOOK_SECTIONS: dict[str, tuple[str, ...]] = {
    "tm_4_1_cls_attention": ("cls_attention",),
    "tm_4_1_overview": ("cls_attention",),
    "tm_4_2_aaam": ("aaam",),
    "tm_4_2_overview": ("aaam",),
    "tm_4_3_attention_distance": ("attention_distance",),
    "tm_4_3_overview": ("attention_distance",),
    "tm_5_1_last_layer_cka": ("last_layer_cka",),
    "tm_5_2_purity": ("purity",),
    "tm_5_2_overview": ("purity",),
    "tm_6_1_knn": ("knn",),
    "tm_6_1_overview": ("knn",),
    "om_2_1_cka": ("cka",),
    "om_2_1_architecture": ("architecture",),
    "om_2_2_probes": ("probes",),
    "om_2_3_finetuned_cka": ("finetune", "cka"),
    "om_2_3_dynamics": ("finetune", "probes", "invariance"),
    "om_2_2_knn": ("knn",),
    "om_2_2_invariance": ("invariance",),
    "om_app_b1_cka_convergence": ("cka_convergence",),
    "om_app_f_agreement": ("agreement",),
    "om_app_c_detection": ("detection",),
    "tm_4_4_attention_iou": ("attention_iou",),
    "tm_4_4_overview": ("attention_iou",),
    "tm_5_3_region_purity": ("region_purity", "purity"),
    "tm_5_3_overview": ("region_purity", "purity"),
    "tm_6_1_retrieval": ("retrieval",),
    "tm_6_1_retrieval_overview": ("retrieval",),
    "tm_6_2_keypoints": ("keypoints",),
    "tm_6_2_keypoints_overview": ("keypoints",),
    "tm_6_2_davis": ("davis",),
    "tm_6_3_table1": ("table1", "knn", "retrieval", "keypoints", "davis"),
    "tm_6_2_davis_overview": ("davis",),
    # the ledger re-checks the claims of every section
    "about_claims": ("cls_attention", "aaam", "attention_distance", "attention_iou", "last_layer_cka", "purity",
                     "region_purity", "knn", "retrieval", "davis", "keypoints", "table1", "cka", "architecture",
                     "detection", "invariance", "agreement", "probes"),
    "about_reliability": (),
    "about_performance": (),
    "about_zoo": (),
    "about_models": (),
    "about_environment": (),
}

#: Notebook parameters that name one model, or a list of models (compared with the paper profile's by family).
MODEL_PARAMS = ("model",)
MODEL_LIST_PARAMS = ("models",)


# --------------------------------------------------------------------------------------------- the command line

def _p_value(value) -> str | None:
    """The text that ``-p name <text>`` turns back into exactly ``value``, or None if ``-p`` cannot carry it."""
    if value is None or isinstance(value, bool):
        return str(value)
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return repr(value)          # repr round-trips through float(), nan and inf included
    if isinstance(value, str):
        return value if _parsed_as_string(value) else None
    return None


def _parsed_as_string(text: str) -> bool:
    """True if papermill's ``-p`` keeps ``text`` a string (it tries True/False/None, int, then float first)."""
    if text in ("True", "False", "None"):
        return False
    for cast in (int, float):
        try:
            cast(text)
            return False
        except ValueError:
            pass
    return True


def papermill_args(params: dict) -> list[str]:
    """papermill's parameter options for ``params``, in their order: ``-p`` where it parses back to the same value,
    ``-r`` for strings ``-p`` would turn into numbers, ``-y`` (YAML, flow style) for lists, dicts and the rest."""
    args: list[str] = []
    for name, value in params.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ValueError(f"papermill parameter name {name!r} is not a Python identifier; rename it in the "
                             "notebook's parameters cell.")
        text = _p_value(value)
        if text is not None:
            args += ["-p", name, text]
        elif isinstance(value, str):
            args += ["-r", name, value]
        else:
            doc = yaml.safe_dump({name: value}, default_flow_style=True, width=10_000).strip()
            if yaml.safe_load(doc) != {name: value}:
                raise ValueError(f"papermill parameter {name}={value!r} does not survive YAML; pass it in a "
                                 "parameters file (papermill -f) instead.")
            args += ["-y", doc]
    return args


def papermill_command(notebook: str, params: dict, output: str = "out.ipynb", multiline: bool = False) -> str:
    """``papermill notebooks/<notebook>.ipynb <output> -p ...``: a shell command, run from the repository root.

    ``multiline``: the output path and each parameter on a line of its own, joined by the shell's ``\\`` line
    continuation, so that the command fits a narrow column without a scrollbar and still pastes into a shell.
    """
    args = papermill_args(params)
    starts = _option_starts(args)
    options = [args[i:j] for i, j in zip(starts, [*starts[1:], len(args)])]
    lines = [" ".join(shlex.quote(w) for w in words)
             for words in (["papermill", f"notebooks/{notebook}.ipynb"], [output], *options)]
    return " \\\n    ".join(lines) if multiline else " ".join(lines)


def _option_starts(args: list[str]) -> list[int]:
    """Where each option of :func:`papermill_args`' output starts (``-p``/``-r`` take two words, ``-y`` one)."""
    starts, i = [], 0
    while i < len(args):
        starts.append(i)
        i += 2 if args[i] == "-y" else 3
    return starts


# ------------------------------------------------------------------------------------------ what the run uses

@cache
def architecture(model: str) -> str:
    """A model's backbone as a reader compares it: input size, patch, depth, width, heads and parameter count.

    Built on PyTorch's ``meta`` device (shapes only, no memory, nothing downloaded), so the numbers are the
    network's own rather than its timm name's: the zoo's ``vit_tiny_patch16_224`` runs at 64 px with 8 px patches.
    """
    import torch

    from ..models import create_model

    cfg = get_cfg(model)
    with torch.device("meta"):
        net = create_model(cfg)
    n_params = sum(p.numel() for p in net.parameters())
    blocks, embed = getattr(net, "blocks", None), getattr(net, "embed_dim", None)
    patch = getattr(getattr(net, "patch_embed", None), "patch_size", None)
    if blocks is None or patch is None:       # not a ViT (ResNet, ConvNeXt): the arch name and the size say enough
        return f"{cfg.arch}, {cfg.preprocess.crop} px input, {n_params / 1e6:.1f} M parameters"
    heads = getattr(blocks[0].attn, "num_heads", "?")
    return (f"ViT, {cfg.preprocess.crop} px input, {patch[0]} px patches, {len(blocks)} blocks, width {embed}, "
            f"{heads} heads, {n_params / 1e6:.1f} M parameters")


def paper_counterparts(model: str, paper: Profile) -> list[str]:
    """The paper profile's models of ``model``'s family (zoo-dino -> dino); none for the random baseline."""
    family = get_cfg(model).family
    return [m for m in paper.models if get_cfg(m).family == family and m != model]


def _models_of(notebook: str, params: dict, profile: Profile) -> list[str]:
    """The models a run of ``notebook`` uses: its model parameter(s), else the list of the one section it reads,
    else the profile's (a page over several sections, such as the claims ledger, uses them all)."""
    for key in MODEL_PARAMS:
        if params.get(key):
            return [params[key]]
    for key in MODEL_LIST_PARAMS:
        if params.get(key):
            return list(params[key])
    sections = NOTEBOOK_SECTIONS[notebook]
    if len(sections) == 1 and "models" in profile.raw.get(sections[0], {}):
        return list(profile.raw[sections[0]]["models"])
    return profile.models


def _dataset(profile: Profile, key: str) -> str:
    """``imagenet50: synthetic twin, 50 classes x 10 = 500 images`` (or the real folder); datasets in other formats
    (COCO json, revisitop, SPair, DAVIS, PartImageNet) are described by their manifest's title and format."""
    spec = profile.raw.get("datasets", {}).get(key)
    if spec is None:
        return "not defined"
    kind = ("synthetic twin" + (f" ({', '.join(f'{k} {v}' for k, v in spec['synthetic'].items())})"
                                if isinstance(spec["synthetic"], dict) else "")
            if "synthetic" in spec else f"real images at `{spec['root']}`")
    fetch = load_fetch_spec(spec["manifest"])
    if fetch.format != "imagefolder":
        return f"{kind}, {fetch.title} ({fetch.format} format)"
    manifest = load_manifest(spec["manifest"])
    per_class = spec.get("per_class", manifest.per_class)
    n_classes = spec.get("num_classes") or len(manifest.wnids)
    return f"{kind}, {n_classes} classes x {per_class} = {n_classes * per_class} images"


#: Section keys that name one dataset of the profile (``datasets``: a list of them, or of benchmark names).
DATASET_KEYS = ("dataset", "datasets", "parts_dataset", "objects_dataset")


def settings_rows(notebook: str, params: dict, profile: Profile, paper: Profile) -> list[tuple[str, str, str]]:
    """(setting, this profile, paper profile) for everything the run of ``notebook`` reads."""
    if notebook not in NOTEBOOK_SECTIONS:
        raise KeyError(f"vitscope.book.reproduce.NOTEBOOK_SECTIONS has no entry for notebook {notebook!r}: add "
                       f"which profile sections it reads (known: {', '.join(NOTEBOOK_SECTIONS)}).")
    rows: list[tuple[str, str, str]] = [("device", str(profile.device), str(paper.device))]
    models = _models_of(notebook, params, profile)
    named = any(params.get(k) for k in (*MODEL_PARAMS, *MODEL_LIST_PARAMS))
    paper_models = ([c for m in models for c in paper_counterparts(m, paper)] if named
                    else _models_of(notebook, {}, paper))
    rows.append(("models", _names(models), _names(paper_models) or "no counterpart"))
    for arch in dict.fromkeys(architecture(m) for m in models):
        users = [m for m in models if architecture(m) == arch]
        theirs = dict.fromkeys(architecture(c) for m in users for c in paper_counterparts(m, paper))
        rows.append((f"architecture of {_names(users)}", arch, "; ".join(theirs) or "no counterpart"))
    datasets: list[str] = []
    for section in NOTEBOOK_SECTIONS[notebook]:
        mine, theirs = profile.raw.get(section, {}), paper.raw.get(section, {})
        for key in dict.fromkeys([*mine, *theirs]):
            if key == "models":
                continue          # already compared above, by family
            if key in DATASET_KEYS:
                named = [v for value in (mine.get(key), theirs.get(key))
                         for v in (value if isinstance(value, list) else [value])]
                datasets += [v for v in dict.fromkeys(named) if isinstance(v, str) and v not in datasets]
            rows.append((f"{section}.{key}", _value(mine.get(key)), _value(theirs.get(key))))
    for key in datasets:
        rows.append((f"data: {key}", _dataset(profile, key), _dataset(paper, key)))
    return rows


def _names(models) -> str:
    return ", ".join(f"`{m}`" for m in models)


def _value(value) -> str:
    if value is None:
        return "not set"
    if isinstance(value, (list, tuple)):
        return ", ".join(str(v) for v in value)
    return str(value)


# ------------------------------------------------------------------------------------------------- the box

def reproduce_markdown(notebook: str, params: dict, profile_name: str) -> str:
    """A MyST block "Reproduce this page" for the page papermill made from ``notebooks/<notebook>.ipynb`` with
    ``params``: the command, the same command on the paper's protocol, and the profile's settings for this notebook
    beside the paper profile's, differences in bold. Pure: same arguments, same text."""
    profile, paper = load_profile(profile_name), load_profile(PAPER_PROFILE)
    rows = settings_rows(notebook, params, profile, paper)
    lines = ["::::{admonition} Reproduce this page", ":class: tip reproduce", "",
             ("From the root of a clone of the repository, with vitscope installed "
              "(see {doc}`/book/about/reproducing`):"),
             "", "```bash", papermill_command(notebook, params, multiline=True), "```", ""]
    paper_params = _paper_params(notebook, params, profile, paper)
    if profile.name != paper.name and paper_params is not None:
        lines += [f"The same page on the papers' protocol (profile `{paper.name}`: {paper.raw.get('title', '')}):",
                  "", "```bash", papermill_command(notebook, paper_params, multiline=True), "```", ""]
    differ = sum(mine != theirs for _, mine, theirs in rows)
    lines += [(f"What this run reads from profile `{profile.name}`, beside profile `{paper.name}` "
               f"({differ} of {len(rows)} settings differ, in bold):"), "",
              f"| setting | `{profile.name}` | `{paper.name}` |", "|---|---|---|"]
    for setting, mine, theirs in rows:
        mine, theirs = _cell(mine), _cell(theirs)
        if mine != theirs:
            mine, theirs = f"**{mine}**", f"**{theirs}**"
        # a zero-width space after each dot lets a long key (region_purity.objects_dataset) wrap in a narrow column
        lines.append(f"| {_cell(setting).replace('.', '.' + chr(0x200B))} | {mine} | {theirs} |")
    lines += ["", "::::", ""]
    return "\n".join(lines)


def _paper_params(notebook: str, params: dict, profile: Profile, paper: Profile) -> dict | None:
    """``params`` moved to the paper profile: its name, and each model replaced by its paper counterpart (None when
    a model has none, e.g. the random baseline, or several)."""
    moved = dict(params)
    if "profile" in moved:
        moved["profile"] = paper.name
    for key in MODEL_PARAMS:
        if params.get(key):
            counterparts = paper_counterparts(params[key], paper)
            if len(counterparts) != 1:
                return None
            moved[key] = counterparts[0]
    for key in MODEL_LIST_PARAMS:
        if params.get(key):
            lists = [paper_counterparts(m, paper) for m in params[key]]
            if any(len(c) != 1 for c in lists):
                return None
            moved[key] = [c[0] for c in lists]
    return moved


def _cell(text: str) -> str:
    """A pipe-table cell: no pipes, no newlines."""
    return re.sub(r"\s+", " ", str(text)).replace("|", "\\|")

"""The model registry: paper name -> timm architecture + weights source + converter + preprocessing.

``MODELS`` is a table in the style of timm's ``default_cfgs``: one entry per model of *Teaching Matters* (TM),
*Objectives Matter* (OM) and the offline demo. Each entry states where its weights come from:

* ``source="timm"``: a timm hub tag (``f"{arch}.{timm_tag}"``), fetched by timm;
* ``source="url"``: an official release file, converted to timm names by ``converters.CONVERTERS[converter]``;
* ``source="package"``: a safetensors file shipped inside vitscope (``vitscope/zoo/weights/<filename>``), the
  mini-zoo trained by ``vitscope zoo train``;
* ``source="random"``: deterministic random init from ``seed`` (the untrained baseline).

Fine-tuned models are names, not rows: ``<base>+ft`` (and ``<base>+ft@<epoch>``) is ``<base>``'s row with its weights
pointed at a run of ``vitscope finetune <base>``; :func:`get_cfg` hands such names to :func:`vitscope.finetune.resolve`.

Each entry's tags, strip rules and build kwargs come from timm's ``default_cfgs`` and the official repositories;
its ``notes`` names the trap they avoid.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..hints import did_you_mean

#: Where ``source="package"`` weights live: the mini-zoo shipped inside the package.
PACKAGED_WEIGHTS = Path(__file__).resolve().parents[1] / "zoo" / "weights"


def file_digest(path, chunk: int = 1 << 20) -> str:
    """sha256 hex digest of a file, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()

# Normalisation constants (same values as timm.data.constants; written out so the table reads on its own).
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)
HALF = (0.5, 0.5, 0.5)  # "inception" normalisation: augreg ViTs, BEiT pt22k, our demo models
OPENAI_CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
OPENAI_CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

FAMILIES = ("supervised", "image-text", "self-distillation", "contrastive", "masked-reconstruction",
            "masked-token-prediction", "random")
PAPERS = ("TM", "OM", "demo")
SOURCES = ("timm", "url", "package", "random")


class UnknownModelError(KeyError):
    """A model name that is not in ``MODELS``; the message lists the known names and the closest match."""

    def __str__(self) -> str:  # KeyError would print the repr (quoted, escaped newlines)
        return str(self.args[0]) if self.args else ""


class FrozenDict(dict):
    """A read-only, hashable dict, so a frozen ``ModelCfg`` can hold build kwargs and still be hashed.

    It stays a real ``dict`` (``dict(cfg.arch_kwargs)``, ``**cfg.arch_kwargs``, json and
    ``dataclasses.asdict`` all work); values must be hashable (numbers, strings, tuples).
    """

    def _readonly(self, *args, **kwargs):
        raise TypeError("registry arch_kwargs are read-only; pass overrides to create_model/load_model instead")

    __setitem__ = __delitem__ = clear = pop = popitem = setdefault = update = _readonly
    __ior__ = _readonly

    def __hash__(self) -> int:
        return hash(tuple(sorted(self.items())))

    def __reduce__(self):  # pickle / deepcopy rebuild from a plain dict instead of item-by-item assignment
        return (FrozenDict, (dict(self),))


@dataclass(frozen=True)
class Preprocess:
    """What the model expects at its input: Resize(short side ``resize``) + CenterCrop(``crop``), then
    ``(x - mean) / std`` on [0, 1] RGB."""

    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    resize: int = 224
    crop: int = 224
    interpolation: str = "bicubic"


@dataclass(frozen=True)
class ModelCfg:
    """One registry entry. ``arch_kwargs`` go to ``timm.create_model`` (caller overrides win)."""

    name: str
    display: str
    family: str
    papers: tuple[str, ...]
    arch: str
    arch_kwargs: FrozenDict = field(default_factory=FrozenDict)
    source: str = "timm"
    timm_tag: str | None = None
    url: str | None = None
    filename: str | None = None
    converter: str = "identity"
    preprocess: Preprocess = Preprocess(IMAGENET_MEAN, IMAGENET_STD)
    license: str = "see release"
    notes: str = ""
    seed: int = 0

    def __post_init__(self):
        if not isinstance(self.arch_kwargs, FrozenDict):
            object.__setattr__(self, "arch_kwargs", FrozenDict(self.arch_kwargs))

    @property
    def timm_name(self) -> str:
        """``arch.tag`` for timm-hub models (what ``timm.create_model`` is given), else the bare arch."""
        return f"{self.arch}.{self.timm_tag}" if self.timm_tag else self.arch

    # The methods below are the only places that branch on ``source`` (as timm decides a pretrained source once,
    # in ``_resolve_pretrained_source``); callers ask them instead of testing ``source`` themselves.

    @property
    def is_untrained(self) -> bool:
        """True for the seeded random-init baselines (no weights file anywhere)."""
        return self.source == "random"

    @property
    def is_shipped(self) -> bool:
        """True for weights shipped inside vitscope (the mini-zoo)."""
        return self.source == "package"

    def packaged_path(self) -> Path:
        """The shipped weights file of a ``source="package"`` entry (``vitscope/zoo/weights/<filename>``)."""
        if not self.is_shipped:
            raise ValueError(f"model {self.name!r} has source {self.source!r}; only 'package' models ship weights")
        return PACKAGED_WEIGHTS / self.filename

    def weights_identity(self, weights=None) -> str:
        """What identifies the weights in a cache key: the sha256 of a file (``weights`` or the shipped file),
        the seed of a random init, the timm tag, or the release URL (files downloaded from a pinned URL/tag)."""
        if weights is not None:
            return "sha256:" + file_digest(Path(weights))
        # A shipped file not trained yet (the zoo CNNs until the lead trains them) is "absent", not an error: a page
        # fingerprint may name the model before its file exists; loading it still fails loudly.
        return {"package": lambda: ("sha256:" + file_digest(self.packaged_path()) if self.packaged_path().is_file()
                                    else f"absent:{self.filename}"),
                "random": lambda: f"random:seed={self.seed}",
                "timm": lambda: f"timm:{self.arch}.{self.timm_tag}",
                "url": lambda: f"url:{self.url}"}[self.source]()

    def identity(self, weights=None) -> dict:
        """Everything about this model that changes its features, for cache keys (``weights``: a local file that
        replaces the entry's own weights)."""
        return {"name": self.name, "arch": self.arch, "arch_kwargs": dict(self.arch_kwargs),
                "converter": self.converter, "weights": self.weights_identity(weights),
                "preprocess": asdict(self.preprocess)}

    def architecture_description(self) -> str:
        """The timm architecture and the build arguments that change its geometry (a ``vit_tiny_patch16_224``
        built at 64 px with 8 px patches must not read as the 224 px, patch-16 model)."""
        geometry = [f"{k}={self.arch_kwargs[k]}" for k in ("img_size", "patch_size", "embed_dim", "depth", "num_heads",
                                                            "channels") if k in self.arch_kwargs]
        return self.arch + (f" ({', '.join(geometry)})" if geometry else "")

    def weights_description(self) -> str:
        """Where the weights come from, in a few words for listings (the models page, ``vitscope models``)."""
        return {"timm": f"timm hub: {self.timm_name}", "url": f"release file {self.filename}",
                "package": f"shipped with vitscope: {self.filename}",
                "random": f"random init (seed {self.seed})"}[self.source]

    def weights_origin(self) -> str:
        """Where the weights come from, for error messages: the release URL, the timm hub page, the shipped file
        (and how to rebuild it), or the seed."""
        if self.source == "timm":
            import timm

            hub_id = timm.models.get_pretrained_cfg(self.timm_name).hf_hub_id
            return f"https://huggingface.co/{hub_id} (timm tag {self.timm_name})"
        return {"url": lambda: self.url,
                "package": lambda: (f"{self.packaged_path()} (shipped with vitscope; rebuild with "
                                    f"`vitscope zoo train --model {self.name}`)"),
                "random": lambda: f"random init, seed {self.seed}"}[self.source]()


def _kw(**kwargs) -> FrozenDict:
    return FrozenDict(kwargs)


_IMAGENET = Preprocess(IMAGENET_MEAN, IMAGENET_STD)
# BEiT pre-training build (unilm `beit_base_patch16_224_8k_vocab`): one relative position bias shared by all
# blocks, no absolute position embedding, LayerScale 0.1. timm's default beit_base has per-block rel-pos bias.
_BEIT_PT_KWARGS = _kw(num_classes=0, use_abs_pos_emb=False, use_rel_pos_bias=False, use_shared_rel_pos_bias=True,
                      init_values=0.1, global_pool="token")
#: The mini-zoo's architecture and preprocessing, defined once: the zoo trainer (``vitscope.zoo``), its data and
#: its evaluation read these, so a registry entry and a trained file can never disagree on them.
ZOO_ARCH = "vit_tiny_patch16_224"
ZOO_VIT = _kw(img_size=64, patch_size=8, embed_dim=192, depth=6, num_heads=6, num_classes=0)
ZOO_PREPROCESS = Preprocess(HALF, HALF, resize=64, crop=64)
_DEMO_VIT, _DEMO_PRE = ZOO_VIT, ZOO_PREPROCESS
#: Seeds of the untrained baselines random-a/b/c: none is a zoo model's seed (``vitscope.zoo.train.SEEDS``), so an
#: untrained baseline is never the starting point of a trained model it is compared with.
RANDOM_SEEDS = (100, 101, 102)
#: The mini-zoo (``vitscope.zoo``): (objective, display name, family, the paper model it stands in for).
#: The mini-zoo's CNNs (Objectives Matter Fig. 11: the same objective on another architecture). A ResNet-18 layout
#: (BasicBlocks, 2 per stage: 8 blocks, as many layers as 6 ViT blocks give within a factor 1.5) with widths cut to
#: 32-64-128-192: the last width is the zoo ViT's embed_dim, so the objectives' heads fit both backbones unchanged,
#: and at 64 px a forward pass costs about a seventh of the zoo ViT's. Trained by ``vitscope.zoo.cnn``.
ZOO_CNN_ARCH = "resnet18"
ZOO_CNN = _kw(channels=(32, 64, 128, 192), num_classes=0)
#: (objective, display name, family, the paper model it stands in for): one joint-embedding, one supervised.
_ZOO_CNN = (("supervised", "FS", "supervised", "a supervised ResNet"),
            ("mocov3", "MoCo-v3", "contrastive", "ResNet-50 MoCo-v3"))
#: Seed of the untrained zoo CNN (the CNN side's baseline): neither a zoo model's seed nor a ViT baseline's.
RANDOM_CNN_SEED = 103
_ZOO = (("supervised", "FS", "supervised", "FS (supervised)"), ("clip", "CLIP", "image-text", "CLIP"),
        ("dino", "DINO", "self-distillation", "DINO"), ("mocov3", "MoCo-v3", "contrastive", "MoCo-v3"),
        ("mae", "MAE", "masked-reconstruction", "MAE"), ("beit", "BEiT", "masked-token-prediction", "BEiT"))

_ENTRIES = (
    # ---------------------------------------------------------------- Teaching Matters (+ OM where shared)
    ModelCfg(
        name="fs", display="FS", family="supervised", papers=("TM",),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=0), source="timm",
        timm_tag="augreg_in21k_ft_in1k", preprocess=Preprocess(HALF, HALF), license="Apache-2.0",
        notes="bare vit_base_patch16_224 now resolves to augreg2 (re-fine-tuned): the tag pins the paper's weights"),
    ModelCfg(
        name="clip", display="CLIP", family="image-text", papers=("TM",),
        arch="vit_base_patch16_clip_quickgelu_224", arch_kwargs=_kw(num_classes=0), source="timm",
        timm_tag="openai", converter="openai_clip", preprocess=Preprocess(OPENAI_CLIP_MEAN, OPENAI_CLIP_STD),
        license="MIT",
        notes="OpenAI CLIP was trained with QuickGELU; plain *_clip_224 uses GELU and gives different features"),
    ModelCfg(
        name="dino", display="DINO", family="self-distillation", papers=("TM", "OM"),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=0), source="timm", timm_tag="dino",
        license="Apache-2.0", notes="backbone only (no DINO head); official file already uses timm names"),
    ModelCfg(
        name="mae", display="MAE", family="masked-reconstruction", papers=("TM", "OM"),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=0), source="timm", timm_tag="mae",
        converter="mae_pretrained", license="CC-BY-NC-4.0",
        notes="encoder only; the CLS token gets no training signal in MAE pre-training"),
    ModelCfg(
        name="mocov3", display="MoCo-v3", family="contrastive", papers=("TM", "OM"),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=0), source="url",
        url="https://dl.fbaipublicfiles.com/moco-v3/vit-b-300ep/vit-b-300ep.pth.tar",
        filename="vit-b-300ep.pth.tar", converter="mocov3_vit", license="CC-BY-NC-4.0",
        notes="keep module.base_encoder.* minus head (projector); the original TM code ran random weights if absent"),
    ModelCfg(
        name="beit", display="BEiT", family="masked-token-prediction", papers=("TM",),
        arch="beit_base_patch16_224", arch_kwargs=_BEIT_PT_KWARGS, source="url",
        url=("https://conversationhub.blob.core.windows.net/beit-share-public/beit/beit_base_patch16_224_pt22k.pth"
             "?sv=2021-10-04&st=2023-06-08T11%3A16%3A02Z&se=2033-06-09T11%3A16%3A00Z&sr=c&sp=r"
             "&sig=N4pfCVmSeq4L4tS8QbrFVsX6f6q844eft8xSuXdxU48%3D"),
        filename="beit_base_patch16_224_pt22k.pth", converter="beit_pt22k",
        preprocess=Preprocess(HALF, HALF), license="MIT",
        notes="self-supervised pt22k (all timm beit tags are fine-tuned); shared rel-pos bias, init_values=0.1"),
    # ---------------------------------------------------------------- Objectives Matter
    ModelCfg(
        name="msn", display="MSN", family="self-distillation", papers=("OM",),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=0), source="url",
        url="https://dl.fbaipublicfiles.com/msn/vitb16_600ep.pth.tar", filename="vitb16_600ep.pth.tar",
        converter="msn", license="CC-BY-NC-4.0",
        notes="use target_encoder (EMA), strip module., drop fc.* projector; block names already match timm"),
    ModelCfg(
        name="mae-ft", display="MAE (FT)", family="masked-reconstruction", papers=("OM",),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=1000, global_pool="avg"), source="url",
        url="https://dl.fbaipublicfiles.com/mae/finetune/mae_finetuned_vit_base.pth",
        filename="mae_finetuned_vit_base.pth", converter="mae_finetuned", license="CC-BY-NC-4.0",
        notes="fine-tuned with IN-1k labels; global_pool='avg' means fc_norm after pooling and no final norm"),
    ModelCfg(
        name="resnet50-dino", display="ResNet-50 DINO", family="self-distillation", papers=("OM",),
        arch="resnet50", arch_kwargs=_kw(num_classes=0), source="url",
        url="https://dl.fbaipublicfiles.com/dino/dino_resnet50_pretrain/dino_resnet50_pretrain.pth",
        filename="dino_resnet50_pretrain.pth", converter="dino_resnet", license="Apache-2.0",
        notes="torchvision key names without fc; timm resnet50 uses the same names"),
    ModelCfg(
        name="resnet50-mocov3", display="ResNet-50 MoCo-v3", family="contrastive", papers=("OM",),
        arch="resnet50", arch_kwargs=_kw(num_classes=0), source="url",
        url="https://dl.fbaipublicfiles.com/moco-v3/r-50-1000ep/r-50-1000ep.pth.tar",
        filename="r-50-1000ep.pth.tar", converter="mocov3_resnet", license="CC-BY-NC-4.0",
        notes="strip module.base_encoder., drop fc.* (projector MLP)"),
    ModelCfg(
        name="convnextv2-fcmae", display="ConvNeXt-V2 FCMAE", family="masked-reconstruction", papers=("OM",),
        arch="convnextv2_base", arch_kwargs=_kw(num_classes=0), source="timm", timm_tag="fcmae",
        license="CC-BY-NC-4.0", notes="self-supervised FCMAE pre-training only (no fine-tuning)"),
    # ---------------------------------------------------------------- the mini-zoo (offline demo)
    *(ModelCfg(
        name=f"zoo-{objective}", display=f"Zoo {display}", family=family, papers=("demo",),
        arch=ZOO_ARCH, arch_kwargs=_DEMO_VIT, source="package", filename=f"zoo-{objective}.safetensors",
        preprocess=_DEMO_PRE, license="MIT",
        notes=f"{analogue} analogue trained by vitscope on synthetic scenes (`vitscope zoo train --model {objective}`;"
              f" model card zoo-{objective}.json)")
      for objective, display, family, analogue in _ZOO),
    *(ModelCfg(
        name=f"random-{s}", display=f"Random {s.upper()}", family="random", papers=("demo",),
        arch=ZOO_ARCH, arch_kwargs=_DEMO_VIT, source="random", preprocess=_DEMO_PRE,
        license="MIT", notes="random-init baseline: the zoo's architecture, untrained", seed=seed)
      for seed, s in zip(RANDOM_SEEDS, "abc")),
    # The mini-zoo's CNNs and their untrained twin (Objectives Matter Fig. 11 on the demo).
    *(ModelCfg(
        name=f"zoo-cnn-{objective}", display=f"Zoo CNN {display}", family=family, papers=("demo",),
        arch=ZOO_CNN_ARCH, arch_kwargs=ZOO_CNN, source="package", filename=f"zoo-cnn-{objective}.safetensors",
        preprocess=_DEMO_PRE, license="MIT",
        notes=f"{analogue} analogue: a small ResNet trained by vitscope on synthetic scenes with the zoo's "
              f"{objective} objective and a global-average-pool readout (`python -m vitscope.zoo.cnn --model "
              f"{objective}`; model card zoo-cnn-{objective}.json)")
      for objective, display, family, analogue in _ZOO_CNN),
    ModelCfg(
        name="random-cnn-a", display="Random CNN A", family="random", papers=("demo",),
        arch=ZOO_CNN_ARCH, arch_kwargs=ZOO_CNN, source="random", preprocess=_DEMO_PRE, license="MIT",
        notes="random-init baseline: the zoo CNN's architecture, untrained", seed=RANDOM_CNN_SEED),
    # The paper profile's untrained baselines and seed floor: ViT-B/16 as FS, DINO and MoCo-v3 build it.
    *(ModelCfg(
        name=f"random-vitb-{s}", display=f"Random ViT-B {s.upper()}", family="random", papers=("TM", "OM"),
        arch="vit_base_patch16_224", arch_kwargs=_kw(num_classes=0), source="random", preprocess=_IMAGENET,
        license="MIT", notes="random-init baseline: ViT-B/16, untrained (the claims' baseline and seed floor)",
        seed=seed)
      for seed, s in enumerate("abc")),
)

MODELS: dict[str, ModelCfg] = {cfg.name: cfg for cfg in _ENTRIES}


def list_models(paper: str | None = None) -> list[str]:
    """Registry names in table order, optionally only those of one paper ("TM", "OM" or "demo")."""
    if paper is not None and paper not in PAPERS:
        raise ValueError(f"unknown paper {paper!r}; expected one of {PAPERS}")
    return [n for n, c in MODELS.items() if paper is None or paper in c.papers]


def get_cfg(name: str | ModelCfg) -> ModelCfg:
    """The entry for ``name`` (a ``ModelCfg`` passes through); unknown names raise ``UnknownModelError``."""
    if isinstance(name, ModelCfg):
        return name
    if isinstance(name, str) and "+ft" in name and name not in MODELS:   # fine-tuned runs: see the module docstring
        from ..finetune import resolve

        return resolve(name)
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        hint = did_you_mean(name, MODELS, cutoff=0.0)
        raise UnknownModelError(
            f"unknown model {name!r}.{hint} Known models: {', '.join(MODELS)}") from None

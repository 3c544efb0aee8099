"""Every claim of the two papers in the sections vitscope covers, as data.

Each row: id, paper ("TM" = Teaching Matters, Walmer et al. 2023; "OM" = Objectives Matter, Shekhar et al.
2023), section, figure or table, the claim in one sentence (paraphrased from the paper's text), the notebook stem of
the page that checks it (``None``: no page yet) and the check: the dotted name of a ``check_claims(models, profile)``
function in :mod:`vitscope.sections` that returns :class:`~vitscope.claims.verdict.ClaimResult` rows for this id
(``None``: the page shows the figure but nothing judges the claim yet).
"""
from __future__ import annotations

from dataclasses import dataclass

PAPERS = {"TM": "Teaching Matters (Walmer et al., CVPR 2023)",
          "OM": "Objectives Matter (Shekhar et al., ICLR 2023 workshop)"}

_AD = "vitscope.sections.attention_distance.check_claims"
_CKA = "vitscope.sections.cka.check_claims"
_PROBES = "vitscope.sections.probes.check_claims"
_LAST_CKA = "vitscope.sections.last_layer_cka.check_claims"
_PURITY = "vitscope.sections.purity.check_claims"
_KNN_TM = "vitscope.sections.knn.check_tm_claims"
_KNN_OM = "vitscope.sections.knn.check_om_claims"
_INVARIANCE = "vitscope.sections.invariance.check_claims"
_AGREEMENT = "vitscope.sections.agreement.check_claims"
_CLS_MAPS = "vitscope.sections.cls_attention.check_claims"
_AAAM = "vitscope.sections.aaam.check_claims"
_FT_CKA = "vitscope.sections.finetuning.check_cka_claims"
_FT_DYNAMICS = "vitscope.sections.finetuning.check_dynamics_claims"
_REGION_PURITY = "vitscope.sections.region_purity.check_claims"
_ARCHITECTURE = "vitscope.sections.architecture.check_claims"
_DETECTION = "vitscope.sections.detection.check_claims"


@dataclass(frozen=True)
class Claim:
    id: str
    paper: str
    section: str
    figure: str
    statement: str
    page: str | None = None
    check: str | None = None


# Claim(id, paper, section, figure, statement, page, check)
_ROWS = (
    Claim("TM-4.1a", "TM", "4.1", "Fig. 2",
          ("In mid-to-final layers, DINO's and MoCo's CLS attention maps are centred blobs on the salient "
           "foreground object."),
          page="tm_4_1_overview", check=_CLS_MAPS),
    Claim("TM-4.1b", "TM", "4.1", "Fig. 2",
          "MAE's and BEiT's late-layer attention maps are more diverse and cover more of the image.",
          page="tm_4_1_overview", check=_CLS_MAPS),
    Claim("TM-4.1c", "TM", "4.1", "Fig. 2",
          ("FS's and CLIP's mid-to-final layers attend to Sparse Repeating Patterns with no spatial meaning, in "
           "CLS and spatial tokens alike."),
          page="tm_4_1_overview", check=_CLS_MAPS),
    Claim("TM-4.2a", "TM", "4.2", "Fig. 3",
          "Aligned aggregated attention maps show strict, soft, axial and offset local attention heads.",
          page="tm_4_2_overview", check=None),
    Claim("TM-4.2b", "TM", "4.2", "Fig. 3",
          "Offset local attention heads occur in all six models.",
          page="tm_4_2_overview", check=_AAAM),
    Claim("TM-4.3a", "TM", "4.3", "Fig. 4 (left)",
          "Most layers of every model mix local and global attention heads.",
          page="tm_4_3_overview", check=None),
    Claim("TM-4.3b", "TM", "4.3", "Fig. 4 (right)",
          ("In every model the first layers are more global and the per-layer mean distance dips around layers "
           "3-6."),
          page="tm_4_3_overview", check=None),
    Claim("TM-4.3c", "TM", "4.3", "Fig. 4",
          ("FS, CLIP, DINO and MoCo end with exclusively global heads, while MAE and BEiT keep local heads: the "
           "last block's mean attention distance is higher for the explicitly or contrastively supervised models "
           "than for the reconstruction-based ones."),
          page="tm_4_3_overview", check=_AD),
    Claim("TM-4.4a", "TM", "4.4", "Fig. 5",
          "FS's and CLIP's CLS-attention IoU with salient objects drops around the middle of the network.",
          page="tm_4_4_overview", check="vitscope.sections.attention_iou.check_claims"),
    Claim("TM-4.4b", "TM", "4.4", "Fig. 5",
          "Attention IoU plateaus around layers 3-6 in every model.",
          page="tm_4_4_overview", check=None),
    Claim("TM-4.4c", "TM", "4.4", "Fig. 5",
          "MoCo, MAE and BEiT reach attention IoUs comparable to DINO's.",
          page="tm_4_4_overview", check=None),
    Claim("TM-4.4d", "TM", "4.4", "Fig. 5 (right)",
          ("Masks from the mean of spatial-token attention are comparable to the CLS token's, and CLIP's rise "
           "sharply in the last layer."),
          page="tm_4_4_overview", check="vitscope.sections.attention_iou.check_claims"),
    Claim("TM-5.1a", "TM", "5.1", "Fig. 6 (left)",
          "Last-block CLS tokens are most alike for alike supervision; MoCo and DINO are very similar.",
          page="tm_5_1_last_layer_cka", check=_LAST_CKA),
    Claim("TM-5.1b", "TM", "5.1", "Fig. 6 (left)",
          "MAE's last-block CLS token is as similar to DINO's and MoCo's as to BEiT's.",
          page="tm_5_1_last_layer_cka", check=_LAST_CKA),
    Claim("TM-5.1c", "TM", "5.1", "Fig. 6 (right)",
          ("Last-block spatial tokens: FS and CLIP are dissimilar, while DINO, MAE and MoCo are highly similar "
           "to each other and less so to BEiT."),
          page="tm_5_1_last_layer_cka", check=_LAST_CKA),
    Claim("TM-5.2a", "TM", "5.2", "Fig. 7 (left)",
          "CLS-token cluster purity (k-means, k=50) rises with depth, except in BEiT's last layers.",
          page="tm_5_2_overview", check=_PURITY),
    Claim("TM-5.2b", "TM", "5.2", "Fig. 7 (left)",
          ("FS has the purest CLS clusters, then CLIP, with DINO and MoCo close; MAE and BEiT are lowest but "
           "above random chance."),
          page="tm_5_2_overview", check=_PURITY),
    Claim("TM-5.2c", "TM", "5.2", "Fig. 7 (left)",
          "Semantic information emerges in earlier layers for DINO and MoCo.",
          page="tm_5_2_overview", check=None),
    Claim("TM-5.2d", "TM", "5.2", "Fig. 7 (right)",
          ("Pooled spatial-token purity rises earlier than CLS purity for FS and falls in the final layers of "
           "the other models."),
          page="tm_5_2_overview", check=None),
    Claim("TM-5.3a", "TM", "5.3", "Fig. 8 (left)",
          ("Object-level (COCO) purity is highest for CLIP and FS, then DINO and MoCo, and much lower for MAE "
           "and BEiT."),
          page="tm_5_3_overview", check=_REGION_PURITY),
    Claim("TM-5.3b", "TM", "5.3", "Fig. 8 (right)",
          ("Part-level (PartImageNet) purity is highest for FS, the contrastive models surpass CLIP, and MAE and "
           "BEiT are lowest but closer."),
          page="tm_5_3_overview", check=_REGION_PURITY),
    Claim("TM-5.3c", "TM", "5.3", "Fig. 8",
          "Object- and part-level purity peaks early, around layers 9-11, and earlier for BEiT.",
          page="tm_5_3_overview", check=_REGION_PURITY),
    Claim("TM-6.1a", "TM", "6.1", "Fig. 9 (left)",
          ("k-NN (k=20) accuracy is highest for FS; DINO and MoCo separate classes in earlier layers; FS and "
           "CLIP jump in the last layers; MAE beats BEiT and both beat chance."),
          page="tm_6_1_overview", check=_KNN_TM),
    Claim("TM-6.1b", "TM", "6.1", "Fig. 9 (right)",
          "ROxford5k (Medium) retrieval mAP follows k-NN: FS, then CLIP, then DINO and MoCo, then MAE and BEiT.",
          page="tm_6_1_retrieval_overview", check="vitscope.sections.retrieval.check_claims"),
    Claim("TM-6.2a", "TM", "6.2", "Fig. 10 (left)",
          ("DAVIS propagation is best with DINO and MoCo; FS and CLIP drop in later layers; MAE and BEiT are "
           "competitive."),
          page="tm_6_2_davis_overview", check="vitscope.sections.propagation.check_claims"),
    Claim("TM-6.2b", "TM", "6.2", "Fig. 10 (right)",
          ("SPair-71k keypoint PCK is highest for CLIP, closely followed by FS and DINO, and the best layer "
           "varies from 8 (CLIP, BEiT) to 11 (MAE)."),
          page="tm_6_2_keypoints_overview", check="vitscope.sections.correspondence.check_claims"),
    Claim("TM-T1a", "TM", "6.3", "Table 1",
          "Image-level tasks (k-NN, retrieval) peak at the last layer for most models.",
          page="tm_6_3_table1", check="vitscope.sections.downstream_summary.check_claims"),
    Claim("TM-T1b", "TM", "6.3", "Table 1",
          "Local tasks (DAVIS, SPair-71k) peak a few layers before the last.",
          page="tm_6_3_table1", check="vitscope.sections.downstream_summary.check_claims"),
    Claim("TM-T1c", "TM", "6.3", "Table 1",
          "No single model is best at every downstream task.",
          page="tm_6_3_table1", check="vitscope.sections.downstream_summary.check_claims"),
    Claim("OM-2.1a", "OM", "2.1", "Fig. 1a",
          ("The two joint-embedding models (MoCo-v3, DINO) have very similar representations layer for layer, "
           "while the reconstruction model (MAE) is dissimilar to both."),
          page="om_2_1_cka", check=_CKA),
    Claim("OM-2.1b", "OM", "2.1", "Fig. 1b",
          ("Between MAE and MoCo-v3, the LayerNorm before attention and the attention (qkv) layers are much less "
           "similar than the MLP's first fully-connected layer."),
          page="om_2_1_cka", check=_CKA),
    Claim("OM-2.1c", "OM", "2.1, App. E", "Fig. 11a",
          ("Two joint-embedding models of different architectures (ViT, ResNet-50) are more similar than a "
           "joint-embedding and a reconstruction ViT."),
          page="om_2_1_architecture", check=_ARCHITECTURE),
    Claim("OM-2.1d", "OM", "2.1, App. E", "Fig. 11b",
          ("A reconstruction CNN-ViT pair stays similar as layer distance grows while a "
           "joint-embedding/reconstruction ViT pair falls off: the objective governs similarity more than the "
           "architecture."),
          page="om_2_1_architecture", check=_ARCHITECTURE),
    Claim("OM-2.1e", "OM", "2.1, App. F", "Fig. 12",
          ("Per-block k-NN accuracy diverges between joint-embedding and reconstruction ViTs by block 3, and the "
           "joint-embedding models' last CLS k-NN matches their linear probe."),
          page="om_2_2_knn", check=_KNN_OM),
    Claim("OM-B.1", "OM", "App. B.1", "Fig. 6",
          "Minibatch CKA is stable for batch sizes of 32 or more and 1024 or more examples.",
          page="om_app_b1_cka_convergence", check=None),
    Claim("OM-2.2a", "OM", "2.2", "Fig. 2a",
          ("Deeper non-linear probes on the final CLS do not help joint-embedding models, while MAE gains about "
           "1 point with a three-layer probe."),
          page="om_2_2_probes", check=_PROBES),
    Claim("OM-2.2b", "OM", "2.2", "Fig. 2b",
          ("In joint-embedding models the final pre-projector CLS token holds the class-discriminative "
           "information, where a linear probe on it does best."),
          page="om_2_2_probes", check=_PROBES),
    Claim("OM-2.2c", "OM", "2.2", "Fig. 2c, Table 2b",
          ("A linear probe on the final plus an intermediate CLS token improves reconstruction models but not "
           "joint-embedding models."),
          page="om_2_2_probes", check=_PROBES),
    Claim("OM-2.2d", "OM", "2.2", "Fig. 3",
          ("RCDM samples show joint-embedding representations invariant to horizontal flips and reconstruction "
           "representations not."),
          page="om_2_2_invariance", check=_INVARIANCE),
    Claim("OM-F.a", "OM", "App. F", "Fig. 13",
          ("Top-5/top-10 prediction rankings agree more (Kendall tau) between MoCo-v3 and DINO than with MAE, on "
           "all, correct and incorrect predictions."),
          page="om_app_f_agreement", check=_AGREEMENT),
    Claim("OM-F.b", "OM", "App. F", "Fig. 13",
          "Top-1 predictions agree more between DINO and MoCo-v3 (F1 0.93) than between MAE and MoCo-v3 (0.88).",
          page="om_app_f_agreement", check=_AGREEMENT),
    Claim("OM-2.3a", "OM", "2.3", "Figs. 4, 8",
          ("Fine-tuned MAE is highly similar to pre-trained MoCo-v3 and DINO, and stays so after they are "
           "fine-tuned too, except in later layers."),
          page="om_2_3_finetuned_cka", check=_FT_CKA),
    Claim("OM-2.3b", "OM", "2.3, App. D", "Figs. 9, 10",
          ("The attention and LayerNorm layers, most dissimilar after pre-training, become the most similar "
           "after fine-tuning."),
          page="om_2_3_finetuned_cka", check=_FT_CKA),
    Claim("OM-2.3c", "OM", "2.3, App. G", "Fig. 14",
          ("MAE's attention layers take a more efficient path through parameter space during fine-tuning than "
           "MoCo-v3's and DINO's."),
          page="om_2_3_dynamics", check=_FT_DYNAMICS),
    Claim("OM-2.3d", "OM", "2.3", "Fig. 17",
          "After fine-tuning, MAE's final CLS token becomes invariant to horizontal flips.",
          page="om_2_3_dynamics", check=_FT_DYNAMICS),
    Claim("OM-2.3e", "OM", "2.3", "Fig. 5",
          "Intermediate CLS features add nothing to a linear probe on a fine-tuned MAE.",
          page="om_2_3_dynamics", check=_FT_DYNAMICS),
    Claim("OM-C.a", "OM", "App. C", "Table 6",
          ("With a frozen backbone (ViTDet, Mask R-CNN), MAE features beat MoCo-v3's on COCO detection and "
           "segmentation."),
          page="om_app_c_detection", check=_DETECTION),
    Claim("OM-C.b", "OM", "App. C", "Table 6",
          ("Frozen reconstruction features do worse than joint-embedding ones on large objects and better on "
           "small objects."),
          page="om_app_c_detection", check=_DETECTION),
    Claim("OM-C.c", "OM", "App. C", "Fig. 7",
          ("Adding intermediate features (blocks 9-11) improves frozen-backbone detection for reconstruction and "
           "joint-embedding models alike."),
          page="om_app_c_detection", check=_DETECTION),
    Claim("OM-C.d", "OM", "App. C", "Table 7",
          "Fine-tuned end to end, MAE beats MoCo-v3 and DINO on large and small objects.",
          page="om_app_c_detection", check=_DETECTION),
)

CLAIMS: dict[str, Claim] = {c.id: c for c in _ROWS}


def claims_for_page(page: str) -> list[Claim]:
    """The catalogue entries a page (notebook stem) checks or shows."""
    return [c for c in CLAIMS.values() if c.page == page]


def get_claim(claim_id: str) -> Claim:
    try:
        return CLAIMS[claim_id]
    except KeyError:
        from ..hints import did_you_mean
        raise KeyError(f"unknown claim {claim_id!r}.{did_you_mean(claim_id, CLAIMS)}") from None

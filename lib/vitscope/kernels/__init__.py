"""Pure tensor kernels: no file I/O, no model loading, no printing.

``cka``        linear / debiased / minibatch CKA (Objectives Matter App. B.1, eqs. 2-3)
``attention``  CLS attention maps and average attention distance (Teaching Matters 4.1, 4.3)
``knn``        DINO weighted k-NN classification (Teaching Matters 6.1, Objectives Matter)
``probes``     the Objectives Matter linear probe (BatchNorm without affine + Linear)

Every kernel computes on the device of its input tensors.
"""

from . import (  # noqa: F401  (TM 6.2: DAVIS label propagation, J and F)
    attention,
    attention_iou,  # noqa: F401  (TM 4.4: mass masks, IoU, best-head rules)
    cka,
    knn,
    probes,
    propagation,
    segmentation_metrics,
)

__all__ = ["attention", "cka", "knn", "probes"]

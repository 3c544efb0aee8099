"""Pure tensor kernels: no file I/O, no model loading, no printing.

``cka``        linear / debiased / minibatch CKA (Objectives Matter App. B.1, eqs. 2-3)
``attention``  CLS attention maps and average attention distance (Teaching Matters 4.1, 4.3)
``knn``        DINO weighted k-NN classification (Teaching Matters 6.1, Objectives Matter)
``probes``     the Objectives Matter linear probe (BatchNorm without affine + Linear)

Every kernel computes on the device of its input tensors.
"""

from . import attention, cka, knn, probes

__all__ = ["attention", "cka", "knn", "probes"]

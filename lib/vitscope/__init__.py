"""vitscope: a re-executable companion to *Teaching Matters* and *Objectives Matter*.

The package is layered as the pipeline flows::

    data -> models -> extract -> kernels -> plots      (book orchestration on top)

Kernels are pure functions on tensors; nothing below ``vitscope.book`` runs notebooks.
"""

__version__ = "0.1.0"

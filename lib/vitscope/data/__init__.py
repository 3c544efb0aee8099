"""Data: manifests, the real-format loaders, and the synthetic twins written in those same formats."""
from .coco import CocoInstances  # noqa: F401  (COCO instances and their masks: TM 4.4, 5.3)
from .davis import DavisVideos  # noqa: F401  (DAVIS-2017 videos and palette annotations: TM 6.2)
from .imagefolder import ImageFolderSubset, read_rgb, select_files
from .manifest import Manifest, available_manifests, load_manifest
from .synthetic import write_imagefolder_twin
from .transforms import eval_transform, transform_key

__all__ = ["ImageFolderSubset", "Manifest", "available_manifests", "eval_transform", "load_manifest",
           "read_rgb", "select_files", "transform_key", "write_imagefolder_twin"]

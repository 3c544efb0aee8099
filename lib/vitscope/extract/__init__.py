"""Extraction: one forward pass per (model, dataset, transform), streamed into small cached products."""
from .attention_products import AlignedAttention, ClsMapStats, QueryAttention, attention_map_products  # noqa: F401
from .capture import SITES, Capture, unfused_attention, vit_geometry
from .products import AttentionDistance, ClsAttention, GramMatrices, PooledTokens, layer_labels, stack_batches
from .run import DEFAULT_BATCH_SIZE, dataset_identity, example_order, extract
from .store import FeatureStore, key_hash

__all__ = [
           "DEFAULT_BATCH_SIZE",
           "SITES",
           "AttentionDistance",
           "Capture",
           "ClsAttention",
           "FeatureStore",
           "GramMatrices",
           "PooledTokens",
           "dataset_identity",
           "example_order",
           "extract",
           "key_hash",
           "layer_labels",
           "stack_batches",
           "unfused_attention",
           "vit_geometry",
]

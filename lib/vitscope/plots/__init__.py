"""Plots: one function per paper figure family. They read result tables and never compute metrics."""
from .attention import attention_distance_by_layer, attention_distance_layer_means
from .cka import cka_by_layer_type, cka_grid, cka_heatmap, pair_matrix
from .common import save_figure
from .zoo import accuracy_vs_random, scene_grid, training_curves

__all__ = ["accuracy_vs_random", "attention_distance_by_layer", "attention_distance_layer_means", "cka_by_layer_type",
           "cka_grid", "cka_heatmap", "pair_matrix", "save_figure", "scene_grid", "training_curves"]

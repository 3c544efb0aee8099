"""Plots: one function per paper figure family. They read result tables and never compute metrics.

Every figure follows the house style of :mod:`vitscope.plots.common` (``FIGURE_DPI``, ``TICK_LABEL_PT``, at most
``MAX_FIGURE_WIDTH_IN`` wide); show it on a page with :func:`vitscope.book.figures.show_figure`.
"""
from . import (
                        architecture,  # noqa: F401  (OM Fig. 11: plots.architecture.cka_vs_depth_distance)
                        attention_iou,  # noqa: F401  (TM 4.4 Fig. 5: plots.attention_iou.iou_by_layer, ...)
                        attention_maps,  # noqa: F401  (TM 4.1/4.2: plots.attention_maps.map_grid, ...)
                        cka_convergence,  # noqa: F401  (OM App. B.1: plots.cka_convergence.convergence_panels, ...)
                        downstream_summary,  # noqa: F401  (TM 6.3 Table 1: plots.downstream_summary.best_values)
                        knn,  # noqa: F401  (TM 6.1, OM Figs. 3, 12, 13: plots.knn.knn_models, ...)
                        propagation,  # noqa: F401  (TM 6.2 Fig. 10 left: plots.propagation.jf_models, ...)
                        retrieval,  # noqa: F401  (TM 6.1 Fig. 9 right: plots.retrieval.map_models, ...)
)
from .attention import (
                        attention_distance_by_layer,
                        attention_distance_conventions,
                        attention_distance_layer_means,
                        attention_distance_small_multiples,
)
from .cka import cka_by_layer_type, cka_grid, cka_heatmap, pair_matrix
from .common import (
                        FIGURE_DPI,
                        MAX_FIGURE_WIDTH_IN,
                        TICK_LABEL_PT,
                        finish,
                        house_style,
                        new_figure,
                        reference_line,
                        save_figure,
)
from .probes import probe_accuracy_panels  # noqa: F401  (public: plots.probe_accuracy_panels)
from .purity import cka_model_matrices, purity_by_layer, purity_overview
from .zoo import accuracy_vs_random, scene_grid, structure_panels, training_curves

__all__ = ["FIGURE_DPI", "MAX_FIGURE_WIDTH_IN", "TICK_LABEL_PT", "accuracy_vs_random", "attention_distance_by_layer",
           "attention_distance_conventions", "attention_distance_layer_means", "attention_distance_small_multiples",
           "cka_by_layer_type", "cka_grid", "cka_heatmap", "finish", "house_style", "new_figure", "pair_matrix",
           "reference_line", "save_figure", "scene_grid", "structure_panels", "training_curves"]
__all__ += ["cka_model_matrices", "purity_by_layer", "purity_overview"]
from .region_purity import region_purity_overview  # noqa: E402  (TM 5.3, Fig. 8)

__all__ += ["region_purity_overview"]

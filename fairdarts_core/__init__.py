"""fairdarts_core: differentiable architecture search, DARTS and Fair DARTS (Chu et al., ECCV 2020)."""
from .genotype import Genotype, edge_index, live_nodes, parse_cell, prune_isolated
from .ops import DARTS_OPS, FAIR_DARTS_OPS, OPS
from .relax import relax, sigmoid, softmax, zero_one_loss
from .supernet import Supernet, SupernetConfig
from .network import NetworkCIFAR, NetworkImageNet
from . import zoo
from .viz import plot_cell, plot_genotype, plot_weights_heatmap, save_cell

__version__ = "0.1.0"

__all__ = [
    "Genotype", "edge_index", "live_nodes", "parse_cell", "prune_isolated",
    "DARTS_OPS", "FAIR_DARTS_OPS", "OPS",
    "relax", "sigmoid", "softmax", "zero_one_loss",
    "Supernet", "SupernetConfig", "__version__",
    "NetworkCIFAR", "NetworkImageNet", "zoo",
    "plot_cell", "plot_genotype", "plot_weights_heatmap", "save_cell",
]

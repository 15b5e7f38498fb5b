"""fairdarts_core: differentiable architecture search, DARTS and Fair DARTS (Chu et al., ECCV 2020)."""
from .genotype import Genotype, edge_index, live_nodes, parse_cell, prune_isolated
from .ops import DARTS_OPS, FAIR_DARTS_OPS, OPS
from .relax import relax, sigmoid, softmax, zero_one_loss
from .supernet import Supernet, SupernetConfig
from .network import NetworkCIFAR, NetworkImageNet
from . import zoo
from .viz import plot_cell, plot_genotype, plot_weights_heatmap, save_cell
from .presets import SearchConfig, TrainConfig, get_search_preset, get_train_preset
from .search import run_search
from .train import evaluate_checkpoint, run_train

__version__ = "0.1.0"

__all__ = [
    "Genotype", "edge_index", "live_nodes", "parse_cell", "prune_isolated",
    "DARTS_OPS", "FAIR_DARTS_OPS", "OPS",
    "relax", "sigmoid", "softmax", "zero_one_loss",
    "Supernet", "SupernetConfig", "__version__",
    "NetworkCIFAR", "NetworkImageNet", "zoo",
    "plot_cell", "plot_genotype", "plot_weights_heatmap", "save_cell",
    "SearchConfig", "TrainConfig", "get_search_preset", "get_train_preset", "run_search", "run_train",
    "evaluate_checkpoint",
]

"""Label propagation of Zhou et al. 2004 ("Learning with local and global consistency").

F = (1 - α)(I - αS)^-1 Y with S = D^-1/2 W D^-1/2, solved by conjugate gradient: for
α < 1, I - αS is symmetric positive definite. A baseline beside the GCN.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from wsss_core.graphnet.graph import Graph
from wsss_core.graphnet.seeds import NodeSeeds

if TYPE_CHECKING:  # scipy is imported where it is used (see graph.py)
    import scipy.sparse as sp


@dataclass(frozen=True)
class LabelPropagationConfig:
    """alpha 0.99 as in Zhou et al.; rtol / max_iter of the conjugate-gradient solve."""

    alpha: float = 0.99
    rtol: float = 1e-8
    max_iter: int = 2000


def propagate_labels(
    graph: Graph, seeds: NodeSeeds, config: LabelPropagationConfig = LabelPropagationConfig()
) -> np.ndarray:
    """(n, C) float32 class probabilities; classes outside a node's candidates get 0.

    A node no seed reaches (its component has no seed, or only seeds of classes it may
    not take) gets a uniform distribution over its candidates.
    """
    if not 0 < config.alpha < 1:
        raise ValueError(f"alpha must lie in (0, 1), got {config.alpha}")
    if seeds.n_nodes != graph.n_nodes:
        raise ValueError(f"{seeds.n_nodes} seeded nodes but the graph has {graph.n_nodes}")
    import scipy.sparse as sp
    from scipy.sparse.linalg import cg

    system = sp.identity(graph.n_nodes, format="csr") - config.alpha * symmetric_normalised(graph)
    scores = np.zeros((graph.n_nodes, seeds.num_classes))
    labelled = np.flatnonzero(seeds.labelled)
    for class_index in np.unique(seeds.labels[labelled]):
        target = np.zeros(graph.n_nodes)
        target[labelled[seeds.labels[labelled] == class_index]] = 1.0 - config.alpha
        solution, _ = cg(system, target, x0=target, rtol=config.rtol, atol=0.0, maxiter=config.max_iter)
        scores[:, class_index] = solution
    scores = np.clip(scores, 0.0, None) * seeds.candidates  # CG may leave tiny negatives
    return _rows_to_probabilities(scores, seeds.candidates)


def symmetric_normalised(graph: Graph) -> sp.csr_matrix:
    """S = D^-1/2 W D^-1/2 (no self-loops); isolated nodes get zero rows."""
    import scipy.sparse as sp

    weights = graph.adjacency_matrix()
    degree = np.asarray(weights.sum(axis=1)).ravel()
    inverse_sqrt = np.zeros_like(degree)
    inverse_sqrt[degree > 0] = degree[degree > 0] ** -0.5
    scale = sp.diags(inverse_sqrt)
    return (scale @ weights @ scale).tocsr()


def _rows_to_probabilities(scores: np.ndarray, candidates: np.ndarray) -> np.ndarray:
    totals = scores.sum(axis=1, keepdims=True)
    uniform = candidates / np.maximum(candidates.sum(axis=1, keepdims=True), 1)
    reached = totals[:, 0] > 0
    probabilities = np.where(reached[:, None], scores / np.where(totals > 0, totals, 1.0), uniform)
    return probabilities.astype(np.float32)

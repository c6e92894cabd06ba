"""Per-image two-layer GCN (Kipf & Welling 2017) that labels superpixel nodes (GraphNet).

Z = softmax(Â ReLU(Â X W0) W1), Â = D^-1/2 (A + I) D^-1/2, cross-entropy on the seed
nodes only. Every image gets its own model; a batch of images trains at once as one
block-diagonal graph with one weight slice per image, so an image's result does not
depend on the batch it is in.

Optionally (``pretrain_epochs > 0``) the per-image models all start from one GCN fitted
first on the seeds of every image of the dataset (shared weights): a few seed nodes per
image are too little to learn what the classes look like from weak, hand-made node
features, and this dataset-level start plays the part of the paper's ImageNet features.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from wsss_core.errors import BadInputError
from wsss_core.graphnet.graph import Graph
from wsss_core.graphnet.network_configs import GCNConfig
from wsss_core.graphnet.seeds import NodeSeeds


@dataclass(frozen=True)
class GCNWeights:
    """The two weight matrices of one GCN: (D, hidden) and (hidden, C), float32."""

    weight0: np.ndarray
    weight1: np.ndarray

    def to_arrays(self) -> dict[str, np.ndarray]:
        return {"weight0": self.weight0, "weight1": self.weight1}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> GCNWeights:
        weight0 = np.asarray(arrays["weight0"], dtype=np.float32)
        weight1 = np.asarray(arrays["weight1"], dtype=np.float32)
        if weight0.ndim != 2 or weight1.ndim != 2 or weight0.shape[1] != weight1.shape[0]:
            raise BadInputError("gcn weights", f"shapes {weight0.shape} and {weight1.shape} do not chain")
        return cls(weight0, weight1)


@dataclass(frozen=True)
class GraphInput:
    """One image's graph problem: node features (n, D), its graph, its seeds."""

    node_features: np.ndarray
    graph: Graph
    seeds: NodeSeeds


def normalised_adjacency(
    n_nodes: int, edges: np.ndarray, weights: np.ndarray | None = None, self_loops: bool = True
) -> torch.Tensor:
    """Sparse COO (n, n) float32 Â = D^-1/2 (A + I) D^-1/2 of an undirected edge list (i < j).

    weights None = binary adjacency. Nodes with degree 0 get zero rows.
    """
    edges = np.asarray(edges, dtype=np.int64).reshape(-1, 2)
    edge_weights = np.ones(len(edges)) if weights is None else np.asarray(weights, dtype=np.float64)
    rows = [edges[:, 0], edges[:, 1]]
    cols = [edges[:, 1], edges[:, 0]]
    values = [edge_weights, edge_weights]
    if self_loops:
        loop = np.arange(n_nodes, dtype=np.int64)
        rows.append(loop)
        cols.append(loop)
        values.append(np.ones(n_nodes))
    row, col, value = np.concatenate(rows), np.concatenate(cols), np.concatenate(values)
    degree = np.bincount(row, weights=value, minlength=n_nodes)
    inverse_sqrt = np.zeros(n_nodes)
    positive = degree > 0
    inverse_sqrt[positive] = degree[positive] ** -0.5
    normalised = value * inverse_sqrt[row] * inverse_sqrt[col]
    indices = torch.from_numpy(np.stack([row, col]))
    values_t = torch.from_numpy(normalised.astype(np.float32))
    return torch.sparse_coo_tensor(indices, values_t, (n_nodes, n_nodes), check_invariants=True).coalesce()


@dataclass(frozen=True)
class BatchLayout:
    """Where each node of a batch sits: its graph and its position inside that graph."""

    graph_of_node: torch.Tensor  # (N,) int64
    slot_of_node: torch.Tensor  # (N,) int64
    sizes: tuple[int, ...]

    @classmethod
    def from_sizes(cls, sizes: Sequence[int], device: str | torch.device = "cpu") -> BatchLayout:
        sizes_t = torch.tensor(list(sizes), dtype=torch.int64)
        graph_of_node = torch.repeat_interleave(torch.arange(len(sizes)), sizes_t)
        starts = torch.cumsum(sizes_t, 0) - sizes_t
        slot_of_node = torch.arange(int(sizes_t.sum())) - starts[graph_of_node]
        return cls(graph_of_node.to(device), slot_of_node.to(device), tuple(int(s) for s in sizes))

    @property
    def n_graphs(self) -> int:
        return len(self.sizes)

    @property
    def max_nodes(self) -> int:
        return max(self.sizes, default=0)

    def pad(self, rows: torch.Tensor) -> torch.Tensor:
        """(N, D) node rows -> (B, max_nodes, D), zeros after each graph's last node."""
        padded = rows.new_zeros(self.n_graphs, self.max_nodes, rows.shape[1])
        return padded.index_put((self.graph_of_node, self.slot_of_node), rows)


class GCN(nn.Module):
    """Two-layer GCN holding one (W0, W1) pair per graph of a batch; returns logits.

    Every graph's weights start from the same Glorot draw of torch.Generator(seed), so a
    graph gets the same start alone or in a batch. No biases (Kipf's default). Each graph's
    dense products are its own matmuls, shaped by its own node count: one batched matmul
    over the padded block rounded differently with the block's largest graph, so an image
    recomputed among others than in a clean run got other bits.
    """

    def __init__(self, in_features: int, hidden: int, num_classes: int, n_graphs: int = 1, seed: int = 0):
        super().__init__()
        generator = torch.Generator().manual_seed(seed)
        weight0 = _glorot(in_features, hidden, generator)
        weight1 = _glorot(hidden, num_classes, generator)
        self.weight0 = nn.Parameter(weight0.expand(n_graphs, -1, -1).clone())
        self.weight1 = nn.Parameter(weight1.expand(n_graphs, -1, -1).clone())

    def load_shared(self, weights: GCNWeights) -> None:
        """Every graph's weights := the given (shared) weights."""
        for parameter, value in ((self.weight0, weights.weight0), (self.weight1, weights.weight1)):
            if tuple(parameter.shape[1:]) != value.shape:
                raise BadInputError("gcn weights", f"shape {value.shape}, model needs {tuple(parameter.shape[1:])}")
            with torch.no_grad():
                parameter.copy_(torch.from_numpy(value).to(parameter.device).expand_as(parameter))

    def forward(
        self,
        padded_features: torch.Tensor,
        adjacency: torch.Tensor,
        layout: BatchLayout,
        input_mask: torch.Tensor | None = None,
        hidden_mask: torch.Tensor | None = None,
        hops: int = 1,
    ) -> torch.Tensor:
        """Logits (N, C) = Â^k ReLU(Â^k X W0) W1 with k = hops (Kipf: 1).

        padded_features: (B, max_nodes, D), graph b's nodes in rows [:n_b] (layout.pad). Masks
        are scaled dropout keep-masks shaped like the layer input, (B, max_nodes, D) and
        (N, hidden); None = no dropout.
        """
        x = padded_features if input_mask is None else padded_features * input_mask
        projected = torch.cat([x[b, :n] @ self.weight0[b] for b, n in enumerate(layout.sizes)])
        hidden = torch.relu(_propagate(adjacency, projected, hops))
        if hidden_mask is not None:
            hidden = hidden * hidden_mask
        parts = torch.split(hidden, list(layout.sizes))
        projected = torch.cat([part @ self.weight1[b] for b, part in enumerate(parts)])
        return _propagate(adjacency, projected, hops)


def _propagate(adjacency: torch.Tensor, rows: torch.Tensor, hops: int) -> torch.Tensor:
    for _ in range(hops):
        rows = torch.sparse.mm(adjacency, rows)
    return rows


def propagate_gcn(
    batch: Sequence[GraphInput],
    config: GCNConfig = GCNConfig(),
    device: str | torch.device = "cpu",
    init: GCNWeights | None = None,
) -> list[np.ndarray]:
    """Train one GCN per image (all of the batch at once) and return (n_i, C) float32 probabilities.

    init: start every image's GCN from these weights (pretrain_gcn) instead of the
    seeded Glorot draw. device: where to train; results are reproducible per device, not
    across devices (CPU and CUDA random streams differ).
    """
    if not batch:
        return []
    problem = _Problem.build(batch, device, config.seed + 1)
    model = GCN(problem.dim, config.hidden, problem.num_classes, n_graphs=len(batch), seed=config.seed)
    if init is not None:
        model.load_shared(init)
    model = model.to(device)
    _fit(model, problem, config, config.epochs, config.lr)
    with torch.no_grad():
        logits = model(problem.features, problem.adjacency, problem.layout, hops=config.hops)
        probabilities = torch.softmax(problem.masked(logits), dim=1)
    return [part.cpu().numpy().astype(np.float32) for part in torch.split(probabilities, list(problem.layout.sizes))]


def pretrain_gcn(
    items: Sequence[GraphInput], config: GCNConfig = GCNConfig(), device: str | torch.device = "cpu"
) -> GCNWeights:
    """One GCN with shared weights fitted on the seeds of all items (config.pretrain_*).

    Each step trains on one block-diagonal graph of pretrain_images_per_step images, in
    a fixed order; the loss of a step is the mean cross-entropy over its seed nodes.
    """
    if not items:
        raise ValueError("pretrain_gcn needs at least one image")
    _check_batch(items)
    step = config.pretrain_images_per_step
    problems = [_Problem.build([_merge(items[i : i + step])], device, config.seed + 1) for i in range(0, len(items), step)]
    model = GCN(problems[0].dim, config.hidden, problems[0].num_classes, n_graphs=1, seed=config.seed).to(device)
    optimiser = _optimiser(model, config, config.pretrain_lr)
    for _ in range(config.pretrain_epochs):
        for problem in problems:
            _step(model, optimiser, problem, config)
    return GCNWeights(
        model.weight0[0].detach().cpu().numpy().copy(), model.weight1[0].detach().cpu().numpy().copy()
    )


@dataclass
class _Problem:
    """A batch of graphs as tensors: padded features, block-diagonal Â, seeds, allowed classes."""

    layout: BatchLayout
    features: torch.Tensor
    adjacency: torch.Tensor
    allowed: torch.Tensor
    labelled: torch.Tensor
    seed_labels: torch.Tensor
    seed_weight: torch.Tensor
    dim: int
    num_classes: int
    generators: list[torch.Generator]

    @classmethod
    def build(cls, batch: Sequence[GraphInput], device: str | torch.device, dropout_seed: int) -> _Problem:
        dim, num_classes = _check_batch(batch)
        layout = BatchLayout.from_sizes([item.graph.n_nodes for item in batch], device)
        node_features = np.concatenate([standardise_features(item.node_features) for item in batch])
        features = layout.pad(torch.from_numpy(node_features.astype(np.float32)).to(device))
        adjacency = _block_diagonal(
            [normalised_adjacency(item.graph.n_nodes, item.graph.edges, item.graph.weights) for item in batch]
        ).to(device)
        labels = torch.from_numpy(np.concatenate([item.seeds.labels for item in batch]).astype(np.int64)).to(device)
        allowed = torch.from_numpy(np.concatenate([item.seeds.candidates for item in batch])).to(device)
        labelled = labels >= 0
        return cls(
            layout, features, adjacency, allowed, labelled, labels[labelled],
            _per_image_mean_weights(labels, layout)[labelled], dim, num_classes,
            [torch.Generator(device).manual_seed(dropout_seed) for _ in batch],
        )

    def masked(self, logits: torch.Tensor) -> torch.Tensor:
        return logits.masked_fill(~self.allowed, float("-inf"))


def _optimiser(model: GCN, config: GCNConfig, lr: float) -> torch.optim.Adam:
    return torch.optim.Adam(
        [
            {"params": [model.weight0], "weight_decay": config.weight_decay},  # Kipf: first layer only
            {"params": [model.weight1], "weight_decay": 0.0},
        ],
        lr=lr,
    )


def _fit(model: GCN, problem: _Problem, config: GCNConfig, epochs: int, lr: float) -> None:
    optimiser = _optimiser(model, config, lr)
    for _ in range(epochs):
        _step(model, optimiser, problem, config)


def _step(model: GCN, optimiser: torch.optim.Optimizer, problem: _Problem, config: GCNConfig) -> None:
    """One Adam step on the sum over images of each image's mean seed cross-entropy."""
    layout = problem.layout
    optimiser.zero_grad()
    input_mask = _dropout_mask(problem.generators, layout, problem.dim, config.dropout)
    hidden_mask = _dropout_mask(problem.generators, layout, config.hidden, config.dropout)
    if hidden_mask is not None:
        hidden_mask = hidden_mask[layout.graph_of_node, layout.slot_of_node]
    logits = model(problem.features, problem.adjacency, layout, input_mask, hidden_mask, config.hops)
    log_probs = torch.log_softmax(problem.masked(logits), dim=1)
    loss = -(log_probs[problem.labelled, problem.seed_labels] * problem.seed_weight).sum()
    loss.backward()
    optimiser.step()


def _merge(items: Sequence[GraphInput]) -> GraphInput:
    """Several graphs as one (disconnected) graph; features standardised per image first."""
    offsets = np.cumsum([0] + [item.graph.n_nodes for item in items])
    edges = np.concatenate([item.graph.edges + offset for item, offset in zip(items, offsets)])
    graph = Graph(
        n_nodes=int(offsets[-1]),
        edges=edges.astype(np.int64).reshape(-1, 2),
        weights=np.concatenate([item.graph.weights for item in items]).astype(np.float32),
    )
    seeds = NodeSeeds(
        np.concatenate([item.seeds.labels for item in items]), np.concatenate([item.seeds.candidates for item in items])
    )
    features = np.concatenate([standardise_features(item.node_features) for item in items])
    return GraphInput(features.astype(np.float32), graph, seeds)


def standardise_features(node_features: np.ndarray) -> np.ndarray:
    """Zero mean, unit variance per feature dimension over one image's nodes (constant dims -> 0)."""
    features = np.asarray(node_features, dtype=np.float64)
    std = features.std(axis=0)
    return (features - features.mean(axis=0)) / np.where(std > 1e-12, std, 1.0)


def _glorot(fan_in: int, fan_out: int, generator: torch.Generator) -> torch.Tensor:
    bound = float(np.sqrt(6.0 / (fan_in + fan_out)))
    return (torch.rand(fan_in, fan_out, generator=generator) * 2 - 1) * bound


def _block_diagonal(matrices: Sequence[torch.Tensor]) -> torch.Tensor:
    """Sparse block-diagonal matrix of sparse COO squares."""
    offsets = np.cumsum([0] + [m.shape[0] for m in matrices])
    indices = torch.cat([m.indices() + int(o) for m, o in zip(matrices, offsets)], dim=1)
    values = torch.cat([m.values() for m in matrices])
    total = int(offsets[-1])
    return torch.sparse_coo_tensor(indices, values, (total, total), check_invariants=True).coalesce()


def _dropout_mask(
    generators: Sequence[torch.Generator], layout: BatchLayout, width: int, rate: float
) -> torch.Tensor | None:
    """Scaled keep-mask (B, max_nodes, width); graph b's rows drawn from its own generator,
    so its draws do not depend on the rest of the batch."""
    if rate <= 0:
        return None
    keep = 1.0 - rate
    draws = torch.ones(layout.n_graphs, layout.max_nodes, width, device=layout.graph_of_node.device)
    for index, (generator, n_nodes) in enumerate(zip(generators, layout.sizes)):
        draws[index, :n_nodes].uniform_(generator=generator)  # 3x faster than bernoulli_ on CPU
    return (draws < keep).to(draws.dtype).mul_(1.0 / keep)


def _per_image_mean_weights(labels: torch.Tensor, layout: BatchLayout) -> torch.Tensor:
    """Per-node loss weight 1 / (seeds in its image), so each image's loss is a mean."""
    seeds_per_graph = torch.zeros(layout.n_graphs, device=labels.device).index_add_(
        0, layout.graph_of_node, (labels >= 0).float()
    )
    return 1.0 / seeds_per_graph[layout.graph_of_node].clamp(min=1.0)


def _check_batch(batch: Sequence[GraphInput]) -> tuple[int, int]:
    """Feature dimension and class count shared by the batch; raises on unusable inputs."""
    for index, item in enumerate(batch):
        name = f"graph input {index}"
        features = np.asarray(item.node_features)
        n = item.graph.n_nodes
        if features.ndim != 2 or features.shape[0] != n or item.seeds.n_nodes != n:
            raise BadInputError(name, "node features, graph and seeds disagree on the node count")
        if not np.isfinite(features).all():
            raise BadInputError(name, "node features contain NaN or infinite values")
        labelled = item.seeds.labelled
        if not labelled.any():
            raise BadInputError(name, "no seeded node to learn from")
        if not item.seeds.candidates.any(axis=1).all():
            raise BadInputError(name, "a node has no candidate class")
        seed_labels = item.seeds.labels[labelled]
        in_range = seed_labels.max() < item.seeds.num_classes
        if not (in_range and item.seeds.candidates[labelled, seed_labels].all()):
            raise BadInputError(name, "a seed label is not among its node's candidates")
    dims = {np.asarray(item.node_features).shape[1] for item in batch}
    classes = {item.seeds.num_classes for item in batch}
    if len(dims) != 1 or len(classes) != 1:
        raise ValueError(f"a batch needs one feature dimension and class count, got {dims} and {classes}")
    return dims.pop(), classes.pop()

import numpy as np
import pytest
import torch

from wsss_core.errors import BadInputError
from wsss_core.graphnet.gcn import (
    GCN,
    BatchLayout,
    GCNConfig,
    GCNWeights,
    GraphInput,
    normalised_adjacency,
    pretrain_gcn,
    propagate_gcn,
)
from wsss_core.graphnet.graph import Graph, GraphConfig, build_graph
from wsss_core.graphnet.seeds import NodeSeeds

FAST = GCNConfig(epochs=100)


@pytest.fixture(autouse=True, scope="module")
def one_torch_thread():
    """Tiny graphs: intra-op threads only contend on the shared 2-core machine (10x slower)."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def two_cluster_problem(side: int, seed: int, noise: float = 0.3) -> tuple[GraphInput, np.ndarray]:
    """A side x side grid of block superpixels: left half class 0, right half class 1.

    Features are a class-dependent mean plus noise; one seed node per class per row pair.
    """
    rng = np.random.default_rng(seed)
    superpixels = np.arange(side * side).reshape(side, side).repeat(3, 0).repeat(3, 1).astype(np.int32)
    truth = (np.arange(side * side) % side >= side // 2).astype(np.int64)
    features = np.eye(2)[truth] * 2.0 + rng.normal(0, noise, size=(side * side, 2))
    features = np.concatenate([features, rng.normal(size=(side * side, 3))], axis=1)  # distractor dims
    graph = build_graph(superpixels, features, GraphConfig())
    labels = np.full(side * side, -1)
    for row in range(0, side, 2):
        labels[row * side] = 0
        labels[row * side + side - 1] = 1
    seeds = NodeSeeds(labels, np.ones((side * side, 2), dtype=bool))
    return GraphInput(features, graph, seeds), truth


def test_normalised_adjacency_of_a_path_binary():
    adjacency = normalised_adjacency(3, np.array([[0, 1], [1, 2]])).to_dense().numpy()
    # A + I degrees 2, 3, 2
    expected = np.array(
        [
            [1 / 2, 1 / np.sqrt(6), 0],
            [1 / np.sqrt(6), 1 / 3, 1 / np.sqrt(6)],
            [0, 1 / np.sqrt(6), 1 / 2],
        ]
    )
    np.testing.assert_allclose(adjacency, expected, rtol=1e-6)


def test_normalised_adjacency_weighted_and_without_self_loops():
    adjacency = normalised_adjacency(3, np.array([[0, 1]]), np.array([4.0]), self_loops=False).to_dense().numpy()
    # degrees 4, 4, 0: Â01 = 4 / sqrt(4 * 4) = 1; the isolated node's row stays 0
    np.testing.assert_allclose(adjacency, [[0, 1, 0], [1, 0, 0], [0, 0, 0]], atol=1e-7)
    weighted = normalised_adjacency(2, np.array([[0, 1]]), np.array([3.0])).to_dense().numpy()
    np.testing.assert_allclose(weighted, [[0.25, 0.75], [0.75, 0.25]], rtol=1e-6)


def test_gcn_module_keeps_graphs_apart():
    layout = BatchLayout.from_sizes([2, 3])
    assert layout.graph_of_node.tolist() == [0, 0, 1, 1, 1]
    assert layout.slot_of_node.tolist() == [0, 1, 0, 1, 2]
    features = torch.randn(5, 4, generator=torch.Generator().manual_seed(1))
    padded = layout.pad(features)
    assert padded.shape == (2, 3, 4) and (padded[0, 2] == 0).all()
    torch.testing.assert_close(padded[1], features[2:])
    model = GCN(4, 5, 2, n_graphs=2, seed=0)
    with torch.no_grad():
        model.weight0[1] *= 10  # changing graph 1's weights must not move graph 0's logits
    identity = torch.eye(5).to_sparse()
    logits = model(padded, identity, layout)
    single = BatchLayout.from_sizes([2])
    alone = GCN(4, 5, 2, n_graphs=1, seed=0)(single.pad(features[:2]), torch.eye(2).to_sparse(), single)
    torch.testing.assert_close(logits[:2], alone)
    assert not torch.allclose(logits[2:], GCN(4, 5, 2, n_graphs=2, seed=0)(padded, identity, layout)[2:])


def test_gcn_fits_its_seeds_and_labels_an_easy_two_cluster_graph():
    problem, truth = two_cluster_problem(side=8, seed=0)
    probabilities = propagate_gcn([problem])[0]
    assert probabilities.shape == (64, 2) and probabilities.dtype == np.float32
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-5)
    predicted = probabilities.argmax(axis=1)
    seeded = problem.seeds.labelled
    assert (predicted[seeded] == problem.seeds.labels[seeded]).all()
    assert (predicted == truth).mean() >= 0.95


def test_batched_training_equals_one_image_at_a_time():
    # graphs of other sizes: a block's padding to its largest one must not change a bit of the others
    problems = [two_cluster_problem(side, seed)[0] for side, seed in ((20, 1), (31, 2), (12, 3), (25, 4))]
    threads = torch.get_num_threads()
    torch.set_num_threads(2)  # as a batch task may have: a padded block's matmul splits by its size
    try:
        batched = propagate_gcn(problems)  # the default schedule: FAST's few epochs hide the rounding
        alones = [propagate_gcn([problem])[0] for problem in problems]
    finally:
        torch.set_num_threads(threads)
    for together, alone in zip(batched, alones):
        # bit for bit: a re-run that recomputes a few images must give a clean run's values
        np.testing.assert_array_equal(together, alone)
    # and different images really get different models
    assert not np.allclose(batched[0], propagate_gcn([problems[1]], FAST)[0][:400])


def test_gcn_is_deterministic_and_seed_dependent():
    problem, _ = two_cluster_problem(side=6, seed=4, noise=1.0)
    first = propagate_gcn([problem], FAST)[0]
    np.testing.assert_array_equal(first, propagate_gcn([problem], FAST)[0])
    assert not np.allclose(first, propagate_gcn([problem], GCNConfig(epochs=100, seed=1))[0])


def test_candidates_mask_classes_out():
    problem, _ = two_cluster_problem(side=4, seed=5)
    candidates = np.ones((16, 3), dtype=bool)
    candidates[:, 2] = False  # class 2 exists but nobody may take it
    candidates[5] = [True, False, False]  # node 5 may only be background
    seeds = NodeSeeds(problem.seeds.labels, candidates)
    probabilities = propagate_gcn([GraphInput(problem.node_features, problem.graph, seeds)], FAST)[0]
    assert probabilities.shape == (16, 3)
    assert (probabilities[:, 2] == 0).all()
    assert probabilities[5].tolist() == [1.0, 0.0, 0.0]


def test_isolated_nodes_and_no_edges_still_work():
    features = np.array([[0.0, 1.0], [1.0, 0.0], [0.1, 0.9]])
    graph = Graph(3, np.zeros((0, 2), dtype=np.int64), np.zeros(0, dtype=np.float32))
    seeds = NodeSeeds(np.array([0, 1, -1]), np.ones((3, 2), dtype=bool))
    probabilities = propagate_gcn([GraphInput(features, graph, seeds)])[0]
    assert probabilities.argmax(axis=1).tolist() == [0, 1, 0]  # node 2 looks like node 0


def test_rejects_unusable_inputs():
    problem, _ = two_cluster_problem(side=4, seed=6)
    unseeded = NodeSeeds(np.full(16, -1), np.ones((16, 2), dtype=bool))
    with pytest.raises(BadInputError, match="no seeded node"):
        propagate_gcn([GraphInput(problem.node_features, problem.graph, unseeded)])
    outside = problem.seeds.candidates.copy()
    outside[0, 0] = False  # node 0 is seeded 0 but may not be 0
    with pytest.raises(BadInputError, match="candidates"):
        propagate_gcn([GraphInput(problem.node_features, problem.graph, NodeSeeds(problem.seeds.labels, outside))])
    with pytest.raises(BadInputError, match="node count"):
        propagate_gcn([GraphInput(problem.node_features[:10], problem.graph, problem.seeds)])
    assert propagate_gcn([]) == []


def unseeded(problem: GraphInput) -> GraphInput:
    """The problem with a single seed node left (class 0), too little to learn class 1 from."""
    labels = np.full(problem.graph.n_nodes, -1)
    labels[0] = 0
    return GraphInput(problem.node_features, problem.graph, NodeSeeds(labels, problem.seeds.candidates))


def test_pretrained_shared_gcn_labels_an_image_with_one_seed():
    """The dataset-level GCN learns the classes from other images' seeds (offline preset)."""
    train = [two_cluster_problem(side=8, seed=s)[0] for s in range(4)]
    target, truth = two_cluster_problem(side=8, seed=9)
    config = GCNConfig(hidden=16, dropout=0.0, weight_decay=0.0, epochs=0, pretrain_epochs=100, pretrain_images_per_step=2)
    weights = pretrain_gcn(train, config)
    assert weights.weight0.shape == (5, 16) and weights.weight1.shape == (16, 2)
    predicted = propagate_gcn([unseeded(target)], config, init=weights)[0].argmax(axis=1)
    assert (predicted == truth).mean() >= 0.95
    # per-image training from one seed cannot know what class 1 looks like
    cold = propagate_gcn([unseeded(target)], GCNConfig(epochs=100))[0].argmax(axis=1)
    assert (cold == truth).mean() < 0.95


def test_gcn_weights_round_trip_and_refuse_mismatched_shapes():
    weights = GCNWeights(np.ones((5, 3), np.float32), np.ones((3, 2), np.float32))
    again = GCNWeights.from_arrays(weights.to_arrays())
    np.testing.assert_array_equal(again.weight0, weights.weight0)
    with pytest.raises(BadInputError, match="do not chain"):
        GCNWeights.from_arrays({"weight0": np.ones((5, 3)), "weight1": np.ones((4, 2))})
    problem, _ = two_cluster_problem(side=4, seed=0)
    with pytest.raises(BadInputError, match="model needs"):
        propagate_gcn([problem], GCNConfig(hidden=3), init=GCNWeights(np.ones((7, 3), np.float32), np.ones((3, 2), np.float32)))


def test_more_hops_reach_further_and_bad_configs_are_refused():
    problem, truth = two_cluster_problem(side=8, seed=0)
    probabilities = propagate_gcn([problem], GCNConfig(epochs=100, hops=3))[0]
    assert (probabilities.argmax(axis=1) == truth).mean() >= 0.95
    for bad in (dict(hops=0), dict(epochs=-1), dict(pretrain_images_per_step=0)):
        with pytest.raises(ValueError):
            GCNConfig(**bad)

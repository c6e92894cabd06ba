import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.graphnet.graph import (
    Graph,
    GraphConfig,
    adjacent_pairs,
    build_graph,
    prune_edges,
    semantic_edges,
    similarity_weights,
)

# 3x4 map, four regions; 0-3 and 1-2 touch only diagonally (not 4-connected).
FOUR_REGIONS = np.array(
    [
        [0, 0, 1, 1],
        [0, 0, 1, 1],
        [2, 2, 3, 3],
    ],
    dtype=np.int32,
)
FOUR_FEATURES = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [1.0, 2.0]])


def test_adjacent_pairs_of_hand_checked_map():
    assert adjacent_pairs(FOUR_REGIONS).tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    assert adjacent_pairs(FOUR_REGIONS).dtype == np.int64


def test_adjacent_pairs_matches_a_pixel_loop():
    labels = np.random.default_rng(3).integers(0, 6, size=(9, 11))
    expected = set()
    for y in range(9):
        for x in range(11):
            for dy, dx in ((0, 1), (1, 0)):
                if y + dy < 9 and x + dx < 11 and labels[y, x] != labels[y + dy, x + dx]:
                    a, b = labels[y, x], labels[y + dy, x + dx]
                    expected.add((min(a, b), max(a, b)))
    assert [tuple(p) for p in adjacent_pairs(labels)] == sorted(expected)


def test_similarity_weights_hand_computed():
    edges = adjacent_pairs(FOUR_REGIONS)
    weights = similarity_weights(FOUR_FEATURES, edges, bandwidth=2.0)
    # squared distances: 0-1: 1, 0-2: 4, 1-3: 4, 2-3: 1
    np.testing.assert_allclose(weights, np.exp([-0.5, -2.0, -2.0, -0.5]), rtol=1e-6)
    np.testing.assert_allclose(similarity_weights(FOUR_FEATURES, edges, 4.0), np.exp([-0.25, -1, -1, -0.25]), rtol=1e-6)


def test_build_graph_weighted_unpruned_uses_feature_dimension_as_bandwidth():
    graph = build_graph(FOUR_REGIONS, FOUR_FEATURES, GraphConfig(adjacency="weighted", prune=False))
    assert graph.n_nodes == 4
    assert graph.edges.tolist() == [[0, 1], [0, 2], [1, 3], [2, 3]]
    np.testing.assert_allclose(graph.weights, np.exp([-0.5, -2.0, -2.0, -0.5]), rtol=1e-6)
    assert graph.weights.dtype == np.float32


def test_build_graph_binary_default_is_all_ones():
    graph = build_graph(FOUR_REGIONS, FOUR_FEATURES)
    assert graph.weights.tolist() == [1.0] * len(graph.edges)


def test_absent_label_gives_isolated_node():
    labels = np.array([[0, 0, 2, 2]], dtype=np.int32)  # label 1 absent
    graph = build_graph(labels, np.zeros((3, 4)))
    assert graph.n_nodes == 3
    assert graph.edges.tolist() == [[0, 2]]
    adjacency = graph.adjacency_matrix().toarray()
    assert adjacency[1].sum() == 0
    np.testing.assert_array_equal(adjacency, adjacency.T)


def test_prune_rule_on_hand_made_weights():
    edges = np.array([[0, 1], [1, 2], [2, 3], [0, 3], [0, 2], [3, 4]])
    weights = np.array([0.9, 0.9, 0.9, 0.9, 0.1, 0.05])
    # mean 0.625, std 0.3892 -> threshold 0.2358: 0.1 and 0.05 are weak.
    # 0-2 goes (both endpoints have a 0.9 edge); 3-4 stays: node 4's only, so strongest, edge.
    keep = prune_edges(5, edges, weights)
    assert keep.tolist() == [True, True, True, True, False, True]


def test_prune_keeps_edge_above_threshold_that_is_not_strongest():
    edges = np.array([[0, 1], [0, 2], [1, 2], [2, 3]])
    weights = np.array([1.0, 0.8, 0.6, 0.0])
    # threshold = 0.6 - 0.3742 = 0.226: 0.6 stays though weaker than both ends' best,
    # 0.0 is node 3's only edge, so it stays too.
    assert prune_edges(4, edges, weights).tolist() == [True, True, True, True]
    weights = np.array([1.0, 0.8, 0.1, 0.9])  # 1-2 below threshold and nobody's strongest
    assert prune_edges(4, edges, weights).tolist() == [True, True, False, True]


def test_prune_equal_weights_keeps_everything_and_empty_is_empty():
    edges = np.array([[0, 1], [1, 2]])
    assert prune_edges(3, edges, np.array([0.3, 0.3])).all()
    assert prune_edges(3, np.zeros((0, 2), dtype=np.int64), np.zeros(0)).shape == (0,)


def test_build_graph_prunes_weak_spatial_edge():
    # a 1x5 strip: nodes 0..4 in a chain; node 2 is far from 1 but close to 3.
    labels = np.array([[0, 1, 2, 3, 4]], dtype=np.int32)
    features = np.array([[0.0], [0.1], [3.0], [3.1], [3.2]])
    unpruned = build_graph(labels, features, GraphConfig(prune=False))
    pruned = build_graph(labels, features)
    assert unpruned.edges.tolist() == [[0, 1], [1, 2], [2, 3], [3, 4]]
    assert pruned.edges.tolist() == [[0, 1], [2, 3], [3, 4]]


def test_semantic_edges_join_nearest_in_feature_space():
    features = np.array([[0.0], [0.1], [5.0], [5.2], [10.0]])
    assert semantic_edges(features, 1).tolist() == [[0, 1], [2, 3], [3, 4]]
    assert semantic_edges(features, 0).shape == (0, 2)
    assert len(semantic_edges(features, 10)) == 10  # k clipped to n-1: complete graph


def test_semantic_edges_are_added_to_spatial_ones():
    labels = np.array([[0, 1, 2, 3]], dtype=np.int32)
    features = np.array([[0.0], [5.0], [0.05], [5.1]])  # 0~2 and 1~3 similar but not adjacent
    graph = build_graph(labels, features, GraphConfig(prune=False, semantic_k=1, adjacency="weighted"))
    assert graph.edges.tolist() == [[0, 1], [0, 2], [1, 2], [1, 3], [2, 3]]
    np.testing.assert_allclose(graph.weights[1], np.exp(-0.05**2), rtol=1e-6)


@pytest.mark.parametrize(
    "labels, features",
    [
        (np.array([[0, 3]], dtype=np.int32), np.zeros((3, 2))),  # label beyond the feature rows
        (np.array([[0, 1]], dtype=np.int32), np.array([[0.0], [np.nan]])),
        (np.array([[0.0, 1.0]]), np.zeros((2, 2))),  # float label map
        (np.array([0, 1], dtype=np.int32), np.zeros((2, 2))),  # not 2-D
    ],
)
def test_build_graph_rejects_bad_input(labels, features):
    with pytest.raises(BadInputError):
        build_graph(labels, features)


def test_pruned_graph_leaves_no_node_cut_off():
    rng = np.random.default_rng(0)
    labels = np.arange(36).reshape(6, 6).repeat(3, 0).repeat(3, 1).astype(np.int32)
    features = rng.normal(size=(36, 8))
    graph = build_graph(labels, features)
    full = build_graph(labels, features, GraphConfig(prune=False))
    assert len(graph.edges) < len(full.edges)
    assert set(np.unique(graph.edges)) == set(range(36))
    assert isinstance(graph, Graph)

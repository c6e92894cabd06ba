import numpy as np
import pytest

from wsss_core.graphnet.graph import Graph
from wsss_core.graphnet.label_propagation import LabelPropagationConfig, propagate_labels, symmetric_normalised
from wsss_core.graphnet.seeds import NodeSeeds


def chain(n: int, weights: np.ndarray | None = None) -> Graph:
    edges = np.stack([np.arange(n - 1), np.arange(1, n)], axis=1)
    w = np.ones(n - 1, dtype=np.float32) if weights is None else weights.astype(np.float32)
    return Graph(n, edges, w)


def seeds_of(labels: list[int], num_classes: int = 2) -> NodeSeeds:
    return NodeSeeds(np.array(labels), np.ones((len(labels), num_classes), dtype=bool))


def closed_form(graph: Graph, labels: list[int], num_classes: int, alpha: float) -> np.ndarray:
    s = symmetric_normalised(graph).toarray()
    y = np.zeros((graph.n_nodes, num_classes))
    for node, label in enumerate(labels):
        if label >= 0:
            y[node, label] = 1
    f = (1 - alpha) * np.linalg.inv(np.eye(graph.n_nodes) - alpha * s) @ y
    return f / f.sum(axis=1, keepdims=True)


def test_symmetric_normalisation_of_a_chain():
    s = symmetric_normalised(chain(3)).toarray()
    np.testing.assert_allclose(s, [[0, 1 / np.sqrt(2), 0], [1 / np.sqrt(2), 0, 1 / np.sqrt(2)], [0, 1 / np.sqrt(2), 0]])


def test_chain_with_seeds_at_both_ends():
    probabilities = propagate_labels(chain(5), seeds_of([0, -1, -1, -1, 1]))
    assert probabilities.argmax(axis=1)[[0, 1, 3, 4]].tolist() == [0, 0, 1, 1]
    np.testing.assert_allclose(probabilities[2], [0.5, 0.5], atol=1e-6)  # the middle is a draw
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, rtol=1e-6)
    assert probabilities[1, 0] > 0.5 and probabilities[0, 0] > probabilities[1, 0]


@pytest.mark.parametrize("alpha", [0.5, 0.99])
def test_matches_the_dense_closed_form(alpha):
    graph = chain(7, np.array([1.0, 0.2, 3.0, 1.0, 0.5, 2.0]))
    labels = [0, -1, -1, 1, -1, -1, 2]
    probabilities = propagate_labels(graph, seeds_of(labels, 3), LabelPropagationConfig(alpha=alpha))
    np.testing.assert_allclose(probabilities, closed_form(graph, labels, 3, alpha), atol=1e-5)


def test_weak_edge_moves_the_boundary():
    # a strong 0-1-2 link and a weak 2-3 link: node 2 joins the class of node 0
    graph = chain(5, np.array([1.0, 1.0, 0.01, 1.0]))
    assert propagate_labels(graph, seeds_of([0, -1, -1, -1, 1])).argmax(axis=1).tolist() == [0, 0, 0, 1, 1]


def test_candidates_respected_and_unreached_nodes_uniform():
    # nodes 0-2 a chain with both seeds; nodes 3-4 a separate pair without seeds
    graph = Graph(5, np.array([[0, 1], [1, 2], [3, 4]]), np.ones(3, dtype=np.float32))
    candidates = np.ones((5, 3), dtype=bool)
    candidates[1] = [True, False, True]  # node 1 may not be class 1
    candidates[4] = [False, True, True]
    seeds = NodeSeeds(np.array([1, -1, 2, -1, -1]), candidates)
    probabilities = propagate_labels(graph, seeds)
    assert probabilities[1].tolist() == [0.0, 0.0, 1.0]
    np.testing.assert_allclose(probabilities[3], [1 / 3, 1 / 3, 1 / 3])
    np.testing.assert_allclose(probabilities[4], [0, 0.5, 0.5])
    assert probabilities[0].argmax() == 1 and probabilities[2].argmax() == 2


def test_rejects_bad_alpha_and_size_mismatch():
    with pytest.raises(ValueError):
        propagate_labels(chain(3), seeds_of([0, -1, 1]), LabelPropagationConfig(alpha=1.0))
    with pytest.raises(ValueError):
        propagate_labels(chain(3), seeds_of([0, 1]))

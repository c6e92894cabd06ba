import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.graphnet.graph import GraphConfig, build_graph
from wsss_core.graphnet.config import (
    GraphNetConfig,
    NodeFeatureConfig,
    graph_from_arrays,
    graph_to_arrays,
    resolve_config,
    seeds_from_arrays,
    seeds_to_arrays,
)
from wsss_core.errors import UsageError
from wsss_core.graphnet.seeds import NodeSeeds


def test_graph_and_seed_arrays_round_trip_and_bad_graphs_are_refused():
    superpixels = np.array([[0, 0, 1], [2, 2, 1]], dtype=np.int32)
    features = np.array([[0.0], [1.0], [0.1]], dtype=np.float32)
    graph = build_graph(superpixels, features, GraphConfig(adjacency="weighted", prune=False))
    arrays = graph_to_arrays(features, graph)
    again_features, again = graph_from_arrays(arrays)
    np.testing.assert_array_equal(again.edges, graph.edges)
    np.testing.assert_array_equal(again.weights, graph.weights)
    np.testing.assert_array_equal(again_features, features)
    with pytest.raises(BadInputError, match="outside"):
        graph_from_arrays({**arrays, "edges": np.array([[0, 7]])[: len(arrays["edges"])].repeat(len(arrays["edges"]), 0)})
    seeds = NodeSeeds(np.array([0, -1, 2]), np.ones((3, 3), dtype=bool))
    back = seeds_from_arrays(seeds_to_arrays(seeds))
    assert back.labels.tolist() == [0, -1, 2] and back.candidates.all()


def test_presets_and_the_offline_fallback(tmp_path):
    paper = GraphNetConfig.paper()
    assert paper.graphs.nodes.cnn and paper.graphs.graph.adjacency == "binary" and paper.gcn.hidden == 16
    offline = GraphNetConfig.offline()
    assert not offline.graphs.needs_cnn and offline.gcn.pretrain_epochs > 0
    with pytest.raises(ValueError, match="at least one"):
        NodeFeatureConfig(cnn=False)
    assert paper.seeds_config("boxes") is paper.box_seeds and paper.seeds_config("scribbles") is paper.scribble_seeds


def test_auto_resolves_below_the_cli_to_offline_without_pretrained_weights():
    # no network here: ImageNet weights cannot load, so auto picks the offline preset and says why
    resolved = resolve_config("auto", backbone="resnet18", weights="DEFAULT")
    assert resolved.preset == "offline" and "could not be loaded" in resolved.why
    assert resolved.config.superpixels == GraphNetConfig.offline().superpixels
    assert resolved.config.backbone == "resnet18" and resolved.config.weights == "DEFAULT"
    assert resolve_config("auto", weights="none").preset == "offline"
    assert resolve_config("paper").preset == "paper" and resolve_config("paper").why == "asked for"


def test_overrides_change_any_value_by_name_and_unknown_names_are_refused():
    resolved = resolve_config("offline", overrides={"gcn.epochs": 7, "superpixels": {"compactness": 20}})
    assert resolved.config.gcn.epochs == 7 and resolved.config.superpixels.compactness == 20.0
    with pytest.raises(UsageError, match="no setting 'epoch'"):
        resolve_config("offline", overrides={"gcn.epoch": 7})
    with pytest.raises(UsageError, match="choose paper, offline"):
        resolve_config("huge")

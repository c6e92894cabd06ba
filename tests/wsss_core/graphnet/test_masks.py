import numpy as np
import pytest

from wsss_core.errors import BadInputError
from wsss_core.graphnet.masks import node_mask


def test_node_mask_paints_each_superpixel_with_its_most_probable_class():
    superpixels = np.array([[0, 1], [1, 2]], dtype=np.int32)
    probabilities = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4]], dtype=np.float32)
    assert node_mask(superpixels, probabilities).tolist() == [[0, 1], [1, 0]]
    with pytest.raises(BadInputError, match="only 2 nodes"):
        node_mask(superpixels, probabilities[:2])

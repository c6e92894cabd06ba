import numpy as np
import pytest

from wsss_core.data.image_io import voc_palette
from wsss_core.plots import OverlayRow, colorize, confusion_figure, draw_boxes, draw_scribbles, overlay_grid, overlay_mask


def test_masks_take_the_voc_palette_and_void_keeps_the_image():
    mask = np.array([[0, 1], [2, 255]], dtype=np.uint8)
    assert np.array_equal(colorize(mask), voc_palette()[mask])
    image = np.full((2, 2, 3), 100, dtype=np.uint8)
    blended = overlay_mask(image, mask, skip=255)
    assert np.array_equal(blended[1, 1], image[1, 1]) and not np.array_equal(blended[0, 1], image[0, 1])


def test_scribbles_and_boxes_are_drawn_in_their_class_colours():
    image = np.zeros((10, 10, 3), dtype=np.uint8)
    scribbles = np.full((10, 10), 255, dtype=np.uint8)
    scribbles[5, 5] = 1
    drawn = draw_scribbles(image, scribbles, thickness=1)
    assert (drawn[4:7, 5] == voc_palette()[1]).all() and (drawn[0, 0] == 0).all()
    boxed = draw_boxes(image, np.array([[2, 1, 1, 8, 8]]), thickness=1)
    assert (boxed[1, 1:8] == voc_palette()[2]).all() and (boxed[4, 4] == 0).all()


def test_figures_render_without_pyplot(tmp_path):
    figure = confusion_figure(np.array([[5, 1], [0, 0]]), ["background", "cat"], title="t")
    figure.savefig(tmp_path / "confusion.png")
    picture = np.zeros((8, 8, 3), dtype=np.uint8)
    grid = overlay_grid([OverlayRow("a", {"image": picture, "prediction": None}, note="tags: cat")])
    grid.savefig(tmp_path / "grid.png")
    assert (tmp_path / "confusion.png").stat().st_size > 0 and (tmp_path / "grid.png").stat().st_size > 0
    with pytest.raises(ValueError):
        overlay_grid([])

import numpy as np
import pytest

from wsss_core.data.classes import VOC_CLASSES
from wsss_core.data.scribbles import (
    Stroke,
    rasterise_scribble_xml,
    rasterise_strokes,
    read_scribble_xml,
    scribble_class_index,
)
from wsss_core.errors import BadInputError

SHAPE = (12, 16)
CLASSES = list(VOC_CLASSES)


def polygon(tag: str, points: list[tuple[int, int]], x: str = "X", y: str = "Y") -> str:
    body = "".join(f"<point><{x}>{px}</{x}><{y}>{py}</{y}></point>" for px, py in points)
    return f"<polygon><tag>{tag}</tag>{body}</polygon>"


def scribblesup_xml(path, *polygons: str, size: tuple[int, int] = (16, 12)):
    width, height = size
    path.write_text(
        f"<annotation><filename>{path.stem}.jpg</filename>"
        f"<size><width>{width}</width><height>{height}</height></size><segmented>1</segmented>"
        + "".join(polygons)
        + "</annotation>"
    )
    return path


def test_two_point_stroke_rasterises_to_a_three_pixel_wide_bar(tmp_path):
    path = scribblesup_xml(tmp_path / "a.xml", polygon("plane", [(2, 5), (9, 5)]))
    thin = rasterise_scribble_xml(path, SHAPE, CLASSES, stroke_width=1)
    assert thin.dtype == np.uint8 and thin.shape == SHAPE
    expected = np.full(SHAPE, 255, np.uint8)
    expected[5, 2:10] = 1  # "plane" is ScribbleSup's name for aeroplane (class 1); ends inclusive
    assert np.array_equal(thin, expected)

    wide = rasterise_scribble_xml(path, SHAPE, CLASSES, stroke_width=3)
    expected[4:7, 1:11] = 1
    assert np.array_equal(wide, expected)
    assert int((wide == 1).sum()) == 3 * 10


def test_diagonal_stroke_background_and_object_layout_with_lower_case_points(tmp_path):
    path = tmp_path / "b.xml"
    path.write_text(
        "<annotation>"
        "<object><name>dog</name><polygon>"
        "<point><x>0</x><y>0</y></point><point><x>3</x><y>3</y></point>"
        "</polygon></object>"
        + polygon("background", [(15, 11)])
        + "</annotation>"
    )
    scribble = rasterise_scribble_xml(path, SHAPE, CLASSES, stroke_width=1)
    dog = CLASSES.index("dog")
    assert [tuple(p) for p in np.argwhere(scribble == dog)] == [(0, 0), (1, 1), (2, 2), (3, 3)]
    assert scribble[11, 15] == 0
    assert int((scribble != 255).sum()) == 5


def test_centrelines_keep_their_class_where_a_later_stroke_widens_over_them(tmp_path):
    strokes = [
        Stroke(1, np.array([[0, 4], [15, 4]])),  # horizontal, row 4
        Stroke(2, np.array([[0, 5], [15, 5]])),  # the row below: its widening covers row 4
    ]
    scribble = rasterise_strokes(strokes, SHAPE, stroke_width=3)
    assert (scribble[4] == 1).all()  # the first stroke's drawn pixels are kept
    assert (scribble[5] == 2).all() and (scribble[6] == 2).all()
    assert (scribble[3] == 1).all()  # only stroke 1's widening reaches row 3
    assert (scribble[7] == 255).all()
    with pytest.raises(ValueError, match="stroke_width"):
        rasterise_strokes(strokes, SHAPE, stroke_width=0)


def test_points_slightly_outside_are_cropped_far_outside_are_refused(tmp_path):
    path = scribblesup_xml(tmp_path / "edge.xml", polygon("cat", [(-3, 2), (20, 2)]))
    scribble = rasterise_scribble_xml(path, SHAPE, CLASSES, stroke_width=1)
    assert (scribble[2] == CLASSES.index("cat")).all() and int((scribble != 255).sum()) == 16

    far = scribblesup_xml(tmp_path / "far.xml", polygon("cat", [(0, 0), (100000, 2)]))
    with pytest.raises(BadInputError, match=r"far\.xml: stroke point far outside the 16x12 image"):
        read_scribble_xml(far, SHAPE, CLASSES)


def test_bad_scribble_files_name_the_file_and_the_problem(tmp_path):
    unknown = scribblesup_xml(tmp_path / "u.xml", polygon("unicorn", [(1, 1), (2, 2)]))
    with pytest.raises(BadInputError, match=r"u\.xml: unknown class name 'unicorn'"):
        read_scribble_xml(unknown, SHAPE, CLASSES)

    (tmp_path / "nox.xml").write_text(
        "<annotation><polygon><tag>cat</tag><point><Y>1</Y></point></polygon></annotation>"
    )
    with pytest.raises(BadInputError, match=r"nox\.xml: a <point> lacks its <X> or <Y>"):
        read_scribble_xml(tmp_path / "nox.xml", SHAPE, CLASSES)

    resized = scribblesup_xml(tmp_path / "size.xml", polygon("cat", [(1, 1)]), size=(500, 375))
    with pytest.raises(BadInputError, match=r"size\.xml: scribble XML is for a 500x375 image but image is 16x12"):
        read_scribble_xml(resized, SHAPE, CLASSES)

    (tmp_path / "broken.xml").write_text("<annotation><polygon>")
    with pytest.raises(BadInputError, match=r"broken\.xml: cannot parse XML"):
        read_scribble_xml(tmp_path / "broken.xml", SHAPE, CLASSES)


def test_class_names_resolve_against_custom_lists_and_aliases():
    assert scribble_class_index("plane", CLASSES) == 1
    assert scribble_class_index("monitor", CLASSES) == 20
    assert scribble_class_index(" table ", CLASSES) == CLASSES.index("diningtable")
    custom = ["bg", "plane", "grass"]
    assert scribble_class_index("background", custom) == 0
    assert scribble_class_index("plane", custom) == 1  # the list's own name first
    assert scribble_class_index("bike", custom) is None

"""The review loop: send the least-confident pseudo masks to a labelling tool, take the fixes back.

``wsss review export`` (``export.py``) picks images of a mask set (the K least confident, by
the same scores and order ``wsss status --worst`` uses, or named ones) and writes them as a
task set a labelling tool imports as it is: CVAT for images 1.1 XML (``cvat.py``) or Label
Studio JSON tasks with brush RLE predictions (``label_studio.py``). Each image carries its
pseudo mask (one mask per class), its weak labels (scribbles as brush masks, boxes as
rectangles, tags as image labels) and its confidence.

``wsss review import`` (``dataset.py``) reads the tool's export of the corrected
annotations back (the same two modules) and writes what changed as dataset files in the
dataset's own layout: scribble PNGs, VOC XML boxes and tags, and a full mask where a person
drew one. Everything is validated before anything is written; each file is written
atomically. The next ingest (``wsss run``) notices the changed files by their fingerprints
and recomputes exactly those images.

Pure functions of numpy arrays and files: no Prefect here.
"""

from __future__ import annotations

FORMATS = ("cvat", "label-studio")

# The role of a mask in an exported task set: the image's scribble (weak label), its current
# pseudo mask (a pre-annotation to look at), or a full mask a person drew (the default for
# anything drawn in the tool).
SCRIBBLE, PSEUDO, MANUAL = "scribble", "pseudo", "manual"
ROLES = (MANUAL, SCRIBBLE, PSEUDO)

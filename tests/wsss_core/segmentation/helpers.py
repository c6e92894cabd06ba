"""Tiny generated label sets for the segmentation tests: coloured rectangles on a textured background."""

import numpy as np

NUM_CLASSES = 3  # background, red, blue
COLOURS = {1: (200, 40, 40), 2: (40, 60, 210)}


def rectangles(n: int, height: int = 48, width: int = 64, seed: int = 0) -> tuple[list, list]:
    """n (image HxWx3 uint8, label HxW uint8) pairs, one or two rectangles each, a 255 band around them."""
    rng = np.random.default_rng(seed)
    images, labels = [], []
    for i in range(n):
        image = rng.integers(90, 150, (height, width, 3)).astype(np.uint8)  # grey noise
        label = np.zeros((height, width), np.uint8)
        for class_index in ([1, 2] if i % 2 else [1 + i % 4 // 2]):
            h, w = int(rng.integers(12, 24)), int(rng.integers(14, 28))
            top, left = int(rng.integers(0, height - h)), int(rng.integers(0, width - w))
            image[top : top + h, left : left + w] = COLOURS[class_index]
            label[top : top + h, left : left + w] = class_index
        edge = label != np.roll(label, 1, axis=1)
        label[edge] = 255
        images.append(image)
        labels.append(label)
    return images, labels

"""Layout accuracy's crops on constructed images: pixel edges, the black square padding and the
classifier's 2-px frame, every object of a batch in order."""

from __future__ import annotations

import numpy as np

from ldm_jax.evaluation import layout_accuracy as la


def test_pixel_edges_cover_the_box_and_are_at_least_one_pixel():
    assert la.pixel_box(np.array([0.25, 0.5, 0.75, 1.0]), 32, 32) == (16, 8, 32, 24)
    assert la.pixel_box(np.array([0.26, 0.5, 0.74, 0.51]), 32, 32) == (16, 8, 17, 24)
    assert la.pixel_box(np.array([1.0, 1.0, 1.0, 1.0]), 32, 32) == (31, 31, 32, 32)


def test_a_square_box_fills_the_item_frame():
    image = np.full((32, 32, 3), -1.0, np.float32)
    image[8:22, 4:18] = 1.0  # a 14 x 14 white square
    crop = la.crop_item(image, np.array([4, 8, 18, 22]) / 32)
    assert crop.shape == (32, 32, 1)
    np.testing.assert_allclose(crop[2:30, 2:30, 0], 1.0, atol=1e-6)  # 14 -> 28: all white
    frame = np.ones((32, 32), bool)
    frame[2:30, 2:30] = False
    assert (crop[frame, 0] == -1.0).all()


def test_a_tall_box_is_centred_on_black_and_objects_come_in_order():
    image = np.full((32, 32, 1), -1.0, np.float32)
    image[0:16, 0:8] = 1.0  # 16 tall, 8 wide: padded to 16 x 16, white in columns 4..12
    crop = la.crop_item(image, np.array([0, 0, 8, 16]) / 32)[2:30, 2:30, 0]  # [28, 28]
    np.testing.assert_allclose(crop[:, 9:19], 1.0, atol=1e-6)  # columns 8..20 of 28, inner
    np.testing.assert_allclose(crop[:, :6], -1.0, atol=1e-6)
    np.testing.assert_allclose(crop[:, 22:], -1.0, atol=1e-6)
    images = np.stack([image, -image])
    boxes = np.zeros((2, 3, 4), np.float32)
    boxes[:, :, 2:] = 0.5
    crops, index = la.crop_objects(images, boxes, np.array([2, 1]))
    assert crops.shape == (3, 32, 32, 1) and index.tolist() == [[0, 0], [0, 1], [1, 0]]
    assert la.crop_objects(images, boxes, np.array([0, 0]))[0].shape == (0, 32, 32, 1)

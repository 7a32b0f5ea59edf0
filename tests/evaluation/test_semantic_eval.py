"""The semantic-synthesis scores: mIoU and pixel accuracy in closed form, the chance level's
derangement, the labeller on drawn maps and the workdir check (fast, no model)."""

from __future__ import annotations

import importlib.util
import pathlib

import numpy as np
import pytest

from ldm_jax.config.validation import ConfigError
from ldm_jax.data import emoji_palette
from ldm_jax.evaluation import semantic

ROOT = pathlib.Path(__file__).resolve().parents[2]


def _config(path: str, arg: str | None = None):
    spec = importlib.util.spec_from_file_location("config_under_test", ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.get_config(arg)


def test_hand_computed_case():
    target = np.array([[[0, 0], [1, 1]]])  # [1, 2, 2]
    predicted = np.array([[[0, 1], [1, 1]]])
    np.testing.assert_array_equal(
        semantic.confusion_matrix(target, predicted, 3), [[1, 1, 0], [0, 2, 0], [0, 0, 0]]
    )
    scores = semantic.segmentation_scores(target, predicted, 3, ("a", "b", "c"))
    # Class a: 1 hit, union 2 + 1 - 1 = 2; class b: 2 hits, union 2 + 3 - 2 = 3; c is absent.
    assert scores["per_class_iou"] == {"a": 0.5, "b": round(2 / 3, 4), "c": None}
    assert scores["miou"] == pytest.approx((1 / 2 + 2 / 3) / 2)
    assert scores["pixel_accuracy"] == pytest.approx(3 / 4)
    assert scores["classes_present"] == 2


def test_a_class_only_predicted_lowers_the_others_but_is_not_averaged():
    target = np.array([[0, 0, 0, 0]])
    predicted = np.array([[0, 0, 0, 2]])
    scores = semantic.segmentation_scores(target, predicted, 3, ("a", "b", "c"))
    assert scores["miou"] == pytest.approx(3 / 4)  # class a only: 3 / (4 + 3 - 3)
    assert scores["per_class_iou"]["c"] is None


def test_identical_maps_score_one():
    maps = np.random.default_rng(0).integers(0, semantic.NUM_CLASSES, (5, 16, 16))
    scores = semantic.segmentation_scores(maps, maps)
    assert scores["miou"] == 1.0 and scores["pixel_accuracy"] == 1.0
    assert scores["classes_present"] == semantic.NUM_CLASSES


def test_swapping_two_classes_gives_the_known_value():
    maps = np.random.default_rng(1).integers(0, semantic.NUM_CLASSES, (4, 16, 16))
    swap = np.arange(semantic.NUM_CLASSES)
    swap[[2, 5]] = [5, 2]
    scores = semantic.segmentation_scores(maps, swap[maps])
    k = semantic.NUM_CLASSES
    assert scores["miou"] == pytest.approx((k - 2) / k)  # classes 2 and 5 have IoU 0
    assert scores["pixel_accuracy"] == pytest.approx(1.0 - np.isin(maps, (2, 5)).mean())


def test_derangement_moves_every_item_and_is_seeded():
    for n in (2, 3, 144):
        order = semantic.derangement(n, seed=3)
        assert sorted(order) == list(range(n)) and not np.any(order == np.arange(n))
    np.testing.assert_array_equal(semantic.derangement(50, 7), semantic.derangement(50, 7))
    assert not np.array_equal(semantic.derangement(50, 7), semantic.derangement(50, 8))
    with pytest.raises(ValueError, match="at least 2"):
        semantic.derangement(1, 0)


def test_bad_maps_raise():
    with pytest.raises(ValueError, match="shapes differ"):
        semantic.confusion_matrix(np.zeros((2, 2), int), np.zeros((2, 3), int))
    with pytest.raises(ValueError, match="outside"):
        semantic.confusion_matrix(np.zeros((2, 2), int), np.full((2, 2), 9))


def test_maps_drawn_in_the_display_colours_are_read_back():
    maps = np.random.default_rng(2).integers(0, semantic.NUM_CLASSES, (3, 8, 8))
    images = emoji_palette.colourise(maps).astype(np.float32) / 127.5 - 1.0  # [3, 8, 8, 3]
    np.testing.assert_array_equal(semantic.rederived_maps(images), maps)


def test_only_emoji_semantic_workdirs_are_scored():
    semantic.check_semantic(_config("configs/tasks/emoji/semantic.py"))
    semantic.check_semantic(_config("configs/tasks/emoji/semantic.py", "tiny"))
    for path, arg in (
        ("configs/tasks/emoji/text2img_bert.py", None),
        ("configs/paper/semantic_synthesis256.py", "tiny"),  # synthetic shapes, 8 classes
    ):
        with pytest.raises(ConfigError, match="--what semantic"):
            semantic.check_semantic(_config(path, arg))

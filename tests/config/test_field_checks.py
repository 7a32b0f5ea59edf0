"""The schema-driven field checks (`config/fields.py`, `config/field_checks.py`) on their own."""

from __future__ import annotations

import dataclasses
import math

import pytest

from ldm_jax.config import field_checks, sections
from ldm_jax.config.errors import ConfigError
from ldm_jax.config.fields import DROP_PROBABILITY, POSITIVE, Range, option
from ldm_jax.config.options import TrainOptions


@pytest.mark.parametrize(
    "valid, inside, outside, text",
    [
        (POSITIVE, [1, 10**9], [0, -1, 0.5], ">= 1"),
        (DROP_PROBABILITY, [0, 0.0, 0.999], [1, 1.0, -1e-9, math.nan], "in [0, 1)"),
        (Range(above=0, below=1), [1e-9, 0.5], [0.0, 1.0, math.inf], "in (0, 1)"),
        (Range(minimum=1, also=(-1,)), [-1, 1, 8], [0, -2], ">= 1 or -1"),
        (Range(maximum=5), [-3, 5], [5.5, math.nan], "<= 5"),
    ],
)
def test_range_contains_and_describes(valid, inside, outside, text):
    assert all(valid.contains(v) for v in inside)
    assert not any(valid.contains(v) for v in outside)
    assert valid.describe() == text


def test_option_refuses_a_default_outside_its_range_or_choices():
    with pytest.raises(ValueError, match="default 0 is not >= 1"):
        option(0, valid=POSITIVE)
    with pytest.raises(ValueError, match="default 'c' is not one of"):
        option("c", choices=("a", "b"))


@pytest.mark.parametrize(
    "value, hint, ok",
    [
        (3, int, True),
        (True, int, False),  # bool is not an int
        (3, float, True),  # an int is fine for a float
        (math.nan, float, False),
        (False, float, False),
        ("3", int, False),
        (1, bool, False),
        ((1, 2), tuple[int, ...], True),
        ([1, 2], tuple[int, ...], True),
        ((1, "2"), tuple[int, ...], False),
        (None, int | None, True),
        (None, int, False),
        (("a", None), tuple[str, object], True),
        (("a",), tuple[str, object], False),
    ],
)
def test_type_problem(value, hint, ok):
    assert (field_checks.type_problem(value, hint) is None) == ok


def test_check_section_names_the_field_and_suggests_the_closest_key():
    with pytest.raises(ConfigError, match=r"^config\.sample\.stpes: unknown key \(did you mean"):
        field_checks.check_section({"stpes": 3}, sections.SampleSection)
    with pytest.raises(ConfigError, match=r"^config\.latent\.channels: is missing"):
        field_checks.check_section({"image_size": 8}, sections.LatentSection)
    field_checks.check_section({"image_size": 8, "channels": 4}, sections.LatentSection)


def test_every_train_option_is_a_documented_field_of_both_stages():
    """The options `train_options` reads (`config/options.py`) are section fields, so the
    unknown-key check accepts them and the reference documents them."""
    for section in (sections.TrainSection, sections.AutoencoderTrainSection):
        names = {f.name for f in dataclasses.fields(section)}
        missing = {f.name for f in dataclasses.fields(TrainOptions)} - names
        if section is sections.AutoencoderTrainSection:
            missing -= {"remat", "latent_cache"}  # stage 2 options
        assert not missing, (section.__name__, missing)

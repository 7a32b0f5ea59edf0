"""Fuzzing the config readers with hypothesis (the suite's bounded, derandomized profile:
tests/conftest.py): whatever a config holds, they refuse it with their documented error, never a
TypeError, KeyError, AttributeError or ZeroDivisionError from deep inside.

  * `validate_config` on the quickstart and a paper config with random values of random types
    in random fields (and fields removed or added): passes or raises `ConfigError`;
  * `config_from_json` (a workdir's `config.json`) on random JSON: a config or `ConfigError`;
  * the CompVis YAML translators (`interop/compvis_config.py`) on random YAML-like mappings: a
    module or `UnsupportedConfigError`.
"""

from __future__ import annotations

import copy
import json
import os
from typing import Any

import ml_collections
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ldm_jax.config.defaults import with_defaults
from ldm_jax.config.errors import ConfigError
from ldm_jax.config.files import load_config_file
from ldm_jax.config.json_config import config_from_json
from ldm_jax.config.validation import validate_config
from ldm_jax.interop import compvis_config
from ldm_jax.interop.diffusers_config import UnsupportedConfigError

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _base(name: str, arg: str | None) -> dict[str, Any]:
    config = load_config_file(os.path.join(ROOT, "configs", name), arg)
    return with_defaults(config).to_dict()


BASES = {
    "quickstart": _base("quickstart.py", None),
    "quickstart-tiny": _base("quickstart.py", "tiny"),
    "cin256-tiny": _base("paper/cin256_v2.py", "tiny"),  # class-conditional, VQ first stage
    "txt2img-tiny": _base("paper/txt2img_1p4b.py", "tiny"),  # BERT text model
    "kl_f8": _base("paper/kl_f8.py", None),  # first stage only, the paper's loss
}


def _paths(tree: dict[str, Any], prefix: tuple[str, ...] = ()) -> list[tuple[str, ...]]:
    """Every key path of a nested dict (sections and fields)."""
    out = []
    for key, value in tree.items():
        out.append(prefix + (key,))
        if isinstance(value, dict):
            out.extend(_paths(value, prefix + (key,)))
    return out


PATHS = {name: _paths(tree) for name, tree in BASES.items()}

# Values of every JSON/Python type a config can hold, edge cases included.
SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**40), max_value=2**40),
    st.sampled_from([0, 1, -1, 2, 3, 7, 8, 16, 32, 33, 1000, 10**9]),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.0, 0.5, 1.0, -0.0, 1e-12, 1e30]),
    st.text(max_size=8),
    st.sampled_from(["", "ddim", "class", "none", "kl", "vq", "crossattn", "float32", "train"]),
)
KEYS = st.text(min_size=1, max_size=6).filter(lambda k: "." not in k)  # ConfigDict's keys
VALUES = st.recursive(
    SCALARS,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4),
        st.dictionaries(KEYS, inner, max_size=3),
    ),
    max_leaves=6,
)


def _like(value: Any) -> st.SearchStrategy:
    """Values of any type, or (half the time) near values of `value`'s own type, which get past
    the type checks to the ranges and the cross-field checks."""
    if isinstance(value, bool):
        near = st.booleans()
    elif isinstance(value, int):
        near = st.one_of(st.integers(-2, 70), st.sampled_from([value * 2, value // 2, value + 1]))
    elif isinstance(value, float):
        near = st.one_of(st.floats(-1.0, 2.0), st.sampled_from([0.0, value * 10, -value]))
    elif isinstance(value, (tuple, list)):
        near = st.lists(st.integers(-1, 8), max_size=5)
    elif isinstance(value, str):
        near = st.sampled_from(["", value, value.upper(), value[:-1], "none", "class"])
    else:
        return VALUES
    return st.one_of(near, VALUES)


@st.composite
def edited_configs(draw) -> ml_collections.ConfigDict:
    """A shipped config with 1-3 edits: a random field set to a random value, removed, or a
    random key added."""
    name = draw(st.sampled_from(sorted(BASES)))
    config = copy.deepcopy(BASES[name])
    for _ in range(draw(st.integers(1, 3))):
        path = draw(st.sampled_from(PATHS[name]))
        node = config
        for part in path[:-1]:
            node = node.get(part) if isinstance(node, dict) else None
        if not isinstance(node, dict):
            continue  # an earlier edit replaced the section
        action = draw(st.sampled_from(["set", "set", "set", "delete", "add"]))
        if action == "set":
            node[path[-1]] = draw(_like(node.get(path[-1])))
        elif action == "delete":
            node.pop(path[-1], None)
        else:
            node[draw(KEYS)] = draw(VALUES)
    return ml_collections.ConfigDict(config)


def _edited(name: str, section: str, key: str, value: Any = None) -> ml_collections.ConfigDict:
    """A base with one field set (value None: removed)."""
    config = copy.deepcopy(BASES[name])
    if value is None:
        del config[section][key]
    else:
        config[section][key] = value
    return ml_collections.ConfigDict(config)


@settings(max_examples=1000)
@given(edited_configs())
# Crashes the fuzzing found (fixed): a removed diffusion field (KeyError), a removed mesh axis
# (KeyError), a section where a number goes (a message spanning lines), a number where the
# first-stage loss section goes, a list as a model part's kind (TypeError in `Spec.from_dict`).
@example(_edited("quickstart", "diffusion", "beta_end"))
@example(_edited("cin256-tiny", "mesh", "data"))
@example(_edited("kl_f8", "autoencoder_train", "batch_size", {}))
@example(_edited("kl_f8", "autoencoder_train", "loss", 1))  # TypeError in from_dict
@example(_edited("cin256-tiny", "model", "first_stage", {"kind": [1]}))  # unhashable kind
def test_validate_config_raises_only_config_errors(config):
    try:
        validate_config(config, 8, 1)
    except ConfigError as e:
        message = str(e)
        assert message.startswith("config.") and "\n" not in message, message


# JSON documents: random ones, and the quickstart's config.json with random edits.
JSON_VALUES = st.recursive(
    st.one_of(
        st.none(),
        st.booleans(),
        st.integers(),
        st.floats(allow_nan=False),
        st.text(max_size=8),
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


@st.composite
def config_json_texts(draw) -> str:
    kind = draw(st.sampled_from(["random", "edited", "edited", "text"]))
    if kind == "text":
        return draw(st.text(max_size=40))
    if kind == "random":
        return json.dumps(draw(JSON_VALUES))
    config = copy.deepcopy(BASES[draw(st.sampled_from(["quickstart", "cin256-tiny"]))])
    if draw(st.booleans()):  # an older workdir: the reference's parameterization
        config["diffusion"].pop("prediction_type")
    section = draw(st.sampled_from(sorted(config)))
    if isinstance(config[section], dict) and draw(st.booleans()):
        key = draw(st.sampled_from(sorted(config[section]) + ["parameterization", "a.b"]))
        config[section][key] = draw(JSON_VALUES)
    else:
        config[section] = draw(JSON_VALUES)
    text = json.dumps(config)
    if draw(st.booleans()):  # truncated, as a full disk leaves it
        text = text[: draw(st.integers(0, len(text)))]
    return text


@settings(max_examples=400)
@given(config_json_texts())
# Crashes the fuzzing found (fixed): an unhashable parameterization (TypeError in
# `with_defaults`), nesting that exhausts the recursion limit (RecursionError in ConfigDict).
@example('{"diffusion": {"parameterization": [1]}}')
@example('{"a": ' * 990 + "1" + "}" * 990)
@example("[[[1]")  # truncated
def test_config_json_gives_a_config_or_a_config_error(text):
    try:
        config = config_from_json(text, "w/config.json")
    except ConfigError as e:
        assert str(e).startswith("w/config.json: "), str(e)
    else:
        assert isinstance(config, ml_collections.ConfigDict)


# The CompVis YAML translators: the reference's keys with random values, plus random keys.
UNET_KEYS = (
    "image_size in_channels out_channels model_channels attention_resolutions num_res_blocks "
    "channel_mult num_heads num_head_channels num_heads_upsample use_spatial_transformer "
    "transformer_depth context_dim num_classes dropout conv_resample use_scale_shift_norm "
    "resblock_updown use_new_attention_order use_linear_in_transformer legacy dims n_embed "
    "disable_self_attentions num_attention_blocks use_checkpoint"
).split()
DD_KEYS = (
    "double_z z_channels resolution in_channels out_ch ch ch_mult num_res_blocks "
    "attn_resolutions dropout attn_type resamp_with_conv tanh_out give_pre_end use_linear_attn"
).split()
COND_KEYS = (
    "n_classes embed_dim key n_embed n_layer vocab_size max_seq_len embedding_dropout n_stages "
    "method multiplier in_channels out_channels bias"
).split()
YAML_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 600),
    st.floats(allow_nan=True),
    st.text(max_size=6),
    st.lists(st.integers(-2, 8), max_size=4),
    st.lists(st.text(max_size=3), max_size=2),
)
VALID_UNET = dict(
    image_size=8,
    in_channels=4,
    out_channels=4,
    model_channels=32,
    attention_resolutions=[2],
    num_res_blocks=1,
    channel_mult=[1, 2],
    num_heads=2,
)
VALID_DD = dict(
    double_z=True, z_channels=4, resolution=32, in_channels=3, out_ch=3, ch=32, ch_mult=[1, 2],
    num_res_blocks=1, attn_resolutions=[],
)  # fmt: skip


def _params(draw, keys: list[str], valid: dict[str, Any]) -> Any:
    """A params mapping: the valid one with some keys set to random values or removed, or junk."""
    if draw(st.integers(0, 9)) == 0:
        return draw(YAML_SCALARS)
    params = dict(valid) if draw(st.booleans()) else {}
    for key in draw(st.lists(st.sampled_from(keys), max_size=4)):
        if draw(st.integers(0, 4)) == 0:
            params.pop(key, None)
        else:
            params[key] = draw(YAML_SCALARS)
    return params


@st.composite
def yaml_parts(draw) -> tuple[str, Any]:
    part = draw(st.sampled_from(["unet", "first_stage", "cond_stage"]))
    if part == "unet":
        target = draw(st.sampled_from(["ldm.modules.diffusionmodules.openaimodel.UNetModel", "x"]))
        cfg = {"target": target, "params": _params(draw, UNET_KEYS, VALID_UNET)}
    elif part == "first_stage":
        target = draw(
            st.sampled_from(
                ["ldm.models.autoencoder.AutoencoderKL", "ldm.models.autoencoder.VQModelInterface"]
            )
        )
        params = {"embed_dim": draw(YAML_SCALARS), "n_embed": draw(YAML_SCALARS)}
        params["ddconfig"] = _params(draw, DD_KEYS, VALID_DD)
        if draw(st.booleans()):
            params = dict(params, embed_dim=4, n_embed=16)
        cfg = {"target": target, "params": params}
    else:
        target = draw(
            st.sampled_from(
                [
                    "ldm.modules.encoders.modules.ClassEmbedder",
                    "ldm.modules.encoders.modules.BERTEmbedder",
                    "ldm.modules.encoders.modules.SpatialRescaler",
                    "__is_unconditional__",
                    "ldm.modules.encoders.modules.FrozenCLIPEmbedder",
                ]
            )
        )
        cfg = {"target": target, "params": _params(draw, COND_KEYS, {})}
    if draw(st.integers(0, 9)) == 0:
        cfg = draw(st.one_of(YAML_SCALARS, st.dictionaries(st.text(max_size=4), YAML_SCALARS)))
    return part, cfg


@settings(max_examples=600)
@given(yaml_parts())
# Crashes the fuzzing found (fixed): no params mapping (AttributeError), a missing required
# parameter (KeyError), a string where a list goes (a module of nonsense), a list where a number
# goes (TypeError).
@example(("unet", None))
@example(("first_stage", {"target": "ldm.models.autoencoder.AutoencoderKL", "params": None}))
@example(
    ("unet", {"target": "openaimodel.UNetModel", "params": dict(VALID_UNET, channel_mult="12")})
)
@example(("first_stage", {"target": "autoencoder.VQModel", "params": {"ddconfig": VALID_DD}}))
@example(("cond_stage", {"target": "modules.ClassEmbedder", "params": {"n_classes": [3]}}))
def test_compvis_yaml_translators_raise_only_unsupported_config_errors(part_cfg):
    part, cfg = part_cfg
    unet = compvis_config.unet_from_yaml({"target": "openaimodel.UNetModel", "params": VALID_UNET})
    try:
        if part == "unet":
            module = compvis_config.unet_from_yaml(cfg)
        elif part == "first_stage":
            module = compvis_config.first_stage_from_yaml(cfg)
        else:
            module = compvis_config.cond_stage_from_yaml(cfg, unet)
    except UnsupportedConfigError as e:
        assert "\n" not in str(e), str(e)
    else:
        assert module is None or hasattr(module, "apply")

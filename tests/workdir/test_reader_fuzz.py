"""A workdir's config.json holding random JSON or a truncated config: `reader.load_config`
returns a config or raises its documented errors only (hypothesis)."""

from __future__ import annotations

import json

import ml_collections
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ldm_jax.config.errors import ConfigError
from ldm_jax.workdir import reader

JSON = st.recursive(
    st.one_of(
        st.none(), st.booleans(), st.integers(), st.floats(allow_nan=False), st.text(max_size=8)
    ),
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(max_size=6), inner, max_size=4)
    ),
    max_leaves=10,
)


@settings(max_examples=100)
@given(st.one_of(JSON.map(json.dumps), st.text(max_size=40)))
@example('{"diffusion": {"parameterization": [1]}}')
@example('{"data": 5}')
@example("{bad")
def test_load_config_raises_only_its_documented_errors(tmp_path_factory, text):
    workdir = tmp_path_factory.mktemp("w")
    (workdir / "config.json").write_text(text)
    try:
        config = reader.load_config(str(workdir))
    except ConfigError as e:
        assert "config.json" in str(e) and "\n" not in str(e)
    else:
        assert isinstance(config, ml_collections.ConfigDict)

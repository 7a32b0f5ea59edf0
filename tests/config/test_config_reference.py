"""docs/configuration.md: generated from the typed config schema, complete and current."""

from __future__ import annotations

import dataclasses
import os
from typing import ClassVar, Literal

import pytest

from ldm_jax.config import defaults, reference, schema, sections, validation
from ldm_jax.config.files import load_config_file
from ldm_jax.config.options import default_mesh_config

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
DOC = os.path.join(ROOT, reference.OUTPUT)


@pytest.fixture(scope="module")
def markdown():
    return reference.config_reference_markdown()


def _blocks(markdown: str) -> dict[str, str]:
    """Heading line -> the text up to the next heading of any level."""
    out, heading = {}, None
    for line in markdown.splitlines():
        if line.startswith("#"):
            heading = line
            out[heading] = ""
        elif heading is not None:
            out[heading] += line + "\n"
    return out


def test_committed_reference_is_current(markdown):
    with open(DOC, encoding="utf-8") as f:
        committed = f.read()
    assert committed == markdown, (
        f"{reference.OUTPUT} is stale: run `{reference.COMMAND}` and commit the result."
    )
    assert reference.stale_message(DOC) is None


def test_stale_file_is_reported_with_the_command(tmp_path):
    path = tmp_path / "configuration.md"
    path.write_text("# hand-edited\n")
    message = reference.stale_message(path)
    assert message is not None and reference.COMMAND in message


def test_every_field_of_every_section_has_a_row(markdown):
    blocks = _blocks(markdown)
    for section in reference.all_sections():
        kind = getattr(section, "KIND", None)
        heading = (
            "## Top level" if section.SECTION == reference.TOP_LEVEL else f"## `{section.SECTION}`"
        )
        if kind is not None:
            heading = f'### `{section.SECTION}` kind `"{kind}"`'
        assert heading in blocks, heading
        for field in dataclasses.fields(section):
            assert f"| `{field.name}`" in blocks[heading], (heading, field.name)


def _config_files():
    for folder, _, names in sorted(os.walk(os.path.join(ROOT, "configs"))):
        for name in sorted(names):
            if name.endswith(".py"):
                yield os.path.relpath(os.path.join(folder, name), ROOT)


# Config files that need an argument.
CONFIG_ARGS = {os.path.join("configs", "f_study", "ldm.py"): "emoji,4"}
# Quickstart-schema sections documented as fields of a model section (the intro's prose).
QUICKSTART_NETWORKS = {"autoencoder": schema.KLConfig, "unet": schema.UNetConfig}


def test_every_field_of_every_shipped_config_is_documented(markdown):
    """Each config under configs/ has only documented sections and fields."""
    documented = {s.SECTION: s for s in reference.all_sections()}
    top = {f.name for f in dataclasses.fields(sections.TopLevelSection)}
    for path in _config_files():
        config = load_config_file(os.path.join(ROOT, path), CONFIG_ARGS.get(path))
        for key, value in config.items():
            if not hasattr(value, "items"):
                assert key in top, (path, key)
                continue
            section = documented.get(key) or QUICKSTART_NETWORKS.get(key)
            assert section is not None, (path, key)
            if getattr(section, "KINDS", None) is None:  # families: the schema checks them
                names = {f.name for f in dataclasses.fields(section)}
                assert set(value) <= names, (path, key, set(value) - names)
    for name in QUICKSTART_NETWORKS:
        assert f"`{name}`" in markdown


def test_defaults_dicts_are_the_dataclass_defaults():
    def declared(section, optional=False):
        return {
            f.name: f.default
            for f in dataclasses.fields(section)
            if f.default is not dataclasses.MISSING
            and f.metadata.get("optional", False) == optional
        }

    assert defaults.AUTOENCODER_TRAIN == declared(sections.AutoencoderTrainSection)
    assert defaults.TRAIN == declared(sections.TrainSection)
    assert defaults.SAMPLE == declared(sections.SampleSection)
    assert sections.defaults_dict(sections.MeshSection) == declared(sections.MeshSection)
    assert defaults.OPTIONAL_FIELDS["data"] == declared(sections.DataSection)
    assert list(defaults.TRAIN) == [
        f.name
        for f in dataclasses.fields(sections.TrainSection)
        if not f.metadata.get("optional", False)
    ]
    assert set(defaults.EXPERIMENT_TRAIN_FIELDS) <= set(defaults.TRAIN)


def test_defaults_match_the_configs_that_state_them():
    """Independent statements of the same numbers: the quickstart file, the mesh helper and the
    LoRA fine-tune file."""
    quickstart = load_config_file(os.path.join(ROOT, "configs", "quickstart.py"))
    ae = dict(defaults.AUTOENCODER_TRAIN)
    ae.pop("codebook_weight")  # VQ only; the quickstart's first stage is KL
    assert quickstart.autoencoder_train.to_dict() == ae
    train = {k: v for k, v in defaults.TRAIN.items() if k not in defaults.EXPERIMENT_TRAIN_FIELDS}
    assert quickstart.train.to_dict() == train
    assert quickstart.sample.to_dict() == defaults.SAMPLE
    mesh = sections.defaults_dict(sections.MeshSection)
    assert quickstart.mesh.to_dict() == mesh == default_mesh_config().to_dict()
    assert quickstart.conditioning.to_dict() == sections.defaults_dict(sections.ConditioningSection)
    lora = load_config_file(os.path.join(ROOT, "configs", "finetune", "sd_lora.py"))
    assert lora.finetune.to_dict() == sections.defaults_dict(sections.FinetuneSection)


def test_choices_are_the_validated_values():
    sample = {f.name: f for f in dataclasses.fields(sections.SampleSection)}
    assert sample["sampler"].metadata["choices"] == validation.SAMPLERS


def test_literal_choices_are_rendered(markdown):
    blocks = _blocks(markdown)
    row = next(r for r in blocks["## `diffusion`"].splitlines() if r.startswith("| `schedule`"))
    assert 'Choices: `"linear"`, `"scaled_linear"`, `"cosine"`.' in row
    row = next(r for r in blocks["## `train`"].splitlines() if r.startswith("| `remat`"))
    assert 'Choices: `"none"`, `"full"`, `"dots"`.' in row


def test_undocumented_field_raises():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Throwaway:
        """A section with one field described and one not.

        Attributes:
          described: has a description.
        """

        SECTION: ClassVar[str] = "throwaway"

        described: int = 1
        mode: Literal["a", "b"] = "a"

    with pytest.raises(ValueError, match=r"Throwaway\.mode has no description"):
        reference.section_markdown(Throwaway)


def test_multi_name_and_continued_attribute_entries():
    @dataclasses.dataclass(frozen=True, kw_only=True)
    class Betas:
        """Two fields in one entry.

        Attributes:
          b1, b2: Adam's betas,
            continued on a second line.
        """

        SECTION: ClassVar[str] = "betas"

        b1: float = 0.9
        b2: float = 0.999

    expected = "Adam's betas, continued on a second line."
    assert reference.attribute_docs(Betas) == {"b1": expected, "b2": expected}

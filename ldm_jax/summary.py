"""Prints the parameter table of a paper/SD model config without materialising any weights.

  python -m ldm_jax.summary --config configs/paper/celebahq_ldm_vq4.py [--depth 2] [--json]

Shapes come from `jax.eval_shape` of each part's `init` (U-Net, first stage, tau_theta), so even
the 1.45B-parameter text-to-image model is counted in seconds. `--json` prints one line
{"unet": N, "first_stage": N, "cond_stage": N} (null for a part that is absent, or external such
as Stable Diffusion's frozen CLIP text encoder).
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from absl import flags
from ml_collections import config_flags

from ldm_jax import cli_errors
from ldm_jax.config import schema
from ldm_jax.models import factory
from ldm_jax.training import logging as log

_CONFIG = config_flags.DEFINE_config_file("config", None, "Model config file.", lock_config=True)
_JSON = flags.DEFINE_bool("json", False, "Print one JSON line of counts instead of a table.")
_DEPTH = flags.DEFINE_integer("depth", 1, "Module nesting depth of the table rows.")
flags.mark_flags_as_required(["config"])

PROGRAM = "python -m ldm_jax.summary"

_REFERENCE_NAMES = {
    "unet": "model.diffusion_model",
    "first_stage": "first_stage_model",
    "cond_stage": "cond_stage_model",
}


def module_rows(tree: Mapping[str, Any], depth: int, prefix: str = "") -> list[tuple[str, int]]:
    """(path, parameter count) per module at `depth` levels below the root, in tree order."""
    rows = []
    for name, sub in tree.items():
        path = f"{prefix}{name}"
        if (
            depth > 1
            and isinstance(sub, Mapping)
            and all(isinstance(v, Mapping) for v in sub.values())
        ):
            rows.extend(module_rows(sub, depth - 1, path + "/"))
        else:
            rows.append((path, factory.count_params(sub)))
    return rows


def format_table(parts: Mapping[str, Any], depth: int = 1) -> str:
    """A plain-text table of per-module and per-part parameter counts."""
    lines = []
    for part, tree in parts.items():
        title = f"{part} ({_REFERENCE_NAMES[part]})"
        if tree is None:
            lines += [f"== {title}: not built", ""]
            continue
        rows = module_rows(tree, depth)
        width = max([len(p) for p, _ in rows] + [24])
        lines.append(f"== {title}")
        lines += [f"  {p:<{width}} {n:>15,}" for p, n in rows]
        total = factory.count_params(tree)
        lines += [f"  {'total':<{width}} {total:>15,}  ({total / 1e6:.2f} M)", ""]
    counts = [factory.count_params(t) for t in parts.values() if t is not None]
    lines.append(f"all built parts: {sum(counts):,} ({sum(counts) / 1e6:.2f} M)")
    return "\n".join(lines)


def main(argv):
    log.show_own_status_only()
    if len(argv) > 1:
        cli_errors.usage_error(PROGRAM, f"unexpected arguments: {' '.join(argv[1:])}")
    config = _CONFIG.value
    if "model" not in config:
        path = config_flags.get_config_filename(flags.FLAGS["config"])
        cli_errors.usage_error(
            PROGRAM,
            f"{path} has no model section (summary counts the model configs under "
            "configs/paper and configs/sd).",
        )
    try:
        schema.ModelConfig.from_dict(config.model)
    except ValueError as e:  # names the field and the closest valid name
        cli_errors.usage_error(PROGRAM, str(e))
    parts = factory.part_params(config.model)
    if _JSON.value:
        counts = {k: None if v is None else factory.count_params(v) for k, v in parts.items()}
        print(json.dumps(counts))
    else:
        print(f"{config.get('name', '')}: {config.get('reference', '')}")
        print(format_table(parts, _DEPTH.value))


if __name__ == "__main__":
    cli_errors.run(main, PROGRAM)

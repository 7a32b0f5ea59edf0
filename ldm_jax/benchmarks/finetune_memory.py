"""Compiled memory of Stable Diffusion v1 fine-tuning on an FSDP mesh, ahead of time (issue 13).

Nothing is allocated: the parameters, optimizer state and batch are `jax.ShapeDtypeStruct`s
carrying their shardings (`jax.eval_shape`, `sharding.sharded_abstract`); the train step is
lowered and compiled once for a mesh of N devices and XLA's `memory_analysis()` of the compiled
program is read. Every byte figure is per device.

  XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m ldm_jax.benchmarks.finetune_memory \
      [--config configs/sd/sd_v1.py] [--mode full lora] [--batch 1 4] [--devices 8] \
      [--base_dtype float32 bfloat16] [--ema] [--topology v5e:2x4] [--out FILE]

prints one JSON line per variant (and writes them all to --out). Variants:
  full: the stage-2 trainer's own step (`trainers.ldm.make_train_step`): every U-Net parameter
    trained, float32 master parameters with AdamW's two moments (and, with --ema, the EMA copy
    the trainer keeps; diffusers' fine-tuning scripts keep none by default).
  lora: the same loss on the weights `lora.merge_lora(base, lora)`: the frozen base is an
    argument of the step (float32 or bfloat16 storage, sharded as in full), only the LoRA
    factors (rank 4 on to_q, to_k, to_v, to_out_0: diffusers' train_text_to_image_lora) get
    gradients and AdamW state; they are small and replicated.
Both compute in bfloat16 (`train.compute_dtype`) with every ResBlock and transformer block
rematerialised (`train.remat = "full"`) on the mesh data=1, fsdp=N, tensor=1: parameter kernels
are split over their input width (`parallel/sharding.py` rules), the batch over all N devices.
`--batch` is the batch per device; the global batch is N times it. The batch holds what the
trainer reads: the posterior mean and log-variance of 64x64x4 latents and the frozen text
encoder's context [B, 77, 768] (the encoder runs outside the step). `--topology` compiles for a
TPU slice without TPU hardware (`jax.experimental.topologies`; needs libtpu importable).

Each record: XLA's per-device argument / output / alias / temp / generated-code bytes, their
`total_bytes` (arguments + outputs - aliased + temporaries + code; the donated state's outputs
alias its arguments), XLA's own `peak_memory_bytes` where the backend reports one, and the
per-device and global bytes of the trees (trainable params, optimizer state, EMA, frozen base,
batch). Results: `experiments/finetune/memory.md`.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
from jax.experimental import topologies
from jax.sharding import Mesh

from ldm_jax.benchmarks.timing import emit
from ldm_jax.config import builders
from ldm_jax.config.files import load_config_file
from ldm_jax.config.options import mesh_config
from ldm_jax.models import lora
from ldm_jax.parallel import sharding
from ldm_jax.trainers import finetune
from ldm_jax.trainers import ldm as train_ldm
from ldm_jax.trainers.conditions import make_conditions
from ldm_jax.training.host_memory import release_freed_host_memory
from ldm_jax.training.optimizer import optimizer_for
from ldm_jax.training.state import create_state
from ldm_jax.training.step_compiler import compile_train_step, memory_analysis

MODES = ("full", "lora")
BASE_DTYPES = {"float32": jnp.float32, "bfloat16": jnp.bfloat16}
DEFAULT_CONFIG = os.path.join("configs", "sd", "sd_v1.py")
SD_SCALE_FACTOR = 0.18215  # SD v1's latent scale (the value only matters to the loss, not memory)
LORA_RANK = 4  # diffusers' train_text_to_image_lora default
# diffusers' fine-tuning defaults (train_text_to_image[_lora].py): AdamW, weight decay 1e-2,
# gradient clipping at 1; the learning rate does not change the program's memory.
FINETUNE_TRAIN = dict(
    compute_dtype="bfloat16",
    remat="full",
    learning_rate=1e-4,
    warmup_steps=0,
    weight_decay=1e-2,
    grad_clip=1.0,
    grad_accum_steps=1,
)


def finetune_config(
    config: ml_collections.ConfigDict, fsdp: bool = True, ema: bool = False
) -> ml_collections.ConfigDict:
    """A copy of an experiment config set up for fine-tuning memory: bfloat16 compute, full
    remat, AdamW as diffusers', EMA on or off, and the mesh data=1, fsdp=-1 (all devices) when
    `fsdp`, else data=-1, fsdp=1 (parameters replicated on every device: the comparison)."""
    c = copy.deepcopy(config)
    c.train.update(FINETUNE_TRAIN)
    c.train.ema_decay = c.train.ema_decay if ema else None
    c.mesh.update(dict(data=1, fsdp=-1, tensor=1) if fsdp else dict(data=-1, fsdp=1, tensor=1))
    return c


def tree_bytes(tree: Any, per_device: bool = False) -> int:
    """Bytes of a tree of arrays or `ShapeDtypeStruct`s; with `per_device`, of one device's
    shard of each leaf (leaves must carry shardings)."""

    def one(x) -> int:
        shape = x.sharding.shard_shape(x.shape) if per_device else x.shape
        return int(np.prod(shape, dtype=np.int64)) * jnp.dtype(x.dtype).itemsize

    return sum(one(x) for x in jax.tree.leaves(tree))


def tree_size(tree: Any) -> int:
    """Number of elements of a tree of arrays or `ShapeDtypeStruct`s."""
    return sum(int(np.prod(x.shape, dtype=np.int64)) for x in jax.tree.leaves(tree))


def abstract_batch(
    config: ml_collections.ConfigDict, keys: tuple[str, ...], global_batch: int, batch_sh
) -> dict[str, jax.ShapeDtypeStruct]:
    """The trainer's batch as sharded `ShapeDtypeStruct`s: "mean"/"logvar" [B, h, w, c] of the
    cached posterior and "context" [B, 77, D] of the frozen text encoder."""
    h, w, c = builders.latent_shape(config)
    context_dim = config.model.unet.context_dim
    shapes = {
        "mean": (h, w, c),
        "logvar": (h, w, c),
        "context": (77, context_dim),
    }
    unknown = [k for k in keys if k not in shapes]
    if unknown:
        raise ValueError(
            f"finetune_memory: the config's step reads {unknown}; only text-context models "
            "(conditioning on 'context', e.g. configs/sd/sd_v1.py) are supported."
        )
    return {
        k: jax.ShapeDtypeStruct((global_batch,) + shapes[k], jnp.float32, sharding=batch_sh)
        for k in keys
    }


def abstract_base_params(
    config: ml_collections.ConfigDict, mesh: Mesh, rules: tuple
) -> tuple[Any, Any]:
    """(unboxed sharded `ShapeDtypeStruct`s, `NamedSharding`s) of the denoiser's parameters."""
    denoiser = builders.build_denoiser(config)
    inputs = builders.denoiser_example_inputs(config)
    init = lambda rng: denoiser.init(rng, *inputs)["params"]
    return sharding.sharded_abstract(init, jax.random.PRNGKey(0), mesh, rules)


def _compile_full(config, mesh, rules, batch_sh, global_batch):
    """The trainer's step over the whole state; returns (compiled, trees, extra fields)."""
    tx = optimizer_for(config.train)
    init = train_ldm.state_init_fn(config, tx)
    ema = config.train.ema_decay is not None
    init_fn = init if ema else (lambda rng: init(rng).replace(ema_params={}))
    state, shardings = sharding.sharded_abstract(init_fn, train_ldm.init_rng(config), mesh, rules)
    conditions = make_conditions(config)
    batch = abstract_batch(config, train_ldm.step_keys(config, conditions), global_batch, batch_sh)
    step = train_ldm.make_train_step(config, tx, SD_SCALE_FACTOR, conditions)
    compiled, _ = compile_train_step(step, state, shardings, batch, batch_sh, mesh)
    trees = {
        "params": state.params,
        "opt_state": state.opt_state,
        "ema": state.ema_params,
        "frozen": {},
        "batch": batch,
    }
    return compiled, trees, {"ema": ema, "trainable_params": tree_size(state.params)}


def make_lora_train_step(config, tx, lora_config, scale_factor: float, conditions=None):
    """(state, base params, batch) -> (state, metrics): the fine-tuning trainer's LoRA step
    (`trainers.finetune.make_lora_train_step`: the stage-2 loss of `merge_lora(base, lora)`,
    gradients and AdamW for the LoRA factors only) with `lora_config` instead of a `finetune`
    config section; EMA as `config.train.ema_decay` (None here: no EMA)."""
    conditions = make_conditions(config) if conditions is None else conditions
    merge = lambda base, params: (lora.merge_lora(base, params, lora_config), {})  # noqa: E731
    return finetune.make_lora_train_step(config, tx, scale_factor, conditions, merge=merge)


def lora_state_init_fn(lora_config, tx):
    """(rng, base params) -> a fresh state whose params are the LoRA factors (no EMA)."""

    def init(rng, base):
        lora_rng, state_rng = jax.random.split(rng)
        params = lora.init_lora_params(lora_rng, base, lora_config)
        return create_state(params, tx, state_rng, use_ema=False)

    return init


def _compile_lora(config, mesh, rules, batch_sh, global_batch, base_dtype, rank):
    """The LoRA step; the frozen base (in `base_dtype`) an argument, the LoRA state donated."""
    lora_config = lora.LoraConfig(rank=rank)
    tx = optimizer_for(config.train)
    base, base_sh = abstract_base_params(config, mesh, rules)
    base = jax.tree.map(
        lambda x: jax.ShapeDtypeStruct(x.shape, BASE_DTYPES[base_dtype], sharding=x.sharding), base
    )
    state = jax.eval_shape(lora_state_init_fn(lora_config, tx), train_ldm.init_rng(config), base)
    state_sh = jax.tree.map(lambda _: sharding.replicated(mesh), state)
    state = sharding.abstract_with_shardings(state, state_sh)
    conditions = make_conditions(config)
    batch = abstract_batch(config, train_ldm.step_keys(config, conditions), global_batch, batch_sh)
    step = make_lora_train_step(config, tx, lora_config, SD_SCALE_FACTOR, conditions)
    jitted = jax.jit(
        step,
        in_shardings=(state_sh, base_sh, batch_sh),
        out_shardings=(state_sh, sharding.replicated(mesh)),
        donate_argnums=0,
    )
    compiled = jitted.lower(state, base, batch).compile()
    release_freed_host_memory()
    trees = {
        "params": state.params,
        "opt_state": state.opt_state,
        "ema": {},
        "frozen": base,
        "batch": batch,
    }
    extra = {
        "ema": False,
        "base_dtype": base_dtype,
        "lora_rank": rank,
        "lora_targets": list(lora_config.targets),
        "trainable_params": tree_size(state.params),
        "frozen_params": tree_size(base),
    }
    return compiled, trees, extra


def measure(
    config: ml_collections.ConfigDict,
    mode: str,
    batch_per_device: int,
    devices: list[Any],
    base_dtype: str = "float32",
    rank: int = LORA_RANK,
) -> dict[str, Any]:
    """Compiles one variant's train step for a mesh over `devices`; returns its record.

    Args:
      config: a `finetune_config` (its mesh, compute dtype, remat and EMA are used).
      mode: "full" or "lora".
      batch_per_device: latents per device (the global batch is this times the batch split).
      devices: the mesh's devices (CPU devices, or compile-only TPU devices of a topology).
      base_dtype: storage of LoRA's frozen base ("float32" or "bfloat16").
      rank: LoRA rank.

    Returns:
      A dict: the variant, the mesh, compile seconds, XLA's per-device argument / output /
      alias / temp / generated-code bytes and their total, and the per-device bytes of the
      trees (trainable params, optimizer state, EMA, frozen base, batch) with global sizes.
    """
    if mode not in MODES:
        raise ValueError(f"--mode: unknown mode {mode!r}; choose from {MODES}.")
    if base_dtype not in BASE_DTYPES:
        raise ValueError(f"--base_dtype: {base_dtype!r}; choose from {sorted(BASE_DTYPES)}.")
    mesh = sharding.make_mesh(mesh_config(config), devices)
    rules = sharding.logical_axis_rules(mesh_config(config))
    batch_sh = sharding.batch_sharding(mesh, rules)
    global_batch = batch_per_device * sharding.batch_divisor(mesh, rules)
    start = time.perf_counter()
    if mode == "full":
        compiled, trees, extra = _compile_full(config, mesh, rules, batch_sh, global_batch)
    else:
        compiled, trees, extra = _compile_lora(
            config, mesh, rules, batch_sh, global_batch, base_dtype, rank
        )
    compile_s = time.perf_counter() - start
    memory = {k.replace("_size_in", ""): v for k, v in memory_analysis(compiled).items()}
    stats = compiled.memory_analysis()
    peak = int(getattr(stats, "peak_memory_in_bytes", 0) or 0) if stats is not None else 0
    total = (
        memory.get("argument_bytes", 0)
        + memory.get("output_bytes", 0)
        - memory.get("alias_bytes", 0)
        + memory.get("temp_bytes", 0)
        + memory.get("generated_code_bytes", 0)
    )
    trees_per_device = {f"{k}_bytes": tree_bytes(v, per_device=True) for k, v in trees.items()}
    trees_global = {f"{k}_bytes": tree_bytes(v) for k, v in trees.items()}
    device = devices[0]
    return {
        "bench": "finetune_memory",
        "config": config.get("name", ""),
        "mode": mode,
        **extra,
        "batch_per_device": batch_per_device,
        "global_batch": global_batch,
        "mesh": dict(mesh.shape),
        "platform": device.platform,
        "device_kind": device.device_kind,
        "num_devices": len(devices),
        "compute_dtype": config.train.compute_dtype,
        "remat": config.train.remat,
        "compile_s": round(compile_s, 2),
        **memory,
        "total_bytes": total,
        "peak_memory_bytes": peak or None,
        "trees_per_device": trees_per_device,
        "trees_global": trees_global,
        "jax": jax.__version__,
    }


def _devices(num: int, topology: str) -> list[Any]:
    """The first `num` devices of this process (or of a TPU topology, compile-only)."""
    if topology:
        available = list(topologies.get_topology_desc(topology, platform="tpu").devices)
    else:
        available = list(jax.devices())
    if num > len(available):
        raise ValueError(
            f"--devices {num}: only {len(available)} device(s) "
            f"({'topology ' + topology if topology else jax.default_backend()}). On CPU set "
            f"XLA_FLAGS=--xla_force_host_platform_device_count={num} before starting."
        )
    return available[:num]


def run(
    config: ml_collections.ConfigDict,
    modes: list[str],
    batches: list[int],
    devices: list[Any],
    base_dtypes: list[str] = ("float32",),
    ema: bool = False,
    fsdp: bool = True,
    on_result: Callable[[list[dict[str, Any]]], None] | None = None,
) -> list[dict[str, Any]]:
    """Measures every (mode, batch) variant (LoRA once per base dtype), printing each record;
    `on_result(records so far)` after each (a full-size compile can take many minutes)."""
    ft = finetune_config(config, fsdp=fsdp, ema=ema)
    results = []
    for mode in modes:
        for dtype in base_dtypes if mode == "lora" else ("float32",):
            for b in batches:
                results.append(emit(measure(ft, mode, b, devices, dtype)))
                if on_result is not None:
                    on_result(results)
    return results


def write_records(path: str, argv: list[str], results: list[dict[str, Any]]) -> None:
    """Writes the command, XLA flags, JAX version and records as one JSON object."""
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    payload = {
        "command": " ".join(["python -m ldm_jax.benchmarks.finetune_memory", *argv]),
        "xla_flags": os.environ.get("XLA_FLAGS", ""),
        "jax": jax.__version__,
        "results": results,
    }
    with open(path, "w") as f:
        json.dump(payload, f, indent=1)
        f.write("\n")


def main(argv: list[str] | None = None) -> list[dict[str, Any]]:
    p = argparse.ArgumentParser(prog="python -m ldm_jax.benchmarks.finetune_memory")
    p.add_argument("--config", default=DEFAULT_CONFIG, help="Experiment config file.")
    p.add_argument("--config_arg", default=None, help="get_config argument (e.g. tiny).")
    p.add_argument("--mode", nargs="+", default=list(MODES), choices=MODES)
    p.add_argument("--batch", nargs="+", type=int, default=[1, 4], help="Latents per device.")
    p.add_argument("--devices", type=int, default=8, help="Mesh size (all on the fsdp axis).")
    p.add_argument("--base_dtype", nargs="+", default=["float32"], choices=sorted(BASE_DTYPES))
    p.add_argument("--ema", action="store_true", help="Full mode: keep the trainer's EMA.")
    p.add_argument("--replicated", action="store_true", help="data=N, fsdp=1 instead of FSDP.")
    p.add_argument("--topology", default="", help="Compile for a TPU topology, e.g. v5e:2x4.")
    p.add_argument("--out", default="", help="JSON file, rewritten after each variant.")
    argv = sys.argv[1:] if argv is None else list(argv)
    args = p.parse_args(argv)
    config = load_config_file(args.config, args.config_arg)
    devices = _devices(args.devices, args.topology)
    write = (lambda results: write_records(args.out, argv, results)) if args.out else None
    return run(
        config,
        args.mode,
        args.batch,
        devices,
        args.base_dtype,
        ema=args.ema,
        fsdp=not args.replicated,
        on_result=write,
    )


if __name__ == "__main__":
    main()

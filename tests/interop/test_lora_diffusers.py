"""LoRA files against diffusers + peft: ours load in diffusers, theirs load here, same outputs."""

from __future__ import annotations

import re

import jax
import numpy as np
import pytest

from ldm_jax import interop
from ldm_jax.interop import lora_diffusers as LD
from ldm_jax.models import lora as L
from tests.interop import reference as ref
from tests.interop.reference import TOL, max_err, torch
from tests.models.test_lora import clip_shaped_tree

peft = pytest.importorskip("peft")
SD = ref.diffusers.StableDiffusionPipeline  # its LoRA classmethods need no pipeline instance
NAME = "conv_proj_heads"


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    """A tiny random diffusers U-Net saved to disk, and ours loaded from it."""
    folder = str(tmp_path_factory.mktemp("unet"))
    ref.make_unet(NAME).save_pretrained(folder)
    unet, params = interop.load_diffusers_unet(folder)
    fn = jax.jit(lambda p, x, t, c: unet.apply({"params": p}, x, t, c))
    return folder, unet, params, fn, ref.unet_inputs(ref.UNET_CONFIGS[NAME])


def _fresh_torch_unet(folder):
    torch.set_num_threads(2)
    return ref.diffusers.UNet2DConditionModel.from_pretrained(folder).eval()


def _ours(source, lora, config):
    _, _, params, fn, inputs = source
    merged = L.merge_lora(params, lora, config)
    return np.asarray(fn(merged, inputs["x"], inputs["t"], inputs["context"]))


def _random_lora(params, config, seed=1):
    lora = L.init_lora_params(jax.random.PRNGKey(seed), params, config)
    key = jax.random.PRNGKey(seed + 1)
    return jax.tree.map(lambda x: np.asarray(x + 0.2 * jax.random.normal(key, x.shape)), lora)


def test_our_file_loads_in_diffusers_with_our_scale(source, tmp_path):
    folder, unet, params, _, inputs = source
    config = L.LoraConfig(rank=3, alpha=7.0)  # scale 7/3
    lora = _random_lora(params, config)
    odd = lora["middle_block_1"]["transformer_blocks_0"]["attn2"]["to_k"]  # one rank-2 module
    odd["down"], odd["up"] = odd["down"][:, :2], odd["up"][:2]
    file = LD.save_diffusers_lora(str(tmp_path), lora, config, unet.num_res_blocks)
    assert file.endswith("pytorch_lora_weights.safetensors")

    model = _fresh_torch_unet(folder)
    base = ref.torch_unet_eps(model, inputs)
    model.load_lora_adapter(str(tmp_path), prefix="unet", use_safetensors=True)
    want = ref.torch_unet_eps(model, inputs)
    got = _ours(source, lora, config)
    err, effect = max_err(got, want), max_err(want, base)
    print(f"our LoRA file in diffusers: max abs error {err:.2e} (LoRA changes eps by {effect:.2f})")
    assert effect > 0.05 and err < TOL

    # And back: the same trees and config.
    back, cfg, te = LD.load_diffusers_lora(str(tmp_path), params, unet.num_res_blocks)
    assert te is None and (cfg.rank, cfg.scale) == (3, config.scale)
    assert cfg.targets == config.targets
    assert L.lora_modules(back) == L.lora_modules(lora)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(lora), strict=True):
        np.testing.assert_array_equal(a, b)


def _peft_unet(folder, rank, alpha, targets=("to_q", "to_k", "to_v", "to_out.0"), **kw):
    """A diffusers U-Net with a peft LoRA adapter whose A and B are both random."""
    model = _fresh_torch_unet(folder)
    cfg = peft.LoraConfig(
        r=rank, lora_alpha=alpha, target_modules=list(targets), init_lora_weights=False, **kw
    )
    torch.manual_seed(3)
    model.add_adapter(cfg)
    return model, cfg


@pytest.mark.parametrize("how", ["pipeline_metadata", "pipeline_no_metadata", "model_adapter"])
def test_diffusers_saved_lora_reads_back(source, tmp_path, how):
    folder, unet, params, _, inputs = source
    model, cfg = _peft_unet(folder, rank=4, alpha=2.0, alpha_pattern={"attn2.to_v": 6.0})
    state = peft.get_peft_model_state_dict(model)
    if how == "model_adapter":
        model.save_lora_adapter(str(tmp_path))  # unprefixed keys, unprefixed metadata
    else:
        meta = cfg.to_dict() if how == "pipeline_metadata" else None
        SD.save_lora_weights(str(tmp_path), unet_lora_layers=state, unet_lora_adapter_metadata=meta)
    # The reference is what diffusers makes of the file (without metadata it assumes alpha=rank).
    reloaded = _fresh_torch_unet(folder)
    prefix = None if how == "model_adapter" else "unet"
    reloaded.load_lora_adapter(str(tmp_path), prefix=prefix, use_safetensors=True)
    want = ref.torch_unet_eps(reloaded, inputs)
    if how != "pipeline_no_metadata":
        assert max_err(want, ref.torch_unet_eps(model, inputs)) < TOL  # the adapter survived

    lora, config, te = LD.load_diffusers_lora(str(tmp_path), params, unet.num_res_blocks)
    assert te is None and config.rank == 4
    assert config.scale == (1.0 if how == "pipeline_no_metadata" else 0.5)
    assert len(L.lora_modules(lora)) == len(state) // 2
    err = max_err(_ours(source, lora, config), want)
    print(f"diffusers-saved LoRA ({how}) here: max abs error {err:.2e}")
    assert err < TOL


def test_kohya_file_with_alpha_reads_back(source, tmp_path):
    from diffusers.utils.state_dict_utils import convert_state_dict_to_kohya

    folder, unet, params, _, inputs = source
    model, _ = _peft_unet(folder, rank=4, alpha=4.0)
    state = {f"unet.{k}": v for k, v in peft.get_peft_model_state_dict(model).items()}
    kohya = convert_state_dict_to_kohya(state)
    kohya = {k: torch.tensor(3.0) if k.endswith(".alpha") else v for k, v in kohya.items()}
    assert any(k.startswith("lora_unet_") and k.endswith(".lora_down.weight") for k in kohya)
    ref_unet = _fresh_torch_unet(folder)
    sd, alphas = SD.lora_state_dict(dict(kohya))
    SD.load_lora_into_unet(sd, alphas, ref_unet)
    want = ref.torch_unet_eps(ref_unet, inputs)

    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in kohya.items()}, str(tmp_path / "kohya.safetensors"))
    lora, config, _ = LD.load_diffusers_lora(
        str(tmp_path / "kohya.safetensors"), params, unet.num_res_blocks
    )
    assert (config.rank, config.scale) == (4, 0.75)
    err = max_err(_ours(source, lora, config), want)
    print(f"kohya LoRA (alpha 3, rank 4) here: max abs error {err:.2e}")
    assert err < TOL


def _tiny_clip():
    from transformers import CLIPTextConfig, CLIPTextModel

    torch.manual_seed(0)
    cfg = CLIPTextConfig(
        vocab_size=50,
        hidden_size=8,
        intermediate_size=16,
        num_hidden_layers=2,
        num_attention_heads=2,
        max_position_embeddings=8,
    )
    return CLIPTextModel(cfg).eval()


def test_text_encoder_lora_loads_in_transformers_with_our_scale(source, tmp_path):
    _, unet, params, _, _ = source
    te = _tiny_clip()
    root = "text_model." if hasattr(te, "text_model") else ""  # transformers 5 flattened it
    clip = clip_shaped_tree(layers=2, width=8)
    for i in range(2):  # our kernels from the transformers model (same layer names)
        for n in L.CLIP_ATTENTION_TARGETS:
            linear = te.get_submodule(f"{root}encoder.layers.{i}.self_attn.{n}")
            clip[f"layers_{i}"]["self_attn"][n] = {
                "kernel": linear.weight.detach().numpy().T.copy(),
                "bias": linear.bias.detach().numpy().copy(),
            }
    te_cfg = L.LoraConfig(rank=2, alpha=5.0, targets=L.CLIP_ATTENTION_TARGETS)
    te_lora = _random_lora(clip, te_cfg, seed=5)
    unet_cfg = L.LoraConfig(rank=3)
    unet_lora = _random_lora(params, unet_cfg)
    LD.save_diffusers_lora(str(tmp_path), unet_lora, unet_cfg, unet.num_res_blocks, te_lora, te_cfg)

    sd, alphas, meta = SD.lora_state_dict(str(tmp_path), return_lora_metadata=True)
    SD.load_lora_into_text_encoder(sd, alphas, te, metadata=meta)
    merged = L.merge_lora(clip, te_lora, te_cfg)
    x = torch.randn(3, 8)
    worst = 0.0
    for i in range(2):
        for n in L.CLIP_ATTENTION_TARGETS:
            layer = te.get_submodule(f"{root}encoder.layers.{i}.self_attn.{n}")
            assert isinstance(layer, peft.tuners.lora.LoraLayer)
            with torch.no_grad():
                want = layer(x).numpy()
            mine = merged[f"layers_{i}"]["self_attn"][n]
            worst = max(worst, max_err(x.numpy() @ mine["kernel"] + mine["bias"], want))
            base = x.numpy() @ clip[f"layers_{i}"]["self_attn"][n]["kernel"]
            assert max_err(base + mine["bias"], want) > 1e-2  # the LoRA is active
    print(f"text-encoder LoRA in transformers: max abs error {worst:.2e}")
    assert worst < 1e-5

    # Back: both trees; one config (the U-Net's); the text encoder's scale folded into `up`.
    u, cfg, t = LD.load_diffusers_lora(str(tmp_path), params, unet.num_res_blocks, clip)
    assert (cfg.rank, cfg.scale) == (3, 1.0) and t is not None
    assert L.lora_modules(t) == L.lora_modules(te_lora)
    again = L.merge_lora(clip, t, cfg)
    for a, b in zip(jax.tree.leaves(again), jax.tree.leaves(merged), strict=True):
        np.testing.assert_allclose(np.asarray(a), np.asarray(b), rtol=1e-6, atol=1e-6)
    with pytest.raises(LD.LoraFormatError, match="clip_params"):
        LD.load_diffusers_lora(str(tmp_path), params, unet.num_res_blocks)


def test_mismatched_files_are_refused(source, tmp_path):
    _, unet, params, _, _ = source
    config = L.LoraConfig(rank=2)
    lora = _random_lora(params, config)
    LD.save_diffusers_lora(str(tmp_path / "ok"), lora, config, unet.num_res_blocks)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(str(tmp_path / "ok" / LD.LORA_WEIGHTS_NAME))
    key = next(k for k in tensors if k.endswith("attn1.to_q.lora_A.weight"))
    bad_name = {**tensors, key.replace("attn1", "attn7"): tensors[key]}
    save_file(bad_name, str(tmp_path / "name.safetensors"))
    with pytest.raises(LD.LoraFormatError, match="attn7.to_q' names no Dense module"):
        LD.load_diffusers_lora(str(tmp_path / "name.safetensors"), params, unet.num_res_blocks)
    bad_shape = {**tensors, key: np.zeros((2, 5), np.float32)}
    save_file(bad_shape, str(tmp_path / "shape.safetensors"))
    with pytest.raises(LD.LoraFormatError, match="do not fit the kernel"):
        LD.load_diffusers_lora(str(tmp_path / "shape.safetensors"), params, unet.num_res_blocks)
    lonely = {k: v for k, v in tensors.items() if k != key}
    save_file(lonely, str(tmp_path / "lonely.safetensors"))
    with pytest.raises(LD.LoraFormatError, match="lacks its down"):
        LD.load_diffusers_lora(str(tmp_path / "lonely.safetensors"), params, unet.num_res_blocks)
    up = key.replace("lora_A", "lora_B")
    typed = {**tensors, key: tensors[key].astype(np.float64), up: tensors[up].astype(np.int64)}
    save_file(typed, str(tmp_path / "dtype.safetensors"))
    with pytest.raises(LD.LoraFormatError, match="wrong dtype") as e:
        LD.load_diffusers_lora(str(tmp_path / "dtype.safetensors"), params, unet.num_res_blocks)
    assert f"'{key}' is float64, expected float32, float16 or bfloat16" in str(e.value)
    assert f"'{up}' is int64, expected float32, float16 or bfloat16" in str(e.value)
    dora = {**tensors, key.replace("lora_A.weight", "lora_magnitude_vector"): np.ones(4)}
    save_file(dora, str(tmp_path / "dora.safetensors"))
    with pytest.raises(LD.LoraFormatError, match="DoRA"):
        LD.load_diffusers_lora(str(tmp_path / "dora.safetensors"), params, unet.num_res_blocks)


def test_older_diffusers_names_read_back(source, tmp_path):
    """`.lora.down/.up.weight` and attention-processor names, no metadata: alpha = rank."""
    _, unet, params, _, _ = source
    config = L.LoraConfig(rank=2)
    lora = _random_lora(params, config)
    file = LD.save_diffusers_lora(str(tmp_path / "new"), lora, config, unet.num_res_blocks)
    from safetensors.numpy import load_file, save_file

    tensors = load_file(file)
    old = {}
    for k, v in tensors.items():
        k = k.replace(".lora_A.weight", ".lora.down.weight").replace(
            ".lora_B.weight", ".lora.up.weight"
        )
        if ".attn2." in k:  # attention-processor names: attn2.processor.to_out_lora.up.weight
            k = re.sub(r"\.(to_q|to_k|to_v|to_out)(?:\.0)?\.lora\.", r".processor.\1_lora.", k)
        old[k] = v
    assert any(".processor.to_out_lora.up.weight" in k for k in old)
    save_file(old, str(tmp_path / "old.safetensors"))
    back, cfg, _ = LD.load_diffusers_lora(
        str(tmp_path / "old.safetensors"), params, unet.num_res_blocks
    )
    assert (cfg.rank, cfg.scale) == (2, 1.0)
    assert L.lora_modules(back) == L.lora_modules(lora)
    for a, b in zip(jax.tree.leaves(back), jax.tree.leaves(lora), strict=True):
        np.testing.assert_array_equal(a, b)

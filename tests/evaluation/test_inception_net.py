"""FIDInceptionV3 against pytorch-fid's own network on random weights, and weight loading.

The reference is pytorch-fid 0.3.0's `fid_inception_v3()` / `InceptionV3` wrapper, built on
torchvision 0.28.0's `models/inception.py`. PyPI's torchvision 0.28.0 wheel is linked against
CUDA torch: beside the CPU torch its `import torchvision` fails (`torchvision::nms` does not
exist), and once installed it breaks `import peft` (transformers probes it). So torchvision never
enters the environment: its wheel is unpacked with `pip install --no-deps --target` into a
test-only folder (`$LDM_JAX_TORCHVISION_DIR`, default `<venv>/torchvision-0.28.0`, which the
README's test command fills; installed here on first use if absent), and only the pure-Python
`torchvision.models.inception` (and the transforms it imports) is loaded from it, under
`sys.modules["torchvision"]` for as long as pytorch-fid's module takes to import; the entries are
removed right after. The code that runs is torchvision's and pytorch-fid's own.

pytorch-fid's `fid_inception_v3()` downloads its weights; here that download is replaced by
random weights for the same state dict (BatchNorm statistics included), which are then written
with `torch.save` and read back by `inception_weights.load_fid_inception`.
"""

from __future__ import annotations

import functools
import importlib
import importlib.util
import os
import pathlib
import shutil
import subprocess
import sys
import types

import jax
import numpy as np
import pytest

from ldm_jax.evaluation import fid_protocol, inception_weights
from ldm_jax.interop.tensors import WeightMismatchError

torch = pytest.importorskip("torch")

TORCHVISION_PIN = "torchvision==0.28.0"  # The release that pairs with torch 2.13.
TORCHVISION_DIR = pathlib.Path(
    os.environ.get("LDM_JAX_TORCHVISION_DIR")
    or pathlib.Path(sys.prefix) / TORCHVISION_PIN.replace("==", "-")
)


def _torchvision_files() -> pathlib.Path:
    """The unpacked torchvision package folder (installed with pip --target on first use)."""
    package = TORCHVISION_DIR / "torchvision"
    if (package / "models" / "inception.py").exists():
        return package
    staging = TORCHVISION_DIR.with_name(f"{TORCHVISION_DIR.name}.tmp{os.getpid()}")
    cmd = [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(staging)]
    result = subprocess.run([*cmd, TORCHVISION_PIN], capture_output=True, text=True)
    if result.returncode != 0:
        pytest.fail(
            f"torchvision's Python files (test reference) are not available: run `pip install "
            f"--no-deps --target {TORCHVISION_DIR} {TORCHVISION_PIN}` ({result.stderr[-200:]})"
        )
    try:
        os.replace(staging, TORCHVISION_DIR)
    except OSError:  # Another process got there first.
        shutil.rmtree(staging, ignore_errors=True)
    return package


@functools.lru_cache(maxsize=1)
def pytorch_fid_inception() -> types.ModuleType:
    """pytorch-fid's `inception` module, on torchvision's pure-Python Inception-v3."""
    spec = importlib.util.find_spec("pytorch_fid")
    if spec is None or not spec.submodule_search_locations:
        pytest.fail(
            "pytorch-fid (test reference) is missing: pip install --no-deps pytorch-fid==0.3.0"
        )
    tv_root = _torchvision_files()
    names = ("torchvision", "torchvision.models")
    saved = {
        k: v for k, v in sys.modules.items() if k == "torchvision" or k.startswith("torchvision.")
    }
    for k in saved:
        del sys.modules[k]
    package = types.ModuleType("torchvision")
    package.__path__ = [str(tv_root)]  # Its __init__ (the C++ ops) is not run.
    package.__version__ = TORCHVISION_PIN.split("==")[1]
    models = types.ModuleType("torchvision.models")
    models.__path__ = [str(tv_root / "models")]  # Nor the detection/video model imports.
    package.models = models
    sys.modules.update(dict(zip(names, (package, models), strict=True)))
    try:
        inception = importlib.import_module("torchvision.models.inception")
        models.inception_v3 = inception.inception_v3
        path = pathlib.Path(spec.submodule_search_locations[0]) / "inception.py"
        module_spec = importlib.util.spec_from_file_location("_pytorch_fid_inception", path)
        module = importlib.util.module_from_spec(module_spec)
        module_spec.loader.exec_module(module)
        return module
    finally:
        for k in [k for k in sys.modules if k == "torchvision" or k.startswith("torchvision.")]:
            del sys.modules[k]
        sys.modules.update(saved)


def _random_state_dict(template: dict, seed: int) -> dict:
    """Random weights for every tensor of `template`: He-scaled convs, BatchNorm statistics
    and affine terms away from their defaults, so every parameter matters."""
    g = torch.Generator().manual_seed(seed)
    out = {}
    for k, v in template.items():
        if k.endswith("num_batches_tracked"):
            out[k] = v.clone()
        elif k.endswith("running_var"):
            out[k] = 0.5 + torch.rand(v.shape, generator=g)
        elif k.endswith("running_mean"):
            out[k] = 0.2 * torch.randn(v.shape, generator=g)
        elif k.endswith("bn.weight"):
            out[k] = 1.0 + 0.2 * torch.randn(v.shape, generator=g)
        elif k.endswith("bias"):
            out[k] = 0.2 * torch.randn(v.shape, generator=g)
        else:  # conv / fc weights
            out[k] = torch.randn(v.shape, generator=g) * (2.0 / v[0].numel()) ** 0.5
    return out


@functools.lru_cache(maxsize=1)
def reference_models(seed: int = 0):
    """(pytorch-fid's InceptionV3 wrapper with resize/normalise on, its full fid_inception_v3
    network (same weights), that network's state dict) with random weights."""
    pfi = pytorch_fid_inception()
    built = []
    tv_models = pfi.torchvision.models
    make = tv_models.inception_v3

    def recording_inception_v3(*args, **kwargs):
        built.append(make(*args, **kwargs))
        return built[-1]

    def random_weights(url, progress=True):  # stands in for the download
        return _random_state_dict(built[-1].state_dict(), seed)

    tv_models.inception_v3, pfi.load_state_dict_from_url = recording_inception_v3, random_weights
    torch.manual_seed(seed)
    wrapper = pfi.InceptionV3([3], resize_input=True, normalize_input=True).eval()
    network = built[-1].eval()
    return wrapper, network, network.state_dict()


def reference_features(images: np.ndarray) -> dict[str, np.ndarray]:
    """pytorch-fid's features of uint8 [N, H, W, 3] images: the wrapper's pool3, `fc` for the
    logits, and a hook on Mixed_6d.branch1x1 for the spatial map."""
    wrapper, network, _ = reference_models()
    taps = []
    hook = network.Mixed_6d.branch1x1.register_forward_hook(lambda m, i, o: taps.append(o))
    x = torch.from_numpy(images.astype(np.float32) / 255.0).permute(0, 3, 1, 2)  # [N, 3, H, W]
    try:
        with torch.no_grad():
            pool3 = wrapper(x)[0][:, :, 0, 0]  # [N, 2048]
            logits = network.fc(pool3)
            unbiased = pool3 @ network.fc.weight.T
    finally:
        hook.remove()
    spatial = taps[0][:, :7].permute(0, 2, 3, 1).reshape(len(images), -1)  # NHWC order
    return {
        "pool3": pool3.numpy(),
        "logits": logits.numpy(),
        "logits_unbiased": unbiased.numpy(),
        "spatial": spatial.numpy(),
    }


@pytest.fixture(scope="module")
def weights_file(tmp_path_factory) -> str:
    """The random reference weights written by torch.save (as pytorch-fid's .pth is)."""
    path = tmp_path_factory.mktemp("inception") / "pt_inception-random.pth"
    torch.save(reference_models()[2], path)
    return str(path)


def test_parameter_tree_matches_pytorch_fid():
    _, network, state = reference_models()
    abstract = inception_weights.abstract_variables()
    leaves = jax.tree.leaves(abstract["params"])
    assert sum(int(np.prod(x.shape)) for x in leaves) == sum(
        p.numel() for p in network.parameters()
    )
    stats = jax.tree.leaves(abstract["batch_stats"])
    assert len(stats) == sum(k.endswith("running_mean") or k.endswith("running_var") for k in state)


def test_features_match_pytorch_fid(weights_file):
    """pool3, logits and spatial of the legacy (pytorch-fid) protocol, loaded from a .pth."""
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(2, 64, 48, 3), dtype=np.uint8)  # resized to 299 inside
    features = inception_weights.load_fid_inception(weights_file, "legacy_pytorch", batch_size=2)
    ours = features(images)
    ref = reference_features(images)
    assert ours["pool3"].shape == (2, 2048) and ours["spatial"].shape == (2, 17 * 17 * 7)
    for name in inception_weights.FEATURE_NAMES:
        scale = float(np.abs(ref[name]).max())
        assert scale > 1e-2, name  # random weights keep the features alive
        err = float(np.abs(ours[name] - ref[name]).max())
        print(f"{name}: max |ours - pytorch-fid| = {err:.3g}, max |pytorch-fid| = {scale:.3g}")
        np.testing.assert_allclose(ours[name], ref[name], rtol=1e-5, atol=1e-4, err_msg=name)


def test_clean_protocol_batches_pad_and_shard(weights_file):
    """The default (clean-fid) protocol: host bicubic resize, (x - 128) / 128, then pytorch-fid's
    network (its blocks run on that input directly). 3 images in batches of 2 (the last one
    padded), each split over a 2-device mesh, compile once and give pytorch-fid's pool3."""
    wrapper = reference_models()[0]
    rng = np.random.default_rng(1)
    images = rng.integers(0, 256, size=(3, 40, 40, 3), dtype=np.uint8)
    devices = np.array(jax.devices()[:2]).reshape(2, 1, 1)
    mesh = jax.sharding.Mesh(devices, ("data", "fsdp", "tensor"))
    features = inception_weights.load_fid_inception(weights_file, batch_size=2, mesh=mesh)
    ours = features(images)
    assert features._forward._cache_size() == 1  # the padded last batch did not recompile
    x = (fid_protocol.clean_resize(images) - 128.0) / 128.0  # [3, 299, 299, 3]
    x = torch.from_numpy(x).permute(0, 3, 1, 2)
    with torch.no_grad():
        for block in wrapper.blocks:
            x = block(x)
    np.testing.assert_allclose(ours["pool3"], x[:, :, 0, 0].numpy(), rtol=1e-5, atol=1e-4)
    assert ours["logits"].shape == (3, 1008) and ours["spatial"].shape == (3, 2023)
    with pytest.raises(ValueError, match="multiple"):
        inception_weights.InceptionFeatures(features.variables, batch_size=3, mesh=mesh)


def test_every_file_format_loads_the_same_variables(weights_file, tmp_path):
    """The zip .pth, a pre-1.6 (non-zip) .pth like pytorch-fid's release, and safetensors."""
    from safetensors.numpy import save_file

    tensors = reference_models()[2]
    state = {k: v.numpy() for k, v in tensors.items()}
    save_file(state, str(tmp_path / "inception.safetensors"))
    torch.save(tensors, tmp_path / "legacy.pth", _use_new_zipfile_serialization=False)
    a = inception_weights.load_inception_variables(weights_file)
    flat_a = jax.tree.leaves_with_path(a)
    for other in ("inception.safetensors", "legacy.pth"):
        b = inception_weights.load_inception_variables(str(tmp_path / other))
        flat_b = jax.tree.leaves_with_path(b)
        assert [p for p, _ in flat_a] == [p for p, _ in flat_b]
        for (_, x), (_, y) in zip(flat_a, flat_b, strict=True):
            np.testing.assert_array_equal(x, y)
    (tmp_path / "junk.pth").write_bytes(b"not a checkpoint")
    with pytest.raises(ValueError, match="neither a zip-format nor a pre-1.6"):
        inception_weights.load_inception_variables(str(tmp_path / "junk.pth"))
    # The transposition is the one PyTorch's layout implies: conv [O, I, kh, kw] -> [kh, kw, I, O].
    conv = state["Mixed_6d.branch7x7_2.conv.weight"]  # [160, 160, 1, 7]
    np.testing.assert_array_equal(
        a["params"]["Mixed_6d"]["branch7x7_2"]["conv"]["kernel"], conv.transpose(2, 3, 1, 0)
    )
    np.testing.assert_array_equal(
        a["batch_stats"]["Mixed_7c"]["branch_pool"]["bn"]["var"],
        state["Mixed_7c.branch_pool.bn.running_var"],
    )


def test_missing_weights_file_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.delenv(inception_weights.ENV_VAR, raising=False)
    with pytest.raises(inception_weights.InceptionWeightsNotFoundError) as err:
        inception_weights.load_fid_inception(None)
    message = str(err.value)
    assert "\n" not in message
    assert inception_weights.WEIGHTS_URL in message and "--inception_weights" in message
    assert inception_weights.ENV_VAR in message
    missing = str(tmp_path / "nope.pth")
    monkeypatch.setenv(inception_weights.ENV_VAR, missing)
    with pytest.raises(FileNotFoundError, match="nope.pth does not exist"):
        inception_weights.load_inception_variables()


def test_wrong_keys_and_shapes_are_listed(tmp_path):
    state = {k: v.clone() for k, v in reference_models()[2].items()}
    del state["Mixed_5b.branch1x1.bn.running_mean"]
    state["AuxLogits.fc.weight"] = torch.zeros(1000, 768)
    state["fc.weight"] = torch.zeros(1000, 2048)  # torchvision's 1000-class head, not TF's 1008
    path = tmp_path / "bad.pth"
    torch.save(state, path)
    with pytest.raises(WeightMismatchError) as err:
        inception_weights.load_inception_variables(str(path))
    message = str(err.value)
    assert "Mixed_5b.branch1x1.bn.running_mean" in message
    assert "AuxLogits.fc.weight" in message
    assert "'fc.weight'" in message and "(1000, 2048)" in message


def test_network_input_protocols_are_pytorch_fid_and_tf_scalings():
    """clean: (x - 128) / 128 on 299-px input; legacy_pytorch: torch's bilinear resize of
    x / 255, then 2x - 1 (what pytorch-fid's wrapper does before its first conv)."""
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 255, size=(2, 299, 299, 3)).astype(np.float32)
    np.testing.assert_allclose(
        np.asarray(fid_protocol.network_input(x, "clean")), (x - 128) / 128, rtol=0, atol=1e-6
    )
    small = rng.uniform(0, 255, size=(2, 40, 57, 3)).astype(np.float32)
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(small / 255).permute(0, 3, 1, 2),
        size=(299, 299),
        mode="bilinear",
        align_corners=False,
    )
    ref = (2 * ref - 1).permute(0, 2, 3, 1).numpy()
    ours = np.asarray(fid_protocol.network_input(small, "legacy_pytorch"))
    np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-5)
    big = rng.uniform(0, 255, size=(1, 512, 333, 3)).astype(np.float32)  # downsampling too
    ref = torch.nn.functional.interpolate(
        torch.from_numpy(big / 255).permute(0, 3, 1, 2), size=(299, 299), mode="bilinear"
    )
    ours = np.asarray(fid_protocol.network_input(big, "legacy_pytorch"))
    np.testing.assert_allclose(ours, (2 * ref - 1).permute(0, 2, 3, 1).numpy(), atol=1e-5)

"""Shared test helpers for CLIP text encoders: tokenizer folders and tiny random models.

* `write_clip_tokenizer(directory, pad_token)`: CLIP's real vocabulary (49408 tokens) as a
  diffusers `tokenizer/` folder, built from open_clip's packaged `bpe_simple_vocab_16e6.txt.gz`
  exactly as CLIP's `SimpleTokenizer` builds it (256 byte symbols, the same with `</w>`, the
  first 48894 merges, then `<|startoftext|>` and `<|endoftext|>`).
* `write_tiny_tokenizer(directory, pad_token)`: a small byte-level vocabulary (`TINY_VOCAB_LEN`
  tokens) with a few English merges, for end-to-end tests with `tiny_clip_config`'s model.
* `tiny_clip_config(hidden_act)`: transformers `CLIPTextConfig` kwargs of a tiny model whose
  special ids match the tiny tokenizer; `save_tiny_clip_text(directory, seed)` saves such a
  model with random weights (LayerNorms included) through `save_pretrained`.

The folders hold what Stable Diffusion's hub folders hold (vocab.json, merges.txt,
tokenizer_config.json, special_tokens_map.json), so `transformers.CLIPTokenizer` and diffusers
pipelines load them too. SD v1 pads with `<|endoftext|>`, SD v2 with `"!"` (id 0).
"""

from __future__ import annotations

import functools
import gzip
import importlib.util
import json
import os
import pathlib

import pytest

BOS, EOS = "<|startoftext|>", "<|endoftext|>"
# The merges of the tiny vocabulary (symbols of one word; a word's last symbol ends in </w>).
TINY_MERGES = (
    ("t", "h"),
    ("th", "e</w>"),
    ("a", "n"),
    ("an", "d</w>"),
    ("i", "n"),
    ("in", "g</w>"),
    ("o", "f</w>"),
    ("e", "r</w>"),
    ("o", "n</w>"),
    ("c", "a"),
    ("ca", "t</w>"),
    ("d", "o"),
    ("do", "g</w>"),
    ("p", "h"),
    ("ph", "o"),
    ("pho", "t"),
    ("phot", "o</w>"),
    ("r", "e"),
    ("re", "d</w>"),
    ("s", "t"),
    ("a", "t</w>"),
    ("o", "r</w>"),
    ("i", "s</w>"),
)


def bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable character table (the vocabulary's alphabet),
    transformers' copy (independent of the library's, which the tokenizer tests check)."""
    from transformers.convert_slow_tokenizer import bytes_to_unicode as reference

    return reference()


def _vocab_from_merges(merges: list[tuple[str, str]]) -> dict[str, int]:
    symbols = list(bytes_to_unicode().values())
    tokens = symbols + [s + "</w>" for s in symbols] + ["".join(m) for m in merges] + [BOS, EOS]
    vocab: dict[str, int] = {}
    for token in tokens:
        vocab.setdefault(token, len(vocab))
    return vocab


@functools.lru_cache(maxsize=1)
def clip_vocab() -> tuple[dict[str, int], tuple[tuple[str, str], ...]]:
    """CLIP's real vocabulary and merges, from open_clip's `bpe_simple_vocab_16e6.txt.gz`."""
    spec = importlib.util.find_spec("open_clip")  # found, not imported (it imports torchvision)
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open-clip-torch (a test extra) is not installed: CLIP's vocabulary is in it")
    path = pathlib.Path(spec.submodule_search_locations[0]) / "bpe_simple_vocab_16e6.txt.gz"
    lines = gzip.open(path).read().decode("utf-8").split("\n")
    merges = [tuple(line.split()) for line in lines[1 : 49152 - 256 - 2 + 1]]
    vocab = _vocab_from_merges(merges)
    assert len(vocab) == 49408
    return vocab, tuple(merges)


def _special(content: str) -> dict:
    return {
        "content": content,
        "lstrip": False,
        "normalized": True,
        "rstrip": False,
        "single_word": False,
    }


def _write_folder(
    directory: str | os.PathLike,
    vocab: dict[str, int],
    merges: tuple[tuple[str, str], ...],
    pad_token: str,
    model_max_length: int,
) -> pathlib.Path:
    directory = pathlib.Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "vocab.json").write_text(json.dumps(vocab, ensure_ascii=False), "utf-8")
    merges_text = "#version: 0.2\n" + "".join(f"{a} {b}\n" for a, b in merges)
    (directory / "merges.txt").write_text(merges_text, "utf-8")
    specials = {
        "bos_token": _special(BOS),
        "eos_token": _special(EOS),
        "unk_token": _special(EOS),
        "pad_token": pad_token,
    }
    config = {
        **specials,
        "add_prefix_space": False,
        "do_lower_case": True,
        "errors": "replace",
        "model_max_length": model_max_length,
        "tokenizer_class": "CLIPTokenizer",
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(config, indent=2), "utf-8")
    (directory / "special_tokens_map.json").write_text(json.dumps(specials, indent=2), "utf-8")
    return directory


def write_clip_tokenizer(
    directory: str | os.PathLike, pad_token: str = EOS, model_max_length: int = 77
) -> pathlib.Path:
    """Writes CLIP's real tokenizer as a diffusers `tokenizer/` folder (SD v1: pad with
    `<|endoftext|>`; SD v2: `pad_token="!"`, id 0). Returns the folder."""
    vocab, merges = clip_vocab()
    return _write_folder(directory, vocab, merges, pad_token, model_max_length)


@functools.lru_cache(maxsize=1)
def _tiny_vocab() -> tuple[tuple[str, int], ...]:
    return tuple(_vocab_from_merges(list(TINY_MERGES)).items())


def tiny_vocab() -> dict[str, int]:
    """The tiny tokenizer's vocabulary (`TINY_VOCAB_LEN` tokens; "!" is id 0)."""
    return dict(_tiny_vocab())


def write_tiny_tokenizer(
    directory: str | os.PathLike, pad_token: str = EOS, model_max_length: int = 77
) -> pathlib.Path:
    """Writes the tiny byte-level tokenizer (`TINY_VOCAB_LEN` tokens) as a `tokenizer/` folder."""
    return _write_folder(directory, tiny_vocab(), TINY_MERGES, pad_token, model_max_length)


TINY_VOCAB_LEN = 2 * 256 + len(TINY_MERGES) + 2


def tiny_clip_config(hidden_act: str = "quick_gelu") -> dict:
    """transformers `CLIPTextConfig` kwargs of a tiny text encoder (width 32, 3 layers, 4 heads,
    1000 tokens, 77 positions) whose bos/eos ids are the tiny tokenizer's."""
    vocab = tiny_vocab()
    return {
        "vocab_size": 1000,
        "hidden_size": 32,
        "intermediate_size": 64,
        "num_hidden_layers": 3,
        "num_attention_heads": 4,
        "max_position_embeddings": 77,
        "hidden_act": hidden_act,
        "layer_norm_eps": 1e-5,
        "projection_dim": 16,
        "bos_token_id": vocab[BOS],
        "eos_token_id": vocab[EOS],
        "pad_token_id": vocab[EOS],
    }


def random_clip_text_model(config_kwargs: dict | None = None, seed: int = 0):
    """A `transformers.CLIPTextModel` of `config_kwargs` (default: `tiny_clip_config()`) whose
    parameters are transformers' initialisation plus N(0, 0.1) noise, so LayerNorm scales and
    biases and every bias differ from 1 and 0. Eval mode, float32."""
    import torch
    import transformers

    torch.manual_seed(seed)
    config = transformers.CLIPTextConfig(**(config_kwargs or tiny_clip_config()))
    model = transformers.CLIPTextModel(config).eval()
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def save_tiny_clip_text(
    directory: str | os.PathLike, seed: int = 0, hidden_act: str = "quick_gelu"
) -> pathlib.Path:
    """Saves a random tiny `CLIPTextModel` (`tiny_clip_config`) with `save_pretrained`
    (config.json + model.safetensors), as a diffusers `text_encoder/` folder. Returns it."""
    directory = pathlib.Path(directory)
    random_clip_text_model(tiny_clip_config(hidden_act), seed).save_pretrained(directory)
    return directory


@functools.lru_cache(maxsize=1)
def open_clip_transformer():
    """open_clip's `transformer` module (`TextTransformer`, `ResidualAttentionBlock`).

    `import open_clip` imports torchvision (for `FrozenBatchNorm2d`, which the text tower does
    not use). Where torchvision cannot load (PyPI's torchvision 0.28 wheel is linked against
    CUDA torch, not the CPU build), `open_clip/transformer.py` and its two helpers are loaded
    from the installed package under a private package name with a stand-in for that one class;
    the stand-in is removed from `sys.modules` right after. The code that runs is open_clip's own.
    """
    try:
        import open_clip.transformer

        return open_clip.transformer
    except (ImportError, RuntimeError, OSError):
        pass
    import importlib
    import sys
    import types

    import torch

    spec = importlib.util.find_spec("open_clip")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("open-clip-torch (a test extra) is not installed")
    package = types.ModuleType("_open_clip_text_only")
    package.__path__ = list(spec.submodule_search_locations)
    stubs = {
        "torchvision": types.ModuleType("torchvision"),
        "torchvision.ops": types.ModuleType("torchvision.ops"),
        "torchvision.ops.misc": types.ModuleType("torchvision.ops.misc"),
    }
    stubs["torchvision.ops.misc"].FrozenBatchNorm2d = type(
        "FrozenBatchNorm2d", (torch.nn.Module,), {}
    )
    saved = {name: sys.modules.get(name) for name in stubs}
    sys.modules["_open_clip_text_only"] = package
    sys.modules.update(stubs)
    try:
        return importlib.import_module("_open_clip_text_only.transformer")
    finally:
        for name, module in saved.items():
            if module is None:
                sys.modules.pop(name, None)
            else:
                sys.modules[name] = module


def random_open_clip_text_tower(
    width: int = 32, layers: int = 3, heads: int = 4, vocab_size: int = 1000, seed: int = 0
):
    """open_clip's `TextTransformer` (gelu, 77 positions, causal) with random weights: every
    parameter N(0, 0.1) on top of open_clip's initialisation. Eval mode, float32."""
    import torch

    torch.manual_seed(seed)
    tower = (
        open_clip_transformer()
        .TextTransformer(
            context_length=77,
            vocab_size=vocab_size,
            width=width,
            heads=heads,
            layers=layers,
            output_dim=16,
        )
        .eval()
    )
    with torch.no_grad():
        for p in tower.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return tower

"""The sample CLI's tasks: turn a request (class, prompt, image, mask) into conditions, sample.

  generate   unconditional, or class-conditional (cross-attention class token or "adm" labels)
  text2img   the paper's BERT text encoder, or a frozen one (MiniLM, or Stable Diffusion's
             CLIP/OpenCLIP read from the workdir: its context of the prompt); guidance against
             the empty prompt or --negative_prompt, optionally rescaled (--guidance_rescale)
  superres   concat: the low-resolution image (its size is the latent size) stacked on z_t
  inpaint    two modes, by the workdir's model:
               concat (a model trained for inpainting: the paper's inpainting model, SD
               inpainting): the first stage's latent of the masked image plus the mask at latent
               size are stacked on z_t;
               masked sampling (any unconditional, class- or text-conditioned model): the known
               latents, noised to the current step, are pasted in every step (`editing.py`);
             both paste the known pixels back after decoding (as the paper's inpainting script)
  semantic   concat: a label map, one-hot encoded and resized by the spatial rescaler
  layout     the paper's layout model: --layout (a JSON list of classes and boxes, or test:INDEX
             for a test canvas's layout; `layout_input.py`) as layout tokens to the BERT;
             guidance against the empty layout
  edit       img2img on an unconditional, class- or text-conditioned model: the image's latent
             noised to --strength, denoised under --class / --prompt; with --mask, masked
             sampling as well (the new condition fills the hole; `editing.py`); `img2img` is
             another name for it (diffusers' word)

Which task a workdir's model performs follows from `config.model` (`model_task`); `edit` and the
masked-sampling `inpaint` work on the models whose task is generate or text2img. Without --class
or --prompt those two use the model's unconditional branch (null class, empty caption).
"""

from __future__ import annotations

import dataclasses
import math
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from ldm_jax.config import builders
from ldm_jax.config.model_config import model_config
from ldm_jax.models.factory import EXTERNAL_COND_STAGES, FROZEN_TEXT_ENCODERS
from ldm_jax.models.tokenizer import WordPieceTokenizer
from ldm_jax.sampling import editing, image_inputs, layout_input, placement
from ldm_jax.sampling.generate import (
    TEXT_CONTEXT_LENGTH,
    fixed_text_context,
    inpainting_condition,
    make_sampler,
    null_label,
    sd_inpainting_condition,
)
from ldm_jax.sampling.request import (
    SampleInputError,
    SampleRequest,
    SampleResult,
    check_divisible,
    reject,
)
from ldm_jax.training import logging as log
from ldm_jax.workdir.reader import TrainedLDM
from ldm_jax.workdir.text_encoder import prompt_encoder

__all__ = ["TASKS", "SampleInputError", "SampleRequest", "SampleResult", "model_task", "run"]

TASKS = ("generate", "text2img", "superres", "inpaint", "semantic", "layout", "edit", "img2img")
ALIASES = {"img2img": "edit"}  # diffusers' name for image-guided sampling
_NEEDS = {
    "generate": "[--class C]",
    "text2img": "--prompt TEXT",
    "superres": "--image LOW_RES.png",
    "inpaint": "--image IMAGE.png --mask MASK.png",
    "semantic": "--image LABEL_MAP.png",
    "layout": "--layout LAYOUT.json (or test:INDEX)",
}

# Model tasks whose models also edit and inpaint by masked sampling (image-guided tasks).
GUIDABLE = ("generate", "text2img")
GUIDED_TASKS = ("edit", "inpaint")


def model_task(model: dict[str, Any]) -> str:
    """The task a paper-schema model performs, from its conditioning key and cond stage."""
    key = model.get("conditioning_key")
    kind = (model.get("cond_stage") or {"kind": "none"})["kind"]
    if key in (None, "adm") or (key == "crossattn" and kind == "class"):
        return "generate"
    if key == "crossattn" and kind in ("bert", *EXTERNAL_COND_STAGES, *FROZEN_TEXT_ENCODERS):
        return "text2img"
    if key == "hybrid" and kind in EXTERNAL_COND_STAGES:
        return "inpaint"  # Stable Diffusion inpainting: mask + masked latent, and a prompt
    if key == "concat":
        table = {"identity": "superres", "none": "superres"}
        table.update(first_stage="inpaint", spatial_rescaler="semantic")
        if kind in table:
            return table[kind]
    raise SampleInputError(
        f"The sample CLI has no task for conditioning_key={key!r} with a {kind!r} condition "
        "encoder; use ldm_jax.interop / ldm_jax.sampling.generate.make_sampler directly."
    )


def workdir_task(config: Any) -> str:
    """The task of a workdir's config: "layout" for the layout model (`builders.is_layout_model`:
    it needs the dataset as well as the model), else `model_task`."""
    if builders.is_layout_model(config):
        return "layout"
    return model_task(model_config(config))


def _num_classes(model: dict[str, Any]) -> int | None:
    cond = model.get("cond_stage") or {}
    if cond.get("kind") == "class":
        return cond["n_classes"] - int(bool(cond.get("add_null_class", False)))
    if model.get("conditioning_key") == "adm":
        return model["unet"].get("num_classes")
    return None


class _Task:
    """Conditions of one request: cond / uncond for the sampler, the latent shape, a post-step."""

    def __init__(self, trained: TrainedLDM, request: SampleRequest, steps: int):
        self.trained, self.request, self.steps = trained, request, steps
        self.config = trained.config
        self.model = model_config(self.config)
        self.denoiser = builders.build_denoiser(self.config)
        self.h, self.w, self.c = builders.latent_shape(self.config)
        self.levels = len(self.model["unet"].get("channel_mult", (1, 2, 4, 8)))
        self.cond: Any = None
        self.uncond: Any = None
        self.columns = math.ceil(math.sqrt(request.num))
        self.info: dict[str, Any] = {}
        self.post = lambda images: images
        self.strength = 1.0  # img2img strength (static: one program per strength)
        self.latents: dict[str, np.ndarray] = {}  # x_init / mask / x_known of the sampler
        self.text_uncond = False  # the unconditional branch is a caption (--negative_prompt)

    def _batch(self, x: np.ndarray) -> np.ndarray:
        return np.broadcast_to(x[None], (self.request.num, *x.shape)).copy()

    def _check_class(self, num_classes: int) -> None:
        label = self.request.class_label
        if label is not None and not 0 <= label < num_classes:
            raise SampleInputError(f"--class must be in [0, {num_classes}), got {label}.")

    def _null_labels(self) -> np.ndarray | None:
        """The null class [1] of classifier-free guidance, or None when the model has none."""
        null = null_label(self.denoiser)
        return None if null is None else np.full((1,), null, np.int32)

    def generate(self) -> None:
        r, num_classes = self.request, _num_classes(self.model)
        reject(r, "generate", "--prompt", "--image", "--mask", "--strength")
        self.info["class"] = r.class_label
        if num_classes is None:
            if r.class_label is not None:
                raise SampleInputError("--class: this model is unconditional.")
            return
        self._check_class(num_classes)
        if r.class_label is None:
            self.cond = np.repeat(np.arange(num_classes, dtype=np.int32), r.num)
            self.columns = r.num
        else:
            self.cond = np.full((r.num,), r.class_label, np.int32)
        self.uncond = self._null_labels()

    def text2img(self) -> None:
        r = self.request
        reject(r, "text2img", "--class", "--image", "--mask", "--strength")
        if r.prompt is None:
            raise SampleInputError("--task text2img needs --prompt.")
        self._prompt(r.prompt)

    def _prompt(self, prompt: str) -> None:
        """cond of the prompt (token ids [B, L] or context [B, L, D]), uncond of the empty one."""
        cond_cfg, num = self.model["cond_stage"], self.request.num
        self.info["prompt"] = prompt
        if cond_cfg["kind"] in (*EXTERNAL_COND_STAGES, *FROZEN_TEXT_ENCODERS):
            self.cond = self._text_context([prompt] * num)  # [B, L, D]
            self.uncond = self._negative_context()  # [1, L, D]
            return
        if not cond_cfg.get("vocab"):
            raise SampleInputError(
                "This text model's workdir has no vocabulary (config.model.cond_stage.vocab); "
                "convert it again with --vocab vocab.txt."
            )
        vocab = os.path.join(self.trained.workdir, cond_cfg["vocab"])
        if not os.path.isfile(vocab):
            raise SampleInputError(f"The workdir's vocabulary {vocab} is missing.")
        tokenizer = WordPieceTokenizer.from_file(vocab, max_length=cond_cfg.get("max_seq_len", 77))
        self._check_length(tokenizer, prompt, "--prompt")
        self.cond = tokenizer([prompt] * num)  # [B, L] int
        negative = self._negative_prompt()
        self._check_length(tokenizer, negative, "--negative_prompt")
        self.uncond = tokenizer([negative])  # [1, L]: "" as the reference

    def _check_length(self, tokenizer: Any, text: str, flag: str) -> None:
        """Warns, naming `flag`, when `text` has more tokens than the text encoder reads:
        prompts are truncated to `max_length - 2` tokens, as diffusers' pipelines do; the
        count dropped goes into the JSON summary as `<flag>_tokens_dropped`."""
        dropped = tokenizer.dropped_tokens(text)
        if not dropped:
            return
        kept = tokenizer.max_length - 2
        log.warning(
            "%s is %d tokens long; the text encoder reads only the first %d, so the last %d "
            "are ignored (the prompt is truncated, as diffusers does).",
            flag,
            kept + dropped,
            kept,
            dropped,
        )
        self.info[f"{flag.lstrip('-')}_tokens_dropped"] = dropped

    def _negative_prompt(self) -> str:
        """The caption of the unconditional branch: --negative_prompt, else the empty one."""
        self.text_uncond = True
        negative = self.request.negative_prompt
        if negative is not None:
            self.info["negative_prompt"] = negative
        return "" if negative is None else negative

    def _negative_context(self) -> np.ndarray:
        """[1, L, D]: the frozen encoder's context of the negative (default: empty) prompt."""
        return self._text_context([self._negative_prompt()], "--negative_prompt")

    def edit(self) -> None:
        """img2img (--task edit) and masked sampling (--mask; --task inpaint on a model trained
        without masks): see `editing.py`."""
        r = self.request
        if r.task == "inpaint":
            if r.strength is not None:
                raise SampleInputError(
                    "--strength does not apply to --task inpaint (the hole starts from noise); "
                    "use --task edit --mask for img2img inside the hole."
                )
            if r.image is None or r.mask is None:
                raise SampleInputError("--task inpaint needs --image and --mask (white = fill in).")
            self.info["inpainting"] = "masked_sampling"
        elif r.image is None:
            raise SampleInputError(
                "--task edit needs --image (the image to edit; --mask to edit only a region)."
            )
        strength = editing.DEFAULT_STRENGTH if r.strength is None else float(r.strength)
        editing.check_strength(strength, self.steps)
        self._guided_condition()
        guide = editing.read_guide(self.trained, r.image, r.mask)
        self.strength = strength
        self.latents = guide.sampler_inputs(strength)
        self.post = guide.paste
        self.info.update(image=r.image, mask=r.mask)
        if r.task == "edit":
            self.info["strength"] = strength

    def _guided_condition(self) -> None:
        """cond / uncond of edit and masked inpainting: --class or --prompt for the model's kind
        of condition; without them its unconditional branch (null class, empty caption)."""
        r = self.request
        if model_task(self.model) == "text2img":
            if r.class_label is not None:
                raise SampleInputError("--class: this model is text-conditioned; use --prompt.")
            self._prompt("" if r.prompt is None else r.prompt)
            return
        num_classes = _num_classes(self.model)
        if r.prompt is not None:
            what = "unconditional" if num_classes is None else "class-conditional; use --class"
            raise SampleInputError(f"--prompt: this model is {what}.")
        self.info["class"] = r.class_label
        if num_classes is None:
            if r.class_label is not None:
                raise SampleInputError("--class: this model is unconditional.")
            return
        self._check_class(num_classes)
        null = self._null_labels()
        if r.class_label is not None:
            self.cond, self.uncond = np.full((r.num,), r.class_label, np.int32), null
        elif null is None:
            raise SampleInputError(
                f"--task {r.task} on this class-conditional model needs --class C in "
                f"[0, {num_classes}) (it has no null class to sample without one)."
            )
        else:
            self.cond = np.repeat(null, r.num)  # the null class, unguided

    def layout(self) -> None:
        """cond: the --layout's tokens [B, L]; uncond: the empty layout's [1, L]."""
        r = self.request
        reject(r, "layout", "--class", "--prompt", "--image", "--mask", "--strength")
        if r.layout is None:
            raise SampleInputError(f"--task layout needs {_NEEDS['layout']}.")
        self.cond, self.uncond, objects = layout_input.layout_condition(
            self.config, r.layout, r.num
        )
        self.info["layout"] = objects

    def _text_context(self, prompts: list[str], flag: str = "--prompt") -> np.ndarray:
        """Context tokens of a frozen text encoder: the workdir's (MiniLM, or a Stable Diffusion
        CLIP/OpenCLIP read from its folders; `workdir/text_encoder.py`, as in training), or the
        fixed per-caption stand-in that the SD :tiny variants train on
        (`generate.fixed_text_context`). `flag` names the prompts in a truncation warning."""
        cond = self.model["cond_stage"]
        encoder = prompt_encoder(self.trained.workdir, cond)
        if encoder is not None:
            tokenizer = getattr(encoder, "tokenizer", None)
            if tokenizer is not None and prompts:
                self._check_length(tokenizer, prompts[0], flag)
            return encoder(prompts)  # [N, L, D]
        if not self.config.get("train", {}).get("fixed_text_context"):
            raise SampleInputError(
                f"This workdir's {cond['kind']} text encoder has no weights: import a Stable "
                "Diffusion model with python -m ldm_jax.convert diffusers --dir SD_FOLDER "
                "(or sd-single-file --ckpt MODEL), or train an SD :tiny variant "
                "(train.fixed_text_context)."
            )
        return fixed_text_context(prompts, TEXT_CONTEXT_LENGTH, self.model["unet"]["context_dim"])

    def superres(self) -> None:
        r = self.request
        reject(r, "superres", "--class", "--prompt", "--mask", "--strength")
        if r.image is None:
            raise SampleInputError("--task superres needs --image (the low-resolution image).")
        extra = self.model["unet"]["in_channels"] - self.c
        low = image_inputs.read_image(r.image, extra)  # [h, w, c']
        self.h, self.w = low.shape[:2]
        check_divisible(self.h, self.w, 2 ** (self.levels - 1), f"--image {r.image}")
        self.cond = self._batch(low)
        self.info["image"] = r.image

    def inpaint(self) -> None:
        r = self.request
        reject(r, "inpaint", "--class", "--strength")
        if r.image is None or r.mask is None:
            raise SampleInputError("--task inpaint needs --image and --mask (white = fill in).")
        fs = self.model["first_stage"]
        image = image_inputs.read_image(r.image, fs.get("in_channels", 3))  # [H, W, C]
        mask = image_inputs.read_mask(r.mask)  # [H, W, 1], 1 = fill in
        if mask.shape[:2] != image.shape[:2]:
            raise SampleInputError(
                f"--mask {r.mask} is {mask.shape[1]}x{mask.shape[0]}, --image {r.image} is "
                f"{image.shape[1]}x{image.shape[0]}; they must be the same size."
            )
        f = builders.downsampling_factor(self.config)
        check_divisible(*image.shape[:2], f * 2 ** (self.levels - 1), f"--image {r.image}")
        ae = builders.build_autoencoder(self.config)
        h, w = image.shape[0] // f, image.shape[1] // f
        if self.model.get("conditioning_key") == "hybrid":  # Stable Diffusion inpainting
            concat = jax.jit(
                lambda p, x, m: sd_inpainting_condition(ae, p, x, m, f, self.trained.scale_factor)
            )(self.trained.ae_params, image[None], mask[None])  # [1, h, w, 1 + c]
            prompt = "" if r.prompt is None else r.prompt
            self.cond = {
                "context": self._text_context([prompt] * r.num),
                "concat": self._batch(np.asarray(concat[0])),
            }
            self.uncond = {"context": self._negative_context(), "concat": np.asarray(concat)}
            self.info["prompt"] = prompt
        else:
            if r.prompt is not None:
                raise SampleInputError("--prompt does not apply to this inpainting model.")
            concat = jax.jit(lambda p, x, m: inpainting_condition(ae, p, x, m, f))(
                self.trained.ae_params, image[None], mask[None]
            )  # [1, h, w, c + 1]
            self.cond = self._batch(np.asarray(concat[0]))
        self.h, self.w = h, w

        def paste(images: np.ndarray) -> np.ndarray:
            return (1.0 - mask) * image + mask * images

        self.post = paste
        self.info.update(image=r.image, mask=r.mask, inpainting="concat")

    def semantic(self) -> None:
        r = self.request
        reject(r, "semantic", "--class", "--prompt", "--mask", "--strength")
        if r.image is None:
            raise SampleInputError("--task semantic needs --image (a label map PNG).")
        n = self.model["cond_stage"]["in_channels"]
        labels = image_inputs.read_label_map(r.image, n)  # [H, W]
        onehot = np.eye(n, dtype=np.float32)[labels]  # [H, W, n]
        params = self.trained.ldm_params
        shape = jax.eval_shape(
            lambda y: self.denoiser.apply(
                {"params": params}, y, method=self.denoiser.encode_condition
            ),
            jax.ShapeDtypeStruct((1, *onehot.shape), jnp.float32),
        ).shape
        self.h, self.w = shape[1:3]
        check_divisible(self.h, self.w, 2 ** (self.levels - 1), f"the latent of --image {r.image}")
        self.cond = self._batch(onehot)
        self.info["image"] = r.image


def _method(requested: str, task: str) -> str:
    """The `_Task` method of a requested task on a model that performs `task`."""
    if requested == task:
        return task
    if requested in GUIDED_TASKS and task in GUIDABLE:
        return "edit"
    if requested == "edit":
        raise SampleInputError(
            f"--task edit: this workdir holds a {task} model; edit works on unconditional, "
            f"class- and text-conditioned models; use --task {task} {_NEEDS[task]}."
        )
    raise SampleInputError(
        f"--task {requested}: this workdir holds a {task} model; use --task {task} {_NEEDS[task]}."
    )


def run(trained: TrainedLDM, request: SampleRequest) -> SampleResult:
    """Samples `request.num` images (per class when generating every class) for `request.task`.

    Raises:
      SampleInputError: a flag that does not fit the task or the model (named in the message).
      ImageInputError: a missing or unreadable input image (named in the message).
    """
    config = trained.config
    if request.task not in TASKS:
        raise SampleInputError(f"--task must be one of {TASKS}, got {request.task!r}.")
    asked = request.task
    request = dataclasses.replace(request, task=ALIASES.get(asked, asked))
    rescale = request.guidance_rescale
    if rescale is not None and not 0.0 <= rescale <= 1.0:
        raise SampleInputError(f"--guidance_rescale must be in [0, 1], got {rescale}.")
    if request.num <= 0:
        raise SampleInputError(f"--num must be positive, got {request.num}.")
    task = workdir_task(config)
    method = _method(request.task, task)
    if request.layout is not None and method != "layout":
        raise SampleInputError(f"--layout does not apply to --task {request.task}.")
    s = config.sample
    steps = s.steps if request.steps is None else request.steps
    num_timesteps = int(config.diffusion.get("num_timesteps", 1000))
    if not 1 <= steps <= num_timesteps:
        raise SampleInputError(
            f"--steps must be in [1, {num_timesteps}] (the model's diffusion has {num_timesteps} "
            f"timesteps), got {steps}."
        )
    job = _Task(trained, request, steps)
    getattr(job, method)()
    if request.negative_prompt is not None and not job.text_uncond:
        raise SampleInputError(
            f"--negative_prompt: --task {asked} on this model has no text condition to guide "
            "against (it applies to text-conditioned models)."
        )
    if rescale is not None and job.uncond is None:
        raise SampleInputError("--guidance_rescale: this sampling has no classifier-free guidance.")
    extra = dict(job.latents)
    if rescale is not None:
        extra["guidance_rescale"] = jnp.float32(rescale)
    guidance = s.guidance_scale if request.guidance is None else request.guidance
    eta = s.eta if request.eta is None else request.eta
    sampler = request.sampler or s.sampler
    sample = make_sampler(
        config,
        sampler,
        steps,
        timestep_spacing=s.get("timestep_spacing", "leading"),
        steps_offset=int(s.get("steps_offset", 1)),
        strength=job.strength,
    )
    batch = request.num if job.cond is None else jax.tree.leaves(job.cond)[0].shape[0]
    mesh = placement.mesh_of(trained.ldm_params)  # `placement.replicate`d weights: split the batch
    cond, uncond, extra = (
        placement.split_batch(t, batch, mesh) for t in (job.cond, job.uncond, extra)
    )
    images = sample(
        trained.ae_params,
        trained.ldm_params,
        cond,
        uncond,
        jax.random.PRNGKey(request.seed),
        jnp.float32(guidance),
        jnp.float32(eta),
        jnp.float32(trained.scale_factor),
        shape=(batch, job.h, job.w, job.c),
        **extra,
    )
    images = np.clip(job.post(np.asarray(images)), -1.0, 1.0)
    info = {
        "task": asked,
        "num_images": int(batch),
        **job.info,
        "guidance": guidance if job.uncond is not None else None,
        "guidance_rescale": rescale,
        "sampler": sampler,
        "eta": eta,
        "steps": steps,
        "ldm_step": trained.step,
    }
    return SampleResult(images=images, columns=job.columns, info=info)

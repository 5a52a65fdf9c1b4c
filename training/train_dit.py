"""Video-DiT training (the EasyAnimate stages: image alignment, motion module, full).

    python training/run.py dit-image   --config training/configs/dit_image.yaml   [key=value ...]
    python training/run.py dit-motion  --config training/configs/dit_motion.yaml
    python training/run.py dit-full    --config training/configs/dit_full.yaml

Stage 1 (``dit-image``) aligns an image DiT to a (new) VAE on images. Stage 2 (``dit-motion``)
inserts motion modules into that image DiT (``model.motion_config``) and trains only them on
video and image batches with aspect-ratio and frame buckets. Stage 3 (``dit-full``) trains the
whole video DiT, with progressive resolution through ``data.resolution_schedule``.
``mode.train_mode: inpaint`` trains image-to-video models (random keep-masks, masked-video
latents, CLIP tokens). Loss: IDDPM hybrid (epsilon MSE + learned-variance VB term).
"""

from __future__ import annotations

from pathlib import Path

import torch

from easyanimate_core.errors import InputError
from training import data as data_lib
from training.config import parse_args
from training.options import (
    Opt,
    choice,
    either,
    flag,
    free,
    from_config,
    listof,
    number,
    path,
    text,
    whole,
    with_defaults,
)
from training.ema import EMA, final_weights
from training.loop import (
    LOOP_OPTIONS,
    LR_SCHEDULES,
    clip_gradients,
    export_model_folder,
    fused_adam,
    lr_schedule,
    make_accelerator,
    train,
)

SAMPLERS = ("ddim", "euler", "euler_a", "dpmpp_2m", "unipc")
UNIT = number(0, 1)

OPTIONS = {
    "train": {**LOOP_OPTIONS,
              "output_dir": Opt("outputs/dit", path(), "folder for checkpoints, logs and the exported model"),
              "lr": Opt(2e-5, number(0, low_open=True), "learning rate (AdamW)"),
              "low_lr_factor": Opt(0.1, number(0), "lr multiplier of model.trainable_low_lr"),
              "betas": Opt([0.9, 0.999], listof(number(0, 1, high_open=True), length=2), "AdamW betas"),
              "weight_decay": Opt(3e-2, number(0), "AdamW weight decay"),
              "adam_eps": Opt(1e-10, number(0, low_open=True), "AdamW epsilon"),
              "lr_schedule": Opt("constant_with_warmup", choice(*LR_SCHEDULES), "learning-rate schedule"),
              "warmup_steps": Opt(100, whole(), "steps of linear lr warm-up"),
              "max_grad_norm": Opt(1.0, number(0), "adaptive gradient clipping threshold (loop.clip_gradients); 0: off"),
              "clip_warmup_steps": Opt(1000, whole(), "steps over which the clipping threshold decays to max_grad_norm"),
              "clip_initial_ratio": Opt(5.0, number(1), "the clipping threshold starts at this x max_grad_norm"),
              "ema": Opt(True, flag(), "keep an EMA of the trained weights and export it"),
              "ema_decay": Opt(0.9999, number(0, 1, high_open=True), "EMA decay"),
              "gradient_checkpointing": Opt(False, flag(), "recompute block activations in backward (less memory)"),
              "num_workers": Opt(0, whole(), "data-loading worker processes")},
    "model": {"pretrained": Opt("", path(), "transformer folder/file to start from (dit-motion: the image DiT)"),
              "config": free("transformer config (reference keys) when not pretrained, or keys overriding it"),
              "motion_config": free("dit-motion: keys added to the image DiT's config (motion modules)"),
              "motion_module": Opt("", path(), "optional standalone motion-module file to start from"),
              "trainable": Opt(["."], listof(text()), "substrings of parameter names that train"),
              "trainable_low_lr": Opt([], listof(text()), "substrings of parameter names that train at lr x low_lr_factor")},
    "vae": {"pretrained": Opt("", path(), "vae/ folder or file"),
            "config": free("VAE config when not pretrained")},
    "text": {"encoder": Opt("", path(), "T5 text encoder folder"),
             "caption_dropout": Opt(0.0, UNIT, "share of captions replaced by '' (for classifier-free guidance)")},
    "diffusion": {"timesteps": Opt("uniform", choice("uniform", "logit_normal"), "how training timesteps are drawn"),
                  "scheduler": free("NoiseSchedule config (defaults: linear betas 1e-4 .. 0.02)"),
                  "learned_variance": Opt(True, flag(), "train the variance channels with the VB term (IDDPM)")},
    "mode": {"train_mode": Opt("normal", choice("normal", "inpaint"), "inpaint: image-to-video (12-channel) models"),
             "clip_encoder": Opt("", path(), "CLIP image encoder folder (inpaint, 12-channel models)")},
    "cache": {"dir": Opt("", path(), "pre-encoding cache folder; empty: encode every step")},
    "data": {"metadata": Opt("", path(), "metadata JSON of the dataset (preprocess metadata writes it)"),
             "root": Opt("", path(), "folder the metadata's relative paths start from"),
             "types": Opt("both", choice("image", "video", "both"), "which samples train (never mixed in a batch)"),
             "batch_size": Opt(1, whole(1), "samples per batch and process"),
             # latents are 1/8 of the pixels and the DiT cuts them in 2x2 patches
             "sample_size": Opt(512, whole(16, multiple=16), "training resolution (bucket base size, pixels)"),
             "resolution_schedule": Opt([], listof(listof(whole(), length=2)),
                                        "[[from_step, size], ...] progressive resolution; empty: sample_size"),
             "frames": Opt(144, whole(1), "frames per clip (1: images only)"),
             "stride": Opt(1, either(whole(1), listof(whole(1), min_length=1)),
                           "frame step within a clip; a list: each clip draws one"),
             "buckets": Opt(True, flag(), "aspect-ratio and frame-count buckets"),
             "random_frame_crop": Opt(False, flag(), "sometimes train on a shorter clip (reference frame crop)"),
             "static_frames": Opt(False, flag(), "a clip of one repeated frame (domain adapter)")},
    "validation": {"prompts": Opt([], listof(text()), "prompts sampled every train.validation_every steps"),
                   "steps": Opt(25, whole(1), "sampling steps"),
                   "guidance": Opt(7.0, number(0), "classifier-free guidance scale"),
                   "sampler": Opt("dpmpp_2m", choice(*SAMPLERS), "sampler"),
                   "width": Opt(512, whole(8), "video width"),
                   "height": Opt(512, whole(8), "video height"),
                   "frames": Opt(16, whole(1), "video frames"),
                   "seed": Opt(43, whole(), "sampling seed")},
}

STAGE_DEFAULTS = {
    "dit-image": {"train": {"output_dir": "outputs/dit_image", "lr": 1e-5},
                  "data": {"types": "image", "frames": 1}},
    "dit-motion": {"train": {"output_dir": "outputs/dit_motion"},
                   "model": {"trainable": ["attn_temporal"]}, "data": {"frames": 16}},
    "dit-full": {"train": {"output_dir": "outputs/dit_full"},
                 "model": {"trainable": ["transformer_blocks", "proj_out", "pos_embed", "long_connect_fc"]},
                 "diffusion": {"timesteps": "logit_normal"}},
}


def command_options(command: str) -> dict:
    return with_defaults(OPTIONS, STAGE_DEFAULTS[command])


# ---------------------------------------------------------------- models

def build_transformer(mcfg: dict):
    """The DiT to train: built from ``model.config``, or loaded from ``model.pretrained`` (any
    published layout) with ``model.config`` / ``model.motion_config`` keys overriding its
    config. Inserting motion modules into an image DiT is such an override: the loader creates
    the missing motion modules as exact no-ops (zero output projection), or takes them from
    ``model.motion_module`` (a standalone motion-module file)."""
    from easyanimate_core.models.transformer import VideoTransformer, load_transformer

    overrides = {**mcfg["config"], **mcfg["motion_config"]}
    if mcfg["pretrained"]:
        return load_transformer(mcfg["pretrained"], motion_module=mcfg["motion_module"] or None,
                                config=overrides or None, dtype=torch.float32)
    if not mcfg["config"]:
        raise InputError("the DiT trainer needs model.pretrained (a transformer folder or file) or "
                         "model.config (a transformer config dict); set one of them.")
    return from_config(VideoTransformer, overrides, "model.config", "a released transformer/config.json")


def select_trainable(model, patterns, low_patterns, lr: float, low_factor: float) -> list[dict]:
    """Freeze every parameter, then train those whose name contains one of ``patterns`` (full
    lr) or ``low_patterns`` (lr x ``low_factor``); returns optimizer parameter groups."""
    model.requires_grad_(False)
    normal, low = [], []
    for name, p in model.named_parameters():
        if any(s in name for s in low_patterns):
            low.append(p)
        elif any(s in name for s in patterns):
            normal.append(p)
        else:
            continue
        p.requires_grad_(True)
    if not normal and not low:
        raise InputError(f"model.trainable {list(patterns)} and trainable_low_lr {list(low_patterns)} match no "
                         f"parameter of the transformer; use substrings of its parameter names "
                         f"(e.g. attn_temporal, transformer_blocks).")
    groups = [{"params": normal, "lr": lr}]
    if low:
        groups.append({"params": low, "lr": lr * low_factor})
    return groups


def load_vae(vcfg: dict):
    from easyanimate_core.models.vae import VideoVAE
    from easyanimate_core.models.vae import load_vae as load

    if vcfg["pretrained"]:
        return load(vcfg["pretrained"])
    if vcfg["config"]:
        return from_config(VideoVAE, vcfg["config"], "vae.config", "a released vae/config.json")
    raise InputError("the DiT trainer needs vae.pretrained (a vae/ folder or file) or vae.config; set one.")


def load_text_encoder(tcfg: dict):
    from easyanimate_core.models.text_encoder import TextEncoder

    if not tcfg["encoder"]:
        raise InputError("text.encoder is not set; give the T5 text encoder folder.")
    return TextEncoder.load(tcfg["encoder"])


def random_generate_mask(kind: str, frames: int, generator) -> torch.Tensor:
    """The reference's training masks (1 = generate): videos draw uniformly from 'everything'
    (text-to-video), 'keep the first k' and 'keep the first and last k' frames, k in [1, 4];
    images are always fully generated."""
    mask = torch.ones(frames)
    if kind == "video" and frames > 1:
        choice = int(torch.randint(1, 4, (), generator=generator))
        k = int(torch.randint(1, 5, (), generator=generator))
        if choice >= 2:
            mask[:k] = 0
        if choice == 3:
            mask[-k:] = 0
    return mask


class Conditioner:
    """Turns a batch into DiT inputs with the frozen encoders (or reads them from the cache)."""

    def __init__(self, vae, text_encoder, clip, device, inpaint: bool):
        self.vae, self.text_encoder, self.clip = vae, text_encoder, clip
        self.device, self.inpaint = device, inpaint
        self.empty = None

    def empty_text(self):
        if self.empty is None:
            self.empty = [t.cpu() for t in self.text_encoder.encode([""], clean=False)]
        return self.empty

    @torch.no_grad()
    def __call__(self, batch, generator, caption_dropout: float) -> dict:
        s = self.vae.scaling_factor
        if "latent_mean" in batch:
            mean, std = batch["latent_mean"], batch["latent_std"]
            eps = torch.randn(mean.shape, generator=generator)
            latents = (mean + std * eps).to(self.device) * s
            embeds, mask = batch["text_embeds"], batch["text_mask"]
        else:
            pixels = batch["pixels"].to(self.device, self.vae.dtype)
            posterior = self.vae.encode(pixels)
            eps = torch.randn(posterior.mean.shape, generator=generator)
            latents = (posterior.mean + posterior.std * eps.to(self.device, posterior.mean.dtype)).float() * s
            embeds, mask = self.text_encoder.encode(list(batch["text"]), clean=False)  # raw, as trained
        embeds, mask = embeds.float().clone(), mask.clone()
        drop = torch.rand(len(embeds), generator=generator) < caption_dropout
        if drop.any():
            empty_embeds, empty_mask = self.empty_text()
            embeds[drop], mask[drop] = empty_embeds.to(embeds), empty_mask.to(mask)
        # T5 pads every caption to its max length (120) and the DiT repeats the text for every
        # frame; the padding is masked out, so cutting it to the batch's longest caption changes
        # nothing but the cost (short captions: several times less cross-attention work)
        longest = int(mask.sum(1).max().clamp(min=1))
        if not mask[:, longest:].any():  # right padding (T5's); anything else is left as it is
            embeds, mask = embeds[:, :longest], mask[:, :longest]
        out = {"latents": latents.float(), "embeds": embeds.to(self.device), "mask": mask.to(self.device)}
        if self.inpaint:
            out.update(self.inpaint_inputs(batch, generator))
        return out

    def inpaint_inputs(self, batch, generator) -> dict:
        pixels = batch["pixels"].to(self.device, self.vae.dtype)
        b, _, frames, h, w = pixels.shape
        generate = torch.stack([random_generate_mask(batch["type"], frames, generator) for _ in range(b)])
        mask = generate.view(b, 1, frames, 1, 1).expand(b, 1, frames, h, w).to(pixels)
        masked = pixels * (1 - mask) + (-1.0) * mask
        s = self.vae.scaling_factor
        mask_latents = self.vae.encode(mask.expand(-1, 3, -1, -1, -1)).mode().float() * s
        masked_latents = self.vae.encode(masked).mode().float() * s
        out = {"inpaint_latents": torch.cat([mask_latents, masked_latents], dim=1)}
        if self.clip is not None:
            pick = torch.randint(frames, (b,), generator=generator)
            images = pixels[torch.arange(b), :, pick].float().add(1).div(2)
            states = self.clip.encode(images.to(self.clip.device, self.clip.dtype)).float()
            on = (torch.rand(b, generator=generator) < 0.5).float()
            out["clip_states"] = states.to(self.device)
            out["clip_mask"] = on[:, None].expand(b, 8).to(self.device)
        return out


def export_motion_module(model, path: Path) -> None:
    """The standalone motion-module file (the layout of ``easyanimate_v1_mm.safetensors``), with
    the motion config in its metadata: heads and attention types are invisible in the weights, and
    the loaders read them from there."""
    from easyanimate_core.models.motion_module import save_motion_module

    save_motion_module(path, {k: v.cpu() for k, v in model.state_dict().items()}, model.config)


# ---------------------------------------------------------------- the run

def run(command: str, cfg: dict, resume, adapt=None, export=None, transform=None) -> int:
    """Shared by the DiT and LoRA trainers. ``adapt(model, cfg) -> param groups`` replaces the
    name-pattern selection (the LoRA trainer injects its adapters there); ``export(model, cfg)``
    replaces the transformer export; ``transform(video, generator)`` augments training clips."""
    from easyanimate_core.sampling.schedule import NoiseSchedule
    from training.losses import DiffusionTerms, diffusion_loss, sample_timesteps

    tcfg, mcfg, dcfg = cfg["train"], cfg["model"], cfg["data"]
    # option checks that need no model come before any model is loaded (single values: options.py)
    inpaint = cfg["mode"]["train_mode"] == "inpaint"
    if inpaint and cfg["cache"]["dir"]:
        raise InputError("cache.dir cannot be used with mode.train_mode=inpaint (its random masks need the "
                         "VAE every step); leave cache.dir empty.")
    accelerator = make_accelerator(tcfg)
    torch.manual_seed(tcfg["seed"])
    device = accelerator.device
    weight_dtype = {"fp16": torch.float16, "bf16": torch.bfloat16}.get(tcfg["mixed_precision"],
                                                                       torch.float32)

    model = build_transformer(mcfg)
    if adapt is not None:
        groups = adapt(model, cfg)
    else:
        groups = select_trainable(model, mcfg["trainable"], mcfg["trainable_low_lr"], tcfg["lr"],
                                  tcfg["low_lr_factor"])
    model.enable_gradient_checkpointing(bool(tcfg["gradient_checkpointing"]))
    trainable = [p for g in groups for p in g["params"]]
    if inpaint and model.in_channels != 12:
        raise InputError(f"mode.train_mode=inpaint needs a 12-channel (InP) transformer but this one takes "
                         f"{model.in_channels} channels; use an InP config or train_mode=normal.")

    vae = load_vae(cfg["vae"]).to(device, weight_dtype).eval().requires_grad_(False)
    text_encoder = load_text_encoder(cfg["text"]).to(device)
    clip = None
    if inpaint and cfg["mode"]["clip_encoder"]:
        from easyanimate_core.models.clip_vision import ClipImageEncoder

        clip = ClipImageEncoder.load(cfg["mode"]["clip_encoder"]).to(device)
    conditioner = Conditioner(vae, text_encoder, clip, device, inpaint)

    entries = data_lib.load_entries(dcfg["metadata"], dcfg["root"])
    plan = data_lib.BatchPlan(entries, dcfg, tcfg["seed"], interval=vae.mini_batch_encoder,
                              rank=accelerator.process_index, world_size=accelerator.num_processes)
    pixels = data_lib.MediaDataset(entries, dcfg, crop="center", transform=transform)
    dataset = pixels
    if cfg["cache"]["dir"]:
        from easyanimate_core.progress import console
        from training.cache import CachedDataset, LatentCache, cache_identity

        sampling = {"stride": dcfg["stride"], "static_frames": dcfg["static_frames"], "augment": cfg.get("augment")}
        cache = LatentCache(cfg["cache"]["dir"], cache_identity(vae.config, cfg["text"]["encoder"], sampling))

        def encode_pixels(video):
            posterior = vae.encode(video.to(device, weight_dtype))
            return posterior.mean, posterior.std

        cache.build(plan, pixels, encode_pixels, lambda texts: text_encoder.encode(texts, clean=False),
                    plan.sample_sizes(),
                    accelerator.process_index, accelerator.num_processes,
                    progress=console("pre-encode") if accelerator.is_main_process else None)
        accelerator.wait_for_everyone()
        plan.drop([i for i in list(plan.shape) for size in plan.sample_sizes()
                   if not cache.path(entries[i], *plan.item_size(i, size), plan.max_frames(i)).is_file()])
        conditioner.empty_text()
        dataset = CachedDataset(plan, cache, vae.latent_frames)
    stream = data_lib.BatchStream(plan, dataset, tcfg["num_workers"])

    deepspeed = getattr(accelerator.state, "deepspeed_plugin", None)
    if deepspeed is not None:  # we feed batches ourselves, so DeepSpeed cannot infer the micro-batch
        deepspeed.deepspeed_config["train_micro_batch_size_per_gpu"] = dcfg["batch_size"]
    optimizer = torch.optim.AdamW(groups, lr=tcfg["lr"], betas=tuple(tcfg["betas"]),
                                  weight_decay=tcfg["weight_decay"], eps=tcfg["adam_eps"],
                                  fused=fused_adam(p for group in groups for p in group["params"]))
    scheduler = lr_schedule(optimizer, tcfg["lr_schedule"], tcfg["warmup_steps"], tcfg["steps"])
    ema = EMA(model, tcfg["ema_decay"]) if tcfg["ema"] else None
    # the scheduler stays outside accelerate, which would step it once per process per step (N-times
    # faster warm-up/decay under N-process DDP); it counts loop steps like train.steps and warmup_steps
    model, optimizer = accelerator.prepare(model, optimizer)
    schedule = from_config(NoiseSchedule, cfg["diffusion"]["scheduler"], "diffusion.scheduler",
                           "a scheduler_config.json (beta_start, beta_end, beta_schedule, ...)")
    terms = DiffusionTerms.from_alphas_cumprod(schedule.alphas_cumprod).to(device)
    learned_variance = cfg["diffusion"]["learned_variance"]

    def step_fn(batch, step, generator):
        c = conditioner(batch, generator, cfg["text"]["caption_dropout"])
        x0 = c["latents"]
        t = sample_timesteps(x0.shape[0], terms.num_timesteps, cfg["diffusion"]["timesteps"], generator).to(device)
        noise = torch.randn(x0.shape, generator=generator).to(device)
        x_t = terms.add_noise(x0, noise, t)
        with accelerator.accumulate(model), accelerator.autocast():
            out = model(x_t, t, c["embeds"], c["mask"], inpaint_latents=c.get("inpaint_latents"),
                        clip_encoder_hidden_states=c.get("clip_states"), clip_attention_mask=c.get("clip_mask"))
            loss, parts = diffusion_loss(terms, out, x0, x_t, noise, t,
                                         learned_variance and out.shape[1] >= 2 * x0.shape[1])
            loss = loss.mean()
            accelerator.backward(loss)
            if accelerator.sync_gradients:
                clip_gradients(accelerator, trainable, step, tcfg["max_grad_norm"], tcfg["clip_warmup_steps"],
                               tcfg["clip_initial_ratio"])
            optimizer.step()
            scheduler.step()
            optimizer.zero_grad(set_to_none=True)
        if ema is not None and accelerator.sync_gradients:
            ema.update(accelerator.unwrap_model(model))
        return {"loss": loss.detach(), **{f"loss/{k}": v for k, v in parts.items()},
                "lr": scheduler.get_last_lr()[0]}

    def do_export():
        final = final_weights(accelerator.unwrap_model(model), ema)
        out = Path(tcfg["output_dir"])
        if export is not None:
            export(final, cfg)
            return
        export_model_folder(final, out / "transformer")
        if command == "dit-motion":
            export_motion_module(final, out / "motion_module.safetensors")

    def validate(step):
        validate_generation(cfg, accelerator.unwrap_model(model), vae, text_encoder, device, step)

    train(accelerator, tcfg, stream, step_fn, checkpoint_objects=[scheduler] + ([ema] if ema is not None else []),
          export=do_export, validate=validate if cfg["validation"]["prompts"] else None, resume=resume,
          models=[model])
    return 0


def validate_generation(cfg, model, vae, text_encoder, device, step) -> list[str]:
    """Sample every validation prompt with the release pipeline and write the videos."""
    from easyanimate_core.sampling.options import SamplingOptions
    from easyanimate_core.sampling.pipeline import Components, generate
    from easyanimate_core.video_io import write_video

    v = cfg["validation"]
    components = Components(transformer=model, vae=vae, text_encoder=text_encoder, device=device)
    was_training = model.training
    model.eval()
    written = []
    for k, prompt in enumerate(v["prompts"]):
        with torch.no_grad():
            options = SamplingOptions(steps=v["steps"], cfg=v["guidance"], sampler=v["sampler"], seed=v["seed"])
            video = generate(components, prompt, options=options, width=v["width"], height=v["height"],
                             frames=v["frames"])
        frames = (video[0].permute(1, 2, 3, 0) * 255).round().clamp(0, 255).byte().numpy()
        path = Path(cfg["train"]["output_dir"]) / "validation" / f"step-{step:08d}-{k}.mp4"
        written.append(write_video(path, frames, fps=8))
    model.train(was_training)
    return written


def main(command: str, argv) -> int:
    cfg, resume = parse_args(command, argv, command_options(command), __doc__.split("\n\n")[0])
    if command == "dit-motion" and not cfg["model"]["motion_config"] and cfg["model"]["pretrained"]:
        raise InputError("dit-motion inserts motion modules into an image DiT: set model.motion_config "
                         "(e.g. basic_block_type and motion_module_kwargs).")
    return run(command, cfg, resume)

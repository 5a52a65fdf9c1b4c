"""The video DiT of EasyAnimate v1-v3: PixArt-alpha run over frames, a motion module in every
block, U-ViT long skips, and (v3 InP) inpaint channels plus CLIP image tokens.

Forward, for latents x of shape (B, C, F, H, W) and one diffusion timestep t per video:

    x       = PatchEmbed(x per frame) + PE2d(h, w)                  tokens (B, F*h*w, D), frame-major
    t6, t   = adaLN-single(t): t = MLP(sinusoid(t)), t6 = Linear(SiLU(t))           (B, 6D), (B, D)
    c       = caption_projection(T5 states) [+ clip_projection(CLIP embeds) as 8 more tokens]
    for each block i (with U-ViT skips, below):
        shift1, scale1, gate1, shift2, scale2, gate2 = block.scale_shift_table + t6
        x = x + gate1 * SelfAttn_per_frame(LN(x) * (1 + scale1) + shift1)
        x = MotionModule(x)                        # its own residual, no gate
        x = x + CrossAttn(x, c, mask)              # PixArt: no norm, no gate
        x = x + gate2 * FF(LN(x) * (1 + scale2) + shift2)
    shift, scale = scale_shift_table + t
    out = unpatchify(proj_out(LN(x) * (1 + scale) + shift))      (B, out_channels, F, H, W)

U-ViT long skips (``enable_uvit``), generalised to any depth L >= 2: S = (L - 2) // 2 skips; the
outputs of blocks 0..S-1 are pushed on a stack, and before each block i >= L - S runs, the most
recent entry is popped and added to its input through ``long_connect_fc[i - (L - S)]`` (LIFO:
block L-S gets block S-1's output, block L-1 gets block 0's). The blocks in between (two for even
L, three for odd L) are unpaired. For L = 28 this is exactly the release: 13 skips, blocks 0..12
feed 27..15, blocks 13 and 14 unpaired. Skip linears start at zero.

Every module the video model adds to its image base starts as an exact no-op: motion-module
``proj_out``, ``long_connect_fc`` and ``clip_projection.linear_2`` are zero-initialised, so a fresh
video model built on a PixArt checkpoint reproduces PixArt frame by frame.

The config is a plain dict with the reference's key names (diffusers ``config.json`` keys plus the
yaml's ``transformer_additional_kwargs``); see :func:`model_options`.
"""

from __future__ import annotations

import logging
from functools import partial

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.checkpoint import checkpoint

from ..checkpoints.config_fields import TRANSFORMER_FIELDS, check_fields
from ..checkpoints.presets import BLOCK_TYPES, IMAGE_BLOCKS, MOTION_BLOCKS
from ..errors import CheckpointError, InputError
from .embeddings import patch_pos_embed, timestep_embedding
from .layers import Attention, FeedForward, Linear, layer_norm, set_attention_backend, zero_
from .motion_module import MotionModule, motion_options

# Options of the reference class that have no released weights; they must be off.
_UNSUPPORTED_FLAGS = ("patch_3d", "fake_3d", "casual_3d", "time_position_encoding_before_transformer",
                      "qk_norm", "after_norm")
CLIP_CHANNELS = 768  # CLIP ViT-L/14 image embeddings (v3 InP)
CLIP_TOKENS = 8  # each CLIP embedding becomes 8 context tokens


def model_options(config: dict) -> dict:
    """Validate a reference-style config and derive the values the model is built from.

    A config without any motion-module keys (a plain PixArt ``config.json``) builds the image
    model (``basic_block_type`` defaults to "basic"); otherwise the reference default applies.
    """
    check_fields(config, TRANSFORMER_FIELDS)
    c = dict(config)
    for flag in _UNSUPPORTED_FLAGS:
        if c.get(flag):
            raise InputError(f"model config option {flag}=true has no released weights and is not supported; "
                             f"set it to false.")
    if c.get("norm_type", "ada_norm_single") != "ada_norm_single":
        raise InputError(f"model config norm_type is {c['norm_type']!r} but only PixArt's 'ada_norm_single' "
                         f"is supported; use a PixArt-alpha / EasyAnimate transformer config.")
    if c.get("activation_fn", "gelu-approximate") != "gelu-approximate":
        raise InputError(f"model config activation_fn is {c['activation_fn']!r}, expected 'gelu-approximate' "
                         f"(PixArt); use a PixArt-alpha / EasyAnimate transformer config.")
    if c.get("norm_elementwise_affine", False):
        raise InputError("model config norm_elementwise_affine=true is not PixArt's layout; set it to false.")
    has_motion = any(k in c for k in ("motion_module_kwargs", "motion_module_kwargs_even", "motion_module_kwargs_odd"))
    block_type = c.get("basic_block_type", MOTION_BLOCKS if has_motion else IMAGE_BLOCKS)
    if block_type not in BLOCK_TYPES:
        raise InputError(f"basic_block_type {block_type!r} is not supported; expected one of "
                         f"{', '.join(BLOCK_TYPES)} (fix the model config).")
    heads, head_dim = int(c.get("num_attention_heads", 16)), int(c.get("attention_head_dim", 88))
    dim = heads * head_dim
    depth = int(c.get("num_layers", 1))
    in_channels = c.get("in_channels")
    if in_channels is None or c.get("sample_size") is None or c.get("patch_size") is None:
        raise InputError("model config must give in_channels, sample_size and patch_size; "
                         "use the config.json that came with the weights or a preset.")
    sample_size = int(c["sample_size"])
    interpolation_scale = c.get("interpolation_scale") or max(sample_size // 64, 1)
    motion_type = c.get("motion_module_type", "VanillaGrid")
    if block_type == IMAGE_BLOCKS:
        per_block = [None] * depth
    elif block_type == MOTION_BLOCKS:
        per_block = [motion_options(c.get("motion_module_kwargs"), motion_type)] * depth
    else:  # HYBRID_MOTION_BLOCKS: temporal modules in even blocks, temporal + global in odd ones
        per_block = [motion_options(c.get("motion_module_kwargs_even" if i % 2 == 0 else "motion_module_kwargs_odd"),
                                    motion_type) for i in range(depth)]
    return {
        "dim": dim, "heads": heads, "head_dim": head_dim, "depth": depth,
        "in_channels": int(in_channels),
        "out_channels": int(c.get("out_channels") or in_channels),
        "patch_size": int(c["patch_size"]),
        "sample_size": sample_size,
        "base_size": sample_size // int(c["patch_size"]),
        "interpolation_scale": float(interpolation_scale),
        "context_dim": int(c.get("cross_attention_dim") or dim),
        "caption_channels": c.get("caption_channels"),
        "attention_bias": bool(c.get("attention_bias", False)),
        "eps": float(c.get("norm_eps", 1e-5)),
        "uvit_skips": max(0, (depth - 2) // 2) if c.get("enable_uvit", False) else 0,
        "additional_conditions": sample_size == 128,
        "clip": int(in_channels) == 12 and c.get("caption_channels") is not None,
        "motion": per_block,
    }


class PatchEmbed(nn.Module):
    """``pos_embed``: non-overlapping p x p patches -> tokens, plus the fixed 2D sin-cos PE."""

    def __init__(self, in_channels: int, dim: int, patch_size: int):
        super().__init__()
        self.proj = nn.Conv2d(in_channels, dim, kernel_size=patch_size, stride=patch_size)


class TimestepEmbedder(nn.Module):
    """Sinusoid (256) -> Linear -> SiLU -> Linear."""

    def __init__(self, dim: int, in_channels: int = 256):
        super().__init__()
        self.linear_1 = Linear(in_channels, dim)
        self.linear_2 = Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.silu(self.linear_1(x)))


class ConditionEmbedder(nn.Module):
    """``adaln_single.emb``: timestep embedding, plus resolution / aspect-ratio embeddings when the
    model was trained with them (PixArt's multi-scale 1024 models, ``sample_size == 128``)."""

    def __init__(self, dim: int, additional_conditions: bool):
        super().__init__()
        self.timestep_embedder = TimestepEmbedder(dim)
        self.additional_conditions = additional_conditions
        if additional_conditions:
            self.resolution_embedder = TimestepEmbedder(dim // 3)
            self.aspect_ratio_embedder = TimestepEmbedder(dim // 3)
            zero_(self.resolution_embedder.linear_2)
            zero_(self.aspect_ratio_embedder.linear_2)

    def forward(self, timestep, resolution, aspect_ratio, dtype):
        emb = self.timestep_embedder(timestep_embedding(timestep).to(dtype))
        if self.additional_conditions:
            b = timestep.shape[0]
            res = self.resolution_embedder(timestep_embedding(resolution.flatten()).to(dtype)).reshape(b, -1)
            ar = self.aspect_ratio_embedder(timestep_embedding(aspect_ratio.flatten()).to(dtype)).reshape(b, -1)
            emb = emb + torch.cat([res, ar], dim=1)
        return emb


class AdaLNSingle(nn.Module):
    """PixArt's adaLN-single: one (6, D) modulation shared by all blocks, offset per block."""

    def __init__(self, dim: int, additional_conditions: bool):
        super().__init__()
        self.emb = ConditionEmbedder(dim, additional_conditions)
        self.linear = Linear(dim, 6 * dim)

    def forward(self, timestep, resolution, aspect_ratio, dtype):
        embedded = self.emb(timestep, resolution, aspect_ratio, dtype)
        return self.linear(F.silu(embedded)), embedded


class Projection(nn.Module):
    """Linear -> GELU(tanh) -> Linear (caption and CLIP projections)."""

    def __init__(self, in_features: int, hidden: int):
        super().__init__()
        self.linear_1 = Linear(in_features, hidden)
        self.linear_2 = Linear(hidden, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(F.gelu(self.linear_1(x), approximate="tanh"))


def _scaled_randn(rows: int, dim: int) -> torch.Tensor:
    """PixArt's modulation-table init, randn / sqrt(dim). Built on ``meta`` (every load) the values
    are never used, and randn or arithmetic on meta tensors imports sympy / torch._dynamo (about
    1 s, once per process), so there the table is only allocated."""
    table = torch.empty(rows, dim)
    return table if table.is_meta else torch.randn(rows, dim) / dim ** 0.5


class DiTBlock(nn.Module):
    """One PixArt block with a motion module between self- and cross-attention."""

    def __init__(self, o: dict, motion: dict | None):
        super().__init__()
        dim = o["dim"]
        self.eps = o["eps"]
        self.scale_shift_table = nn.Parameter(_scaled_randn(6, dim))
        self.attn1 = Attention(dim, o["heads"], o["head_dim"], o["attention_bias"])
        self.attn_temporal = MotionModule(dim, motion) if motion is not None else None
        self.attn2 = Attention(dim, o["heads"], o["head_dim"], o["attention_bias"], context_dim=o["context_dim"])
        self.ff = FeedForward(dim, approximate="tanh")

    def forward(self, x, t6, context, context_mask, frames: int, h: int, w: int):
        b, n, c = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = (self.scale_shift_table[None] + t6.view(b, 6, c)).chunk(6, dim=1)
        y = layer_norm(x, eps=self.eps) * (1 + scale1) + shift1
        y = self.attn1(y.view(b * frames, h * w, c)).view(b, n, c)
        x = gate1 * y + x
        if self.attn_temporal is not None:
            x = self.attn_temporal(x.view(b * frames, h * w, c), frames, h, w).view(b, n, c)
        x = self.attn2(x, context, context_mask) + x
        y = layer_norm(x, eps=self.eps) * (1 + scale2) + shift2
        return gate2 * self.ff(y) + x


class VideoTransformer(nn.Module):
    """EasyAnimate's ``Transformer3DModel`` (v1/v2/v3 configurations); key names equal the
    released files. Build with :meth:`from_config`, load with :func:`load_transformer`."""

    def __init__(self, config: dict):
        super().__init__()
        o = self.options = model_options(config)
        self.config = dict(config)
        dim = o["dim"]
        self.pos_embed = PatchEmbed(o["in_channels"], dim, o["patch_size"])
        self.transformer_blocks = nn.ModuleList([DiTBlock(o, o["motion"][i]) for i in range(o["depth"])])
        if o["uvit_skips"]:
            self.long_connect_fc = zero_(nn.ModuleList([Linear(dim, dim) for _ in range(o["uvit_skips"])]))
        self.scale_shift_table = nn.Parameter(_scaled_randn(2, dim))
        self.proj_out = Linear(dim, o["patch_size"] ** 2 * o["out_channels"])
        self.adaln_single = AdaLNSingle(dim, o["additional_conditions"])
        if o["caption_channels"] is not None:
            self.caption_projection = Projection(o["caption_channels"], dim)
        if o["clip"]:
            self.clip_projection = Projection(CLIP_CHANNELS, dim * CLIP_TOKENS)
            zero_(self.clip_projection.linear_2)
        self.gradient_checkpointing = False

    @classmethod
    def from_config(cls, config: dict) -> VideoTransformer:
        return cls(config)

    # ----- properties used by loaders, nodes and the sampler -----------------------------------
    @property
    def in_channels(self) -> int:
        return self.options["in_channels"]

    @property
    def out_channels(self) -> int:
        return self.options["out_channels"]

    @property
    def hidden_size(self) -> int:
        return self.options["dim"]

    @property
    def depth(self) -> int:
        return self.options["depth"]

    @property
    def has_motion_modules(self) -> bool:
        return any(block.attn_temporal is not None for block in self.transformer_blocks)

    @property
    def dtype(self) -> torch.dtype:
        """The compute dtype: that of every parameter except fp8-stored Linear weights, so it stays
        right whatever ``.to()`` or :meth:`set_weight_dtype` did last."""
        return self.scale_shift_table.dtype

    @property
    def device(self) -> torch.device:
        return self.scale_shift_table.device

    def enable_gradient_checkpointing(self, enabled: bool = True) -> None:
        """Recompute each block in the backward pass instead of storing its activations."""
        self.gradient_checkpointing = enabled

    def set_weight_dtype(self, weight_dtype: torch.dtype, compute_dtype: torch.dtype | None = None) -> VideoTransformer:
        """Store weights in ``weight_dtype`` and compute in ``compute_dtype`` (default: the same).

        Only fp8 storage differs from the compute dtype; for any other ``weight_dtype`` the whole
        model is cast to ``compute_dtype`` when one is given.

        fp8 (``torch.float8_e4m3fn`` / ``float8_e5m2``): only the weights of Linear layers are stored
        in fp8 (the bulk of the parameters); each layer upcasts its weight to the activation dtype
        in its forward. Everything else (biases, norms, the patch conv, modulation tables) is kept
        in the compute dtype, which then defaults to bfloat16.
        """
        fp8 = weight_dtype in (torch.float8_e4m3fn, torch.float8_e5m2)
        self.to(compute_dtype or (torch.bfloat16 if fp8 else weight_dtype))
        if fp8:
            for module in self.modules():
                if isinstance(module, Linear):
                    module.weight.data = module.weight.data.to(weight_dtype)
        return self

    # ----- forward ------------------------------------------------------------------------------
    def forward(self, hidden_states: torch.Tensor, timestep, encoder_hidden_states: torch.Tensor,
                encoder_attention_mask: torch.Tensor | None = None,
                inpaint_latents: torch.Tensor | None = None,
                clip_encoder_hidden_states: torch.Tensor | None = None,
                clip_attention_mask: torch.Tensor | None = None,
                added_cond_kwargs: dict | None = None, step_cache=None) -> torch.Tensor:
        """Predict (B, out_channels, F, H, W) from latents ``hidden_states`` (B, C, F, H, W).

        ``timestep``: (B,) or a scalar; ``encoder_hidden_states``: (B, L, caption_channels) T5
        states with ``encoder_attention_mask`` (B, L), 1 = keep. v3 InP models also take
        ``inpaint_latents`` (B, 8, F, H, W) = [mask latents, masked-video latents] and, optionally,
        ``clip_encoder_hidden_states`` (B, 768) with ``clip_attention_mask`` (B, 8).
        ``added_cond_kwargs`` (``resolution`` (B, 2), ``aspect_ratio`` (B, 1)) is only used by
        sample_size-128 models; when absent it is derived from the latent size (x8 pixels).
        ``step_cache``: a :class:`~easyanimate_core.sampling.step_cache.StepCacheCall` that may
        replace every block after the first by a residual cached at an earlier sampling step.
        """
        o = self.options
        device, dtype = self.device, self.dtype  # inputs may come from other devices (e.g. a CPU text encoder)
        x = hidden_states.to(device, dtype)
        if inpaint_latents is not None:
            x = torch.cat([x, inpaint_latents.to(device, dtype)], dim=1)
        if x.ndim != 5:
            raise InputError(f"hidden_states must be 5-D (batch, channels, frames, height, width) but has "
                             f"shape {tuple(hidden_states.shape)}; add the frame axis.")
        b, ch, frames, height, width = x.shape
        p = o["patch_size"]
        if ch != o["in_channels"]:
            hint = ("; pass inpaint_latents (8 channels: mask and masked-video latents, zeros for text-to-video)"
                    if o["in_channels"] == ch + 8 else "; use latents from the matching VAE")
            raise InputError(f"the transformer takes {o['in_channels']} input channels but got {ch}{hint}.")
        if height % p or width % p:
            raise InputError(f"latent height and width must be multiples of the patch size {p} but are "
                             f"{height}x{width}; use a video size that is a multiple of {8 * p} pixels.")
        h, w = height // p, width // p

        # Patchify every frame; tokens are frame-major, then row-major.
        frames_first = x.permute(0, 2, 1, 3, 4).reshape(b * frames, ch, height, width)
        tokens = self.pos_embed.proj(frames_first).flatten(2).transpose(1, 2)
        pe = patch_pos_embed(o["dim"], h, w, o["base_size"], o["interpolation_scale"], tokens.device)
        x = (tokens + pe).to(dtype).reshape(b, frames * h * w, o["dim"])

        t6, t_emb = self._timestep(timestep, b, height, width, added_cond_kwargs, x.device, dtype)
        context, context_mask = self._context(b, encoder_hidden_states, encoder_attention_mask,
                                              clip_encoder_hidden_states, clip_attention_mask, device, dtype)

        stack = []  # U-ViT long-skip sources, shared by the two halves a step cache splits the blocks into
        run = partial(self._run_blocks, stack=stack, t6=t6, context=context, context_mask=context_mask,
                      frames=frames, h=h, w=w)
        if step_cache is None:
            x = run(x, range(o["depth"]))
        else:
            x = step_cache.run(x, run(x, range(1)), lambda first: run(first, range(1, o["depth"])))

        shift, scale = (self.scale_shift_table[None] + t_emb[:, None]).chunk(2, dim=1)
        x = layer_norm(x, eps=1e-6) * (1 + scale) + shift
        x = self.proj_out(x)
        c = o["out_channels"]
        x = x.reshape(b, frames, h, w, p, p, c).permute(0, 6, 1, 2, 4, 3, 5)
        return x.reshape(b, c, frames, h * p, w * p)

    def _run_blocks(self, x, blocks: range, *, stack: list, t6, context, context_mask, frames, h, w):
        """Blocks ``blocks`` in order, with the U-ViT long skips: blocks below ``uvit_skips`` push
        their output on ``stack``, the last ``uvit_skips`` blocks pop one into their input."""
        depth, skips = self.options["depth"], self.options["uvit_skips"]
        for i in blocks:
            block = self.transformer_blocks[i]
            if skips and i >= depth - skips:
                x = x + self.long_connect_fc[i - (depth - skips)](stack.pop())
            if self.gradient_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, t6, context, context_mask, frames, h, w, use_reentrant=False)
            else:
                x = block(x, t6, context, context_mask, frames, h, w)
            if i < skips:
                stack.append(x)
        return x

    def _timestep(self, timestep, b, height, width, added_cond_kwargs, device, dtype):
        t = torch.as_tensor(timestep, device=device)
        if t.ndim == 0:
            t = t[None]
        if t.shape[0] != b:
            if t.shape[0] != 1:
                raise InputError(f"timestep has {t.shape[0]} values for a batch of {b}; pass one per video "
                                 f"or a single value.")
            t = t.expand(b)
        resolution = aspect_ratio = None
        if self.options["additional_conditions"]:
            cond = added_cond_kwargs or {}
            resolution = cond.get("resolution")
            if resolution is None:
                resolution = torch.tensor([[height * 8.0, width * 8.0]], device=device).expand(b, 2)
            aspect_ratio = cond.get("aspect_ratio")
            if aspect_ratio is None:
                aspect_ratio = torch.tensor([[height / width]], device=device).expand(b, 1)
            resolution, aspect_ratio = resolution.to(device), aspect_ratio.to(device)
        return self.adaln_single(t, resolution, aspect_ratio, dtype)

    def _context(self, b, states, mask, clip_states, clip_mask, device, dtype):
        if not hasattr(self, "caption_projection"):
            raise InputError("this transformer has no caption projection (caption_channels is null in its config); "
                             "use a text-conditioned PixArt / EasyAnimate config.")
        if states is None or states.ndim != 3 or states.shape[-1] != self.options["caption_channels"]:
            found = None if states is None else tuple(states.shape)
            raise InputError(f"encoder_hidden_states must be (batch, tokens, {self.options['caption_channels']}) "
                             f"T5 states but is {found}; encode the prompt with the matching T5 encoder.")
        if states.shape[0] != b:
            raise InputError(f"encoder_hidden_states has batch {states.shape[0]} but the latents have {b}; "
                             f"encode one prompt per video.")
        context = self.caption_projection(states.to(device, dtype))
        # The keep-mask is built where the given masks live (usually the CPU, next to the text
        # encoder's output), so deciding whether it is needed at all never waits on the GPU.
        mask_device = (mask if mask is not None else clip_mask if clip_mask is not None else states).device
        masks = [mask if mask is not None else torch.ones(b, states.shape[1], device=mask_device)]
        if clip_states is not None:
            if not hasattr(self, "clip_projection"):
                raise InputError("clip_encoder_hidden_states were given but this transformer has no CLIP "
                                 "projection (only 12-channel InP models have one); leave the CLIP image out.")
            clip = self.clip_projection(clip_states.to(device, dtype)).view(b, -1, self.options["dim"])
            context = torch.cat([context, clip], dim=1)
            masks.append(clip_mask if clip_mask is not None else torch.ones(b, clip.shape[1], device=mask_device))
        elif clip_mask is not None:
            raise InputError("clip_attention_mask was given without clip_encoder_hidden_states; pass both or neither.")
        if mask is None and clip_mask is None:
            return context, None
        keep = torch.cat([m.to(mask_device) for m in masks], dim=1) > 0.5
        if keep.shape[1] != context.shape[1]:
            raise InputError(f"the attention masks cover {keep.shape[1]} tokens but there are {context.shape[1]} "
                             f"context tokens; pass masks that match encoder_hidden_states (and the 8 CLIP tokens).")
        # A row with every token masked: the reference's -10000 bias then shifts all scores equally,
        # which is attention without a mask.
        keep = keep | ~keep.any(dim=1, keepdim=True)
        if bool(keep.all()):
            return context, None
        return context, keep[:, None, None, :].to(device)


def uvit_pairs(depth: int) -> list[tuple[int, int]]:
    """(source block, receiving block) pairs of the long skips at this depth."""
    skips = max(0, (depth - 2) // 2)
    return [(skips - 1 - j, depth - skips + j) for j in range(skips)]


# ----- loading -----------------------------------------------------------------------------------
# Parts a video model adds to its image base. When a file lacks them they are created fresh, i.e.
# as exact no-ops (zero-initialised outputs); any other missing key is an error.
NEW_PARTS = ("attn_temporal.", "long_connect_fc.", "clip_projection.")


def load_transformer(path, motion_module=None, config=None, dtype: torch.dtype | None = None,
                     device=None, compute_dtype: torch.dtype | None = None,
                     attention_backend: str | None = None) -> VideoTransformer:
    """Load the video DiT from a released ``transformer/`` folder (config.json + weights), a model
    folder containing ``transformer/``, or a single weights file (full EasyAnimate transformer,
    PixArt base in diffusers or original layout).

    ``motion_module``: a standalone motion-module file / state dict / :class:`MotionModuleSet`
    put into every block (one motion module, many DiT bases); its config comes with it (see
    :func:`~.motion_module.load_motion_module`). ``config``: a preset name ("v1", "v2", "v3";
    "auto" or None: none) or a dict of config keys that override the file's config / preset.
    Heads and attention types are not visible in weights: they come from the config that travels
    with the weights (config.json, or a loose safetensors file's ``config`` metadata), else the
    preset of the detected version (a bare PixArt base takes the motion module's version; a bare
    PixArt base alone loads as the image model).

    Loading is strict: unexpected keys and wrong shapes raise :class:`CheckpointError`; missing
    keys are allowed only for the parts a video model adds (motion modules, U-ViT skips, CLIP
    projection), which are then created as exact no-ops and listed in ``model.load_report``.
    ``pos_encoder.pe`` buffers are accepted and ignored (the PE is regenerated).

    ``attention_backend``: the kernel every attention of this model runs with ("sdpa",
    "xformers" when installed, "chunked"; None: the process-wide default, SDPA).
    """
    from pathlib import Path

    from .. import checkpoints as ck
    from .attention import check_backend
    from .motion_module import AUTO, MotionModuleSet, load_motion_module

    if isinstance(config, str) and config not in (AUTO, *ck.TRANSFORMER_PRESETS):
        raise InputError(f"unknown transformer preset {config!r}; expected one of "
                         f"{', '.join((AUTO, *ck.TRANSFORMER_PRESETS))}.")
    if attention_backend is not None:
        check_backend(attention_backend)
    path = Path(path)
    subfolder = "transformer" if path.is_dir() and (path / "transformer").is_dir() else None
    source = str(path / subfolder) if subfolder else str(path)
    state = ck.load_state_dict(path, subfolder)
    ck.check_finite(state, source)
    if ck.convert.is_pixart_original(list(state)):
        state = ck.convert_pixart_original(state, source)
    state, dropped = ck.drop_training_keys(state)
    file_config = ck.load_config(path, subfolder)

    preset, overrides = (config, None) if isinstance(config, str) else (None, config)
    preset = None if preset == AUTO else preset
    motion = None
    if motion_module is not None:
        motion = motion_module if isinstance(motion_module, MotionModuleSet) else load_motion_module(
            motion_module, config=overrides, preset=preset)
    has_motion_keys = any("attn_temporal." in k for k in state)
    if preset is None and motion is not None and not has_motion_keys:
        preset = motion.preset
    resolved = ck.resolve_transformer_config(state, config=file_config, preset=preset, overrides=overrides,
                                             source=source)
    if preset is None and not has_motion_keys and motion is None and not _declares_motion(file_config, overrides):
        resolved["basic_block_type"] = IMAGE_BLOCKS  # a bare image base loads as the image model
    if motion is not None:
        resolved.update(motion.config)
        motion.check_fits(int(resolved["num_attention_heads"]) * int(resolved["attention_head_dim"]),
                          int(resolved["num_layers"]))
        state = {k: v for k, v in state.items() if "attn_temporal." not in k}
        state.update(motion.state_dict)
    state = ck.expand_input_channels(state, int(resolved["in_channels"]), source)

    with torch.device("meta"):
        model = VideoTransformer(resolved)
    # Without any config the motion-module layout is a preset's guess: a misfit means a config is
    # needed, not that the file is damaged.
    guessed = None if file_config is not None or _declares_motion(overrides) or motion is not None \
        else _resolved_version(resolved)
    report = _fit_state_dict(model, state, source, guessed)
    report["dropped"] = dropped
    model.load_report = report
    if report["initialised"]:
        logging.getLogger(__name__).info("%s: no weights for %d new parts, created as no-ops (e.g. %s)",
                                         source, len(report["initialised"]), report["initialised"][0])

    stored = state["pos_embed.proj.weight"].dtype
    model.to(device=device or "cpu", dtype=stored if stored.is_floating_point else torch.float32)
    if dtype is not None:
        model.set_weight_dtype(dtype, compute_dtype)
    set_attention_backend(model, attention_backend)
    return model.eval()


def _declares_motion(*configs) -> bool:
    return any(c and any(k.startswith("motion_module_kwargs") for k in c) for c in configs)


def _resolved_version(config: dict) -> str:
    """The version whose preset a config was completed from (for messages)."""
    from ..checkpoints.presets import motion_version

    return "v3" if config.get("in_channels") == 12 else motion_version(config)


def _needs_config(source: str, preset: str, example: str) -> CheckpointError:
    return CheckpointError(
        f"{source} comes without a motion-module config and its motion modules do not fit the {preset} preset "
        f"(e.g. {example}); "
        f"heads and attention types are not stored in weights, so give its config: keep the file in its "
        f"transformer/ folder next to config.json, or pass config= the preset it was trained as (v1/v2/v3) or a "
        f"dict of its config keys (node: config_preset).")


def _fit_state_dict(model: VideoTransformer, state: dict, source: str, guessed: str | None) -> dict:
    """Load ``state`` into a model built on ``meta`` (no double allocation); build the new parts
    the file lacks. ``guessed``: the preset the config was taken from when no config came with
    the file (misfits are then reported as a missing config). Returns {"initialised": [...]}."""
    expected = model.state_dict()
    unexpected = [k for k in state if k not in expected]
    if unexpected and guessed and any(".attn_temporal." in k for k in unexpected):
        raise _needs_config(source, guessed, f"{unexpected[0]} is not in the preset's layout")
    if unexpected:
        raise CheckpointError(f"{source} has {len(unexpected)} keys this model does not have (e.g. "
                              f"{', '.join(unexpected[:3])}); check the config preset (v1/v2/v3) matches the file.")
    for key, tensor in state.items():
        if tuple(tensor.shape) != tuple(expected[key].shape):
            raise CheckpointError(f"{source} has a shape mismatch: {key} is {list(tensor.shape)} but the model "
                                  f"expects {list(expected[key].shape)}; check the config preset matches the file.")
    missing = [k for k in expected if k not in state]
    fatal = [k for k in missing if not any(part in k for part in NEW_PARTS)]
    if fatal:
        raise CheckpointError(f"{source} is missing {len(fatal)} required keys (e.g. {', '.join(fatal[:3])}); "
                              f"it is not a complete PixArt / EasyAnimate transformer.")
    model.load_state_dict(state, strict=False, assign=True)
    fresh = _fresh_parts(model, missing, source, guessed)
    for name in fresh:
        _rebuild_part(model, name)
    return {"initialised": fresh}


def _fresh_parts(model: VideoTransformer, missing: list, source: str, guessed: str | None) -> list:
    """The module names to build anew: whole motion modules / skip list / CLIP projection.
    A part present only partly in the file is corrupt, or, for a motion module whose layout only
    a preset gave, a sign that the file needs its config."""
    parts = sorted({k.split(".attn_temporal.")[0] + ".attn_temporal" if ".attn_temporal." in k else k.split(".")[0]
                    for k in missing})
    for part in parts:
        keys = [k for k in model.state_dict() if k.startswith(part + ".")]
        if any(k not in missing for k in keys):
            absent = [k for k in keys if k in missing]
            if guessed and part.endswith(".attn_temporal"):
                raise _needs_config(source, guessed, f"{absent[0]} is missing")
            raise CheckpointError(f"{source} has only part of {part} (missing e.g. {absent[0]}); "
                                  f"it is truncated or mixes two models.")
    return parts


def _rebuild_part(model: VideoTransformer, name: str) -> None:
    o = model.options
    if name.endswith(".attn_temporal"):
        index = int(name.split(".")[1])
        model.transformer_blocks[index].attn_temporal = MotionModule(o["dim"], o["motion"][index])
    elif name == "long_connect_fc":
        model.long_connect_fc = zero_(nn.ModuleList([Linear(o["dim"], o["dim"]) for _ in range(o["uvit_skips"])]))
    elif name == "clip_projection":
        model.clip_projection = Projection(CLIP_CHANNELS, o["dim"] * CLIP_TOKENS)
        zero_(model.clip_projection.linear_2)
    else:  # pragma: no cover - NEW_PARTS and this function change together
        raise AssertionError(name)

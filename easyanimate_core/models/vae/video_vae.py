"""The EasyAnimate video VAE (``AutoencoderKLMagvit``): MagViT-style causal 3-D convolutions,
8x spatial / 4x temporal compression, 4 latent channels, a diagonal-Gaussian posterior.

One class covers both published modes, chosen by the config:

- ``slice_compression_vae: true`` (v3 slice VAE): see :mod:`.windows` for the slice schedule;
- ``slice_compression_vae: false`` (v2 MagViT): causal, run in 9-frame / 3-latent chunks.

Video is ``(B, 3, F, H, W)`` in [-1, 1]; latents are ``(B, 4, L, H/8, W/8)`` *unscaled* (multiply
by :attr:`VideoVAE.scaling_factor` before the DiT). Both directions run one time window at a
time (and optionally one spatial tile at a time), so activation memory does not grow with the
clip length; only the input and the output tensors do.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ...checkpoints.presets import VAE_PRESETS
from ...errors import CheckpointError, InputError
from ...progress import silent
from .blocks import DOWN_BLOCKS, UP_BLOCKS, Decoder, Encoder, parse_block_types
from .layers import FIRST_FRAME, SLICE, Conv3d
from .posterior import DiagonalGaussian
from .seams import SEAM_OPTIONS, blend_weights, smooth_span
from .tiling import Tiling, run_tiled
from .windows import blend_windows, decode_windows, encode_windows, total_out

# The reference class's constructor defaults (a causal v2-style VAE), except that block types
# follow the depth of ``ch_mult`` when a config leaves them out.
CONFIG_DEFAULTS = {**VAE_PRESETS["v2"], "down_block_types": None, "up_block_types": None}


def normalize_config(config: dict, source: str = "the VAE config") -> dict:
    """Defaults filled in, block types parsed, and every value this implementation cannot build
    rejected in one sentence. Unknown keys (diffusers bookkeeping, ``block_out_channels``, ...) are
    kept but not used."""
    cfg = {**copy.deepcopy(CONFIG_DEFAULTS), **copy.deepcopy(dict(config))}
    levels = len(cfg["ch_mult"])
    if cfg["down_block_types"] is None:
        cfg["down_block_types"] = ["SpatialDownBlock3D"] + ["SpatialTemporalDownBlock3D"] * (levels - 1)
    if cfg["up_block_types"] is None:
        cfg["up_block_types"] = ["SpatialUpBlock3D"] + ["SpatialTemporalUpBlock3D"] * (levels - 1)
    cfg["down_block_types"] = parse_block_types(cfg["down_block_types"], DOWN_BLOCKS, "down_block_types", levels)
    cfg["up_block_types"] = parse_block_types(cfg["up_block_types"], UP_BLOCKS, "up_block_types", levels)
    fixed = {"mid_block_type": "MidBlock3D", "mid_block_attention_type": "3d", "act_fn": "silu"}
    for key, value in fixed.items():
        if cfg[key] != value:
            raise CheckpointError(f"{source} sets {key}={cfg[key]!r}, but only {value!r} exists in released "
                                  f"EasyAnimate VAEs; use {key}={value!r}.")
    if cfg["use_gc_blocks"] and any(cfg["use_gc_blocks"]):
        raise CheckpointError(f"{source} enables global-context blocks (use_gc_blocks), which no released "
                              f"EasyAnimate VAE uses; set use_gc_blocks to null.")
    channels = [cfg["ch"] * m for m in cfg["ch_mult"]]
    if "block_out_channels" in cfg and list(cfg["block_out_channels"]) != channels:
        raise CheckpointError(f"{source} has block_out_channels {list(cfg['block_out_channels'])} but ch x "
                              f"ch_mult gives {channels}; make them agree.")
    bad = [c for c in channels if c % cfg["norm_num_groups"]]
    if bad:
        raise CheckpointError(f"{source}: channel counts {bad} are not divisible by norm_num_groups="
                              f"{cfg['norm_num_groups']}; choose a group count that divides every level.")
    if channels[-1] % cfg["mid_block_num_attention_heads"]:
        raise CheckpointError(f"{source}: {channels[-1]} mid-block channels do not split into "
                              f"{cfg['mid_block_num_attention_heads']} attention heads; use a divisor.")
    for key in ("mini_batch_encoder", "mini_batch_decoder"):
        if not isinstance(cfg[key], int) or cfg[key] < 1:
            raise CheckpointError(f"{source} sets {key}={cfg[key]!r}; it must be a positive whole number "
                                  f"(v3: 8 and 2, v2: 9 and 3).")
    return cfg


class VideoVAE(nn.Module):
    """Encoder / decoder with the reference's state-dict layout (``encoder.*``, ``decoder.*``,
    ``quant_conv``, ``post_quant_conv``), so released weights load with strict key checking.

    Runtime settings (not part of the weights):
      ``tiling``: a :class:`Tiling` or None (spatial tiles for large frames);
      ``compute_dtype``: dtype the layers run in, None = the weights' dtype (set float32 to upcast
      fp16 weights; weights are cast one layer at a time, not copied whole).
    """

    def __init__(self, config: dict):
        super().__init__()
        cfg = normalize_config(config)
        self.config = cfg
        self.encoder = Encoder(cfg)
        self.decoder = Decoder(cfg)
        self.quant_conv = Conv3d(2 * cfg["latent_channels"], 2 * cfg["latent_channels"], 1)
        self.post_quant_conv = Conv3d(cfg["latent_channels"], cfg["latent_channels"], 1)
        self.tiling: Tiling | None = Tiling() if cfg["use_tiling"] else None
        self.compute_dtype: torch.dtype | None = None

    @classmethod
    def from_config(cls, config: dict) -> VideoVAE:
        return cls(config)

    # ------------------------------------------------------------------ facts

    @property
    def scaling_factor(self) -> float:
        return float(self.config["scaling_factor"])

    @property
    def slice_mode(self) -> bool:
        return bool(self.config["slice_compression_vae"])

    @property
    def mini_batch_encoder(self) -> int:
        return self.config["mini_batch_encoder"]

    @property
    def mini_batch_decoder(self) -> int:
        return self.config["mini_batch_decoder"]

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.config["ch_mult"]) - 1)

    @property
    def latent_channels(self) -> int:
        return self.config["latent_channels"]

    @property
    def device(self) -> torch.device:
        return self.quant_conv.weight.device

    @property
    def dtype(self) -> torch.dtype:
        return self.compute_dtype or self.quant_conv.weight.dtype

    def latent_frames(self, num_frames: int) -> int:
        """Latent frames the encoder makes from ``num_frames`` (v3: 1->1, 16->4, 17->5, 144->36)."""
        return total_out(self.encode_plan(num_frames))

    def decoded_frames(self, num_latents: int) -> int:
        """Frames the decoder makes from ``num_latents`` (v3: 4->16, 5->17, 36->144)."""
        return total_out(self.decode_plan(num_latents))

    def slice_boundaries(self, num_latents: int) -> list:
        """Decoded frame indices where one independently decoded slice / chunk ends and the next
        begins (the lone first frame of an odd slice-mode clip excluded)."""
        plan = [w for w in self.decode_plan(num_latents) if w.mode != FIRST_FRAME]
        return [w.out_start for w in plan[1:]]

    def encode_plan(self, num_frames: int) -> list:
        """The encoder's time windows (:class:`~.windows.Window`: input frames start..stop, output
        latents out_start..out_stop, time mode); each is encoded alone, so encoding the windows
        one by one and concatenating equals encoding the clip."""
        return encode_windows(num_frames, self.slice_mode, self.mini_batch_encoder, self.encoder.out_frames)

    def decode_plan(self, num_latents: int) -> list:
        """The decoder's time windows, with the neighbouring latents each one sees as context
        (ctx_start..ctx_stop) and the frames it produces (out_start..out_stop)."""
        return decode_windows(num_latents, self.slice_mode, self.mini_batch_decoder, self.decoder.out_frames)


    # ------------------------------------------------------------------ encode

    def encode(self, video: torch.Tensor, progress=None) -> DiagonalGaussian:
        """Posterior over unscaled latents of ``video`` (B, 3, F, H, W) in [-1, 1]; the video may
        live on another device (slices move one at a time)."""
        self._check_video(video)
        plan = self.encode_plan(video.shape[2])
        progress = progress or silent
        moments = None
        for i, window in enumerate(plan):
            m = self._encode_window(video[:, :, window.start:window.stop], window.mode)
            if moments is None:
                moments = m.new_empty(m.shape[:2] + (total_out(plan),) + m.shape[3:])
            moments[:, :, window.out_start:window.out_stop] = m
            del m
            progress(i + 1, len(plan))
        # v3 pipelines sample the whole clip's posterior at once, v2 pipelines chunk by chunk.
        draws = None if self.slice_mode else [w.out_stop - w.out_start for w in plan]
        return DiagonalGaussian(moments, draws)

    def _encode_window(self, x, mode):
        x = x.to(self.device, self.dtype)

        def run(tile):
            return self.quant_conv(self.encoder(tile, mode))

        if self.tiling is None:
            return run(x)
        return run_tiled(run, x, self.tiling, 1, 1 / self.spatial_factor)

    # ------------------------------------------------------------------ decode

    def decode(self, latents: torch.Tensor, progress=None, seam: str = "none", seed: int = 0,
               output_device=None, out: torch.Tensor | None = None) -> torch.Tensor:
        """Video (B, 3, F, H*8, W*8) from unscaled latents (B, 4, L, H, W).

        ``seam``: "none" - the published decode, unclamped; "blend" - extra decode windows shifted
        by half a slice, cross-faded over every slice boundary (slice VAE only, deterministic, no
        re-encode); "smooth" - the reference pipelines' smooth_output (re-encode the middle of
        the clip, decode again, average, clamp to [-1, 1]); its posterior sample is drawn from a
        CPU generator seeded with ``seed``, so it is reproducible on every device.
        The output is allocated once on ``output_device`` (default: the latents' device) in the
        latents' dtype, and filled window by window; or pass ``out``, a (B, 3, F, H*8, W*8) tensor of
        any strides (e.g. a channels-last view of an IMAGE buffer) to fill instead.
        """
        self._check_latents(latents, seam)
        plan = self.decode_plan(latents.shape[2])
        extra = blend_windows(latents.shape[2], self.mini_batch_decoder, self.decoder.out_frames) \
            if seam == "blend" else []
        smooth_frames = smooth_span(total_out(plan), self.mini_batch_encoder) if seam == "smooth" else None
        units = len(plan) + len(extra)
        if smooth_frames is not None:
            frames = smooth_frames[1] - smooth_frames[0]
            units += len(self.encode_plan(frames)) + len(self.decode_plan(self.latent_frames(frames)))
        report = _Counter(progress, units)

        f = self.spatial_factor
        shape = (latents.shape[0], self.config["out_channels"], total_out(plan), latents.shape[3] * f,
                 latents.shape[4] * f)
        if out is None:
            out = torch.empty(shape, dtype=latents.dtype, device=output_device or latents.device)
        elif tuple(out.shape) != shape:
            raise InputError(f"VAE decode was given an output tensor of shape {tuple(out.shape)} for latents that "
                             f"decode to {shape}; allocate it with that shape.")
        for window, y in self._decode_windows(latents, plan):
            out[:, :, window.out_start:window.out_stop] = y
            report()
        for window, y in self._decode_windows(latents, extra):
            target = out[:, :, window.out_start:window.out_stop]
            boundary = self.decoder.out_frames(self.mini_batch_decoder // 2, SLICE)
            w = blend_weights(target.shape[2], boundary, target.device, target.dtype)
            target.mul_(1 - w).add_(y.to(target) * w)
            report()
        if seam == "smooth":
            self._smooth(out, smooth_frames, seed, report)
        return out

    def _decode_windows(self, latents, plan):
        for window in plan:
            yield window, self._decode_window(latents[:, :, window.ctx_start:window.ctx_stop], window)

    def _decode_window(self, z, window):
        z = z.to(self.device, self.dtype)

        def run(tile):
            return self.decoder(self.post_quant_conv(tile), window.mode, keep=window.keep)

        if self.tiling is None:
            return run(z)
        return run_tiled(run, z, self.tiling, 1 / self.spatial_factor, 1)

    def _smooth(self, video, span, seed, report):
        """The reference's smooth_output, in place: clamp; re-encode frames [e/2, F - (e - e/2));
        sample; decode; average with the first decode; clamp."""
        video.clamp_(-1, 1)
        if span is None:
            return
        a, b = span
        posterior = self.encode(video[:, :, a:b], progress=lambda done, total, preview=None: report())
        z = posterior.sample(torch.Generator(device="cpu").manual_seed(seed))
        del posterior
        for window, y in self._decode_windows(z, self.decode_plan(z.shape[2])):
            target = video[:, :, a + window.out_start:a + window.out_stop]
            target.copy_((target + y.to(target)) / 2)
            report()
        video.clamp_(-1, 1)

    # ------------------------------------------------------------------ input checks

    def _check_video(self, video):
        expected = self.config["in_channels"]
        if video.ndim != 5 or video.shape[1] != expected or video.shape[2] < 1:
            raise InputError(f"VAE encode expects video shaped (batch, {expected}, frames, height, width) with at "
                             f"least one frame, found {tuple(video.shape)}; move channels to dim 1 and frames "
                             f"to dim 2.")
        f = self.spatial_factor
        if video.shape[3] % f or video.shape[4] % f:
            raise InputError(f"VAE encode needs height and width divisible by {f}, found "
                             f"{video.shape[3]}x{video.shape[4]}; resize or crop to "
                             f"{video.shape[3] // f * f}x{video.shape[4] // f * f}.")

    def _check_latents(self, latents, seam):
        c = self.latent_channels
        if latents.ndim != 5 or latents.shape[1] != c or latents.shape[2] < 1:
            raise InputError(f"VAE decode expects latents shaped (batch, {c}, latent frames, height/"
                             f"{self.spatial_factor}, width/{self.spatial_factor}), found {tuple(latents.shape)}; "
                             f"pass 5-D video latents (a 4-D image latent needs a frame axis: unsqueeze(2)).")
        if seam not in SEAM_OPTIONS:
            raise InputError(f"unknown seam option {seam!r}; choose one of {', '.join(SEAM_OPTIONS)}.")
        if seam == "blend" and (not self.slice_mode or self.mini_batch_decoder < 2):
            raise InputError("seam='blend' needs a slice VAE with mini_batch_decoder >= 2 (v3); this VAE "
                             f"(slice_compression_vae={self.slice_mode}, mini_batch_decoder="
                             f"{self.mini_batch_decoder}) has no slice seams to blend, use 'smooth' or 'none'.")


class _Counter:
    """Reports one finished unit at a time to a progress callable."""

    def __init__(self, progress, total):
        self.progress, self.total, self.done = progress or silent, total, 0

    def __call__(self):
        self.done += 1
        self.progress(self.done, self.total)

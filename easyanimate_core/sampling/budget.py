"""How much memory and time a generation takes, from its shapes alone, before anything is allocated.

A size typo (``--width 100000``) would otherwise die minutes later in a 40 GB allocation, and a
4096x4096 clip on a CPU would run for hours without a word. :func:`estimate_generation` adds up
the largest things a run holds at once:

* the weights (the caller passes their size: file sizes before loading, 0 when already loaded);
* the denoising working set: latents and sampler state, one DiT block's activations for the
  CFG batch over every token (``frames x h/p x w/p``), and the attention scores, which the
  dispatch (models/attention.py) never lets exceed ``MAX_ELEMENTS`` per call;
* the decode working set: one VAE decode slice at the decoder level with the most channels x
  pixels (decode is slice-wise, so this does not grow with the clip) plus the decoded clip itself
  (float pixels);

and counts the multiply-adds of the DiT steps and the decode for a time scale. The figures are
estimates within a small factor: good to refuse what cannot fit and to warn about what is slow,
not to plan to the megabyte.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

from ..errors import InputError
from ..models.attention import MAX_ELEMENTS

GIB = 2**30
CPU_FLOPS_PER_THREAD = 2e10   # sustained fp32 matmul rate of one modern core (order of magnitude)
SLOW_SECONDS = 120            # warn above this on the CPU
FIT_SHARE = 0.9               # leave room for the allocator and what the estimate leaves out


@dataclass(frozen=True)
class RunEstimate:
    peak_bytes: int
    parts: dict      # name -> bytes, the pieces peak_bytes is made of
    flops: float     # the whole run

    def describe(self) -> str:
        largest = sorted(self.parts.items(), key=lambda kv: -kv[1])[:3]
        return ", ".join(f"{name} {size / GIB:.1f} GiB" for name, size in largest)


def _vae_shape(vae_config: dict | None) -> tuple[int, int, list, int | None]:
    """(spatial factor, latents per decode slice, decoder channels per level from full
    resolution, the spatial tile's side when the VAE decodes in tiles)."""
    from ..models.vae.tiling import Tiling

    config = vae_config or {}
    mult = config.get("ch_mult") or [1, 2, 4, 4]
    widths = config.get("block_out_channels") or [config.get("ch", 128) * m for m in mult]
    tile = Tiling().size if config.get("use_tiling") else None
    return 2 ** (len(widths) - 1), int(config.get("mini_batch_decoder", 2)), list(widths), tile


def latent_frames(frames: int) -> int:
    """Latent frames of a clip: 8-frame slices make 2 latents each, a lone lead frame one."""
    return max(1, math.ceil(frames / 4))


def estimate_generation(width: int, height: int, frames: int, steps: int, transformer_config: dict,
                        vae_config: dict | None = None, weights_bytes: int = 0, dtype_bytes: int = 4,
                        batch: int = 2, context=None, chunk_frames: int = 0) -> RunEstimate:
    """Peak memory and work of one generation; ``batch`` 2 is classifier-free guidance's pair,
    ``context`` (:class:`~.context.ContextWindows`) / ``chunk_frames`` the long-video modes (they
    bound the tokens per pass; windows, overlapping and strided, set the passes per step)."""
    spatial, decode_latents, widths, tile = _vae_shape(vae_config)
    patch = int(transformer_config.get("patch_size", 2))
    heads = int(transformer_config.get("num_attention_heads", 16))
    dim = heads * int(transformer_config.get("attention_head_dim", 72))
    layers = int(transformer_config.get("num_layers", 28))
    channels = int(transformer_config.get("in_channels", 4))
    h, w = max(1, height // spatial), max(1, width // spatial)
    total_latents = latent_frames(frames)
    pass_latents = total_latents
    if chunk_frames:
        pass_latents = latent_frames(min(frames, chunk_frames))
    if context is not None:
        pass_latents = min(pass_latents, context.length)
    tokens = pass_latents * max(1, h // patch) * max(1, w // patch)

    latents = 8 * batch * channels * total_latents * h * w * 4          # x, noise, history, guidance pair
    activations = 12 * batch * tokens * dim * dtype_bytes                # one block: qkv, out, 4x MLP, residual
    attention = min(batch * heads * tokens * tokens, MAX_ELEMENTS) * 4
    # level k of the decoder runs at 1/2^k of the size with widths[k] channels
    window = min(height, tile) * min(width, tile) if tile else height * width
    channel_pixels = [c * window / 4**k for k, c in enumerate(widths)]
    decode_frames = min(frames, 4 * decode_latents + 1)
    decode = int(3 * decode_frames * max(channel_pixels) * 4)            # a conv's input, output and norm
    clip = frames * height * width * (3 * 4 + 3)                         # float pixels + uint8 frames
    parts = {"weights": int(weights_bytes), "latents": latents, "DiT activations": activations,
             "attention": attention, "VAE decode slice": decode, "decoded video": clip}
    peak = weights_bytes + max(latents + activations + attention, decode + clip)

    if context is not None:
        passes = steps * len(context.windows(total_latents))
    else:
        passes = steps * max(1, math.ceil(total_latents / pass_latents))
    block = 2 * 16 * dim * dim * tokens + 4 * tokens * tokens * dim     # linear layers + global attention
    dit_flops = passes * batch * layers * block
    vae_flops = sum(6 * 2 * 27 * frames * (c * c * height * width / 4**k) for k, c in enumerate(widths))
    return RunEstimate(int(peak), parts, float(dit_flops + vae_flops))


def available_bytes(device) -> int | None:
    """Free memory of ``device`` (a torch.device): CUDA's free memory, the CPU's available RAM;
    None where it cannot be known (then nothing is refused)."""
    import torch

    if device.type == "cuda":
        return int(torch.cuda.mem_get_info(device)[0])
    if device.type != "cpu":
        return None
    try:
        with open("/proc/meminfo") as info:
            for line in info:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def check_fits(estimate: RunEstimate, device, available: int | None = None) -> None:
    """One :class:`InputError` when the run cannot fit ``device``'s free memory."""
    available = available_bytes(device) if available is None else available
    if available is None or estimate.peak_bytes <= FIT_SHARE * available:
        return
    raise InputError(f"this run needs about {estimate.peak_bytes / GIB:.1f} GiB at its peak ({estimate.describe()}) "
                     f"but {device} has {available / GIB:.1f} GiB free; lower the width, height or frame count "
                     f"(or sample a long clip in context windows / chunks).")


def cpu_time_warning(estimate: RunEstimate, threads: int) -> str | None:
    """A sentence with the time scale when the run is long on the CPU, else None."""
    seconds = estimate.flops / (max(1, threads) * CPU_FLOPS_PER_THREAD)
    if seconds < SLOW_SECONDS:
        return None
    scale = f"{seconds / 3600:.0f} hours" if seconds >= 2 * 3600 else f"{seconds / 60:.0f} minutes"
    return (f"this run is roughly {scale} of CPU work ({estimate.flops:.1e} multiply-adds on {threads} "
            f"thread{'s' if threads != 1 else ''}); a GPU, fewer steps or a smaller size is much faster")

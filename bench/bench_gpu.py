"""Real-size generation benchmark in the shape of EasyAnimate v3's published memory table.

Builds the v3 release's DiT (28 blocks, hidden 1152, hybrid motion modules, U-ViT skips,
12-channel InP input) and slice VAE from their configs (``checkpoints/presets.py``) with random
weights, and for each size (height x width x frames) and offload mode runs what a text-to-video
generation runs after the prompt is encoded: the InP condition through the VAE encoder, ``--steps``
sampling steps (dpmpp_2m, CFG 7: the DiT sees the batch [uncond, cond]), and the slice-wise VAE
decode. Prompt embeddings are random T5-sized states (120 x 4096): the T5 encoder runs once per
prompt and, with offload, on its own before the DiT, so it is left out.

Offload "off" keeps the DiT and the VAE on the device (the table's ``low_gpu_memory_mode=False``);
"on" keeps them on the CPU and moves each to the device only while it runs (model offload, as
``Components(offload=True)`` / ``run.py generate --offload``; the reference's low-memory mode
offloads sequentially, layer by layer, which is slower and lower still).

Printed per case: time per sampling step (median of the steps after the first; the first, with
its warm-up, separately), and peak device memory (``torch.cuda.max_memory_allocated``) of each
phase. On the CPU, memory is the process's peak RSS so far (it only grows) - the CPU mode exists
to check the script (``--tiny``), not to measure.

    python bench/bench_gpu.py                      # 384x672x144 and 512x512x144, offload off and on
    python bench/bench_gpu.py --table              # every size of the published table
    python bench/bench_gpu.py --sizes 384x672x72 --offload off --steps 10 --step-cache
    python bench/bench_gpu.py --tiny               # tiny configs and size, on the CPU (the test)
"""

from __future__ import annotations

import argparse
import json
import resource
import statistics
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from easyanimate_core.checkpoints.presets import TRANSFORMER_PRESETS, VAE_PRESETS  # noqa: E402
from easyanimate_core.errors import InputError  # noqa: E402
from easyanimate_core.models.transformer import VideoTransformer  # noqa: E402
from easyanimate_core.models.vae import VideoVAE  # noqa: E402
from easyanimate_core.sampling.options import SamplingOptions  # noqa: E402
from easyanimate_core.sampling.shape_rules import latent_shape  # noqa: E402
from easyanimate_core.sampling.inpaint import all_generated_condition  # noqa: E402
from easyanimate_core.sampling.pipeline import Components, decode, denoise  # noqa: E402
from easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD, StepCache  # noqa: E402

DEFAULT_SIZES = "384x672x144,512x512x144"
# the columns of the v3 README's memory table (height x width x frames)
TABLE_SIZES = "384x672x72,384x672x144,576x1008x72,576x1008x144,720x1280x72,720x1280x144"
TINY_SIZES = "32x32x9"
DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
GIB = 1024 ** 3


def tiny_configs() -> tuple[dict, dict]:
    """The v3 configs shrunk to test size (2 blocks of width 32, a VAE with 8-16 channels)."""
    motion = {"num_attention_heads": 2, "num_transformer_block": 1, "temporal_position_encoding": True}
    dit = dict(TRANSFORMER_PRESETS["v3"], num_layers=2, num_attention_heads=2, attention_head_dim=16,
               cross_attention_dim=32, caption_channels=4096,
               motion_module_kwargs_even=dict(motion, attention_block_types=["Temporal_Self", "Temporal_Self"]),
               motion_module_kwargs_odd=dict(motion, attention_block_types=["Temporal_Self", "Global_Self"]))
    vae = dict(VAE_PRESETS["v3"], ch=8, ch_mult=[1, 2, 2, 2], norm_num_groups=4)
    return dit, vae


def parse_sizes(text: str) -> list[tuple[int, int, int]]:
    sizes = []
    for item in text.split(","):
        parts = item.strip().lower().split("x")
        if len(parts) != 3 or not all(p.isdigit() and int(p) > 0 for p in parts):
            raise InputError(f"size {item!r} is not HEIGHTxWIDTHxFRAMES; write e.g. 384x672x144")
        sizes.append(tuple(int(p) for p in parts))
    return sizes


class Meter:
    """Peak memory of a phase: device allocations on CUDA, the process's peak RSS elsewhere."""

    def __init__(self, device: torch.device):
        self.cuda = device.type == "cuda"

    def sync(self):
        if self.cuda:
            torch.cuda.synchronize()

    def start(self):
        if self.cuda:
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()

    def peak_gib(self) -> float:
        if self.cuda:
            return torch.cuda.max_memory_allocated() / GIB
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / GIB


def build_models(dit_config: dict, vae_config: dict, device: torch.device, dtype: torch.dtype):
    """Random weights, created directly on ``device`` in ``dtype`` (no fp32 copy of 28 blocks)."""
    torch.manual_seed(0)
    previous = torch.get_default_dtype()
    torch.set_default_dtype(dtype)
    try:
        with torch.device(device):
            dit = VideoTransformer(dit_config).eval()
            vae = VideoVAE(vae_config).eval()
    finally:
        torch.set_default_dtype(previous)
    return dit, vae


def run_case(dit, vae, size, offload: bool, steps: int, device, step_cache, meter: Meter) -> dict:
    height, width, frames = size
    home = torch.device("cpu") if offload else device
    dit.to(home)
    vae.to(home)
    parts = Components(dit, vae, device=device, offload=offload)
    g = torch.Generator().manual_seed(0)
    channels = dit.options["caption_channels"]
    cond = torch.randn(1, 120, channels, generator=g), torch.ones(1, 120, dtype=torch.bool)
    uncond = torch.randn(1, 120, channels, generator=g), torch.ones(1, 120, dtype=torch.bool)
    latents = torch.zeros(latent_shape(vae, frames, width, height))
    row = {"size": f"{height}x{width}x{frames}", "offload": offload, "latents": list(latents.shape),
           "tokens": latents.shape[2] * (latents.shape[3] // 2) * (latents.shape[4] // 2)}

    meter.start()
    began = time.perf_counter()
    with parts.using(vae), torch.no_grad():
        inpaint = all_generated_condition(vae, frames, width, height)
    meter.sync()
    row["encode_s"], row["encode_peak_gib"] = time.perf_counter() - began, meter.peak_gib()

    stamps = []

    def step_done(done, total, preview=None):
        meter.sync()
        stamps.append(time.perf_counter())

    meter.start()
    began = time.perf_counter()
    with parts.using(dit):
        options = SamplingOptions(steps=steps, cfg=7.0, sampler="dpmpp_2m", seed=0, step_cache=step_cache)
        latents = denoise(dit, latents, cond, uncond, options, scaling_factor=vae.scaling_factor, inpaint=inpaint,
                          progress=step_done)
    row["denoise_s"], row["denoise_peak_gib"] = time.perf_counter() - began, meter.peak_gib()
    per_step = [b - a for a, b in zip(stamps, stamps[1:])]
    row["first_step_s"] = stamps[0] - began
    row["step_s"] = statistics.median(per_step) if per_step else row["first_step_s"]
    if step_cache is not None:
        row["skipped"] = f"{step_cache.skipped} of {step_cache.calls}"

    meter.start()
    began = time.perf_counter()
    video = decode(parts, latents)
    meter.sync()
    row["decode_s"], row["decode_peak_gib"] = time.perf_counter() - began, meter.peak_gib()
    row["finite"] = bool(torch.isfinite(video).all())
    row["peak_gib"] = max(row["encode_peak_gib"], row["denoise_peak_gib"], row["decode_peak_gib"])
    return row


def print_table(rows: list[dict], device, dtype_name: str, memory: str) -> None:
    print(f"\ndevice {device}, {dtype_name}; memory = {memory}")
    print("| size (HxWxF) | offload | latents | DiT tokens | s/step | first step s | step cache | "
          "peak encode GiB | peak denoise GiB | peak decode GiB | peak GiB | decode s |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        print(f"| {r['size']} | {'on' if r['offload'] else 'off'} | {'x'.join(map(str, r['latents'][2:]))} | "
              f"{r['tokens']} | {r['step_s']:.3f} | {r['first_step_s']:.3f} | {r.get('skipped', 'off')} | "
              f"{r['encode_peak_gib']:.2f} | {r['denoise_peak_gib']:.2f} | {r['decode_peak_gib']:.2f} | "
              f"{r['peak_gib']:.2f} | {r['decode_s']:.2f} |")


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--sizes", default=None, help=f"HxWxF list (default {DEFAULT_SIZES}; --tiny: {TINY_SIZES})")
    parser.add_argument("--table", action="store_true", help=f"every size of the published table: {TABLE_SIZES}")
    parser.add_argument("--offload", choices=("both", "off", "on"), default="both")
    parser.add_argument("--steps", type=int, default=5, help="sampling steps timed per case")
    parser.add_argument("--dtype", choices=tuple(DTYPES), default="bf16")
    parser.add_argument("--device", default="auto", help="auto = cuda when available, else cpu")
    parser.add_argument("--step-cache", type=float, nargs="?", const=DEFAULT_THRESHOLD, default=None,
                        metavar="THRESHOLD", help=f"sample with the step cache (bare flag: {DEFAULT_THRESHOLD})")
    parser.add_argument("--tiny", action="store_true", help="tiny configs and size (checks the script on a CPU)")
    parser.add_argument("--json", default=None, help="also write the rows to this JSON file")
    args = parser.parse_args(argv)
    if args.steps < 2:
        raise InputError(f"--steps {args.steps} leaves no step after the warm-up one to time; use 2 or more")
    sizes = parse_sizes(args.sizes or (TABLE_SIZES if args.table else TINY_SIZES if args.tiny else DEFAULT_SIZES))
    device = torch.device("cuda" if args.device == "auto" and torch.cuda.is_available() else
                          "cpu" if args.device == "auto" else args.device)
    dit_config, vae_config = tiny_configs() if args.tiny else (TRANSFORMER_PRESETS["v3"], VAE_PRESETS["v3"])
    meter = Meter(device)
    dit, vae = build_models(dit_config, vae_config, device, DTYPES[args.dtype])
    params = sum(p.numel() for p in dit.parameters()) / 1e9
    print(f"DiT: {dit.depth} blocks, hidden {dit.hidden_size}, {params:.2f} B parameters; VAE ch {vae.config['ch']}")
    modes = {"both": (False, True), "off": (False,), "on": (True,)}[args.offload]
    rows = []
    for offload in modes:  # all cases with the models resident first, then offloaded
        for size in sizes:
            cache = None if args.step_cache is None else StepCache(args.step_cache)
            rows.append(run_case(dit, vae, size, offload, args.steps, device, cache, meter))
            print(json.dumps(rows[-1]), flush=True)
    memory = ("torch.cuda.max_memory_allocated per phase" if device.type == "cuda"
              else "process peak RSS so far (CPU: a script check, not a measurement)")
    print_table(rows, device, args.dtype, memory)
    if args.json:
        Path(args.json).write_text(json.dumps(rows, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Slice-VAE benchmark: memory and time of slice-wise vs whole-clip decode / encode, and slice seams.

    python bench/bench_vae.py            # about 5 minutes on one thread
    python bench/bench_vae.py --quick    # smaller seam model training, for a smoke run

Times are CPU seconds of the one compute thread, which a busy shared machine does not inflate.

Memory: every measurement runs in a fresh subprocess. After the model and its input exist, the
kernel's peak-RSS mark is reset (``/proc/self/clear_refs``), the operation runs, and the new peak
minus the RSS before it is what the operation needed. "activations" subtracts the output tensor
(which any decode must hold) from that; weights and inputs are outside it by construction.
The subprocesses run with ``MALLOC_MMAP_THRESHOLD_=65536`` so every tensor is its own mapping and
RSS follows live tensor memory; with glibc's default (a threshold that rises as blocks are freed)
freed tensors stay in a fragmenting heap and peak RSS also grows with the number of allocations.
The bench prints that default-allocator figure too.

Seams: a small VAE is trained for a few hundred steps to reconstruct smooth synthetic
moving-pattern clips (drifting gratings + a moving blob); then a 64-frame clip of the same kind
is encoded and decoded with each seam option. Seam ratio = mean |frame-to-frame difference|
across slice boundaries / median of it inside slices (1.0 = no visible seam).
"""

from __future__ import annotations

import argparse
import gc
import json
import math
import os
import re
import subprocess
import sys
import time

import torch

from easyanimate_core.models.vae import VideoVAE, seam_ratio
from easyanimate_core.models.vae.layers import SLICE

V3 = {"slice_compression_vae": True, "mini_batch_encoder": 8, "mini_batch_decoder": 2}
MEMORY_CONFIG = {"ch": 32, "ch_mult": [1, 2, 4, 4], "norm_num_groups": 8, **V3}
MEMORY_SIZE = 64            # pixels
FRAME_COUNTS = (16, 48, 144)
SEAM_CONFIG = {"ch": 16, "ch_mult": [1, 2, 2, 2], "norm_num_groups": 8, **V3}
SEAM_SIZE = 32


# ------------------------------------------------------------------------------ memory / time

def _status_kb(field):
    return int(re.search(rf"{field}:\s+(\d+)", open("/proc/self/status").read()).group(1))


def _measure(op: str, frames: int, sliced: bool) -> dict:
    """One measurement, meant to run alone in its own process."""
    torch.set_num_threads(1)
    torch.manual_seed(0)
    vae = VideoVAE(MEMORY_CONFIG).eval()
    latent_size = MEMORY_SIZE // vae.spatial_factor
    if op == "decode":
        x = torch.randn(1, 4, vae.latent_frames(frames), latent_size, latent_size)
    else:
        x = torch.rand(1, 3, frames, MEMORY_SIZE, MEMORY_SIZE) * 2 - 1
    gc.collect()
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark
    before = _status_kb("VmRSS")
    start = time.process_time()
    with torch.no_grad():
        if op == "decode":
            out = vae.decode(x) if sliced else vae.decoder(vae.post_quant_conv(x), SLICE)
        else:
            out = vae.encode(x).mean if sliced else vae.quant_conv(vae.encoder(x, SLICE)).chunk(2, 1)[0]
    seconds = time.process_time() - start
    peak_mb = (_status_kb("VmHWM") - before) / 1024
    out_mb = out.numel() * out.element_size() / 2 ** 20
    return {"peak_mb": peak_mb, "activation_mb": peak_mb - out_mb, "seconds": seconds,
            "frames_out": out.shape[2]}


def _measure_in_subprocess(op, frames, sliced, fixed_mmap_threshold=True):
    spec = json.dumps({"op": op, "frames": frames, "sliced": sliced})
    env = {k: v for k, v in os.environ.items() if k != "MALLOC_MMAP_THRESHOLD_"}
    if fixed_mmap_threshold:
        env["MALLOC_MMAP_THRESHOLD_"] = "65536"
    run = subprocess.run([sys.executable, __file__, "--child", spec], capture_output=True, text=True, check=True,
                         env=env)
    return json.loads(run.stdout.strip().splitlines()[-1])


def memory_table():
    rows = {}
    for op in ("decode", "encode"):
        for frames in FRAME_COUNTS:
            for sliced in (True, False):
                rows[op, frames, sliced] = _measure_in_subprocess(op, frames, sliced)
    print(f"\nMemory and time, {MEMORY_SIZE}x{MEMORY_SIZE} px, ch {MEMORY_CONFIG['ch']} x "
          f"{MEMORY_CONFIG['ch_mult']}, fp32, 1 thread; s = CPU seconds (robust on a shared machine); "
          f"peak = peak RSS above the model + input")
    print(f"{'op':<7}{'frames':>7} | {'sliced act MB':>13}{'peak MB':>9}{'s':>7} | "
          f"{'whole act MB':>12}{'peak MB':>9}{'s':>7}")
    for (op, frames, sliced), r in rows.items():
        if sliced:
            w = rows[op, frames, False]
            print(f"{op:<7}{frames:>7} | {r['activation_mb']:>13.1f}{r['peak_mb']:>9.1f}{r['seconds']:>7.2f} | "
                  f"{w['activation_mb']:>12.1f}{w['peak_mb']:>9.1f}{w['seconds']:>7.2f}")
    print("ratios 144 / 16 frames:")
    for op in ("decode", "encode"):
        big, small = FRAME_COUNTS[-1], FRAME_COUNTS[0]
        for sliced, name in ((True, "sliced"), (False, "whole")):
            a, b = rows[op, big, sliced], rows[op, small, sliced]
            print(f"  {op} {name:<6}: activations x{a['activation_mb'] / b['activation_mb']:.2f}, "
                  f"peak incl. output x{a['peak_mb'] / b['peak_mb']:.2f}, time x{a['seconds'] / b['seconds']:.2f}")
    default = [_measure_in_subprocess("decode", n, True, fixed_mmap_threshold=False) for n in (16, 144)]
    print(f"  decode sliced with glibc's default mmap threshold: activations {default[0]['activation_mb']:.1f} -> "
          f"{default[1]['activation_mb']:.1f} MB, x{default[1]['activation_mb'] / default[0]['activation_mb']:.2f} "
          f"(heap fragmentation, not live tensors)")
    return rows


# ------------------------------------------------------------------------------ seams

def moving_pattern(n, frames, size, generator):
    """Smooth synthetic clips in [-1, 1]: two drifting sinusoidal gratings per colour channel and
    a soft blob moving on a straight line (wrapping around)."""
    def rand(*shape):
        return torch.rand(*shape, generator=generator)

    t = torch.arange(frames, dtype=torch.float32).view(1, 1, frames, 1, 1)
    y = torch.arange(size, dtype=torch.float32).view(1, 1, 1, size, 1)
    x = torch.arange(size, dtype=torch.float32).view(1, 1, 1, 1, size)
    video = torch.zeros(n, 3, frames, size, size)
    for _ in range(2):
        k = rand(n, 3, 1, 1, 1) * 0.12 + 0.05                 # spatial frequency, rad / px
        angle = rand(n, 1, 1, 1, 1) * 2 * math.pi
        speed = rand(n, 1, 1, 1, 1) * 1.5 + 0.3               # px / frame
        phase = rand(n, 3, 1, 1, 1) * 2 * math.pi
        video += 0.35 * torch.sin(k * (x * angle.cos() + y * angle.sin() - speed * t) + phase)
    cx, cy = rand(n, 1, 1, 1, 1) * size, rand(n, 1, 1, 1, 1) * size
    vx, vy = (rand(n, 1, 1, 1, 1) - 0.5) * 2, (rand(n, 1, 1, 1, 1) - 0.5) * 2
    blob = torch.exp(-(((x - cx - vx * t) % size) ** 2 + ((y - cy - vy * t) % size) ** 2) / 60)
    video += (rand(n, 3, 1, 1, 1) - 0.5) * 1.2 * blob
    return video.clamp(-1, 1)


def train_seam_model(steps):
    torch.manual_seed(0)
    vae = VideoVAE(SEAM_CONFIG)
    optimizer = torch.optim.Adam(vae.parameters(), lr=2e-3)
    schedule = torch.optim.lr_scheduler.OneCycleLR(optimizer, max_lr=3e-3, total_steps=steps, pct_start=0.15)
    data = torch.Generator().manual_seed(0)
    start = time.process_time()
    for _ in range(steps):
        video = moving_pattern(2, 16, SEAM_SIZE, data)  # two 8-frame slices: the decoder trains with context
        posterior = vae.encode(video)
        error = vae.decode(posterior.sample()) - video
        loss = error.abs().mean() + error.pow(2).mean() + 1e-6 * posterior.kl().mean()
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        schedule.step()
    print(f"\nSeam model: {sum(p.numel() for p in vae.parameters()) / 1e6:.2f} M parameters, {steps} steps "
          f"on 16-frame {SEAM_SIZE}x{SEAM_SIZE} clips in {time.process_time() - start:.0f} CPU s, last loss {loss.item():.3f}")
    return vae.eval()


def seam_table(vae):
    clip = moving_pattern(1, 64, SEAM_SIZE, torch.Generator().manual_seed(123))
    with torch.no_grad():
        z = vae.encode(clip).mean
        boundaries = vae.slice_boundaries(z.shape[2])
        print(f"64-frame test clip, slice boundaries at frames {boundaries}; seam ratio of the input itself "
              f"{seam_ratio(clip, boundaries):.2f}")
        print(f"{'seam':<8}{'seam ratio':>11}{'PSNR dB':>9}{'CPU s':>10}{'cost x':>8}")
        base = None
        for seam in ("none", "smooth", "blend"):
            start = time.process_time()
            out = vae.decode(z, seam=seam, seed=0)
            seconds = time.process_time() - start
            base = base or seconds
            mse = (out.clamp(-1, 1) - clip).pow(2).mean().item()
            print(f"{seam:<8}{seam_ratio(out, boundaries):>11.2f}{10 * math.log10(4 / mse):>9.2f}"
                  f"{seconds:>10.2f}{seconds / base:>8.2f}")


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="train the seam model for 60 steps only")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    if args.child:
        spec = json.loads(args.child)
        print(json.dumps(_measure(spec["op"], spec["frames"], spec["sliced"])))
        return
    memory_table()
    seam_table(train_seam_model(60 if args.quick else 300))


if __name__ == "__main__":
    main()

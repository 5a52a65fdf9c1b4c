"""Pipeline overhead and long-video memory on tiny models (CPU, one thread), in one run.

1. Time per sampling step, and the share of sampling time spent outside the DiT's forward
   (guidance, sampler arithmetic, conditioning, window fusion). Target: under 3 %. Times are the
   thread's CPU time (torch runs on this one thread), so other processes on a shared machine do
   not distort the share; the best of several repeats is kept.
2. Peak memory of a long video vs a short one: each run in a fresh process, reported as the rise
   of the process's peak RSS over the same process after loading models and a warm-up run.
   Chunked long-video mode streams finished frames (here: discarded, as a file writer would);
   context-window sampling keeps the whole latent clip and the decoded clip in memory.

    python bench/bench_pipeline.py [--steps 25] [--long-frames 1001]
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
torch.set_num_threads(1)

SIZE = 32  # pixels; memory runs use MEM_SIZE
MEM_SIZE = 64
CHUNK = 33  # frames per chunk in chunked long-video mode (4 of them shared with the previous one)


def release(root: Path, in_channels: int) -> Path:
    """A tiny release folder (built once per run, reused by the child processes)."""
    from tiny_models import save_model_folder

    folder = root / f"inp{in_channels}"
    if not folder.is_dir():
        save_model_folder(folder, in_channels=in_channels)
    return folder


def components(root: Path, in_channels: int = 12):
    from tiny_models import load_components

    return load_components(release(root, in_channels))


class ForwardTimer:
    """Wraps the DiT's forward to add up the wall time spent inside it."""

    def __init__(self, model):
        self.model, self.inner, self.seconds, self.calls = model, model.forward, 0.0, 0

    def __enter__(self):
        def timed(*args, **kwargs):
            began = time.thread_time()
            try:
                return self.inner(*args, **kwargs)
            finally:
                self.seconds += time.thread_time() - began
                self.calls += 1

        self.model.forward = timed
        return self

    def __exit__(self, *exc):
        del self.model.forward


def time_steps(parts, label, steps, frames, size, context=None, repeats=5):
    from easyanimate_core.sampling.options import SamplingOptions
    from easyanimate_core.sampling.pipeline import denoise, encode_prompts
    from easyanimate_core.sampling.shape_rules import latent_shape

    cond, uncond = encode_prompts(parts, "a red ball bounces", "blurry")
    latents = torch.zeros(latent_shape(parts.vae, frames, size, size))
    clip = torch.randn(1, 768) if parts.transformer.in_channels == 12 else None

    def run():
        return denoise(parts.transformer, latents, cond, uncond,
                       SamplingOptions(steps=steps, cfg=7.0, seed=0, context=context), clip_embeds=clip)

    run()  # warm-up
    best = None
    for _ in range(repeats):
        with ForwardTimer(parts.transformer) as timer:
            began = time.thread_time()
            run()
            total = time.thread_time() - began
        if best is None or total < best[0]:
            best = (total, total - timer.seconds, timer.calls)
    total, outside, calls = best
    print(f"  {label:<52} {total / steps * 1e3:7.2f} ms/step  {calls // steps} DiT call(s)/step  "
          f"outside the DiT {outside / steps * 1e3:5.2f} ms/step = {outside / total * 100:5.2f} %")
    return outside / total


class FreeDiT(torch.nn.Module):
    """A stand-in DiT that costs nothing: what is left is the pipeline's and the sampler's own
    per-step work."""

    device, dtype = torch.device("cpu"), torch.float32

    def __init__(self):
        super().__init__()
        self.config = {"in_channels": 12}

    def forward(self, hidden_states, timestep, **conditioning):
        return hidden_states.new_zeros(hidden_states.shape[0], 8, *hidden_states.shape[2:])


def fixed_step_cost(parts, steps, repeats=5) -> float:
    from easyanimate_core.sampling.options import SamplingOptions
    from easyanimate_core.sampling.pipeline import denoise, encode_prompts

    cond, uncond = encode_prompts(parts, "a red ball bounces", "blurry")
    model, latents = FreeDiT(), torch.zeros(1, 4, 5, 4, 4)
    best = None
    for _ in range(repeats + 1):
        began = time.thread_time()
        denoise(model, latents, cond, uncond, SamplingOptions(steps=steps, cfg=7.0, seed=0),
                clip_embeds=torch.randn(1, 768))
        spent = (time.thread_time() - began) / steps
        best = spent if best is None else min(best, spent)
    print(f"  {'zero-cost DiT stand-in (pipeline + sampler work only)':<52} {best * 1e3:7.2f} ms/step")
    return best


def with_dit(parts, in_channels, **size):
    from tiny_models import build_dit

    from easyanimate_core.sampling.pipeline import Components

    return Components(build_dit(in_channels, **size), parts.vae, parts.text_encoder)


def current_rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * resource.getpagesize() / 2 ** 20


def measure(mode: str, frames: int, steps: int, root: Path) -> dict:
    """Runs in a child process: how far one generation lifts the process's peak RSS above its
    RSS with the models loaded."""
    from easyanimate_core.sampling.context import ContextWindows
    from easyanimate_core.sampling.long_video import iter_long_video
    from easyanimate_core.sampling.options import SamplingOptions
    from easyanimate_core.sampling.pipeline import generate

    parts = components(root, 12)
    common = {"width": MEM_SIZE, "height": MEM_SIZE}
    options = SamplingOptions(steps=steps, cfg=7.0, seed=0)
    base = current_rss_mb()
    began = time.perf_counter()
    if mode == "chunked":
        made = 0
        for piece in iter_long_video(parts, "a red ball bounces", options=options, frames=frames, chunk_frames=CHUNK,
                                     overlap_frames=4, **common):
            made += piece.shape[2]  # a file writer would encode and drop the piece here
    else:
        context = ContextWindows(length=5, overlap=1) if mode == "windows" else None
        options = SamplingOptions(steps=steps, cfg=7.0, seed=0, context=context)
        made = generate(parts, "a red ball bounces", options=options, frames=frames, **common).shape[2]
    seconds = time.perf_counter() - began
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"frames": made, "rise_mb": peak - base, "seconds": seconds}


def run_child(mode, frames, steps, root) -> dict:
    out = subprocess.run([sys.executable, __file__, "--measure", mode, "--long-frames", str(frames),
                          "--steps", str(steps), "--root", str(root)], capture_output=True, text=True,
                         check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=25)  # the v3 default
    parser.add_argument("--long-frames", type=int, default=1001)
    parser.add_argument("--measure", choices=["short", "chunked", "windows"], help=argparse.SUPPRESS)
    parser.add_argument("--root", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(measure(args.measure, args.long_frames, min(args.steps, 2), args.root)))
        return
    with tempfile.TemporaryDirectory() as folder:
        report(args, Path(folder))


def report(args, root: Path):
    from easyanimate_core.sampling.context import ContextWindows

    print(f"1. sampling overhead: CFG 7, dpmpp_2m, {args.steps} steps, 1 CPU thread, thread CPU time "
          f"(best of 5); test size = the tests' DiT (hidden 32, 2 layers) at 32x32, bench size = "
          f"hidden 128, 4 layers at 64x64")
    parts = components(root, 12)
    big = {"heads": 8, "layers": 4}
    test_shares = [
        time_steps(parts, "test size, InP (12 ch), 17 frames", args.steps, 17, 32),
        time_steps(with_dit(parts, 4), "test size, t2v (4 ch), 17 frames", args.steps, 17, 32),
    ]
    bench_shares = [
        time_steps(with_dit(parts, 12, **big), "bench size, InP, 17 frames", args.steps, 17, 64),
        time_steps(with_dit(parts, 4, **big), "bench size, t2v, 17 frames", args.steps, 17, 64),
        time_steps(with_dit(parts, 12, **big), "bench size, InP, 65 frames, windows 5/1", args.steps, 65,
                   64, context=ContextWindows(5, 1)),
    ]
    fixed_step_cost(parts, args.steps)
    print(f"  worst share outside the DiT: bench size {max(bench_shares) * 100:.2f} % (target < 3 %), "
          f"test size {max(test_shares) * 100:.2f} %")

    print(f"2. peak memory: rise of the peak RSS over the RSS with models loaded, fresh process per run; "
          f"InP, {MEM_SIZE}x{MEM_SIZE}, 2 steps")
    runs = [("single pass", "short", 17), (f"chunked ({CHUNK}-frame chunks)", "chunked", args.long_frames // 5),
            (f"chunked ({CHUNK}-frame chunks)", "chunked", args.long_frames),
            ("context windows (5/1 latents)", "windows", args.long_frames)]
    short = None
    for label, mode, frames in runs:
        result = run_child(mode, frames, args.steps, root)
        short = short or result["rise_mb"]
        note = ""
        if mode == "windows":
            note = f"; holds the decoded clip: {result['frames'] * 3 * MEM_SIZE ** 2 * 4 / 2 ** 20:.0f} MB float32"
        print(f"  {label:<30} {result['frames']:5d} frames  peak +{result['rise_mb']:6.1f} MB "
              f"(x{result['rise_mb'] / short:.2f} of the 17-frame pass)  {result['seconds']:5.1f} s{note}")


if __name__ == "__main__":
    main()

"""DiT figures, printed in one run (1 thread, interleaved repeats, medians):

1. forward time of our DiT vs diffusers' PixArtTransformer2DModel at the same tiny config, 1 frame
   (target: ours <= 1.1x theirs);
2. per-block time split: spatial part (self-attn, cross-attn, FF) vs motion module, on a video;
3. peak RSS of a process that runs one hybrid (temporal + global attention) motion module over
   36 latent frames x 32 x 32 tokens (tiny width): the global attention must never build the
   N x N score matrix (N = 36,864 -> 5.4 GB per head in fp32 if it did).

Usage: python bench/bench_dit.py [--repeats N] | --global-memory FRAMES H W
"""

import argparse
import json
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))
from tiny_dit import HYBRID, tiny_pixart

TINY = tiny_pixart(num_layers=2)


def interleaved_medians(fns: dict, repeats: int, inner: int = 20) -> dict:
    """Median seconds per call of each function, alternating between them every round."""
    times = {name: [] for name in fns}
    for fn in fns.values():  # warm-up
        for _ in range(3):
            fn()
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(inner):
                fn()
            times[name].append((time.perf_counter() - start) / inner)
    return {name: statistics.median(values) for name, values in times.items()}


def bench_vs_diffusers(repeats: int) -> None:
    from diffusers import PixArtTransformer2DModel

    from easyanimate_core.models.transformer import VideoTransformer

    theirs = PixArtTransformer2DModel(**TINY).eval()
    ours = VideoTransformer.from_config(TINY).eval()
    ours.load_state_dict(theirs.state_dict())
    video = VideoTransformer.from_config({**TINY, **HYBRID}).eval()
    video.load_state_dict(theirs.state_dict(), strict=False)
    x, t, enc = torch.randn(1, 4, 8, 8), torch.tensor([500]), torch.randn(1, 8, 32)
    cond = {"resolution": None, "aspect_ratio": None}
    with torch.inference_mode():
        diff = (ours(x[:, :, None], t, enc)[:, :, 0] - theirs(x, encoder_hidden_states=enc, timestep=t,
                                                              added_cond_kwargs=cond).sample).abs().max().item()
        medians = interleaved_medians({
            "diffusers": lambda: theirs(x, encoder_hidden_states=enc, timestep=t, added_cond_kwargs=cond),
            "ours": lambda: ours(x[:, :, None], t, enc),
            "ours+motion": lambda: video(x[:, :, None], t, enc),
        }, repeats)
    print(f"[1] tiny PixArt, 1 frame 8x8 latent, {TINY['num_layers']} blocks, width 64 (max |diff| {diff:.1e})")
    for name, value in medians.items():
        print(f"    {name:<12} {value * 1e3:7.3f} ms   {value / medians['diffusers']:.3f}x diffusers")


def bench_block_split(repeats: int) -> None:
    from easyanimate_core.models.transformer import VideoTransformer

    model = VideoTransformer.from_config({**TINY, **HYBRID}).eval()
    frames, h, w, b = 8, 8, 8, 1
    x = torch.randn(b, frames * h * w, 64)
    t6, _ = model.adaln_single(torch.tensor([500]), None, None, torch.float32)
    context = model.caption_projection(torch.randn(b, 8, 32))
    print(f"[2] per-block split, {frames} frames x {h}x{w} tokens, width 64")
    with torch.inference_mode():
        for index in (0, 1):
            block = model.transformer_blocks[index]
            motion = block.attn_temporal
            tokens = x.view(b * frames, h * w, 64)
            medians = interleaved_medians({
                "block": lambda block=block: block(x, t6, context, None, frames, h, w),
                "motion": lambda motion=motion, tokens=tokens: motion(tokens, frames, h, w),
            }, repeats)
            kinds = "+".join(a.mode for a in motion.temporal_transformer.transformer_blocks[0].attention_blocks)
            spatial = medians["block"] - medians["motion"]
            print(f"    block {index} ({kinds:<15}) total {medians['block'] * 1e3:7.3f} ms: spatial "
                  f"{spatial * 1e3:7.3f} ms ({spatial / medians['block']:.0%}), motion module "
                  f"{medians['motion'] * 1e3:7.3f} ms ({medians['motion'] / medians['block']:.0%})")


def global_memory(frames: int, h: int, w: int) -> dict:
    """Run in a fresh process: one hybrid motion module (temporal + global) over frames*h*w tokens."""
    from easyanimate_core.models.motion_module import MotionModule, motion_options

    opts = motion_options(HYBRID["motion_module_kwargs_odd"], "Vanilla")
    module = MotionModule(64, opts).eval()
    with torch.no_grad():
        module.temporal_transformer.proj_out.weight.normal_(0, 0.02)
    x = torch.randn(frames, h * w, 64)
    start = time.perf_counter()
    with torch.inference_mode():
        y = module(x, frames, h, w)
    seconds = time.perf_counter() - start
    assert torch.isfinite(y).all()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB -> MiB on Linux
    return {"tokens": frames * h * w, "peak_rss_mib": peak, "seconds": seconds,
            "dense_scores_mib": (frames * h * w) ** 2 * 4 * 2 / 2 ** 20}


def measure_global_memory(frames: int = 36, h: int = 32, w: int = 32) -> dict:
    out = subprocess.run([sys.executable, __file__, "--global-memory", str(frames), str(h), str(w)],
                         check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--global-memory", nargs=3, type=int, metavar=("FRAMES", "H", "W"))
    args = parser.parse_args()
    torch.set_num_threads(1)
    if args.global_memory:
        print(json.dumps(global_memory(*args.global_memory)))
        return
    bench_vs_diffusers(args.repeats)
    bench_block_split(args.repeats)
    m = measure_global_memory()
    print(f"[3] global attention over {m['tokens']:,} tokens (36 frames x 32 x 32, width 64): peak RSS "
          f"{m['peak_rss_mib']:.0f} MiB in {m['seconds']:.1f} s (dense scores would need {m['dense_scores_mib']:,.0f} MiB)")


if __name__ == "__main__":
    main()

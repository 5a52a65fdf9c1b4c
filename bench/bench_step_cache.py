"""Step cache trade-off, in one run (CPU, one thread, thread CPU time, runs interleaved per round):

1. the shipped demo model (models/vdit_default) on every held-out prompt of ``run.py demo-eval``
   at the settings it was made for (its generate.yaml: dpmpp_2m, 20 steps, CFG 5) - a trained
   model, so the change signal behaves as it does in use;
2. a real-width DiT: the v3 release config (hidden 1152 = 16 heads x 72, hybrid motion modules,
   U-ViT skips, 12 input channels) with random weights and ``--depth`` blocks, 25 dpmpp_2m steps
   with CFG 7 on ``--latent`` latents.

For each threshold: DiT calls skipped, end-to-end speedup of the sampling over the uncached run,
and the sampled latents against the uncached ones: PSNR (peak = the uncached latents' largest
magnitude) and the largest absolute difference. Threshold 0 runs the cache without ever skipping
(its overhead; the output is bit-identical). Quality in terms of what a clip shows is
``python training/run.py demo-eval --step-cache`` (the prompt reader's scores).

    python bench/bench_step_cache.py [--depth 4] [--latent 2x24x24] [--thresholds 0,0.2,0.3,0.4,0.5]
                                     [--rounds 1] [--skip-shipped]

The last line: ``step cache speedup X.XXx at default threshold (N of M DiT calls skipped)``
(the real-width DiT).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
torch.set_num_threads(1)

from easyanimate_core.sampling.options import SamplingOptions  # noqa: E402
from easyanimate_core.sampling.pipeline import denoise  # noqa: E402
from easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD, StepCache  # noqa: E402


def compare(run, thresholds: list[float], rounds: int) -> list[dict]:
    """``run(cache)`` -> latents, for no cache and every threshold, ``rounds`` times in turn; the
    fastest time of each is kept."""
    seconds = {key: math.inf for key in [None, *thresholds]}
    results = {}
    for _ in range(rounds):
        for key in seconds:
            cache = None if key is None else StepCache(key)
            began = time.thread_time()
            out = run(cache)
            seconds[key] = min(seconds[key], time.thread_time() - began)
            results[key] = (out, cache)
    ref = results[None][0]
    peak = float(ref.abs().max())
    rows = []
    for key in thresholds:
        out, cache = results[key]
        mse = float((out - ref).pow(2).mean())
        rows.append({"threshold": key, "skipped": cache.skipped, "calls": cache.calls,
                     "speedup": seconds[None] / seconds[key], "seconds": seconds[key],
                     "psnr": math.inf if mse == 0 else 10 * math.log10(peak ** 2 / mse),
                     "max_abs": float((out - ref).abs().max())})
    print(f"uncached: {seconds[None]:.1f} s; latents' largest magnitude {peak:.3g}")
    return rows


def print_table(rows: list[dict]) -> None:
    print("| threshold | DiT calls skipped | speedup | PSNR vs uncached (dB) | max abs diff |")
    print("|---|---|---|---|---|")
    for r in rows:
        psnr = "identical" if math.isinf(r["psnr"]) else f"{r['psnr']:.1f}"
        print(f"| {r['threshold']:g} | {r['skipped']} of {r['calls']} | {r['speedup']:.2f}x | {psnr} | "
              f"{r['max_abs']:.3g} |")


def shipped_model(thresholds, rounds):
    import yaml

    from training.demo.evaluate import held_out_prompts, load_components

    model = ROOT / "models" / "vdit_default"
    made_for = yaml.safe_load((model / "generate.yaml").read_text())
    parts = load_components(model, lora_strength=0.0)
    from easyanimate_core.sampling.shape_rules import latent_shape
    from easyanimate_core.sampling.pipeline import encode_prompts

    prompts = [scene.caption for scene, _ in held_out_prompts(1)]
    cond, uncond = encode_prompts(parts, prompts, made_for.get("negative", ""))
    latents = torch.zeros(latent_shape(parts.vae, made_for["frames"], made_for["width"], made_for["height"],
                                       len(prompts)))
    print(f"\n## Shipped model: {len(prompts)} held-out prompts, {tuple(latents.shape)} latents, "
          f"{made_for['sampler']} {made_for['steps']} steps, CFG {made_for['cfg']}, depth {parts.transformer.depth}")

    def run(cache):
        options = SamplingOptions(steps=made_for["steps"], cfg=made_for["cfg"], sampler=made_for["sampler"],
                                  seed=1234, step_cache=cache)
        return denoise(parts.transformer, latents, cond, uncond, options, scaling_factor=parts.vae.scaling_factor)

    print_table(compare(run, thresholds, rounds))


def real_width(thresholds, rounds, depth: int, latent: tuple, steps: int):
    from easyanimate_core.checkpoints.presets import TRANSFORMER_PRESETS
    from easyanimate_core.models.transformer import VideoTransformer

    torch.manual_seed(0)
    model = VideoTransformer(dict(TRANSFORMER_PRESETS["v3"], num_layers=depth)).eval()
    g = torch.Generator().manual_seed(1)
    cond = torch.randn(1, 120, model.options["caption_channels"], generator=g)
    uncond = torch.randn(1, 120, model.options["caption_channels"], generator=g)
    latents = torch.zeros(1, 4, *latent)
    frames, height, width = latent
    print(f"\n## Real-width DiT (v3 config, hidden {model.hidden_size}, depth {depth}, random weights): "
          f"latents {tuple(latents.shape)} (~{4 * frames - 3} frames of {8 * height}x{8 * width}), "
          f"dpmpp_2m {steps} steps, CFG 7")

    def run(cache):
        options = SamplingOptions(steps=steps, cfg=7.0, sampler="dpmpp_2m", seed=1, step_cache=cache)
        return denoise(model, latents, cond, uncond, options)

    return compare(run, thresholds, rounds)


def main():
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--depth", type=int, default=4, help="blocks of the real-width DiT (the release has 28)")
    parser.add_argument("--latent", default="2x24x24", help="latent frames x height x width of the real-width run")
    parser.add_argument("--steps", type=int, default=25)
    parser.add_argument("--thresholds", default=f"0,0.2,0.3,{DEFAULT_THRESHOLD:g},0.5")
    parser.add_argument("--rounds", type=int, default=1, help="interleaved repeats (the fastest counts)")
    parser.add_argument("--skip-shipped", action="store_true", help="only the real-width DiT")
    args = parser.parse_args()
    thresholds = sorted({float(t) for t in args.thresholds.split(",")} | {DEFAULT_THRESHOLD})
    if not args.skip_shipped:
        shipped_model(thresholds, args.rounds)
    rows = real_width(thresholds, args.rounds, args.depth, tuple(int(n) for n in args.latent.split("x")), args.steps)
    print_table(rows)
    default = next(r for r in rows if r["threshold"] == DEFAULT_THRESHOLD)
    print(f"step cache speedup {default['speedup']:.2f}x at default threshold "
          f"({default['skipped']} of {default['calls']} DiT calls skipped)")


if __name__ == "__main__":
    main()

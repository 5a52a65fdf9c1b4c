"""Training throughput and peak memory: gradient checkpointing and the pre-encoding cache.

    python bench/bench_train.py [--steps 6] [--size 128] [--frames 16] [--hidden 256] [--layers 4]

Runs the dit-motion trainer (motion modules trainable, base frozen) four times, each in a fresh
process so peak-memory figures do not leak between runs: gradient checkpointing off/on x cache
off/on. Prints steps/s (first step excluded: it pays one-off costs) and memory (CUDA: peak
allocated; CPU: the activation memory autograd keeps from forward to backward, measured with
saved-tensor hooks, i.e. what checkpointing trades for recompute; process RSS is too coarse on
CPU), then the ratios, all from one invocation. Models are random and small (see --hidden/--layers), data synthetic.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]


def dit_config(hidden: int, layers: int) -> dict:
    heads = hidden // 32
    motion = {"num_attention_heads": heads, "num_transformer_block": 1, "temporal_position_encoding": True,
              "temporal_position_encoding_max_len": 4096, "temporal_attention_dim_div": 1, "block_size": 1}
    return {"activation_fn": "gelu-approximate", "attention_bias": True, "attention_head_dim": 32,
            "caption_channels": 32, "cross_attention_dim": hidden, "in_channels": 4,
            "norm_elementwise_affine": False, "norm_eps": 1e-6, "norm_type": "ada_norm_single",
            "num_attention_heads": heads, "num_embeds_ada_norm": 1000, "num_layers": layers, "out_channels": 8,
            "patch_size": 2, "sample_size": 16, "basic_block_type": "global_motionmodule",
            "motion_module_type": "Vanilla", "enable_uvit": True,
            "motion_module_kwargs_even": {**motion, "attention_block_types": ["Temporal_Self", "Temporal_Self"]},
            "motion_module_kwargs_odd": {**motion, "attention_block_types": ["Temporal_Self", "Global_Self"]}}


def prepare(work: Path, args) -> Path:
    """Tiny VAE + T5 on disk, a synthetic video dataset and the trainer config."""
    import torch
    import yaml
    from train_helpers import make_dataset, write_models

    models = write_models(work / "models")
    data = make_dataset(work / "data", videos=4, images=0, frames=args.frames + 4, size=args.size)
    cfg = {"model": {"config": dit_config(args.hidden, args.layers), "trainable": ["attn_temporal"]},
           "vae": {"pretrained": str(models / "vae")}, "text": {"encoder": str(models)},
           "data": {"metadata": str(data), "batch_size": 1, "sample_size": args.size, "frames": args.frames,
                    "buckets": False},
           "train": {"steps": args.steps, "checkpoint_every": 0, "ema": False, "warmup_steps": 0,
                     "log_every": 1000}}
    path = work / "bench.yaml"
    path.write_text(yaml.safe_dump(cfg))
    del torch
    return path


def child(config: str, out_dir: str, checkpointing: bool, cache: str) -> None:
    """One measured run; prints one JSON line."""
    import torch

    torch.set_num_threads(1)
    from training import loop
    from training.train_dit import main

    times, saved = [], {"peak": 0}
    original = loop.train

    def pack(tensor):
        storage = tensor.untyped_storage()
        saved["live"][storage.data_ptr()] = storage.nbytes()
        saved["peak"] = max(saved["peak"], sum(saved["live"].values()))
        return tensor

    def timed_train(accelerator, cfg, stream, step_fn, **kw):
        def step(batch, i, generator):
            if not times and torch.cuda.is_available():
                torch.cuda.reset_peak_memory_stats()
            saved["live"] = {}
            start = time.perf_counter()
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                values = step_fn(batch, i, generator)
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            times.append(time.perf_counter() - start)
            return values
        return original(accelerator, cfg, stream, step, **kw)

    from training import train_dit
    train_dit.train = timed_train
    argv = ["--config", config, f"train.output_dir={out_dir}", f"train.gradient_checkpointing={checkpointing}",
            f"cache.dir={cache}"]
    main("dit-motion", argv)
    measured = times[1:] or times
    peak = (torch.cuda.max_memory_allocated() if torch.cuda.is_available() else saved["peak"]) / 2**20
    print(json.dumps({"steps_per_s": len(measured) / sum(measured), "peak_mb": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=6)
    parser.add_argument("--size", type=int, default=128)
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--layers", type=int, default=4)
    parser.add_argument("--child", nargs=4, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        config, out_dir, checkpointing, cache = args.child
        child(config, out_dir, checkpointing == "1", "" if cache == "-" else cache)
        return
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        config = prepare(work, args)
        results = {}
        for ckpt in (False, True):
            for cache in (False, True):
                # the cache is built by a first run; the measured run reads it (the point of a cache)
                cache_dir = str(work / "cache") if cache else "-"
                run = [sys.executable, __file__, "--child", str(config), str(work / "out"), "1" if ckpt else "0",
                       cache_dir]
                out = subprocess.run(run, env=env, capture_output=True, text=True, check=False)
                if out.returncode != 0:
                    sys.exit(f"bench run failed:\n{out.stderr[-3000:]}")
                results[(ckpt, cache)] = json.loads(out.stdout.strip().splitlines()[-1])
    import torch

    device = "CUDA " + torch.cuda.get_device_name() if torch.cuda.is_available() else "CPU, 1 thread"
    memory = "peak allocated" if torch.cuda.is_available() else "activations kept for backward"
    print(f"dit-motion training, {device}: DiT hidden {args.hidden} x {args.layers} layers, "
          f"{args.size}x{args.size} px, {args.frames} frames, batch 1, {args.steps} steps per run")
    print(f"{'grad ckpt':>9} {'cache':>6} {'steps/s':>9} {'memory MB':>10}   ({memory})")
    for (ckpt, cache), r in results.items():
        print(f"{'on' if ckpt else 'off':>9} {'on' if cache else 'off':>6} {r['steps_per_s']:9.3f} {r['peak_mb']:10.1f}")
    base = results[(False, False)]
    print("ratios vs (ckpt off, cache off):")
    for key, r in results.items():
        if key == (False, False):
            continue
        label = f"ckpt {'on' if key[0] else 'off'}, cache {'on' if key[1] else 'off'}"
        print(f"  {label:<22} speed x{r['steps_per_s'] / base['steps_per_s']:.2f}   "
              f"memory x{r['peak_mb'] / max(base['peak_mb'], 1e-9):.2f}")


if __name__ == "__main__":
    main()

"""Training step time with Adam's fused kernel against its per-tensor loop (training.loop.fused_adam).

    python bench/bench_optimizer.py [--steps 30] [--rounds 3]

The embedded default model's own DiT (with its motion modules) and VAE, built from
training/demo/configs/demo.yaml with random weights, on one CPU thread: a whole training step
(forward, backward, optimizer step) on demo-sized batches, the two optimizers taking turns in
each round so that both see the same machine load. Prints ms per step and the ratio.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def demo_models():
    from easyanimate_core.models.transformer import VideoTransformer
    from easyanimate_core.models.vae import VideoVAE

    stages = yaml.safe_load((ROOT / "training" / "demo" / "configs" / "demo.yaml").read_text())["stages"]
    dit = VideoTransformer.from_config({**stages["dit-image"]["model"]["config"],
                                        **stages["dit-motion"]["model"]["motion_config"]})
    vae = VideoVAE.from_config(dict(stages["vae"]["model"]["config"]))
    return dit, vae.to(memory_format=torch.channels_last_3d)


def dit_step(dit):
    x, t = torch.randn(4, 4, 4, 4, 4), torch.randint(0, 1000, (4,))
    text, mask = torch.randn(4, 20, 32), torch.ones(4, 20)
    return lambda: dit(x, t, text, mask).pow(2).mean()


def vae_step(vae):
    clips = torch.rand(8, 3, 8, 32, 32).mul(2).sub(1).contiguous(memory_format=torch.channels_last_3d)
    return lambda: (vae.decode(vae.encode(clips).mode()) - clips).abs().mean()


def time_steps(loss_fn, optimizer, steps: int) -> float:
    began = time.perf_counter()
    for _ in range(steps):
        loss_fn().backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    return (time.perf_counter() - began) / steps * 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)
    dit, vae = demo_models()
    cases = [("DiT, AdamW", dit, dit_step(dit), torch.optim.AdamW),
             ("VAE, Adam", vae, vae_step(vae), torch.optim.Adam)]
    for name, model, loss_fn, kind in cases:
        params = list(model.parameters())
        optimizers = {"per-tensor": kind(params, lr=1e-5, fused=False), "fused": kind(params, lr=1e-5, fused=True)}
        times = {label: [] for label in optimizers}
        for _ in range(args.rounds):
            for label, optimizer in optimizers.items():
                time_steps(loss_fn, optimizer, 2)  # warm-up: allocations, optimizer state
                times[label].append(time_steps(loss_fn, optimizer, args.steps))
        best = {label: min(values) for label, values in times.items()}
        print(f"{name} ({sum(p.numel() for p in params) / 1e6:.2f} M parameters in {len(params)} tensors): "
              f"per-tensor {best['per-tensor']:.1f} ms/step, fused {best['fused']:.1f} ms/step, "
              f"ratio {best['per-tensor'] / best['fused']:.2f}x")


if __name__ == "__main__":
    main()

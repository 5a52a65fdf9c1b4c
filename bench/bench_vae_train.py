"""VAE training step time: channels-last 3D activations and weights against the default layout.

    python bench/bench_vae_train.py [--config models/vdit_default/vae] [--batch 8] [--frames 8] [--size 32]

One VAE trainer step (encode -> posterior sample -> decode -> L1 + L2 -> backward -> Adam) on
random video, for the two memory layouts, interleaved round by round so machine noise hits both
alike; one thread (see the developers' guide). Prints the best ms/step of each and their ratio,
and checks the two layouts give the same loss. The trainer (training/train_vae.py) uses
channels-last.
"""

from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def main() -> None:
    import torch

    from easyanimate_core.models.vae import VideoVAE, load_vae

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--config", default=str(ROOT / "models" / "vdit_default" / "vae"),
                        help="a vae/ folder whose architecture is timed (weights are re-initialised)")
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", type=int, default=32)
    parser.add_argument("--rounds", type=int, default=6)
    args = parser.parse_args()
    torch.set_num_threads(1)
    torch.manual_seed(0)

    base = VideoVAE.from_config(load_vae(args.config, dtype=torch.float32).config)
    video = torch.rand(args.batch, 3, args.frames, args.size, args.size) * 2 - 1
    layouts = {"default": torch.contiguous_format, "channels_last_3d": torch.channels_last_3d}
    models = {name: copy.deepcopy(base).to(memory_format=fmt) for name, fmt in layouts.items()}
    optimizers = {name: torch.optim.Adam(m.parameters(), lr=1e-4) for name, m in models.items()}
    times = {name: [] for name in layouts}
    losses = {}

    def step(name):
        vae, x = models[name], video.contiguous(memory_format=layouts[name])
        began = time.perf_counter()
        recon = vae.decode(vae.encode(x).sample(torch.Generator().manual_seed(0)))
        loss = (recon - x).abs().mean() + (recon - x).pow(2).mean()
        loss.backward()
        optimizers[name].step()
        optimizers[name].zero_grad(set_to_none=True)
        times[name].append(time.perf_counter() - began)
        return float(loss.detach())

    for round_ in range(args.rounds):
        for name in layouts:
            loss = step(name)
            if round_ == 0:
                losses[name] = loss  # same weights, same input: the layouts must agree
    gap = abs(losses["default"] - losses["channels_last_3d"])
    assert gap < 1e-4 * max(1.0, abs(losses["default"])), f"layouts disagree: {losses}"
    best = {name: 1000 * min(t[1:]) for name, t in times.items()}  # first step pays one-off costs
    print(f"VAE training step, batch {args.batch} x {args.frames} frames x {args.size}x{args.size}, "
          f"1 thread, {args.rounds - 1} timed rounds (first-step losses differ by {gap:.1e})")
    for name, ms in best.items():
        print(f"  {name:<17} {ms:8.1f} ms/step")
    print(f"  channels-last speed-up: x{best['default'] / best['channels_last_3d']:.2f}")


if __name__ == "__main__":
    main()

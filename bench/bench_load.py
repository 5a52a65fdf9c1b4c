"""Fresh-process load time of a real-size DiT (PixArt-XL-2 width and depth, fp16 weights written
once to a cache folder): import time and load_transformer time, each in a new interpreter (what
a user pays once per ComfyUI start or CLI run), against diffusers' PixArtTransformer2DModel on
the same folder when diffusers is installed. Medians of interleaved runs; one torch thread.

    python bench/bench_load.py [--runs 5] [--cache DIR] [--baseline OTHER_CHECKOUT_ROOT]

``--baseline`` times another checkout's core too (e.g. the commit before a change), in the same
run, so the figures compare on the same machine state."""

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

CHILD = r"""
import json, sys, time
root, kind, folder, motion = sys.argv[1:5]
sys.path.insert(0, root)
import torch
torch.set_num_threads(1)
start = time.perf_counter()
if kind == "diffusers":
    from diffusers import PixArtTransformer2DModel
else:
    from easyanimate_core.models.transformer import load_transformer
imported = time.perf_counter()
if kind == "diffusers":
    PixArtTransformer2DModel.from_pretrained(folder, torch_dtype=torch.float16)
else:
    load_transformer(folder, motion_module=motion or None)
done = time.perf_counter()
print(json.dumps({"import": imported - start, "load": done - imported,
                  "dynamo": "torch._dynamo" in sys.modules, "sympy": "sympy" in sys.modules}))
"""


def write_models(cache: Path) -> tuple[Path, Path]:
    """A PixArt-XL-2-512 base folder and a v3 (hybrid) motion module for it, zero weights in fp16."""
    import torch

    sys.path.insert(0, str(ROOT))
    from easyanimate_core.checkpoints import TRANSFORMER_PRESETS, save_state_dict
    from easyanimate_core.checkpoints.presets import MOTION_CONFIG_KEYS
    from easyanimate_core.models.motion_module import save_motion_module
    from easyanimate_core.models.transformer import VideoTransformer

    base, motion = cache / "pixart_xl_2_512", cache / "v3_motion_module.safetensors"
    if (base / "config.json").is_file() and motion.is_file():
        return base, motion
    base.mkdir(parents=True, exist_ok=True)
    config = {**TRANSFORMER_PRESETS["v3"], "in_channels": 4}
    with torch.device("meta"):
        shapes = VideoTransformer(config).state_dict()
    zeros = {k: torch.zeros(v.shape, dtype=torch.float16) for k, v in shapes.items()}
    save_state_dict(base / "diffusion_pytorch_model.safetensors", {k: v for k, v in zeros.items() if "attn_temporal" not in k})
    save_motion_module(motion, zeros, config)
    pixart = {k: v for k, v in config.items() if k not in MOTION_CONFIG_KEYS and k not in ("patch_3d", "fake_3d",
              "time_position_encoding_before_transformer", "enable_uvit")}
    (base / "config.json").write_text(json.dumps({"_class_name": "PixArtTransformer2DModel", **pixart}, indent=1))
    return base, motion


def run(root: Path, kind: str, folder: Path, motion: Path | None) -> dict:
    out = subprocess.run([sys.executable, "-c", CHILD, str(root), kind, str(folder), str(motion or "")],
                         capture_output=True, text=True, check=True, cwd="/")
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--cache", default=str(Path(tempfile.gettempdir()) / "vdit_bench_load"))
    parser.add_argument("--baseline", default=None, help="root of another checkout to time as well")
    args = parser.parse_args()
    base, motion = write_models(Path(args.cache))
    cases = {"this checkout: PixArt base": (ROOT, "ours", base, None),
             "this checkout: base + v3 motion module": (ROOT, "ours", base, motion)}
    if args.baseline:
        cases["baseline: PixArt base"] = (Path(args.baseline), "ours", base, None)
        cases["baseline: base + v3 motion module"] = (Path(args.baseline), "ours", base, motion)
    try:
        import diffusers  # noqa: F401

        cases["diffusers PixArtTransformer2DModel"] = (ROOT, "diffusers", base, None)
    except ImportError:
        pass
    results = {name: [] for name in cases}
    for _ in range(args.runs):  # interleaved, so drift hits every case alike
        for name, case in cases.items():
            results[name].append(run(*case))
    for name, runs in results.items():
        load = statistics.median(r["load"] for r in runs)
        imported = statistics.median(r["import"] for r in runs)
        print(f"{name:42s} load {load:6.3f} s  (import {imported:5.2f} s; torch._dynamo imported: "
              f"{runs[-1]['dynamo']}, sympy: {runs[-1]['sympy']})")


if __name__ == "__main__":
    main()

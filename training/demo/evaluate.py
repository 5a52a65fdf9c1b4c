"""The demo model's quality score: does a generated clip show what its prompt says?

    python training/run.py demo-eval [--model models/vdit_default] [--steps 20] [--cfg 5] [--step-cache] ...

1. Prompt following on held-out combinations: every held-out (colour, shape, motion) triple of
   :func:`world.held_out_split` on every background - captions never seen in training - is
   generated (``--seeds`` clips each, at the model's size: 16 frames of 32x32 for the default) and read back with the computer-vision
   reader (:func:`analysis.read_clip`); accuracy per attribute and for all four at once.
2. VAE reconstruction PSNR (dB, pixels in [0, 1]) on renders of the held-out scenes, and the
   slice-seam metric (:func:`seam_ratio`: frame change across the 8-frame slice boundary over the
   median change inside slices; the clean renders score about 1) for the published decode and the
   blended one.
3. The MotionLoRA: the mean horizontal centroid velocity (pixels per frame, + is rightwards) of
   the generated clips without and with the LoRA. When the camera pans left the scene drifts
   right, so a ``pan_left`` LoRA should raise it (``pan_right`` lower it).

Prints a Markdown table (also written next to the JSON results with ``--output``).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

TARGETS = {"color": 0.90, "motion": 0.90, "shape": 0.80, "psnr": 30.0}


def held_out_prompts(seeds: int, limit: int = 0) -> list[tuple]:
    """(scene, seed) pairs: every held-out scene (or the first ``limit``) ``seeds`` times."""
    from .world import held_out_split

    _, held = held_out_split(seed=0)
    held = held[:limit] if limit else held
    return [(scene, seed) for seed in range(seeds) for scene in held]


def load_components(model: Path, lora_strength: float = 0.0, lora: Path | None = None):
    from easyanimate_core.models.text_encoder import TextEncoder
    from easyanimate_core.models.transformer import load_transformer
    from easyanimate_core.models.vae import load_vae
    from easyanimate_core.sampling.pipeline import Components

    transformer = load_transformer(model / "transformer", dtype=torch.float32)
    if lora_strength:
        from easyanimate_core.models.lora import apply_loras, linear_layers, load_lora

        layers = linear_layers(transformer)
        apply_loras(layers, [(load_lora(str(lora), layers, kind="motion_lora"), lora_strength)])
    vae = load_vae(model / "vae", dtype=torch.float32)
    text = TextEncoder.load(str(model / "text_encoder"), tokenizer_path=str(model / "tokenizer"))
    return Components(transformer.eval(), vae.eval(), text)


def generate_clips(components, prompts: list[str], seed: int, steps: int, cfg: float, sampler: str,
                   frames: int = 16, size: int = 32, seam: str = "none", batch: int = 27,
                   step_cache=None) -> np.ndarray:
    """(N, F, H, W, 3) uint8 clips, generated ``batch`` prompts at a time (``step_cache``: a
    :class:`~easyanimate_core.sampling.step_cache.StepCache` or None)."""
    from easyanimate_core.sampling.options import SamplingOptions
    from easyanimate_core.sampling.pipeline import generate

    out = []
    for start in range(0, len(prompts), batch):
        chunk = prompts[start:start + batch]
        with torch.no_grad():
            options = SamplingOptions(steps=steps, cfg=cfg, sampler=sampler, seed=seed + start, step_cache=step_cache)
            video = generate(components, chunk, "", options, width=size, height=size, frames=frames, seam=seam)
        out.append((video.permute(0, 2, 3, 4, 1).clamp(0, 1) * 255).round().to(torch.uint8).numpy())
    return np.concatenate(out)


def prompt_scores(clips: np.ndarray, scenes: list) -> dict:
    from .analysis import read_clip
    from .world import SHAPES

    hits = {"color": 0, "shape": 0, "motion": 0, "background": 0, "all": 0}
    # shape accuracy per kind: one kind can fail while the mean looks fair (squares drawn round)
    kind_hits, kind_clips = dict.fromkeys(SHAPES, 0), dict.fromkeys(SHAPES, 0)
    readings = []
    for clip, scene in zip(clips, scenes):
        r = read_clip(clip)
        ok = {"color": r.color == scene.color, "shape": r.shape == scene.shape,
              "motion": r.motion == scene.motion, "background": r.background == scene.background}
        ok["all"] = all(ok.values())
        for key, value in ok.items():
            hits[key] += int(value)
        kind_hits[scene.shape] += int(ok["shape"])
        kind_clips[scene.shape] += 1
        readings.append({"prompt": scene.caption, "read": [r.color, r.shape, r.motion, r.background]})
    n = len(scenes)
    return {"accuracy": {k: v / n for k, v in hits.items()},
            "shape_by_kind": {k: kind_hits[k] / kind_clips[k] for k in SHAPES if kind_clips[k]},
            "clips": n, "readings": readings}


def horizontal_velocity(clips: np.ndarray) -> float:
    """Mean centroid x velocity (px / frame) of the foreground over clips (the reader's mask)."""
    from .analysis import foreground

    speeds = []
    for clip in clips:
        xs = [x for x, _ in foreground(clip).centroids]
        if len(xs) >= 2:
            speeds.append((xs[-1] - xs[0]) / (len(xs) - 1))
    return float(np.mean(speeds)) if speeds else float("nan")


def vae_scores(vae, scenes: list, frames: int = 16, size: int = 32) -> dict:
    from easyanimate_core.models.vae import seam_ratio

    from .world import render_scene

    clips = torch.stack([torch.from_numpy(render_scene(s, frames, size, size, seed=777)) for s in scenes])
    video = clips.permute(0, 4, 1, 2, 3).float() / 127.5 - 1
    boundaries = list(range(vae.mini_batch_encoder, frames, vae.mini_batch_encoder))
    out = {"clips": len(scenes)}
    with torch.no_grad():
        latents = vae.encode(video).mode()
        for seam in ("none", "blend"):
            recon = vae.decode(latents, seam=seam).clamp(-1, 1)
            mse = float(((recon - video) / 2).pow(2).mean())
            out[f"psnr_{seam}"] = 10 * np.log10(1.0 / mse)
            out[f"seam_{seam}"] = seam_ratio(recon, boundaries) if boundaries else float("nan")
            if seam == "none":  # the reader on reconstructions: what the VAE keeps (a guide, not a bound:
                # a DiT can draw shapes more cleanly than the VAE reconstructs them)
                frames = ((recon + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 4, 1)
                read = prompt_scores(frames.numpy(), scenes)
                out["reader_on_reconstructions"] = read["accuracy"]
                out["reconstructions_shape_by_kind"] = read["shape_by_kind"]
    out["seam_ground_truth"] = seam_ratio(video, boundaries) if boundaries else float("nan")
    return out


def table(results: dict) -> str:
    acc = results["prompts"]["accuracy"]
    v = results["vae"]
    by_kind = lambda shares: " / ".join(f"{100 * shares[k]:.0f} %" for k in shares)
    kinds = " / ".join(results["prompts"]["shape_by_kind"])
    rows = [("Colour accuracy (held-out prompts)", f"{100 * acc['color']:.1f} %", ">= 90 %"),
            ("Shape accuracy (held-out prompts)", f"{100 * acc['shape']:.1f} %", ">= 80 %"),
            (f"Shape accuracy by kind: {kinds}", by_kind(results["prompts"]["shape_by_kind"]), ""),
            ("Direction accuracy (held-out prompts)", f"{100 * acc['motion']:.1f} %", ">= 90 %"),
            ("Background accuracy (held-out prompts)", f"{100 * acc['background']:.1f} %", ""),
            ("All four attributes right", f"{100 * acc['all']:.1f} %", ""),
            ("VAE PSNR, held-out clips (published decode)", f"{v['psnr_none']:.2f} dB", ">= 30 dB"),
            ("VAE PSNR, held-out clips (blended seams)", f"{v['psnr_blend']:.2f} dB", ""),
            ("Slice seam ratio: decode / blended / clean render",
             f"{v['seam_none']:.2f} / {v['seam_blend']:.2f} / {v['seam_ground_truth']:.2f}", "~1"),
            ("Reader on VAE reconstructions: colour / shape / direction",
             " / ".join(f"{100 * v['reader_on_reconstructions'][k]:.0f} %" for k in ("color", "shape", "motion")),
             "reference"),
            (f"Reader on VAE reconstructions, shape by kind: {kinds}", by_kind(v["reconstructions_shape_by_kind"]),
             "reference")]
    if "lora" in results:
        lora = results["lora"]
        expect = {"pan_left": "with > without", "pan_right": "with < without"}.get(lora["name"], "")
        rows.append((f"MotionLoRA {lora['name']}: x velocity without / with (px/frame)",
                     f"{lora['velocity_without']:+.2f} / {lora['velocity_with']:+.2f}", expect))
    s = results["settings"]
    lines = [(f"Held-out prompts: {results['prompts']['clips']} clips ({s['sampler']}, {s['steps']} steps, "
              f"CFG {s['cfg']}, {s['frames']} frames {s['size']}x{s['size']}, seams {s['seam']}); "
              f"generation {s['seconds']:.1f} s" + (f"; {s['step_cache']}" if s.get("step_cache") else "")),
             "", "| metric | value | target |", "|---|---|---|"]
    lines += [f"| {a} | {b} | {c} |" for a, b, c in rows]
    return "\n".join(lines)


def evaluate_model(model, output=None, steps: int = 20, cfg: float = 5.0, sampler: str = "dpmpp_2m",
                   seeds: int = 1, lora_strength: float = 1.0, frames: int = 16, size: int = 32,
                   seam: str = "none", videos: int = 0, limit: int = 0, step_cache: float | None = None) -> dict:
    """Score a model folder; ``output`` (JSON path) also gets ``<stem>.md`` with the table and,
    with ``videos`` > 0, that many generated clips as mp4 for a look. ``limit`` scores only the
    first held-out scenes (smoke tests). ``step_cache``: sample with the step cache at this
    threshold (None: without)."""
    from easyanimate_core.sampling.step_cache import StepCache

    cache = None if step_cache is None else StepCache(step_cache)  # a bad threshold fails before any work
    model = Path(model)
    torch.manual_seed(0)
    pairs = held_out_prompts(seeds, limit)
    scenes = [scene for scene, _ in pairs]
    prompts = [scene.caption for scene in scenes]
    components = load_components(model)
    began = time.perf_counter()
    clips = generate_clips(components, prompts, 1234, steps, cfg, sampler, frames, size, seam, step_cache=cache)
    seconds = time.perf_counter() - began
    results = {"model": str(model),
               "settings": {"steps": steps, "cfg": cfg, "sampler": sampler, "seeds": seeds, "frames": frames,
                            "size": size, "seam": seam, "seconds": seconds,
                            "step_cache": None if cache is None else cache.summary()},
               "prompts": prompt_scores(clips, scenes),
               "vae": vae_scores(components.vae, sorted(set(scenes), key=lambda s: s.caption), frames, size)}
    loras = sorted((model / "motion_lora").glob("*.safetensors")) if (model / "motion_lora").is_dir() else []
    if loras and lora_strength:
        with_lora = load_components(model, lora_strength, loras[0])
        lora_clips = generate_clips(with_lora, prompts, 1234, steps, cfg, sampler, frames, size, seam,
                                    step_cache=None if cache is None else StepCache(step_cache))
        results["lora"] = {"name": loras[0].stem, "strength": lora_strength,
                           "velocity_without": horizontal_velocity(clips),
                           "velocity_with": horizontal_velocity(lora_clips)}
    text = table(results)
    print(text)
    if output is not None:
        output = Path(output)
        output.parent.mkdir(parents=True, exist_ok=True)
        output.write_text(json.dumps(results, indent=1))
        output.with_suffix(".md").write_text(text + "\n")
        if videos:
            from easyanimate_core.video_io import write_video

            for k in range(min(videos, len(clips))):
                write_video(output.parent / f"eval_{k:02d}.mp4", clips[k], fps=8)
    return results


def main(command: str, argv) -> int:
    from easyanimate_core.models.vae import SEAM_OPTIONS
    from easyanimate_core.sampling.step_cache import DEFAULT_THRESHOLD

    parser = argparse.ArgumentParser(prog=f"run.py {command}", description=__doc__.split("\n\n")[0])
    parser.add_argument("--model", default=str(Path(__file__).resolve().parents[2] / "models" / "vdit_default"),
                        help="model folder (default: the shipped demo model)")
    parser.add_argument("--steps", type=int, default=None, help="sampling steps (default: the model's generate.yaml)")
    parser.add_argument("--cfg", type=float, default=None, help="guidance scale (default: generate.yaml)")
    parser.add_argument("--sampler", default=None, help="sampler (default: generate.yaml)")
    parser.add_argument("--seam", default=None, choices=SEAM_OPTIONS,
                        help="slice seams of the decode (default: generate.yaml)")
    parser.add_argument("--seeds", type=int, default=1, help="clips per held-out prompt")
    parser.add_argument("--lora-strength", type=float, default=1.0, help="0 skips the MotionLoRA check")
    parser.add_argument("--output", default=None, help="results JSON (the table goes next to it as .md)")
    parser.add_argument("--videos", type=int, default=0, help="also write this many generated clips")
    parser.add_argument("--step-cache", type=float, nargs="?", const=DEFAULT_THRESHOLD, default=None,
                        metavar="THRESHOLD", help=f"sample with the step cache (bare flag: {DEFAULT_THRESHOLD})")
    args = parser.parse_args(list(argv))
    torch.set_num_threads(1)  # the machine is shared; more threads only spin
    evaluate_model(args.model, args.output, seeds=args.seeds, lora_strength=args.lora_strength, videos=args.videos,
                   step_cache=args.step_cache,
                   **settings_for(Path(args.model), args.steps, args.cfg, args.sampler, args.seam))
    return 0


def settings_for(model: Path, steps: int | None = None, cfg: float | None = None, sampler: str | None = None,
                 seam: str | None = None) -> dict:
    """Sampling settings for :func:`evaluate_model`: those given, else the model's generate.yaml."""
    from training.generate import model_settings

    made_for = model_settings(model)
    return {"steps": steps or made_for.get("steps", 20),
            "cfg": cfg if cfg is not None else made_for.get("cfg", 5.0),
            "sampler": sampler or made_for.get("sampler", "dpmpp_2m"),
            "frames": made_for.get("frames", 16), "size": made_for.get("width", 32),
            "seam": seam or made_for.get("seam", "none")}

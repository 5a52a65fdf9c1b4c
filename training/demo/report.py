"""The embedded model's page, docs/demo_model.md, written from the records it quotes.

    python -m training.demo.report              # rewrite docs/demo_model.md from the two records
    python -m training.demo.report --evaluate   # first score the model again (minutes on a CPU)
    python -m training.demo.report --strip      # also redraw docs/demo_strip.png (the README's frames)

Every number on the page comes from a record, so the page cannot drift from the model:
``models/vdit_default/demo_provenance.json`` (what ``demo-train`` wrote: the world, each stage's
settings and time) and ``docs/demo_model_eval.json`` (what ``demo-eval`` measured on the shipped
model, six clips per held-out prompt). tests/test_repo_hygiene.py checks that the committed page
equals :func:`render` of the committed records.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
MODEL = "models/vdit_default"                       # repo-relative: the records name no machine path
PROVENANCE = ROOT / MODEL / "demo_provenance.json"
EVALUATION = ROOT / "docs" / "demo_model_eval.json"
PAGE = ROOT / "docs" / "demo_model.md"
STRIP = ROOT / "docs" / "demo_strip.png"
STRIP_PROMPT = "a red circle moves to the left on a gray background"
EVAL_SEEDS = 6

# which settings of each stage the page lists, in this order
STAGE_COLUMNS = (("steps", "train", "steps"), ("lr", "train", "lr"), ("batch", "data", "batch_size"))

INTRO = """\
`models/vdit_default/` is a small slice VAE, a video DiT with v3 hybrid motion modules, a
`pan_left` MotionLoRA and a tiny T5 with its own tokenizer. It was trained from scratch by this
repository's chain (`python training/run.py demo-train`, settings in
`training/demo/configs/demo.yaml`) on a synthetic world of coloured shapes moving over plain
backgrounds (`training/demo/world.py`): raw videos, preprocessing, an image VAE inflated to video,
VAE stages 1 and 2, DiT stages 1 to 3 and the MotionLoRA. It generates 32x32, 16-frame clips on a
CPU in about a second, so the whole toolkit can be tried before any multi-GB download."""

EVALUATOR = """\
`python training/run.py demo-eval` generates a clip for every held-out (colour, shape, motion)
combination on every background (captions training never saw), reads each clip back with simple
computer vision (`training/demo/analysis.py`: background from the border, colour by nearest
palette entry, direction from the centroid track, shape by best overlap with the world's shapes)
and scores the VAE's reconstructions of renders of the same scenes. The reader's rows on
reconstructions are a reference for what the VAE keeps, not a ceiling: the DiT can draw shapes more
cleanly than the VAE reconstructs them."""

LESSONS = """\
What mattered, in short (the runs behind each point, with their numbers as measured then, are in
[demo_model_history.md](demo_model_history.md)):

- **Latent size at 32x32.** The released 8x spatial VAE leaves 4x4 latents that round squares; its
  reconstructions keep under 80 % of shapes before any DiT draws one. The 4x VAE (8x8 latents, DiT
  at patch 2, the same 16 tokens per latent frame) is what met the shape target.
- **Direction is learnt late, in DiT stage 3.** Scores stay at chance for thousands of steps and
  then rise quickly; runs stopped early read as failures. In the same wall time, batch 8 and 16
  learnt it better than batch 4 (batch 32 got too few steps); the seed moves it more than most
  settings do.
- **The VAE**: starting as an image autoencoder and inflating it to video, a larger world, a cosine
  learning-rate decay, clips at two strides and an edge term on the error's spatial gradient each
  added PSNR; a GAN term and bf16 autocast did not pay on this CPU.
- **Sampling settings do not repair a model**: other samplers, more steps or other CFG scales
  moved scores within the seed spread or lower.
- The chain is deterministic: a fresh `demo-train` rebuilt the shipped run bit for bit as far as
  it was run (VAE, DiT stages 1-2 and stage 3's first 1000 steps), and a resumed stage ends with
  the weights of an uninterrupted one."""


def _seconds(value: float) -> str:
    return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"


def _setting(config: dict, section: str, key: str) -> str:
    value = config.get(section, {}).get(key)
    return "" if value is None else f"{value:g}" if isinstance(value, float) else str(value)


def made(provenance: dict) -> str:
    world = provenance["world"]
    seconds = provenance["stage_seconds"]
    configs = provenance["stage_configs"]
    lines = [f"Made by `{provenance['made_by']}` on {provenance['date']} (seed {provenance['seed']}); "
             f"weights stored in {provenance['stored_dtype']}.",
             "",
             f"World: {world['videos']} videos of {world['scenes_per_video']} scenes, "
             f"{world['frames_per_scene'][0]}-{world['frames_per_scene'][1]} frames per scene, "
             f"{world['size']}x{world['size']} at {world['fps']} fps.",
             "",
             "| stage | time | " + " | ".join(name for name, _, _ in STAGE_COLUMNS) + " |",
             "|---|---|" + "---|" * len(STAGE_COLUMNS)]
    for stage, value in seconds.items():
        config = configs.get(stage, {})
        cells = [_setting(config, section, key) for _, section, key in STAGE_COLUMNS]
        lines.append(f"| {stage} | {_seconds(value)} | " + " | ".join(cells) + " |")
    total = sum(seconds.values())
    lines += ["", f"All stages: {total:.0f} s ({total / 60:.0f} min) on a 2-core CPU, training stages as two "
              "data-parallel processes (batch sizes are per process). DiT stage 3 (`dit-full`) ran in three "
              "resumed pieces; its time is their wall time, less the evaluations run between them."]
    return "\n".join(lines)


def render(provenance: dict, evaluation: dict) -> str:
    """The page for these two records (what the test compares with the committed file)."""
    from .evaluate import table

    settings = evaluation["settings"]
    scores = [f"Scored with `demo-eval --seeds {settings['seeds']}` on `{evaluation['model']}` "
              f"({settings['seeds']} clips per held-out prompt):", "", table(evaluation)]
    sections = [
        "<!-- Written by `python -m training.demo.report` from models/vdit_default/demo_provenance.json "
        "and docs/demo_model_eval.json: edit those or training/demo/report.py, not this file. -->",
        "# The embedded demo model", INTRO,
        "## How it scores", EVALUATOR, "\n".join(scores),
        "## How it was made", made(provenance),
        "## Reproduce it",
        "```bash\npython training/run.py demo-train                       # about an hour on 2 cores; "
        "resumes finished stages\npython training/run.py demo-eval --seeds 6 --model models/vdit_default\n"
        "python -m training.demo.report --evaluate                 # refresh this page's scores\n```\n\n"
        "`training/demo/configs/demo_30min.yaml` is a 30-minute chain with the released 8x VAE; it misses "
        "the shape target (see What we learned).",
        "## What we learned", LESSONS]
    return "\n\n".join(sections) + "\n"


def evaluate() -> dict:
    """Score the shipped model as demo-eval does, at its generate.yaml settings."""
    import torch

    from .evaluate import evaluate_model, settings_for

    torch.set_num_threads(1)
    results = evaluate_model(ROOT / MODEL, seeds=EVAL_SEEDS, **settings_for(ROOT / MODEL))
    results["model"] = MODEL
    return results


def draw_strip(path: Path = STRIP, every: int = 2, scale: int = 4, gap: int = 4) -> None:
    """Every ``every``-th frame of the generate CLI's clip for STRIP_PROMPT, side by side."""
    from PIL import Image

    from easyanimate_core.video_io import read_video

    with tempfile.TemporaryDirectory() as scratch:
        clip = Path(scratch) / "strip.mp4"
        subprocess.run([sys.executable, str(ROOT / "training" / "run.py"), "generate", "--prompt", STRIP_PROMPT,
                        "--output", str(clip)], check=True, cwd=ROOT)
        frames, _ = read_video(clip)
    tiles = [Image.fromarray(frame).resize((frame.shape[1] * scale, frame.shape[0] * scale), Image.NEAREST)
             for frame in frames[::every]]
    width, height = tiles[0].size
    strip = Image.new("RGB", (len(tiles) * (width + gap) - gap, height), (255, 255, 255))
    for k, tile in enumerate(tiles):
        strip.paste(tile, (k * (width + gap), 0))
    strip.save(path, optimize=True)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m training.demo.report", description=__doc__.split("\n\n")[0])
    parser.add_argument("--evaluate", action="store_true", help=f"score the model again into {EVALUATION.name}")
    parser.add_argument("--strip", action="store_true", help=f"redraw {STRIP.name} with the generate CLI")
    args = parser.parse_args(argv)
    PAGE.parent.mkdir(parents=True, exist_ok=True)
    if args.evaluate:
        EVALUATION.write_text(json.dumps(evaluate(), indent=1) + "\n")
    if args.strip:
        draw_strip()
    PAGE.write_text(render(json.loads(PROVENANCE.read_text()), json.loads(EVALUATION.read_text())))
    print(f"wrote {PAGE.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A user's journey on a tiny folder: source videos with caption sidecars -> `preprocess all` at its
defaults -> a few DiT steps on the metadata it wrote -> `generate` from the trained transformer.
Each stage's output is checked to be what the next one reads, the clips and videos with simple
computer vision (where the texture went between frames, which colour it is)."""

import json
import math
from pathlib import Path

import numpy as np
from synthetic_videos import write_scenes
from tiny_models import save_dit
from train_helpers import dit_yaml, losses, write_models

from easyanimate_core.video_io import probe_video, read_video
from training.preprocess import cli


def horizontal_shift(first: np.ndarray, later: np.ndarray, most: int = 10) -> int:
    """The whole-pixel shift (positive: to the right) that best maps ``first`` onto ``later``."""
    a, b = first.astype(np.float32), later.astype(np.float32)
    width = a.shape[1]

    def error(d):
        return np.abs(b[:, d:] - a[:, :width - d]).mean() if d >= 0 else np.abs(b[:, :d] - a[:, -d:]).mean()

    return min(range(-most, most + 1), key=error)


def test_preprocess_then_train_then_generate(tmp_path):
    sources = tmp_path / "sources"
    # two sources, 32x32 at 8 fps: a moving and a still scene, then one moving scene
    write_scenes(sources / "street.mp4", [30, 30], fps=8, size=(32, 32), speeds=[0.6, 0.0], seed=1)
    write_scenes(sources / "field.mp4", [28], fps=8, size=(32, 32), speeds=[0.5], seed=2)
    (sources / "street.txt").write_text("a red texture slides to the right")
    (sources / "field.txt").write_text("a green texture slides to the right")

    data = tmp_path / "data"
    assert cli.main("preprocess", ["all", "--input", str(sources), "--workdir", str(data)]) == 0
    rows = json.loads((data / "metadata.json").read_text())
    assert sorted(Path(r["file_path"]).name for r in rows) == ["field-Scene-001.mp4", "street-Scene-001.mp4"]
    for row in rows:  # every row points at a real clip the trainer can read, with its caption
        info = probe_video(data / row["file_path"])
        assert (info.num_frames, info.width, info.height) == (row["num_frames"], row["width"], row["height"])
        assert row["type"] == "video" and row["text"].endswith("slides to the right")
        clip, _ = read_video(data / row["file_path"])
        speed = 0.6 if Path(row["file_path"]).name.startswith("street") else 0.5  # px per frame, as written
        k = 10
        shifts = [horizontal_shift(clip[i], clip[i + k]) for i in range(0, len(clip) - k, 4)]
        # the window slides right over the texture (pan_frames), so what it shows moves left
        assert all(abs(d + speed * k) <= 1 for d in shifts), (row["file_path"], shifts)
        red, green, blue = clip.reshape(-1, 3).mean(axis=0)
        assert red > 1.5 * max(green, blue), (row["file_path"], red, green, blue)  # the scene's red tint

    models = write_models(tmp_path / "models")
    untrained = save_dit(tmp_path / "untrained", in_channels=4)
    run = tmp_path / "run"
    config = dit_yaml(tmp_path / "dit.yaml", models, data / "metadata.json", run, model={"pretrained": str(untrained)},
                      data={"types": "video"}, train={"steps": 2, "ema": False})
    from training.train_dit import main as train

    assert train("dit-full", ["--config", config]) == 0
    trained = losses(run, "loss")
    assert len(trained) == 2 and all(math.isfinite(v) for v in trained)
    assert (run / "transformer" / "config.json").is_file()

    from training.generate import main as generate

    out = tmp_path / "generated.mp4"
    assert generate("generate", [
        "--transformer", str(run / "transformer"), "--vae", str(models / "vae"), "--text-encoder",
        str(models / "text_encoder"), "--tokenizer", str(models / "tokenizer"), "--prompt", rows[0]["text"],
        "--negative", "blurry", "--frames", "9", "--width", "32", "--height", "32", "--steps", "2",
        "--seed", "7", "--seam", "none", "--output", str(out)]) == 0
    assert read_video(out)[0].shape == (9, 32, 32, 3)

    # training changed what the model makes: compared as decoded tensors, since H.264's threaded
    # encoder does not give the same bytes twice for noise-like frames
    import easyanimate_core as ea

    def sampled(transformer):
        parts = ea.load_components(transformer, models / "vae", models / "text_encoder", tokenizer=models / "tokenizer")
        options = ea.SamplingOptions(steps=2, seed=7)
        return ea.generate(parts, rows[0]["text"], "blurry", options, width=32, height=32, frames=9) * 255

    before = sampled(untrained)
    assert bool((sampled(untrained) == before).all())  # the same seed and weights: the same video
    change = float((sampled(run / "transformer") - before).abs().mean())
    assert change > 1.0, change  # mean absolute change in 0-255 levels

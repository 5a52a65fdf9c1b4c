"""A user's journey on a tiny folder: source videos with caption sidecars -> `preprocess all` at its
defaults -> a few DiT steps on the metadata it wrote -> `generate` from the trained transformer.
Each stage's output is checked to be what the next one reads."""

import json
import math
from pathlib import Path

from synthetic_videos import write_scenes
from tiny_models import tiny_dit_config
from train_helpers import dit_yaml, losses, write_models

from easyanimate_core.video_io import probe_video, read_video
from training.preprocess import cli


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

    models = write_models(tmp_path / "models")
    run = tmp_path / "run"
    config = dit_yaml(tmp_path / "dit.yaml", models, data / "metadata.json", run, model={"config": tiny_dit_config(4)},
                      data={"types": "video"}, train={"steps": 2, "ema": False})
    from training.train_dit import main as train

    assert train("dit-full", ["--config", config]) == 0
    trained = losses(run, "loss")
    assert len(trained) == 2 and all(math.isfinite(v) for v in trained)
    assert (run / "transformer" / "config.json").is_file()

    from training.generate import main as generate

    out = tmp_path / "generated.mp4"
    assert generate("generate", ["--transformer", str(run / "transformer"), "--vae", str(models / "vae"),
                                 "--text-encoder", str(models / "text_encoder"), "--tokenizer", str(models / "tokenizer"),
                                 "--prompt", rows[0]["text"], "--negative", "blurry", "--frames", "9", "--width", "32", "--height", "32",
                                 "--steps", "2", "--seam", "none", "--output", str(out)]) == 0
    frames, _ = read_video(out)
    assert frames.shape == (9, 32, 32, 3) and frames.std() > 0

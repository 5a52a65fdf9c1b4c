"""``run.py generate`` checks every input before any model loads and says what is wrong in one
line; a failed write keeps the frames; a run too big for the device is refused from its shapes
(issue 27.3-27.7)."""

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_models import save_model_folder

from easyanimate_core.errors import InputError
from easyanimate_core.sampling.context import ContextWindows
from training import generate
from training.run import main as run_main

FAST = ["--width", "32", "--height", "32", "--steps", "2", "--seam", "none", "--prompt", "a red car",
        "--negative", "blurry", "--frames", "9"]


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return save_model_folder(tmp_path_factory.mktemp("release"), in_channels=12)


@pytest.fixture
def no_loading(monkeypatch):
    """Any model load fails the test: the checks must come first."""
    def refuse(config):
        raise AssertionError("a model was loaded before the inputs were checked")
    monkeypatch.setattr(generate, "load_components", refuse)


def _one_line(capsys, argv):
    code = run_main(["generate", *argv])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1, err
    return err


@pytest.mark.parametrize("flags,message", [
    (["--cfg", "nan"], "cfg: expected a number >= 0, got nan (in command line)"),
    (["--cfg", "inf"], "cfg: expected a number >= 0, got inf (in command line)"),
    (["--cfg", "high"], "cfg: expected a number >= 0, got 'high' (in command line)"),
    (["--fps", "0"], "fps: expected a positive number, got 0 (in command line)"),
    (["--fps", "-5"], "fps: expected a positive number, got -5 (in command line)"),
    (["--frames", "eight"], "frames: expected a whole number >= 1, got 'eight' (in command line)"),
    (["--sampler", "heun"], "sampler: expected one of ddim, euler, euler_a, dpmpp_2m, unipc, got 'heun'"),
    (["--seam", "soft"], "seam: expected one of none, blend, smooth, got 'soft'"),
    (["--strength", "1.5"], "strength: expected a number in [0, 1], got 1.5"),
    (["--loras", "style.safetensors:nan"], "the strength 'nan' is not a finite number"),
    (["--loras", "style.safetensors:abc"], "the strength 'abc' is not a finite number"),
    (["--attention", "flash"], "attention: expected one of sdpa, xformers, chunked, got 'flash'"),
    (["--device", "cuda:7"], "--device cuda:7: this machine has"),
    (["--base-resolution", "512"], "--base-resolution sizes the video after the start image's aspect"),
    (["--strength", "0.5"], "--strength 0.5 applies to video-to-video only"),
    (["--video", "in.mp4"], "--video needs --strength below 1"),
])
def test_bad_flags_are_one_line_before_loading(model, capsys, no_loading, flags, message):
    assert message in _one_line(capsys, ["--model", str(model), *FAST, *flags])


def test_bad_yaml_values_name_the_file(model, tmp_path, capsys, no_loading):
    config = tmp_path / "g.yaml"
    config.write_text(f"model: {model}\nprompt: a car\ncfg: high\n")
    assert f"cfg: expected a number >= 0, got 'high' (in {config})" in _one_line(capsys, ["--config", str(config)])
    config.write_text("prompt: [a car\n")
    assert f"config file {config} is not valid YAML" in _one_line(capsys, ["--config", str(config)])


@pytest.mark.parametrize("where,message", [
    ("clip", "has no extension; videos are written as H.264 in .mp4 / .mkv / .mov"),
    ("clip.gif", "has the extension '.gif'"),
    ("afile/clip.mp4", "afile is a file, not a folder"),
    ("", "is a folder; name a file inside it"),
])
def test_bad_outputs_fail_before_sampling(model, tmp_path, capsys, no_loading, where, message):
    (tmp_path / "afile").write_text("x")
    assert message in _one_line(capsys, ["--model", str(model), *FAST, "--output", str(tmp_path / where)])


def test_corrupt_start_image_is_one_line(model, tmp_path, capsys, no_loading):
    image = tmp_path / "start.png"
    image.write_bytes(b"\x89PNG\r\n\x1a\n" + b"garbage" * 10)
    err = _one_line(capsys, ["--model", str(model), *FAST, "--start-image", str(image)])
    assert f"image {image} cannot be read" in err


def test_xformers_without_the_package_is_one_line(model, capsys, no_loading, monkeypatch):
    import easyanimate_core.models.attention as attention

    monkeypatch.setattr(attention, "xformers_available", lambda: False)  # runs where xformers is installed too
    assert "xformers is not installed" in _one_line(capsys, ["--model", str(model), *FAST, "--attention", "xformers"])


def test_a_run_too_big_for_the_device_is_refused_with_the_estimate(model, capsys, no_loading):
    err = _one_line(capsys, ["--model", str(model), *FAST, "--width", "100000", "--height", "100000"])
    assert "this run needs about" in err and "GiB free" in err and "lower the width, height or frame count" in err


def test_a_failed_write_keeps_the_frames(model, tmp_path, monkeypatch):
    from easyanimate_core import video_io

    def disk_full(self, frame):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(video_io.VideoWriter, "write", disk_full)
    with pytest.raises(InputError, match="No space left on device.*saved as PNG files in") as caught:
        generate.main("generate", ["--model", str(model), *FAST, "--output", str(tmp_path / "clip.mp4")])
    folder = Path(str(caught.value).split("PNG files in ")[1])
    saved = sorted(folder.glob("frame_*.png"))
    assert [p.name for p in saved] == [f"frame_{i:05d}.png" for i in range(9)]
    from PIL import Image

    assert np.asarray(Image.open(saved[0])).shape == (32, 32, 3)


def test_estimate_grows_with_the_shapes_and_the_limits_apply():
    from easyanimate_core.checkpoints.presets import TRANSFORMER_PRESETS, VAE_PRESETS
    from easyanimate_core.sampling.budget import GIB, check_fits, cpu_time_warning, estimate_generation

    dit, vae = TRANSFORMER_PRESETS["v3"], VAE_PRESETS["v3"]
    release = estimate_generation(672, 384, 144, 25, dit, vae, weights_bytes=6 * GIB)
    assert 6 * GIB < release.peak_bytes < 40 * GIB          # the released model's own setting
    double = estimate_generation(1344, 768, 144, 25, dit, vae, weights_bytes=6 * GIB)
    assert double.peak_bytes > release.peak_bytes and double.flops > 4 * release.flops
    windows = estimate_generation(672, 384, 576, 25, dit, vae, context=ContextWindows(36, 4, strides=1))
    assert windows.parts["DiT activations"] == release.parts["DiT activations"]   # windows bound the tokens
    strided = estimate_generation(672, 384, 576, 25, dit, vae, context=ContextWindows(36, 4, strides=2))
    assert strided.flops > 1.5 * windows.flops                                     # strided windows cost passes
    check_fits(release, torch.device("cpu"), available=64 * GIB)
    with pytest.raises(InputError, match=r"needs about \d+\.\d GiB .* but cpu has 8.0 GiB free"):
        check_fits(release, torch.device("cpu"), available=8 * GIB)
    assert "hours" in cpu_time_warning(release, threads=4)   # the release setting on a CPU
    tiny = estimate_generation(32, 32, 9, 2, {"num_attention_heads": 2, "attention_head_dim": 16, "num_layers": 2},
                               {"ch": 8, "ch_mult": [1, 2, 2, 2]})
    assert cpu_time_warning(tiny, threads=1) is None and tiny.peak_bytes < GIB


def test_a_long_cpu_run_is_announced_with_its_time_scale(model, tmp_path, monkeypatch, caplog):
    import logging

    from easyanimate_core.sampling import budget

    monkeypatch.setattr(budget, "SLOW_SECONDS", 0)  # the tiny run counts as long: the note must show
    with caplog.at_level(logging.WARNING, logger="easyanimate_core"):
        assert generate.main("generate", ["--model", str(model), *FAST, "--output", str(tmp_path / "c.mp4")]) == 0
    assert any("note: this run is roughly" in r.getMessage() and "of CPU work" in r.getMessage()
               for r in caplog.records)


def test_a_failed_write_in_chunked_mode_keeps_the_rest(model, tmp_path, monkeypatch):
    """Chunked mode streams: frames already sent stay in the partial file, the failing chunk and
    every later one are generated on and saved as PNGs."""
    from easyanimate_core import video_io

    original, sent = video_io.VideoWriter.write, []

    def fails_at_frame_20(self, frame):
        if len(sent) == 19:
            raise OSError(28, "No space left on device")
        sent.append(1)
        original(self, frame)

    monkeypatch.setattr(video_io.VideoWriter, "write", fails_at_frame_20)
    args = ["--model", str(model), *FAST, "--frames", "28", "--chunk-frames", "16", "--overlap-frames", "4",
            "--output", str(tmp_path / "long.mp4")]
    with pytest.raises(InputError, match="frames before 16 are in the incomplete") as caught:
        generate.main("generate", args)
    folder = Path(str(caught.value).split("PNG files in ")[1].split(";")[0])
    assert [p.name for p in sorted(folder.glob("*.png"))] == [f"frame_{i:05d}.png" for i in range(16, 28)]

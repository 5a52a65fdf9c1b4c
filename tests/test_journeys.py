"""User journeys with the shipped default model (models/vdit_default, 32x32 clips of its synthetic
world), through the public entries: the core API, the ``run.py generate`` CLI and the nodes called
as functions. Every check reads the output frames with simple computer vision (the demo
evaluator's reader: the object is what differs from the border colour; its centroid and colour),
never the code's own numbers."""

from pathlib import Path

import numpy as np
import pytest
import torch

from easyanimate_core.sampling.context import ContextWindows
from easyanimate_core.sampling.options import SamplingOptions
from easyanimate_core.sampling.pipeline import generate, load_components
from training.demo.analysis import foreground, read_clip
from training.demo.evaluate import horizontal_velocity
from training.demo.world import BACKGROUNDS, COLORS, Scene, coverage, render_scene

MODEL = Path(__file__).resolve().parents[1] / "models" / "vdit_default"
SIZE = {"width": 32, "height": 32}
MADE_FOR = dict(steps=20, cfg=5.0)  # the model's generate.yaml
PIXELS = 3.0  # how close (px) a kept frame's object must land to the image's


@pytest.fixture(scope="module")
def shipped():
    torch.set_num_threads(1)  # tiny model: a second thread only costs syncs
    components = load_components(MODEL / "transformer", MODEL / "vae", MODEL / "text_encoder",
                                 tokenizer=MODEL / "tokenizer")
    components.transformer.eval()
    return components


def circle_image(x: float, y: float = 16.0, r: float = 5.0) -> torch.Tensor:
    """A red circle centred at (x, y) on gray, (3, 32, 32) in [0, 1]."""
    alpha = coverage("circle", x, y, r, 32, 32)[..., None]
    pixels = np.array(BACKGROUNDS["gray"]) * (1 - alpha) + np.array(COLORS["red"]) * alpha
    return torch.from_numpy(pixels / 255).float().permute(2, 0, 1)


def frames_of(video: torch.Tensor, index: int = 0) -> np.ndarray:
    """(B, 3, F, H, W) in [0, 1] -> uint8 (F, H, W, 3)."""
    return (video[index].permute(1, 2, 3, 0).clamp(0, 1) * 255).round().to(torch.uint8).numpy()


def x_track(frames: np.ndarray) -> list:
    """The object's centroid x in every frame (NaN where none is visible)."""
    fg = foreground(frames)
    xs = dict(zip(fg.visible, (x for x, _ in fg.centroids)))
    return [xs.get(i, float("nan")) for i in range(len(frames))]


def image_x(image: torch.Tensor) -> float:
    """The reader's centroid x of an input image, read the same way as the output frames."""
    return x_track(frames_of(image[None, :, None]))[0]


def test_text_to_video_draws_the_prompt_and_moves_its_way(shipped):
    video = generate(shipped, "a red circle moves to the left on a gray background", "",
                     SamplingOptions(seed=0, **MADE_FOR), frames=16, **SIZE)
    reading = read_clip(frames_of(video))
    assert (reading.color, reading.background, reading.motion) == ("red", "gray", "left")
    xs = x_track(frames_of(video))
    assert xs[-1] < xs[0] - 5  # it travels, not twitches


def test_text_to_image_makes_one_frame_with_the_object(shipped):
    image = generate(shipped, "a blue square moves up on a black background", "",
                     SamplingOptions(seed=1, **MADE_FOR), frames=1, **SIZE)
    assert image.shape == (1, 3, 1, 32, 32)
    fg = foreground(frames_of(image))
    assert fg.visible == [0]
    color = np.median(frames_of(image)[0][fg.masks[0]], axis=0)
    assert np.linalg.norm(color - COLORS["blue"]) < np.linalg.norm(color - COLORS["red"])


def run_cli(tmp_path, *flags) -> np.ndarray:
    from PIL import Image

    from easyanimate_core.video_io import read_video
    from training.generate import main

    argv = ["--prompt", "a red circle moves to the right on a gray background", "--seed", "0",
            "--output", str(tmp_path / "clip.mp4")]
    for name, image in flags:
        path = tmp_path / f"{name}.png"
        Image.fromarray(frames_of(image[None, :, None])[0]).save(path)
        argv += [f"--{name}", str(path)]
    assert main("generate", argv) == 0
    return read_video(tmp_path / "clip.mp4")[0]


@pytest.mark.parametrize("first,last", [(6, 26), (26, 6)])
def test_cli_image_to_video_starts_on_the_start_image_and_ends_on_the_end_image(tmp_path, first, last):
    start, end = circle_image(first), circle_image(last)
    xs = x_track(run_cli(tmp_path, ("start-image", start), ("end-image", end)))
    assert abs(xs[0] - image_x(start)) <= PIXELS, xs
    assert abs(xs[-1] - image_x(end)) <= PIXELS, xs


def test_core_image_to_video_with_only_a_start_or_only_an_end_image(shipped):
    options = SamplingOptions(seed=0, **MADE_FOR)
    prompt = "a red circle moves to the right on a gray background"
    start, end = circle_image(6), circle_image(26)
    only_start = x_track(frames_of(generate(shipped, prompt, "", options, frames=16, start_image=start, **SIZE)))
    assert abs(only_start[0] - image_x(start)) <= PIXELS, only_start
    only_end = frames_of(generate(shipped, prompt, "", options, frames=16, end_image=end, **SIZE))
    xs = x_track(only_end)
    assert abs(xs[-1] - image_x(end)) <= PIXELS, xs
    # the last frames keep the image's brightness (they went dark when blank frames were held)
    assert abs(only_end[-1].astype(float).mean() - frames_of(end[None, :, None])[0].astype(float).mean()) < 12


def test_image_to_video_node_keeps_both_images(pack, monkeypatch):
    nodes = pack.nodes
    monkeypatch.setenv(nodes.host.MODELS_DIR_ENV, str(MODEL.parent))
    model = nodes.dit_nodes.VDiT_LoadDiT().load("vdit_default/transformer")[0]
    vae = nodes.vae_nodes.VDiT_LoadSliceVAE().load("vdit_default/vae")[0]
    t5 = nodes.text_nodes.VDiT_LoadT5().load("vdit_default/text_encoder")[0]
    positive = nodes.text_nodes.VDiT_T5Encode().encode(t5, "a red circle moves to the right on a gray background")[0]
    negative = nodes.text_nodes.VDiT_T5Encode().encode(t5, "")[0]
    sampling = nodes.sampling_nodes
    for first, last in ((6, 26), (26, 6)):
        start, end = circle_image(first), circle_image(last)
        as_image = lambda image: image.permute(1, 2, 0)[None]  # ComfyUI IMAGE (1, H, W, 3)
        positive_i2v, negative_i2v, latent = sampling.VDiT_ImageToVideo().encode(
            positive, negative, vae, 32, 32, 16, 1, start_image=as_image(start), end_image=as_image(end))
        samples = sampling.VDiT_Sampler().sample(model, positive_i2v, negative_i2v, latent, 0, 20, 5.0, "dpmpp_2m",
                                                 "normal", 1.0)[0]
        images = nodes.vae_nodes.VDiT_VAEDecode().decode(vae, samples)[0]
        xs = x_track((images * 255).round().to(torch.uint8).numpy())
        assert abs(xs[0] - image_x(start)) <= PIXELS and abs(xs[-1] - image_x(end)) <= PIXELS, (first, xs)


def test_video_to_video_follows_the_input_motion_over_the_prompt(shipped):
    """A clip moving right, re-imagined under a prompt saying left: at low strength the output
    still moves right (the input's motion); at strength 1 the prompt alone decides (left)."""
    source = render_scene(Scene("red", "circle", "right", "gray"), 16, 32, 32, seed=3)
    video = torch.from_numpy(source).float().div(255).permute(3, 0, 1, 2)
    prompt = "a red circle moves to the left on a gray background"
    xs = {}
    for strength in (0.3, 1.0):
        out = generate(shipped, prompt, "", SamplingOptions(seed=0, strength=strength, **MADE_FOR), frames=16,
                       video=video, **SIZE)
        xs[strength] = x_track(frames_of(out))
    assert xs[0.3][-1] > xs[0.3][0] + 4, xs[0.3]
    assert xs[1.0][-1] < xs[1.0][0] - 4, xs[1.0]


@pytest.mark.slow  # ~18 s on two cores
def test_long_video_with_context_windows_moves_one_way_across_windows(shipped):
    """64 frames in windows of 4 latent frames (the model's 16-frame clips): the object's path
    crosses the window seams without stepping back."""
    windows = ContextWindows(length=4, overlap=2, strides=2)
    video = generate(shipped, "a red circle moves to the right on a gray background", "",
                     SamplingOptions(seed=0, context=windows, **MADE_FOR), frames=64, **SIZE)
    xs = np.array(x_track(frames_of(video)))
    assert not np.isnan(xs).any()
    assert np.diff(xs).min() > -1.0, xs.round(1).tolist()  # sub-pixel jitter of the reader at most
    assert xs[-1] - xs[0] > 6, xs.round(1).tolist()


def test_motion_lora_strength_changes_the_motion_its_way_and_unloads_bit_exactly(shipped):
    """pan_left was trained on clips whose camera pans left, so the scene moves right: the x
    velocity of the object rises with the LoRA (the demo evaluator's check). Removing it gives
    the very same video as the weights gave before the LoRA was ever loaded."""
    from easyanimate_core.models.lora import apply_loras, linear_layers, load_lora

    prompts = ["a red circle moves up on a gray background", "a blue circle moves down on a gray background"]
    options = SamplingOptions(seed=0, steps=10, cfg=5.0)
    videos = {0.0: generate(shipped, prompts, "", options, frames=16, **SIZE)}  # before any LoRA
    layers = linear_layers(shipped.transformer)
    lora = load_lora(str(MODEL / "motion_lora" / "pan_left.safetensors"), layers, kind="motion_lora")
    applied = apply_loras(layers, [(lora, 1.0)])
    try:
        videos[1.0] = generate(shipped, prompts, "", options, frames=16, **SIZE)
    finally:
        applied.remove()
    velocity = {strength: horizontal_velocity(np.stack([frames_of(video, k) for k in range(len(prompts))]))
                for strength, video in videos.items()}
    assert velocity[1.0] > velocity[0.0] + 0.3, velocity
    assert torch.equal(generate(shipped, prompts, "", options, frames=16, **SIZE), videos[0.0])

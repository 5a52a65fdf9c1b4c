"""Every workflow in workflows/ through a real ComfyUI (COMFYUI_DIR) on CPU.

Tiny random models are written into the server's models/easyanimate folder in the published
layouts, under the names the workflows use; input pictures and a video go into its input folder.
Each workflow is converted to the API format as the frontend would, shrunk to 32x32 pixels and
two steps (the tiny models' size), submitted through /prompt with its UI graph in extra_pnginfo,
followed on the websocket to the end, and its saved video / image is fetched through /history and
/view and decoded. Also: per-step progress with preview frames, /interrupt stopping a long
sampling run within one step, cached loaders on a re-run, and server memory over three runs.
Skips without COMFYUI_DIR.
"""

import io
import json
from pathlib import Path

import pytest
import torch
import workflow_builder
import workflow_format as wf
from comfyui_server import PACK_FOLDER, comfyui_fixture

pytestmark = pytest.mark.comfyui
comfyui = comfyui_fixture(extra_args=["--preview-method", "latent2rgb"])
ROOT = Path(__file__).resolve().parents[1]
SIZE, FRAMES, LONG_FRAMES, STEPS = 32, 9, 33, 2
# The interrupt test's video: big enough that one sampling step takes ~0.1 s on a CPU core, far
# longer than a websocket round trip, so "within one step" can be told apart from message lag.
INTERRUPT_SIZE, INTERRUPT_FRAMES = 256, 65
INPUT_FPS = 10
UPLOAD_COMBOS = frozenset({("LoadImage", "image"), ("LoadVideo", "file")})
CLIP_VISION = "vdit_default/image_encoder"


# --------------------------------------------------------------------------- tiny models, inputs

def _install_models(models: Path) -> None:
    """The files of workflow_builder.MODEL_FILES, as tiny random models in published layouts."""
    from tiny_models import save_clip, save_dit, save_vae, tiny_dit_config
    from tiny_text import write_tiny_text_encoder

    from easyanimate_core.checkpoints import LoraPair, lora_state_dict, save_state_dict
    from easyanimate_core.models.lora import linear_layers
    from easyanimate_core.models.transformer import VideoTransformer

    names = {key: models / "easyanimate" / name for key, name in workflow_builder.MODEL_FILES.items()}
    save_dit(names["dit"], in_channels=12)  # an InP model (t2v, i2v, v2v); the 4-channel route is tested headless
    save_vae(names["vae"])
    text = write_tiny_text_encoder(models / "scratch_text")
    (text / "text_encoder").rename(names["t5"])
    (text / "tokenizer").rename(names["t5"].parent / "tokenizer")
    save_clip(models / "easyanimate" / CLIP_VISION)  # what an InP release adds

    # v1 style: a PixArt base (no motion modules), a standalone grid motion module, a MotionLoRA
    torch.manual_seed(1)
    pixart = {k: v for k, v in tiny_dit_config(4).items() if not k.startswith(("motion_module", "basic_block",
                                                                                "enable_uvit"))}
    v1 = {**pixart, "num_attention_heads": 2, "attention_head_dim": 32, "cross_attention_dim": 64,
          "basic_block_type": "motionmodule", "motion_module_type": "VanillaGrid",
          "motion_module_kwargs": {"num_attention_heads": 8, "num_transformer_block": 1, "block_size": 2,
                                   "temporal_position_encoding": True, "temporal_position_encoding_max_len": 4096,
                                   "temporal_attention_dim_div": 1,
                                   "attention_block_types": ["Temporal_Self", "Temporal_Self"]}}
    video = VideoTransformer.from_config(v1).eval()
    with torch.no_grad():
        for p in video.parameters():
            p.add_(torch.randn_like(p) * 0.05)
    state = video.state_dict()
    base = names["pixart_base"]
    base.mkdir(parents=True)
    base_config = {k: v for k, v in v1.items() if not k.startswith(("motion_module", "basic_block"))}
    (base / "config.json").write_text(json.dumps(base_config))
    save_state_dict(base / "diffusion_pytorch_model.safetensors",
                    {k: v for k, v in state.items() if "temporal" not in k})
    save_state_dict(names["motion_module"], {k: v for k, v in state.items() if "temporal" in k})
    layers = linear_layers(video)
    query = "transformer_blocks.{}.attn_temporal.temporal_transformer.transformer_blocks.0.attention_blocks.0.to_q"
    pairs = {query.format(i): LoraPair(torch.randn(2, layers[query.format(i)].in_features) * 0.2,
                                       torch.randn(layers[query.format(i)].out_features, 2) * 0.2, 1.0)
             for i in range(2)}
    names["motion_lora"].parent.mkdir(parents=True, exist_ok=True)
    save_state_dict(names["motion_lora"], lora_state_dict(pairs, "motion_lora"))


def _install_inputs(folder: Path) -> None:
    import av
    import numpy as np
    from PIL import Image

    rng = np.random.default_rng(0)
    for key in ("start_image", "end_image"):
        Image.fromarray(rng.integers(0, 255, (40, 48, 3), dtype=np.uint8)).save(folder / workflow_builder.INPUT_FILES[key])
    with av.open(str(folder / workflow_builder.INPUT_FILES["video"]), "w") as container:
        stream = container.add_stream("libx264", rate=INPUT_FPS)
        stream.width, stream.height, stream.pix_fmt = SIZE, SIZE, "yuv420p"
        for _ in range(12):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (SIZE, SIZE, 3), dtype=np.uint8), format="rgb24")
            container.mux(stream.encode(frame))
        container.mux(stream.encode())


@pytest.fixture(scope="module")
def server(comfyui):
    _install_models(comfyui.base_dir / "models")
    _install_inputs(comfyui.base_dir / "input")
    return comfyui


@pytest.fixture(scope="module")
def definitions(server):
    """The definitions the server itself serves: our nodes and the native ones, as installed."""
    return server.object_info()


# --------------------------------------------------------------------------- helpers

def _workflow(name):
    return json.loads((ROOT / "workflows" / name).read_text())


def _shrink(prompt: dict, frames: int = FRAMES, steps: int = STEPS, size: int = SIZE) -> dict:
    """The same graph at the tiny models' size and two steps."""
    for node in prompt.values():
        inputs = node["inputs"]
        if node["class_type"] in ("VDiT_EmptyLatentVideo", "VDiT_ImageToVideo"):
            inputs.update(width=size, height=size, length=1 if inputs["length"] == 1 else frames)
        elif node["class_type"] == "VDiT_Sampler":
            inputs["steps"] = steps
        elif node["class_type"] == "VDiT_ContextOptions":
            inputs.update(context_length=4, context_overlap=1)
    return prompt


def _prompt(name, definitions, **shrink):
    flow = _workflow(name)
    prompt = wf.ui_to_api(flow, definitions)
    assert wf.check_prompt(prompt, definitions, UPLOAD_COMBOS) == []
    return _shrink(prompt, **shrink), flow


def _run(server, prompt, flow, timeout=600):
    prompt_id, messages = server.run(prompt, timeout=timeout, extra_data={"extra_pnginfo": {"workflow": flow}})
    types = [m["type"] for m in messages if isinstance(m, dict)]
    assert "execution_success" in types, (
        [m for m in messages if isinstance(m, dict) and m["type"] == "execution_error"], server.log_tail())
    return prompt_id, messages


def _saved(server, prompt_id, prompt, class_type):
    node_id = next(k for k, n in prompt.items() if n["class_type"] == class_type)
    files = server.history(prompt_id)["outputs"][node_id]["images"]
    assert len(files) == 1
    return server.view(files[0]["filename"], files[0]["subfolder"], files[0]["type"]), files[0]


def _video_facts(data: bytes):
    import av

    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.video[0]
        frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
        return len(frames), frames[0].shape[:2], float(stream.average_rate)


# --------------------------------------------------------------------------- the workflows

VIDEO_CASES = {
    "text_to_video.json": (FRAMES, workflow_builder.SETTINGS["fps"]),
    "image_to_video.json": (FRAMES, workflow_builder.SETTINGS["fps"]),
    "video_to_video.json": (FRAMES, INPUT_FPS),
    "pixart_motion_module.json": (FRAMES, workflow_builder.SETTINGS["fps"]),
    "long_video_context_windows.json": (LONG_FRAMES, workflow_builder.SETTINGS["fps"]),
}


@pytest.mark.parametrize("name", sorted(VIDEO_CASES), ids=lambda n: n[:-5])
def test_video_workflow_runs_and_saves_the_video(server, definitions, name):
    frames, fps = VIDEO_CASES[name]
    prompt, flow = _prompt(name, definitions, frames=frames)
    prompt_id, _ = _run(server, prompt, flow)
    data, saved = _saved(server, prompt_id, prompt, "SaveVideo")
    count, size, rate = _video_facts(data)
    print(f"{name}: {saved['filename']} {count} frames {size[1]}x{size[0]} at {rate:g} fps")
    assert (count, size, rate) == (frames, (SIZE, SIZE), fps)


def test_image_to_video_with_the_clip_image_encoder(server, definitions):
    """The image-to-video workflow as its Note says for InP releases: with Load EasyAnimate CLIP Vision."""
    prompt, flow = _prompt("image_to_video.json", definitions)
    i2v = next(k for k, n in prompt.items() if n["class_type"] == "VDiT_ImageToVideo")
    prompt["100"] = {"class_type": "VDiT_LoadCLIPVision", "inputs": {"clip_name": CLIP_VISION, "dtype": "auto"}}
    prompt[i2v]["inputs"]["clip_vision"] = ["100", 0]
    assert wf.check_prompt(prompt, definitions, UPLOAD_COMBOS) == []
    prompt_id, _ = _run(server, prompt, flow)
    assert _video_facts(_saved(server, prompt_id, prompt, "SaveVideo")[0])[:2] == (FRAMES, (SIZE, SIZE))


def test_native_latent_image_and_save_nodes_work_with_ours(server, definitions):
    """Native RepeatLatentBatch on our 5-D LATENT, ImageInvert on our IMAGE, SaveAnimatedWEBP of it."""
    from PIL import Image

    prompt, flow = _prompt("text_to_video.json", definitions)
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "VDiT_Sampler")
    decode = next(k for k, n in prompt.items() if n["class_type"] == "VDiT_VAEDecode")
    prompt[sampler]["inputs"]["seed"] = 77
    prompt["101"] = {"class_type": "RepeatLatentBatch", "inputs": {"samples": [sampler, 0], "amount": 2}}
    prompt[decode]["inputs"]["samples"] = ["101", 0]
    prompt["102"] = {"class_type": "ImageInvert", "inputs": {"image": [decode, 0]}}
    prompt["103"] = {"class_type": "SaveAnimatedWEBP", "inputs": {
        "images": ["102", 0], "filename_prefix": "vdit_webp", "fps": 8.0, "lossless": True, "quality": 80,
        "method": "default"}}
    prompt_id, _ = _run(server, prompt, flow)
    data, _ = _saved(server, prompt_id, prompt, "SaveAnimatedWEBP")
    picture = Image.open(io.BytesIO(data))
    assert picture.size == (SIZE, SIZE) and picture.n_frames == 2 * FRAMES  # two videos, frames concatenated
    count, _, _ = _video_facts(_saved(server, prompt_id, prompt, "SaveVideo")[0])
    assert count == 2 * FRAMES


def test_text_to_image_saves_one_picture(server, definitions):
    from PIL import Image

    prompt, flow = _prompt("text_to_image.json", definitions)
    prompt_id, _ = _run(server, prompt, flow)
    data, _ = _saved(server, prompt_id, prompt, "SaveImage")
    assert Image.open(io.BytesIO(data)).size == (SIZE, SIZE)


def test_sampler_reports_every_step_with_previews(server, definitions):
    prompt, flow = _prompt("text_to_video.json", definitions, steps=4)
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "VDiT_Sampler")
    prompt[sampler]["inputs"]["seed"] = 1234  # not cached from another test
    _, messages = _run(server, prompt, flow)
    progress = [m["data"] for m in messages if isinstance(m, dict) and m["type"] == "progress"
                and m["data"]["node"] == sampler]
    assert [(p["value"], p["max"]) for p in progress] == [(i, 4) for i in range(1, 5)]
    previews = [m for m in messages if isinstance(m, bytes)]
    assert len(previews) >= 4  # one preview image per step (JPEG after an 8-byte header)
    assert any(b"\xff\xd8" in frame[:16] for frame in previews)


def test_interrupt_stops_sampling_within_one_step_and_the_server_recovers(server, definitions):
    """Judged by the server's order and clock, not by when messages reach the client: ComfyUI's
    sampling thread can run ahead of the event loop that sends its messages (and answers
    /interrupt), so progress sent before the interrupt may arrive well after the client sent it.

    - Order: a socket gets its messages in the order the server sent them. Once /interrupt has
      returned, clearing the (empty) pending queue makes ComfyUI broadcast a ``status`` message;
      the first ``status`` after /interrupt (that one, or the one sent as the interrupted run
      leaves the queue) was sent after the interrupt flag was up, so sampler progress after it is
      work done after the interrupt.
    - Clock: server and test share the machine's wall clock; ``execution_interrupted`` carries the
      server's timestamp, and the server's log line for /interrupt (GET /internal/logs/raw) its time.
    Steps of ~0.1 s (INTERRUPT_SIZE) keep one step well apart from message and HTTP latency."""
    import datetime
    import itertools
    import statistics
    import threading
    import time
    import uuid

    import websocket

    prompt, flow = _prompt("text_to_video.json", definitions, frames=INTERRUPT_FRAMES, steps=1000,
                           size=INTERRUPT_SIZE)
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "VDiT_Sampler")
    client_id, received, started = uuid.uuid4().hex, [], threading.Event()
    ws = websocket.WebSocket()
    ws.connect(f"ws://127.0.0.1:{server.port}/ws?clientId={client_id}", timeout=600)

    def listen():  # every JSON message, in order, with its arrival time, until the prompt's end
        while True:
            frame = ws.recv()
            if isinstance(frame, bytes):
                continue
            message = json.loads(frame)
            received.append((time.time(), message))  # wall clock, as the server's timestamps
            data = message.get("data", {})
            if message["type"] == "progress" and data.get("node") == sampler and data["value"] >= 5:
                started.set()
            if message["type"] == "executing" and data.get("node") is None and data.get("prompt_id"):
                return

    listener = threading.Thread(target=listen, daemon=True)
    listener.start()
    server.queue_prompt(prompt, client_id)
    assert started.wait(300), "sampling did not start"
    seen = len(received)  # everything up to here arrived before /interrupt was sent
    sent_at = time.time()
    server.interrupt()
    interrupted_at = time.time()  # the flag is up by now (the server raises it before answering)
    server.clear_queue()  # the order marker
    listener.join(timeout=300)
    ws.close()
    assert not listener.is_alive(), "the interrupted run did not end"
    types = [message["type"] for _, message in received]
    assert "execution_interrupted" in types and "execution_success" not in types

    def sampler_steps(messages):
        return [(t, m["data"]["value"]) for t, m in messages
                if m["type"] == "progress" and m["data"]["node"] == sampler]

    marker = next(i for i in range(seen, len(received)) if received[i][1]["type"] == "status")
    before, after = sampler_steps(received[:marker]), sampler_steps(received[marker:])
    pressed = sampler_steps(received[:seen])
    step_time = statistics.median(b[0] - a[0] for a, b in itertools.pairwise(pressed))
    ended = next(m["data"]["timestamp"] for _, m in received if m["type"] == "execution_interrupted") / 1000
    in_flight_from = before[-1][0]  # the last step done before the flag went up reached us: the next began
    logged = [datetime.datetime.fromisoformat(entry["t"]).timestamp() for entry in server.log_entries()
              if "Global interrupt" in entry["m"]]
    handled = logged[-1] if logged else interrupted_at  # a ComfyUI without the log line: an upper bound
    assert sent_at <= handled <= interrupted_at
    print(f"/interrupt sent at step {pressed[-1][1]} of 1000, handled by the server {handled - sent_at:.2f} s "
          f"later, after step {before[-1][1]}; {len(after)} step(s) reported after that; the run ended "
          f"{ended - handled:.2f} s after the server raised the flag, {(ended - in_flight_from) / step_time:.2f} "
          f"step(s) after step {before[-1][1]} arrived (a step takes about {step_time * 1000:.0f} ms)")
    assert step_time > 0.03, "steps too fast to tell one step from message lag"
    # The step in flight when the flag went up may complete (and, in a race, be reported); no step
    # starts after it. (ComfyUI's progress bar itself raises once the flag is up, so a sampler that
    # ignored Cancel would mostly go on unreported: the clock below is what catches that.)
    assert len(after) <= 1, [value for _, value in after]
    # The run ends when the step in flight does: at most about one step after the flag went up and
    # after the step before it reached us (it was sent a little earlier still); one more step would
    # make that about two. (Seen on a busy 2-core machine: 0.8-1.3 steps; one step more: 1.7-2.1.)
    assert ended - handled < 1.6 * step_time, ((ended - handled) / step_time, step_time)
    assert ended - in_flight_from < 1.6 * step_time, ((ended - in_flight_from) / step_time, step_time)

    # healthy afterwards: the next prompt runs to the end
    again, flow = _prompt("text_to_video.json", definitions)
    prompt_id, _ = _run(server, again, flow)
    assert _video_facts(_saved(server, prompt_id, again, "SaveVideo")[0])[0] == FRAMES


def test_reruns_reuse_the_loaders_and_memory_does_not_grow(server, definitions):
    import psutil

    prompt, flow = _prompt("text_to_video.json", definitions, frames=17)
    sampler = next(k for k, n in prompt.items() if n["class_type"] == "VDiT_Sampler")
    loaders = {k for k, n in prompt.items() if n["class_type"].startswith("VDiT_Load")}
    process = psutil.Process(server.process.pid)
    rss = []
    for run in range(3):
        prompt[sampler]["inputs"]["seed"] = 500 + run  # as 'randomize' would: the sampler runs again
        _, messages = _run(server, prompt, flow)
        cached = {node for m in messages if isinstance(m, dict) and m["type"] == "execution_cached"
                  for node in m["data"]["nodes"]}
        executed = {m["data"]["node"] for m in messages if isinstance(m, dict) and m["type"] == "executing"
                    and m["data"]["node"] is not None}
        if run:
            assert loaders <= cached and not loaders & executed
        assert sampler in executed
        rss.append(process.memory_info().rss)
    print("ComfyUI server RSS after runs 1-3: " + ", ".join(f"{r / 2**20:.1f} MiB" for r in rss)
          + f" (growth after the first run: {(max(rss[1:]) - rss[0]) / 2**20:+.1f} MiB)")
    assert max(rss[1:]) <= rss[0] + 16 * 2**20


def test_pack_web_files_are_served(server):
    assert any(PACK_FOLDER in path and path.endswith("vdit_frames.js") for path in server.get_json("/extensions"))
    doc = server._request(f"/extensions/{PACK_FOLDER}/docs/VDiT_Sampler.md").decode()
    assert doc.startswith("# EasyAnimate Sampler")
    # ComfyUI offers a pack's workflows/ folder in its template browser
    assert sorted(server.get_json("/workflow_templates")[PACK_FOLDER]) == sorted(
        name[:-5] for name in workflow_builder.WORKFLOWS_BUILT)
    served = json.loads(server._request(f"/api/workflow_templates/{PACK_FOLDER}/text_to_video.json"))
    assert served == _workflow("text_to_video.json")

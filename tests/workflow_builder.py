"""Builds the example workflows in ``workflows/`` (UI format, as the ComfyUI frontend saves them).

    python tests/workflow_builder.py           # rewrite workflows/*.json
    python tests/workflow_builder.py --check   # exit 1 if a file differs from what would be built

Model file names and the generation settings live in MODEL_FILES / SETTINGS below: change them
here and rebuild, and every workflow follows. Widget values are laid out from the node
definitions (ours from the pack, native ones from the recorded /object_info snapshot), so a node
that gains an input gets its default in the rebuilt files.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
WORKFLOWS = ROOT / "workflows"
NATIVE_SNAPSHOT = HERE / "fixtures" / "comfyui_0.3.64_native_nodes.json"

# Names as host.model_files() lists them under ComfyUI/models/easyanimate (folders by their
# relative path): the embedded default model's folder (training/demo/export.py layout), plus the
# two parts a v1-style graph needs that it does not hold as separate files (placeholders).
MODEL_FILES = {
    "dit": "vdit_default/transformer",
    "vae": "vdit_default/vae",
    "t5": "vdit_default/text_encoder",
    "motion_lora": "vdit_default/motion_lora/pan_left.safetensors",
    "pixart_base": "vdit_default/pixart_base",
    "motion_module": "vdit_default/motion_module.safetensors",
}
# Input files the image / video workflows load from ComfyUI/input.
INPUT_FILES = {"start_image": "vdit_start.png", "end_image": "vdit_end.png", "video": "vdit_input.mp4"}
# The embedded default model's own generation settings (size, frames, fps, steps, sampler, cfg,
# seam, negative): the workflows load that model, so they use what it was made for and scored
# with. The Notes give the EasyAnimate release defaults for the released models.
DEFAULT_MODEL_SETTINGS = ROOT / "models" / "vdit_default" / "generate.yaml"
MADE_FOR = yaml.safe_load(DEFAULT_MODEL_SETTINGS.read_text())
SETTINGS = {
    **{key: MADE_FOR[key] for key in ("width", "height", "frames", "fps", "steps", "cfg", "sampler", "seam")},
    "seed": 43, "i2v_frames": MADE_FOR["frames"], "v2v_denoise": 0.7, "long_frames": 4 * MADE_FOR["frames"],
    "context_length": 4, "context_overlap": 2, "context_strides": 2,
}
MADE_FOR_TEXT = (f"{SETTINGS['width']}x{SETTINGS['height']}, {SETTINGS['frames']} frames at {SETTINGS['fps']} fps, "
                 f"{SETTINGS['sampler']}, {SETTINGS['steps']} steps, CFG {SETTINGS['cfg']:g}, seam {SETTINGS['seam']}; "
                 f"its generate.yaml")
SETTINGS_NOTE = f" The values here are the ones the embedded default model was made for ({MADE_FOR_TEXT})."
RELEASE_DEFAULTS = ("For the released EasyAnimate v3 models use 672x384 (512 model) or 1008x576 (768 model), "
                    "144 frames at 24 fps, dpmpp_2m, 25 steps, CFG 7; v1 (PixArt + motion module): 80 frames "
                    "at 12 fps, euler_a, 30 steps, CFG 7. Prompts: the default model knows its synthetic world "
                    "only ('a <colour> <shape> moves left/right/up/down on a black/gray/purple background'); "
                    "with a released model write any English prompt (up to 120 T5 tokens) and a negative such "
                    "as: ")
# The default model speaks its synthetic world's caption grammar ("a <colour> <shape> moves
# <direction> on a <background> background") and was trained with empty-prompt dropout, so its
# negative is its generate.yaml's (empty); the Notes give a released model's usual negative.
PROMPT = "a red circle moves to the right on a gray background"
NEGATIVE = MADE_FOR["negative"]
RELEASE_NEGATIVE = ("Blurring, mutation, deformation, distortion, dark and solid, comics, text subtitles, "
                    "line art, static, ugly, error, messy code.")
RELEASE_NOTE = RELEASE_DEFAULTS + RELEASE_NEGATIVE
MODEL_HELP = (
    "Model files go in ComfyUI/models/easyanimate/ (or a folder listed under 'easyanimate:' in "
    "extra_model_paths.yaml). A release folder keeps its layout: <name>/transformer, <name>/vae, "
    "<name>/text_encoder + <name>/tokenizer, <name>/image_encoder (InP models). The loaders list folders "
    "by their relative path. This workflow expects: ")

sys.path.insert(0, str(HERE))
from workflow_format import (
    default_value,
    extra_widget_values,
    input_options,
    input_type,
    is_widget,
    ordered_inputs,
    pack_definitions,
)


def definitions() -> dict:
    from conftest import import_pack

    native = json.loads(NATIVE_SNAPSHOT.read_text())["nodes"]
    return {**native, **pack_definitions(import_pack())}


class Node:
    def __init__(self, graph, node_id: int, type_: str):
        self.graph, self.id, self.type = graph, node_id, type_

    def __getitem__(self, output: int | str):
        """An output of this node, by index or name, to pass as another node's input."""
        definition = self.graph.definitions[self.type]
        if isinstance(output, str):
            output = definition["output_name"].index(output)
        return self, output, definition["output"][output]


class Graph:
    """Nodes placed column by column; inputs are literals (widgets) or ``node[output]`` (links)."""

    COLUMN_WIDTH, NODE_WIDTH, GAP = 400, 340, 40

    def __init__(self, defs: dict):
        self.definitions = defs
        self.nodes, self.links = [], []
        self.column_bottom = {}

    def _place(self, column: int, height: int) -> list:
        y = self.column_bottom.get(column, 60)
        self.column_bottom[column] = y + height + self.GAP
        return [40 + column * self.COLUMN_WIDTH, y]

    def add(self, type_: str, column: int, title: str | None = None, **values) -> Node:
        definition = self.definitions[type_]
        known = {name for name, _, _ in ordered_inputs(definition)}
        unknown = set(values) - known
        if unknown:
            raise KeyError(f"{type_} has no input(s) {sorted(unknown)}")
        node = Node(self, len(self.nodes) + 1, type_)
        inputs, widgets_values, widgets = [], [], 0
        for name, spec, required in ordered_inputs(definition):
            value = values.get(name)
            linked = isinstance(value, tuple)
            if is_widget(spec):
                widgets += 1
                widgets_values.append(default_value(spec) if value is None or linked else value)
                if extra_widget_values(name, spec):
                    widgets_values.append("fixed" if input_type(spec) == "INT" else "image")
                if not linked:
                    continue
            entry = {"name": name, "type": input_type(spec), "link": None}
            if is_widget(spec):
                entry["widget"] = {"name": name}
            if not required:
                entry["shape"] = 7  # the frontend's mark of an optional socket
            if linked:
                source, slot, kind = value
                link_id = len(self.links) + 1
                self.links.append([link_id, source.id, slot, node.id, len(inputs), kind])
                entry["link"] = link_id
            inputs.append(entry)
        multiline = sum(1 for _, spec, _ in ordered_inputs(definition)
                        if input_type(spec) == "STRING" and input_options(spec).get("multiline"))
        height = 46 + 22 * max(len(inputs), len(definition["output"])) + 24 * widgets + 80 * multiline
        self.nodes.append({
            "id": node.id, "type": type_, "pos": self._place(column, height), "size": [self.NODE_WIDTH, height],
            "flags": {}, "order": 0, "mode": 0, "inputs": inputs,
            "outputs": [{"name": name, "type": kind, "links": [], "slot_index": i}
                        for i, (name, kind) in enumerate(zip(definition["output_name"], definition["output"]))],
            "properties": {"Node name for S&R": type_}, "widgets_values": widgets_values,
            **({"title": title} if title else {}),
        })
        return node

    def note(self, column: int, text: str, title: str = "Read me") -> None:
        height = 60 + 18 * (len(text) // 48 + text.count("\n"))
        self.nodes.append({
            "id": len(self.nodes) + 1, "type": "Note", "pos": self._place(column, height),
            "size": [self.NODE_WIDTH + 60, height], "flags": {}, "order": 0, "mode": 0, "inputs": [],
            "outputs": [], "properties": {}, "widgets_values": [text], "title": title,
            "color": "#432", "bgcolor": "#653",
        })

    def to_json(self) -> dict:
        by_id = {node["id"]: node for node in self.nodes}
        for link_id, source, slot, *_ in self.links:
            by_id[source]["outputs"][slot]["links"].append(link_id)
        for index, node in enumerate(self._execution_order()):
            node["order"] = index
        return {"last_node_id": len(self.nodes), "last_link_id": len(self.links), "nodes": self.nodes,
                "links": self.links, "groups": [], "config": {},
                "extra": {"ds": {"scale": 0.75, "offset": [0, 0]}}, "version": 0.4}

    def _execution_order(self) -> list:
        parents = {node["id"]: {link[1] for link in self.links if link[3] == node["id"]} for node in self.nodes}
        done, order = set(), []
        while len(order) < len(self.nodes):
            for node in self.nodes:
                if node["id"] not in done and parents[node["id"]] <= done:
                    done.add(node["id"])
                    order.append(node)
        return order


# --------------------------------------------------------------------------- the workflows

def _text_and_models(g: Graph, dit_name: str | None = "dit"):
    """T5 + both prompts, the VAE and (unless None) the DiT: the part every workflow shares."""
    t5 = g.add("VDiT_LoadT5", 0, t5_name=MODEL_FILES["t5"])
    positive = g.add("VDiT_T5Encode", 1, title="Positive prompt", t5=t5[0], text=PROMPT)
    negative = g.add("VDiT_T5Encode", 1, title="Negative prompt", t5=t5[0], text=NEGATIVE)
    vae = g.add("VDiT_LoadSliceVAE", 0, vae_name=MODEL_FILES["vae"])
    dit = g.add("VDiT_LoadDiT", 0, dit_name=MODEL_FILES[dit_name]) if dit_name else None
    return positive, negative, vae, dit


def _sampler(g: Graph, column: int, model, positive, negative, latent, **values):
    values = {"seed": SETTINGS["seed"], "steps": SETTINGS["steps"], "cfg": SETTINGS["cfg"],
              "sampler_name": SETTINGS["sampler"], **values}
    return g.add("VDiT_Sampler", column, model=model, positive=positive, negative=negative, latent_image=latent,
                 **values)


def _save_video(g: Graph, column: int, vae, samples, prefix: str, fps=None):
    images = g.add("VDiT_VAEDecode", column, vae=vae[0], samples=samples[0], seam=SETTINGS["seam"])
    video = g.add("CreateVideo", column + 1, images=images[0], fps=fps if fps is not None else SETTINGS["fps"])
    g.add("SaveVideo", column + 1, video=video[0], filename_prefix=f"video/vdit_{prefix}")


FILE_LABELS = {"dit": "DiT", "vae": "VAE", "t5": "T5 text encoder (tokenizer/ beside it)",
               "motion_lora": "MotionLoRA", "pixart_base": "image DiT (PixArt base)",
               "motion_module": "motion module"}


def _files(*keys) -> str:
    return "; ".join(f"{FILE_LABELS[key]}: {MODEL_FILES[key]}" for key in keys) + "."


def text_to_video(g: Graph):
    g.note(0, "Text to video. " + MODEL_HELP + _files("dit", "vae", "t5") + "\n\nSettings: width / height are "
           "multiples of 16; length is 1 or a multiple of 8 (+1 allowed): 8 frames = 2 latent frames. The "
           f"values here are the ones the embedded default model was made for ({MADE_FOR_TEXT}). " + RELEASE_NOTE
           + " Lower the length or size if you run out of memory; the decode runs slice by slice.")
    positive, negative, vae, dit = _text_and_models(g)
    latent = g.add("VDiT_EmptyLatentVideo", 1, vae=vae[0], width=SETTINGS["width"], height=SETTINGS["height"],
                   length=SETTINGS["frames"])
    samples = _sampler(g, 2, dit[0], positive[0], negative[0], latent[0])
    _save_video(g, 3, vae, samples, "t2v")


def text_to_image(g: Graph):
    g.note(0, "Text to image: the same model with a 1-frame video. " + MODEL_HELP + _files("dit", "vae", "t5")
           + "\n\nThe image size follows the same rule (multiples of 16)." + SETTINGS_NOTE)
    positive, negative, vae, dit = _text_and_models(g)
    latent = g.add("VDiT_EmptyLatentVideo", 1, vae=vae[0], width=SETTINGS["width"], height=SETTINGS["height"],
                   length=1)
    samples = _sampler(g, 2, dit[0], positive[0], negative[0], latent[0])
    images = g.add("VDiT_VAEDecode", 3, vae=vae[0], samples=samples[0], seam=SETTINGS["seam"])
    g.add("SaveImage", 4, images=images[0], filename_prefix="vdit_t2i")


def image_to_video(g: Graph):
    g.note(0, "Image to video with a start and an end frame (disconnect end_image for start-frame only). "
           + MODEL_HELP + _files("dit", "vae", "t5") + "\n\nThe images are scaled to cover width x height and "
           "centre-cropped. Put your pictures in ComfyUI/input or use the upload button. With an InP "
           "(12-channel) release, also add 'Load EasyAnimate CLIP Vision' (its image_encoder folder) and connect "
           "it to clip_vision; 4-channel models (like the default model) keep the frames by latent blending and "
           "need no CLIP." + SETTINGS_NOTE + " " + RELEASE_NOTE)
    positive, negative, vae, dit = _text_and_models(g)
    start = g.add("LoadImage", 0, title="Start frame", image=INPUT_FILES["start_image"])
    end = g.add("LoadImage", 0, title="End frame", image=INPUT_FILES["end_image"])
    i2v = g.add("VDiT_ImageToVideo", 2, positive=positive[0], negative=negative[0], vae=vae[0],
                width=SETTINGS["width"], height=SETTINGS["height"], length=SETTINGS["i2v_frames"],
                start_image=start[0], end_image=end[0])
    samples = _sampler(g, 3, dit[0], i2v["positive"], i2v["negative"], i2v["latent"])
    _save_video(g, 4, vae, samples, "i2v")


def video_to_video(g: Graph):
    g.note(0, "Video to video: the input video is encoded, noised to 'denoise' and sampled again with the "
           "prompt. Lower denoise keeps more of the input (0.5-0.8 is typical). " + MODEL_HELP
           + _files("dit", "vae", "t5") + "\n\nFrames beyond the last full 8-frame slice are dropped; the frame "
           "size is centre-cropped to multiples of 16. The output keeps the input's frame rate." + SETTINGS_NOTE)
    positive, negative, vae, dit = _text_and_models(g)
    video = g.add("LoadVideo", 0, file=INPUT_FILES["video"])
    parts = g.add("GetVideoComponents", 1, video=video[0])
    encoded = g.add("VDiT_VAEEncode", 2, vae=vae[0], pixels=parts["images"])
    samples = _sampler(g, 3, dit[0], positive[0], negative[0], encoded[0], denoise=SETTINGS["v2v_denoise"])
    _save_video(g, 4, vae, samples, "v2v", fps=parts["fps"])


def pixart_motion_module(g: Graph):
    g.note(0, "EasyAnimate v1 style: an image DiT (a PixArt-alpha base) plus a motion module, and a MotionLoRA "
           "for a camera move, make a video model. " + MODEL_HELP
           + _files("pixart_base", "motion_module", "motion_lora", "vae", "t5") + " For the v1 release pick "
           "PixArt-XL-2-512x512/transformer and easyanimate_v1_mm.safetensors (motion preset v1).\n\n"
           "motion_scale scales the motion module's effect (0 = the still image model); the MotionLoRA strength "
           "scales its camera move." + SETTINGS_NOTE + " " + RELEASE_NOTE)
    positive, negative, vae, _ = _text_and_models(g, dit_name=None)
    base = g.add("VDiT_LoadDiT", 0, dit_name=MODEL_FILES["pixart_base"])
    motion = g.add("VDiT_LoadMotionModule", 0, motion_name=MODEL_FILES["motion_module"])
    motion_lora = g.add("VDiT_LoadMotionLoRA", 1, lora_name=MODEL_FILES["motion_lora"])
    model = g.add("VDiT_ApplyMotionModule", 1, model=base[0], motion_module=motion[0], motion_lora=motion_lora[0])
    latent = g.add("VDiT_EmptyLatentVideo", 2, vae=vae[0], width=SETTINGS["width"], height=SETTINGS["height"],
                   length=SETTINGS["frames"])
    samples = _sampler(g, 3, model[0], positive[0], negative[0], latent[0])
    _save_video(g, 4, vae, samples, "pixart_mm")


def long_video(g: Graph):
    g.note(0, "Long video with sliding context windows: each sampling step runs the DiT on overlapping windows "
           "of latent frames and blends them, so memory follows the window, not the video. Context counts are "
           "in latent frames (1 latent frame = 4 video frames): 4 = 16 frames. More overlap blends better but "
           "costs more compute. The default model was trained on 16-frame clips (4 latent frames), so its windows are 4 "
           "latent frames long. context_strides 2 (or more) also samples windows of every 2nd latent frame, so the "
           "motion runs across the whole video instead of restarting in each window (about 2x slower; 1 turns them "
           "off). " + MODEL_HELP + _files("dit", "vae", "t5") + SETTINGS_NOTE)
    positive, negative, vae, dit = _text_and_models(g)
    latent = g.add("VDiT_EmptyLatentVideo", 1, vae=vae[0], width=SETTINGS["width"], height=SETTINGS["height"],
                   length=SETTINGS["long_frames"])
    context = g.add("VDiT_ContextOptions", 1, context_length=SETTINGS["context_length"],
                    context_overlap=SETTINGS["context_overlap"], context_strides=SETTINGS["context_strides"])
    samples = _sampler(g, 2, dit[0], positive[0], negative[0], latent[0], context_options=context[0])
    _save_video(g, 3, vae, samples, "long")


WORKFLOWS_BUILT = {
    "text_to_video.json": text_to_video,
    "text_to_image.json": text_to_image,
    "image_to_video.json": image_to_video,
    "video_to_video.json": video_to_video,
    "pixart_motion_module.json": pixart_motion_module,
    "long_video_context_windows.json": long_video,
}


def build_all() -> dict:
    defs = definitions()
    built = {}
    for name, build in WORKFLOWS_BUILT.items():
        graph = Graph(defs)
        build(graph)
        built[name] = graph.to_json()
    return built


def serialise(workflow: dict) -> str:
    return json.dumps(workflow, indent=2) + "\n"


def main(argv: list[str]) -> int:
    built = build_all()
    stale = [name for name, flow in built.items()
             if not (WORKFLOWS / name).exists() or (WORKFLOWS / name).read_text() != serialise(flow)]
    if "--check" in argv:
        for name in stale:
            print(f"workflows/{name} is out of date; run python tests/workflow_builder.py")
        return 1 if stale else 0
    WORKFLOWS.mkdir(exist_ok=True)
    for name in stale:
        (WORKFLOWS / name).write_text(serialise(built[name]))
        print(f"wrote workflows/{name}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

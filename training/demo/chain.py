"""``python training/run.py demo-train``: the embedded default model, reproduced end to end.

    python training/run.py demo-train [--config training/demo/configs/demo.yaml] [key=value ...]

Every step is the toolkit's own command, run in this process on the synthetic world:

  world        raw videos with hard scene cuts (world.render_video)          workdir/raw/
  split        preprocess split: scene detection cascade -> clips           workdir/data/clips/
  text         preprocess text: drop clips with burned-in text
  motion       preprocess motion: drop static / shaky clips
  caption      the world's captioner: the CV reader (analysis.read_clip) describes each clip
  metadata     preprocess metadata -> metadata.json; stills (middle frames, PNG) -> images.json
  text-encoder the tiny T5 + world tokenizer (demo/text.py), never trained
  vae-init     the VAE's starting weights (posterior std starts small, see init_vae)
  vae-image    VAE stage 1 on stills only: an image autoencoder first, as the released VAE began
               from Stable Diffusion's
  vae          VAE stage 1 (whole model, images + clips), from vae-image inflated to video
  vae-decoder  VAE stage 2 (decoder only)
  vae-scale    scaling_factor = 1 / latent std of the training clips
  dit-image    DiT stage 1: image model on stills
  dit-motion   DiT stage 2: motion modules inserted and trained on clips
  dit-full     DiT stage 3: the whole video DiT
  motion-lora  a MotionLoRA for one camera motion (pan) on the motion modules
  export       the model folder in the published layouts (``output``)
  evaluate     held-out prompts -> colour / shape / direction accuracy, VAE PSNR, seams

Resumable: a finished stage leaves its output and is skipped on a rerun; a training stage that
was interrupted continues from its last checkpoint (the trainers' ``--resume``). ``fresh=true``
starts over. ``processes=N`` runs each training stage as N data-parallel processes (accelerate's
CPU DDP, one thread each; the demo config uses 2, one per core of a 2-core machine), and the
split, text and motion stages as N shards merged into the file one process writes. Stage times
go to ``workdir/timings.json`` and are printed at the end.
"""

from __future__ import annotations

import copy
import json
import random
import shutil
import sys
import time
from pathlib import Path

import yaml

from easyanimate_core.errors import InputError
from training.config import _merge, build_config, parse_override

ROOT = Path(__file__).resolve().parents[2]
DEFAULT_CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"

DEFAULTS = {
    "workdir": "outputs/demo",
    "output": "models/vdit_default",   # the finished model folder
    "seed": 0,
    "fresh": False,                    # delete workdir first
    "processes": 1,                    # training stages as N data-parallel processes (CPU DDP
                                       # through accelerate), one thread each; split, text and
                                       # motion as N shards
    "evaluate": True,                  # run the evaluator at the end
    "world": {"videos": 40, "scenes_per_video": 4, "frames_per_scene": [28, 36], "size": 64, "fps": 8},
    "preprocess": {"split": [], "text": [], "motion": []},   # extra CLI options per stage
    "stages": {"vae-image": {}, "vae": {}, "vae-decoder": {}, "dit-image": {}, "dit-motion": {}, "dit-full": {},
               "motion-lora": {}},
    "eval": {},                        # options of training/demo/evaluate.py
}
TRAINING_STAGES = ("vae-image", "vae", "vae-decoder", "dit-image", "dit-motion", "dit-full", "motion-lora")


class Chain:
    def __init__(self, cfg: dict):
        self.cfg = cfg
        self.work = Path(cfg["workdir"])
        self.data = self.work / "data"
        self.timings_path = self.work / "timings.json"
        self.timings = json.loads(self.timings_path.read_text()) if self.timings_path.is_file() else {}

    # ------------------------------------------------------------ bookkeeping

    def stage(self, name: str, done_marker: Path, function) -> None:
        if done_marker.exists():
            print(f"[demo] {name}: done already ({done_marker}), skipped", flush=True)
            return
        print(f"[demo] {name}: running", flush=True)
        began = time.perf_counter()
        function()
        if not done_marker.exists():
            raise RuntimeError(f"stage {name} finished without writing {done_marker}")
        spent = time.perf_counter() - began
        self.timings[name] = round(self.timings.get(name, 0.0) + spent, 1)
        self.timings_path.write_text(json.dumps(self.timings, indent=1))
        print(f"[demo] {name}: {spent:.1f} s", flush=True)

    def run_command(self, module: str, command: str, argv: list[str], processes: int = 1) -> None:
        from importlib import import_module

        print(f"[demo]   run.py {command} {' '.join(argv)}" + (f"  ({processes} processes)" if processes > 1 else ""),
              flush=True)
        if processes > 1:
            from training.loop import launch_data_parallel

            code = launch_data_parallel(processes, [str(ROOT / "training" / "run.py"), command, *argv]).returncode
        else:
            code = import_module(module).main(command, argv)
        if code:
            raise RuntimeError(f"run.py {command} exited with {code}")

    # ------------------------------------------------------------ data

    def render_world(self) -> None:
        from easyanimate_core.video_io import write_video

        from . import world

        w = self.cfg["world"]
        train, _ = world.held_out_split(seed=0)
        rng = random.Random(f"world-{self.cfg['seed']}")
        raw = self.work / "raw"
        raw.mkdir(parents=True, exist_ok=True)
        low, high = w["frames_per_scene"]
        for v in range(w["videos"]):
            scenes = []
            while len(scenes) < w["scenes_per_video"]:
                scene = rng.choice(train)
                # a cut between two scenes on the same plain background can be too subtle for any
                # content detector; real editors cut between different shots, so does the world
                if not scenes or scene.background != scenes[-1].background:
                    scenes.append(scene)
            lengths = [rng.randint(low, high) for _ in scenes]
            frames = world.render_video(scenes, lengths, w["size"], w["size"], seed=self.cfg["seed"] * 10000 + v)
            # lossless, full-resolution colour: 4:2:0 at crf 18 alone puts the data ~30 dB from the
            # renders, the PSNR the VAE is asked to reach; and x264's lossy output differs from run
            # to run here (9 of 48 videos did between two chains), lossless decodes never do
            write_video(raw / f"world_{v:04d}.mp4", frames, fps=w["fps"], crf=0, pix_fmt="yuv444p")
        (raw / "done.json").write_text(json.dumps({"videos": w["videos"]}))

    def preprocess(self, stage: str, argv: list[str], output: Path | None = None, key: str = "file_path") -> None:
        """One preprocess stage. One that writes a .jsonl ``output`` runs as ``processes`` shards
        (each takes every Nth item), merged into ``output`` afterwards: the file one process
        writes, since the merge sorts by ``key`` and the stages take their items in that order."""
        from training.preprocess.jobs import merge_jsonl, shard_files

        processes = self.cfg["processes"] if output is not None else 1
        argv = [stage] + argv + ([] if output is None else ["--output", str(output)])
        self.run_command("training.preprocess.cli", "preprocess",
                         argv + [str(a) for a in self.cfg["preprocess"].get(stage, [])], processes)
        if processes > 1:
            merge_jsonl(shard_files(output), output, key)

    def caption(self) -> None:
        """The world's captioner: what the reader sees in a clip, said as the world says it."""
        from training.preprocess.jobs import run_stage
        from training.preprocess.metadata import kept_records

        from .captioner import caption_records

        clips = self.data / "clips"
        records = kept_records(self.data / "motion.jsonl")
        run_stage("caption", records, "file_path", lambda batch: caption_records(batch, clips),
                  self.data / "caption.jsonl", batch_size=8)

    def metadata(self) -> None:
        stage_files = [str(self.data / f"{s}.jsonl") for s in ("split", "text", "motion", "caption")]
        self.preprocess("metadata", ["--input", str(self.data / "caption.jsonl"),
                                     "--output", str(self.data / "videos.json"), "--stages", *stage_files])
        from .captioner import write_stills

        write_stills(self.data / "videos.json", self.data / "images.json", self.data / "all.json")

    # ------------------------------------------------------------ training

    def stage_config(self, stage: str) -> dict:
        """The trainer options of a stage: the demo config's, plus the chain's paths."""
        models = self.work / "models"
        out = self.work / "runs" / stage
        cfg = copy.deepcopy(self.cfg["stages"][stage])
        if stage.startswith("vae"):  # the architecture comes with vae_init's config.json
            cfg.get("model", {}).pop("config", None)
        paths = {
            "vae-image": {"data": {"metadata": str(self.data / "images.json"), "types": "image"},
                          "model": {"pretrained": str(self.work / "models" / "vae_init")}},
            "vae": {"data": {"metadata": str(self.data / "all.json")},
                    "model": {"pretrained": str(self.work / "runs" / "vae-image" / "vae"), "inflate": True}},
            "vae-decoder": {"data": {"metadata": str(self.data / "all.json")},
                            "model": {"pretrained": str(self.work / "runs" / "vae" / "vae")}},
            "dit-image": {"data": {"metadata": str(self.data / "images.json")}},
            "dit-motion": {"data": {"metadata": str(self.data / "videos.json")},
                           "model": {"pretrained": str(self.work / "runs" / "dit-image" / "transformer")}},
            "dit-full": {"data": {"metadata": str(self.data / "all.json")},
                         "model": {"pretrained": str(self.work / "runs" / "dit-motion" / "transformer")}},
            "motion-lora": {"data": {"metadata": str(self.data / "videos.json")},
                            "model": {"pretrained": str(self.work / "runs" / "dit-full" / "transformer")}},
        }[stage]
        if stage.startswith("dit") or stage == "motion-lora":
            paths.update({"vae": {"pretrained": str(self.work / "models" / "vae")},
                          "text": {"encoder": str(models)},
                          # the LoRA's camera augmentation changes the pixels: its own cache
                          "cache": {"dir": str(self.work / ("cache-lora" if stage == "motion-lora" else "cache"))}})
        for group, values in paths.items():
            cfg.setdefault(group, {}).update(values)
        cfg.setdefault("train", {})["output_dir"] = str(out)
        return cfg

    def train(self, stage: str) -> None:
        from training.loop import complete_checkpoints

        cfg = self.stage_config(stage)
        out = Path(cfg["train"]["output_dir"])
        out.mkdir(parents=True, exist_ok=True)
        config_file = self.work / "configs" / f"{stage}.yaml"
        config_file.parent.mkdir(parents=True, exist_ok=True)
        config_file.write_text(yaml.safe_dump(cfg, sort_keys=False))
        argv = ["--config", str(config_file)]
        if complete_checkpoints(out):
            argv += ["--resume", "latest"]
        module = "training.train_vae" if stage.startswith("vae") else \
            {"motion-lora": "training.train_lora"}.get(stage, "training.train_dit")
        command = "vae" if stage == "vae-image" else stage  # the image VAE is VAE stage 1 on stills
        self.run_command(module, command, argv, self.cfg["processes"])

    def init_vae(self) -> None:
        """Random weights, except that the posterior's log-variance starts at -8 (std 0.02)
        instead of about 0 (std 1). From scratch, unit-variance sampling noise drowns the young
        encoder's small means and the autoencoder needs several times the steps to get going; the
        released VAE never met this because it started from Stable Diffusion's."""
        import torch

        from easyanimate_core.models.vae import VideoVAE
        from training.train_vae import export_vae

        torch.manual_seed(self.cfg["seed"])
        vae = VideoVAE.from_config(dict(self.cfg["stages"]["vae"]["model"]["config"]))
        half = vae.quant_conv.weight.shape[0] // 2
        with torch.no_grad():
            vae.quant_conv.weight[half:] = 0
            vae.quant_conv.bias[half:] = -8.0
        export_vae(vae, self.work / "models" / "vae_init")

    def calibrate_vae(self) -> None:
        """The DiT wants unit-variance latents: scaling_factor = 1 / std of the latents of the
        training clips (as Stable Diffusion's 0.18215 was found), written into the VAE's config."""
        import torch

        from easyanimate_core.models.vae import load_vae
        from training.data import BatchPlan, MediaDataset, collate, load_entries

        source = self.work / "runs" / "vae-decoder" / "vae"
        vae = load_vae(source, dtype=torch.float32).eval()
        dcfg = {"types": "video", "batch_size": 1, "sample_size": self.cfg["world"]["size"], "frames": 16,
                "stride": 1, "buckets": False, "random_frame_crop": False}
        entries = load_entries(str(self.data / "videos.json"), None)
        plan = BatchPlan(entries, dcfg, self.cfg["seed"], interval=vae.mini_batch_encoder)
        dataset = MediaDataset(entries, dcfg)
        latents = []
        with torch.no_grad():
            for batch in plan.epoch_batches(0)[:32]:
                pixels = collate([dataset[item] for item in batch])["pixels"]
                latents.append(vae.encode(pixels).mode().flatten())
        std = float(torch.cat(latents).std())
        target = self.work / "models" / "vae"
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target)
        config = json.loads((target / "config.json").read_text())
        config["scaling_factor"] = round(1.0 / std, 6)
        (target / "config.json").write_text(json.dumps(config, indent=2))
        print(f"[demo]   latent std {std:.4f} -> scaling_factor {config['scaling_factor']}", flush=True)

    def done_marker(self, stage: str) -> Path:
        out = self.work / "runs" / stage
        if stage.startswith("vae"):
            return out / "vae" / "config.json"
        return out / ("motion_lora.safetensors" if stage == "motion-lora" else "transformer/config.json")

    # ------------------------------------------------------------ the whole chain

    def run(self) -> None:
        from .export import export_model
        from .text import write_text_encoder

        began = time.perf_counter()
        d = self.data
        self.stage("world", self.work / "raw" / "done.json", self.render_world)
        self.stage("split", d / "split.done", lambda: self._mark(
            self.preprocess, "split", ["--input", str(self.work / "raw"), "--clips-dir", str(d / "clips")],
            d / "split.jsonl", "source", d / "split.done"))
        for name in ("text", "motion"):
            previous = d / ("split.jsonl" if name == "text" else "text.jsonl")
            self.stage(name, d / f"{name}.done", lambda name=name, previous=previous: self._mark(
                self.preprocess, name, ["--input", str(previous), "--data-root", str(d / "clips")],
                d / f"{name}.jsonl", "file_path", d / f"{name}.done"))
        self.stage("caption", d / "caption.done", lambda: self._mark(self.caption, d / "caption.done"))
        self.stage("metadata", d / "all.json", self.metadata)
        models = self.work / "models"
        self.stage("text-encoder", models / "text_encoder" / "config.json",
                   lambda: write_text_encoder(models, seed=self.cfg["seed"]))
        self.stage("vae-init", models / "vae_init" / "config.json", self.init_vae)
        for stage in TRAINING_STAGES:
            self.stage(stage, self.done_marker(stage), lambda stage=stage: self.train(stage))
            if stage == "vae-decoder":
                self.stage("vae-scale", models / "vae" / "config.json", self.calibrate_vae)
        output = Path(self.cfg["output"])
        self.stage("export", self.work / "export.done", lambda: self._mark(
            export_model, self.work, output, self.cfg, self.timings, self.work / "export.done"))
        if self.cfg["evaluate"]:
            from .evaluate import evaluate_model

            self.stage("evaluate", self.work / "evaluation.json", lambda: evaluate_model(
                output, self.work / "evaluation.json", **self.cfg["eval"]))
        total = time.perf_counter() - began
        print("[demo] stage times (s, summed over resumed runs):")
        for name, seconds in self.timings.items():
            print(f"  {name:<13} {seconds:8.1f}")
        print(f"  {'total':<13} {sum(self.timings.values()):8.1f}   (this invocation: {total:.1f} s)")
        print(f"[demo] model folder: {output}")

    @staticmethod
    def _mark(function, *args):
        *args, marker = args
        function(*args)
        Path(marker).write_text("done\n")


def parse(argv) -> dict:
    import argparse

    parser = argparse.ArgumentParser(prog="run.py demo-train", description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter,
                                     epilog=__doc__.split("\n\n", 2)[2])
    parser.add_argument("--config", default=str(DEFAULT_CONFIG), help="demo YAML (default: %(default)s)")
    parser.add_argument("overrides", nargs="*", metavar="key=value",
                        help="e.g. workdir=runs/demo stages.dit-full.train.steps=100")
    args = parser.parse_args(list(argv))
    cfg = build_config(DEFAULTS, args.config)
    for item in args.overrides:
        override = parse_override(item)
        _merge(copy.deepcopy(cfg), copy.deepcopy(override), "command line")  # names checked here
        _deep_update(cfg, override)
    return cfg


def _deep_update(base: dict, extra: dict) -> None:
    """Nested update, so ``stages.dit-full.train.steps=10`` keeps the stage's other options."""
    for key, value in extra.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            _deep_update(base[key], value)
        else:
            base[key] = value


def main(command: str, argv) -> int:
    import torch

    cfg = parse(argv)
    torch.set_num_threads(1)  # the machine is shared; more threads only spin
    if cfg["fresh"] and Path(cfg["workdir"]).exists():
        shutil.rmtree(cfg["workdir"])
    if Path(cfg["output"]).resolve() == ROOT / "models" / "vdit_default" and "pytest" in sys.modules:
        raise InputError("tests must not overwrite the shipped model; give output=<a temporary folder>.")
    Chain(cfg).run()
    return 0

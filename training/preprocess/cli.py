"""``python training/run.py preprocess <stage> [options]``: the data pipeline, stage by stage or all.

Stages and their files (``all`` runs them in this order inside ``--workdir``):
  split      source videos -> clips/ + split.jsonl (one line per source, with its clips)
  text       drop clips with burned-in text            -> text.jsonl
  motion     drop clips too static or too shaky        -> motion.jsonl
  aesthetic  drop ugly clips (needs local CLIP + head) -> aesthetic.jsonl
  caption    caption kept clips                        -> caption.jsonl
  metadata   training metadata JSON + summary          -> metadata.json, summary.txt
  merge      join shard files (--workdir W, or --output OUT INPUT...)
Cheap filters run first so the model stages see fewer clips. Every stage resumes where it stopped.
The caption stage says where its captions come from (a model, or .txt sidecars when no
--caption-model is given) before any work, and summary.txt repeats it. A run that keeps no clip
exits with an error naming the stages that dropped clips, how many and their score range.
Shards: --num-shards N --shard-index I (or RANK / WORLD_SIZE from accelerate / torchrun); each
shard writes NAME.shard-0000I-of-0000N.jsonl; 'merge' joins them afterwards.
"""

from __future__ import annotations

import argparse
import sys
from functools import partial
from pathlib import Path

from easyanimate_core.errors import InputError
from easyanimate_core.progress import console
from easyanimate_core.video_io import PIX_FMTS, probe_video

from . import aesthetic, caption, metadata, motion, split, text_score
from .jobs import Shard, merge_jsonl, read_jsonl, run_stage, shard_files

CLIP_STAGES = ("text", "motion", "aesthetic", "caption")
STAGE_FILES = ("split", *CLIP_STAGES)


# ---------------------------------------------------------------- options

class Removed(argparse.Action):
    """An option that no longer exists, refused with the reason before anything is read."""

    def __init__(self, option_strings, dest, reason: str, **kwargs):
        self.reason = reason
        super().__init__(option_strings, dest, nargs="?", metavar="VALUE", help=f"removed: {reason}", **kwargs)

    def __call__(self, parser, namespace, values, option_string=None):
        raise InputError(f"{option_string} was removed: {self.reason}")


def _add_shards(p):
    p.add_argument("--num-shards", type=int, default=None, help="split the work into this many shards "
                   "(default: WORLD_SIZE from the environment, else 1)")
    p.add_argument("--shard-index", type=int, default=None,
                   help="which shard this process runs, 0-based (default: RANK from the environment, else 0)")


def _add_split(p):
    p.add_argument("--threshold", type=float, default=27.0,
                   help="PySceneDetect ContentDetector threshold: a frame changing more than this starts a scene")
    p.add_argument("--min-cut-jump", type=float, default=3.0, help="a cut must change the picture this much more "
                   "than the frames around it change (drops false cuts inside fast motion; 0 = off)")
    p.add_argument("--min-scene-frames", type=int, default=15, help="shortest scene the detector reports, in frames")
    p.add_argument("--thresholds", "--frame-skips", action=Removed,
                   reason="the detector cascade added cuts inside fast scenes; use --threshold and --min-cut-jump")
    p.add_argument("--min-seconds", type=float, default=3.0, help="shortest clip kept, in seconds")
    p.add_argument("--max-seconds", type=float, default=10.0,
                   help="longer scenes are cut into pieces this long, in seconds")
    p.add_argument("--crf", type=int, default=18, help="H.264 quality of the clips, 0-51 (lower is better)")
    p.add_argument("--pix-fmt", choices=PIX_FMTS, default="yuv420p",
                   help="pixel format of the clips; yuv444p keeps full-resolution colour (small frames)")


def _add_text(p):
    p.add_argument("--text-detector", choices=["opencv", "easyocr"], default="opencv",
                   help="opencv needs no weights; easyocr needs the easyocr package and --text-model")
    p.add_argument("--text-model", default=None, help="folder with EasyOCR's craft_mlt_25k.pth (easyocr only)")
    p.add_argument("--max-text-area", type=float, default=0.01,
                   help="drop clips whose text covers more of a frame than this fraction")
    p.add_argument("--text-frames", type=int, default=3, help="frames sampled per clip")


def _add_motion(p):
    p.add_argument("--min-motion", type=float, default=motion.MIN_MOTION, help="keep clips whose motion score (%% "
                   "of the frame diagonal per second, Farneback flow between adjacent frames) is above this")
    p.add_argument("--max-motion", type=float, default=motion.MAX_MOTION,
                   help="keep clips whose motion score is below this (100: the whole diagonal each second)")
    p.add_argument("--flow", "--flow-weights", action=Removed,
                   reason="flow networks loaded from TorchScript / torch.export files can run code; the motion "
                          "score uses OpenCV's Farneback flow")


def _add_aesthetic(p):
    p.add_argument("--clip-model", default=None, help="local CLIP ViT-L/14 folder (transformers layout)")
    p.add_argument("--aesthetic-head", default=None, help="LAION aesthetic predictor head (.pth / .safetensors)")
    p.add_argument("--min-aesthetic", type=float, default=4.0, help="keep clips scoring at least this")


def _add_caption(p):
    p.add_argument("--caption-model", default=None, help="local vision-language model folder")
    p.add_argument("--summary-model", default=None, help="local causal LM folder to merge frame captions")
    p.add_argument("--captions", choices=["model", "sidecar"], default=None,
                   help="where captions come from (default: model when --caption-model is given, else sidecar)")
    p.add_argument("--captions-from", default=None, help="existing metadata (JSON/JSONL/CSV) whose text to reuse")
    p.add_argument("--sources-root", default=None, help="folder of the source videos, for source .txt sidecars "
                   "(default in 'all': the input's folder)")
    p.add_argument("--caption-frames", type=int, default=1, help="frames captioned per clip (1 = middle frame)")
    p.add_argument("--max-new-tokens", type=int, default=128, help="longest caption per frame, in tokens")
    p.add_argument("--summary-temperature", type=float, default=0.8,
                   help="sampling temperature of the summary model (0 = greedy)")
    p.add_argument("--batch-size", type=int, default=8, help="clips per model batch")


def _add_device(p):
    p.add_argument("--device", default="cpu", help="torch device for model stages (cpu, cuda, cuda:1, ...)")
    p.add_argument("--dtype", choices=["float32", "float16", "bfloat16"], default="float32",
                   help="weights' dtype in model stages")


def _add_io(p, needs_root=True):
    p.add_argument("--input", required=True, help="previous stage's .jsonl, or a folder of clips")
    p.add_argument("--output", required=True, help="this stage's .jsonl (appended to, resumable)")
    if needs_root:
        p.add_argument("--data-root", default=None, help="folder the clips' file_path is relative to "
                       "(default: the input folder, or clips/ next to the input file)")


class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """The module docstring as written, and each option's default after its help (unless the help
    already says what the default is)."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default not in (None, argparse.SUPPRESS, False, []) and "default" not in text and action.option_strings:
            text += " (default: %(default)s)"
        return text


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="run.py preprocess", description=__doc__, formatter_class=HelpFormatter)
    sub = parser.add_subparsers(dest="stage", required=True, parser_class=partial(argparse.ArgumentParser,
                                                                                 formatter_class=HelpFormatter))

    p = sub.add_parser("split", help="cut source videos into single-scene clips")
    p.add_argument("--input", required=True, help="folder of videos, one video, or a .txt list")
    p.add_argument("--clips-dir", required=True, help="where the clips are written (the data root)")
    p.add_argument("--output", required=True, help="split.jsonl")
    _add_split(p), _add_shards(p)

    for name, add in (("text", _add_text), ("motion", _add_motion), ("aesthetic", _add_aesthetic),
                      ("caption", _add_caption)):
        p = sub.add_parser(name, help=f"{name} stage over clips")
        _add_io(p), add(p), _add_shards(p)
        _add_device(p)

    p = sub.add_parser("metadata", help="training metadata JSON + kept/dropped summary")
    p.add_argument("--input", required=True, help="the last stage's .jsonl")
    p.add_argument("--output", required=True, help="metadata .json")
    p.add_argument("--data-root", default=None, help="folder the clips' file_path is relative to "
                   "(default: clips/ next to the input)")
    p.add_argument("--stages", nargs="*", default=[], help="stage .jsonl files to summarise, in order")

    p = sub.add_parser("merge", help="join the shard files of a run")
    p.add_argument("--workdir", default=None, help="merge every stage's shards in this 'all' workdir")
    p.add_argument("--output", default=None, help="merge INPUTS into this file (.jsonl or metadata .json)")
    p.add_argument("inputs", nargs="*", help="with --output: the stage files or metadata files to join")

    p = sub.add_parser("all", help="split -> text -> motion -> aesthetic -> caption -> metadata")
    p.add_argument("--input", required=True, help="folder of videos, one video, or a .txt list")
    p.add_argument("--workdir", required=True, help="clips/, stage files, metadata.json, summary.txt go here")
    for add in (_add_split, _add_text, _add_motion, _add_aesthetic, _add_caption, _add_device, _add_shards):
        add(p)
    p.add_argument("--skip", nargs="*", default=[], choices=CLIP_STAGES, help="clip stages not to run")
    return parser


# ---------------------------------------------------------------- stages

def _dtype(name):
    import torch

    return getattr(torch, name)


def clip_items(source, data_root=None) -> tuple[list[dict], Path]:
    """(records, data root) from a stage .jsonl or a folder of clips."""
    source = Path(source)
    if source.is_dir():
        _, names = split.list_sources(source)
        return [_folder_record(source, name) for name in names], Path(data_root or source)
    if not source.is_file():
        raise InputError(f"input {source} is neither a stage .jsonl file nor a folder of clips; check --input")
    return metadata.kept_records(source), Path(data_root or source.parent / "clips")


def _folder_record(root: Path, name: str) -> dict:
    record = {"file_path": name, "type": "video"}
    try:
        info = probe_video(root / name)
        record.update(width=info.width, height=info.height, num_frames=info.num_frames, fps=info.fps)
    except InputError:
        pass  # the stage itself reports the unreadable file
    return record


def _per_item(function):
    return lambda batch: [function(item) for item in batch]


def _report(report) -> None:
    print(f"[{report.name}] {report.total} items in shard: {report.skipped} already done, {report.done} done now, "
          f"{report.errors} unreadable", file=sys.stderr, flush=True)


def split_options(args) -> split.SplitOptions:
    return split.SplitOptions(args.threshold, args.min_scene_frames, args.min_cut_jump, args.min_seconds,
                              args.max_seconds, args.crf, args.pix_fmt)


def run_split(args, shard: Shard, output) -> None:
    options = split_options(args)
    root, names = split.list_sources(args.input)
    clips_dir = Path(args.clips_dir)

    def work(item):
        record = split.split_video(root, item["source"], clips_dir, options)
        if "damaged" in record:
            announce("split", f"damaged {item['source']}: {record['damaged']}; its decodable scenes are used")
        return record

    _report(run_stage("split", [{"source": n} for n in names], "source", _per_item(work), output, shard=shard,
                      progress=console("split", "video")))


def clip_work(stage: str, args, root: Path):
    """The batch function of a clip stage, or None when the stage has nothing to score with."""
    if stage == "text":
        detector = text_score.make_text_detector(args.text_detector, args.text_model, gpu=args.device != "cpu")
        return _per_item(partial(text_score.score_clip, root=root, detector=detector,
                                 max_area=args.max_text_area, num_frames=args.text_frames))
    if stage == "motion":
        if not args.min_motion < args.max_motion:
            raise InputError(f"--min-motion {args.min_motion} must be below --max-motion {args.max_motion}; the motion "
                             f"score is in % of the frame diagonal per second (defaults {motion.MIN_MOTION} and "
                             f"{motion.MAX_MOTION})")
        return _per_item(partial(motion.score_clip, root=root, low=args.min_motion, high=args.max_motion))
    if stage == "aesthetic":
        if bool(args.clip_model) != bool(args.aesthetic_head):
            raise InputError("the aesthetic score needs both --clip-model (CLIP ViT-L/14 folder) and --aesthetic-head "
                             "(LAION head file); give both, or neither to pass clips through unscored")
        if not args.clip_model:
            return None
        scorer = aesthetic.AestheticScorer(args.clip_model, args.aesthetic_head, args.device, _dtype(args.dtype))
        return _per_item(partial(aesthetic.score_clip, root=root, scorer=scorer, minimum=args.min_aesthetic))
    if stage == "caption":
        source = caption_mode(args)
        if source == "model" and not args.caption_model:
            raise InputError("--captions model needs --caption-model with a local vision-language model folder")
        announce("caption", caption.describe_mode(source, args.caption_model, args.captions))
        if source == "model":
            frames = caption.VisionCaptioner(args.caption_model, max_new_tokens=args.max_new_tokens,
                                             device=args.device, dtype=_dtype(args.dtype))
            summarizer = caption.Summarizer(args.summary_model, temperature=args.summary_temperature,
                                            device=args.device, dtype=_dtype(args.dtype)) if args.summary_model else None
            return caption.ClipCaptioner(root, frames=frames, summarizer=summarizer, num_frames=args.caption_frames)
        existing = {}
        if args.captions_from:
            existing = {r["file_path"]: r["text"] for r in metadata.load_metadata(args.captions_from)}
        sidecar = caption.SidecarCaptioner(root, args.sources_root, existing)
        return caption.ClipCaptioner(root, sidecar=sidecar)
    raise InputError(f"unknown clip stage {stage!r}")


def caption_mode(args) -> str:
    return args.captions or ("model" if args.caption_model else "sidecar")


def announce(stage: str, message: str) -> None:
    print(f"[{stage}] {message}", file=sys.stderr, flush=True)


def run_clip_stage(stage: str, args, items: list[dict], work, output, shard: Shard) -> None:
    if work is None:
        print(f"[{stage}] no weights given (--clip-model and --aesthetic-head): clips pass through UNSCORED",
              file=sys.stderr, flush=True)
        work = _per_item(dict)
    batch = args.batch_size if stage == "caption" else 1
    _report(run_stage(stage, items, "file_path", work, output, shard=shard, batch_size=batch,
                      progress=console(stage, "clip")))


def finish(data_root: Path, last_stage_file: Path, stage_files: list, metadata_path: Path, summary_path: Path,
           notes: tuple = (), shard_of_many: bool = False):
    """Write the metadata and the summary; a run that keeps no clip is an error naming what
    dropped the clips (no metadata is written then); one shard of many may come out empty
    (its empty metadata is merged with the others')."""
    rows = [metadata.stage_summary(Path(f).stem.split(".")[0], f) for f in stage_files]
    table = metadata.summary_table(rows)
    kept = metadata.kept_records(last_stage_file)
    written = kept or shard_of_many
    result = f"metadata: {len(kept)} clips -> {metadata_path}" if written else "metadata: no clip kept, nothing written"
    summary_path.parent.mkdir(parents=True, exist_ok=True)
    summary_path.write_text("\n".join([table, *notes, result]) + "\n", encoding="utf-8")
    print("\n".join([table, *notes]))
    if not written:
        raise InputError(f"no clip was kept: {metadata.why_nothing_kept(rows)}; loosen the filter that dropped "
                         f"them (see {summary_path}) or check the input")
    metadata.write_metadata(kept, metadata_path, data_root)
    print(result)


def run_all(args, shard: Shard) -> None:
    workdir = Path(args.workdir)
    clips_dir = workdir / "clips"
    args.clips_dir = str(clips_dir)
    args.sources_root = args.sources_root or str(split.list_sources(args.input)[0])  # for source .txt sidecars
    files = dict(zip(STAGE_FILES, (shard.path(workdir / f"{name}.jsonl") for name in STAGE_FILES)))
    stages = [stage for stage in CLIP_STAGES if stage not in args.skip]
    split_options(args)  # bad options fail before any work
    works = {stage: clip_work(stage, args, clips_dir) for stage in stages}
    run_split(args, shard, files["split"])
    done = [files["split"]]
    for stage in stages:
        # the clips already belong to this shard (their sources did), so no second sharding
        run_clip_stage(stage, args, metadata.kept_records(done[-1]), works[stage], files[stage], Shard())
        done.append(files[stage])
    notes = [f"captions: {caption.describe_mode(caption_mode(args), args.caption_model, args.captions)}"] \
        if "caption" in stages else []
    finish(clips_dir, done[-1], done, shard.path(workdir / "metadata.json"), shard.path(workdir / "summary.txt"),
           tuple(notes), shard_of_many=shard.count > 1)


def run_merge(args) -> None:
    if args.workdir:
        workdir = Path(args.workdir)
        merged = []
        for name in STAGE_FILES:
            target = workdir / f"{name}.jsonl"
            parts = shard_files(target)
            if parts:
                merge_jsonl(parts, target, "source" if name == "split" else "file_path")
            if target.exists():
                merged.append(target)
        if not merged:
            raise InputError(f"workdir {workdir} has no stage files or shards to merge; check --workdir")
        finish(workdir / "clips", merged[-1], merged, workdir / "metadata.json", workdir / "summary.txt")
        return
    if not args.output or not args.inputs:
        raise InputError("merge needs --workdir, or --output and the files to merge")
    if args.output.endswith(".json"):
        rows = {}
        for path in args.inputs:
            for row in metadata.load_metadata(path):
                rows.setdefault(row["file_path"], row)
        count = metadata.write_metadata(list(rows.values()), args.output, "/")
    else:
        key = "source" if any("clips" in r for path in args.inputs for r in read_jsonl(path)) else "file_path"
        count = merge_jsonl(args.inputs, args.output, key)
    print(f"merged {len(args.inputs)} files: {count} records -> {args.output}")


def main(command: str, argv: list[str]) -> int:
    args = build_parser().parse_args(argv)
    if args.stage == "merge":
        run_merge(args)
        return 0
    if args.stage == "metadata":
        root = Path(args.data_root or Path(args.input).parent / "clips")
        finish(root, Path(args.input), args.stages or [args.input], Path(args.output),
               Path(args.output).with_name("summary.txt"))
        return 0
    shard = Shard.resolve(args.shard_index, args.num_shards)
    if args.stage == "all":
        run_all(args, shard)
    elif args.stage == "split":
        run_split(args, shard, shard.path(args.output))
    else:
        items, root = clip_items(args.input, args.data_root)
        run_clip_stage(args.stage, args, items, clip_work(args.stage, args, root), shard.path(args.output), shard)
    return 0

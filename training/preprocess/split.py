"""Stage 1: cut source videos into single-scene clips of a few seconds.

Scene cuts come from PySceneDetect's ContentDetector at its own defaults (threshold 27, scenes of
at least 15 frames), with one check added: a candidate cut must change the picture at least
``min_cut_jump`` more than the frames around it change (the larger of the medians of the 4
frames before and the 4 after). Fast motion over texture keeps the detector's score near its
threshold for seconds (an object wrapping around the frame edge tips it over), and those
crossings are not spikes; real cuts are. Measured on synthetic footage (``bench/bench_preprocess.py``):
the check removes the false cuts inside fast scenes and none of the real ones. The reference's
cascade (10/20/30 with frame skips) added such cuts inside scenes.

Scenes shorter than ``min_seconds`` are dropped; longer than ``max_seconds`` are cut into
consecutive ``max_seconds`` pieces, and the remainder is kept when it is at least
``min_seconds`` long. Clips are re-encoded frame-exactly with H.264 (audio is not kept: the
trainers do not use it) in one sequential decode of the source. A source that decodes only in
part (a broken download) is recorded with the frames that decoded and marked ``damaged``; its
decodable scenes are kept.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from easyanimate_core.errors import InputError
from easyanimate_core.video_io import VideoWriter, iter_frames, probe_video

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".flv", ".mov", ".m4v"}


@dataclass(frozen=True)
class SplitOptions:
    threshold: float = 27.0  # PySceneDetect's ContentDetector default
    min_scene_frames: int = 15  # PySceneDetect's min_scene_len default, in frames
    min_cut_jump: float = 3.0  # how far a cut's score must rise above the frames around it
    min_seconds: float = 3.0
    max_seconds: float = 10.0
    crf: int = 18
    pix_fmt: str = "yuv420p"

    def __post_init__(self):
        if self.threshold <= 0 or self.min_scene_frames < 1 or self.min_cut_jump < 0:
            raise InputError(f"scene detection needs --threshold > 0, --min-scene-frames >= 1 and --min-cut-jump >= 0, "
                             f"got {self.threshold}, {self.min_scene_frames} and {self.min_cut_jump}; fix those options")
        if not 0 < self.min_seconds <= self.max_seconds:
            raise InputError(f"clip length bounds must satisfy 0 < min <= max, got min {self.min_seconds} s "
                             f"and max {self.max_seconds} s; fix --min-seconds / --max-seconds")


def list_sources(source) -> tuple[Path, list[str]]:
    """(root, names): every video under a folder (names relative to it), a single video file,
    or the paths listed one per line in a .txt file (relative lines are relative to the list)."""
    source = Path(source)
    if source.is_dir():
        names = sorted(str(p.relative_to(source)) for p in source.rglob("*")
                       if p.suffix.lower() in VIDEO_SUFFIXES and p.is_file())
        return source, names
    if source.suffix == ".txt" and source.is_file():
        lines = [line.strip() for line in source.read_text().splitlines() if line.strip()]
        return source.parent, lines
    if source.is_file():
        return source.parent, [source.name]
    raise InputError(f"input {source} is not a folder, a video file or a .txt list of videos; "
                     f"check --input")


def detect_cuts(path, options: SplitOptions) -> tuple[list[int], int]:
    """(frame indices where a new scene starts (never 0), frames the detector decoded)."""
    from scenedetect import SceneManager, open_video

    from .scene_scores import ScoredContentDetector

    video = open_video(str(path), backend="pyav")
    detector = ScoredContentDetector(options.threshold, options.min_scene_frames)
    manager = SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(video)
    decoded = video.frame_number
    scores = np.array([detector.scores.get(i, 0.0) for i in range(decoded + 1)])
    cuts = [start.frame_num for start, _ in manager.get_scene_list()[1:]]
    return [cut for cut in cuts if _jump(scores, cut) >= options.min_cut_jump], decoded


def _jump(scores: np.ndarray, frame: int, window: int = 4) -> float:
    """How far the change into ``frame`` rises above the change around it."""
    before, after = scores[max(1, frame - window):frame], scores[frame + 1:frame + 1 + window]
    level = max([float(np.median(side)) for side in (before, after) if len(side)], default=0.0)
    return float(scores[frame]) - level


def plan_clips(cuts: list[int], num_frames: int, fps: float, options: SplitOptions):
    """Scene boundaries -> (clips, dropped): clips as (start, end) frame ranges, end exclusive;
    dropped as (start, end, reason)."""
    min_frames = round(options.min_seconds * fps)
    max_frames = round(options.max_seconds * fps)
    bounds = [0] + [c for c in cuts if 0 < c < num_frames] + [num_frames]
    clips, dropped = [], []
    for start, end in itertools.pairwise(bounds):
        while end - start > max_frames:
            clips.append((start, start + max_frames))
            start += max_frames
        if end - start >= min_frames:
            clips.append((start, end))
        elif end > start:
            dropped.append((start, end, "short"))
    return clips, dropped


def split_video(root: Path, name: str, clips_dir: Path, options: SplitOptions) -> dict:
    """Detect, plan and export the clips of one source; returns its record (with ``clips``).
    Clip files are written under temporary names and renamed when complete; on failure the
    partial clips of this source are removed."""
    path = root / name
    info = probe_video(path)
    cuts, decoded = detect_cuts(path, options)
    decoded = min(decoded, info.num_frames)
    plan, dropped = plan_clips(cuts, decoded, info.fps, options)
    stem = Path(name).with_suffix("")
    targets = [clips_dir / f"{stem}-Scene-{k:03d}.mp4" for k in range(1, len(plan) + 1)]
    partial = [target.with_name(target.stem + ".part.mp4") for target in targets]
    clips = []
    try:
        seen = _export(path, plan, partial, info.fps, options.crf, options.pix_fmt)
        if plan and seen < plan[-1][1]:  # the export's decoder gave up before the detector's did
            decoded = seen
        min_frames = round(options.min_seconds * info.fps)
        for (start, end), part, target in zip(plan, partial, targets):
            if min(end, seen) - start < min_frames:
                dropped.append((start, end, "damaged"))
                continue
            end = min(end, seen)
            size = probe_video(part)
            os.replace(part, target)
            clips.append({
                "file_path": str(target.relative_to(clips_dir)), "source": name,
                "start": round(start / info.fps, 4), "end": round(end / info.fps, 4),
                "start_frame": start, "end_frame": end, "num_frames": end - start,
                "fps": info.fps, "width": size.width, "height": size.height, "type": "video",
            })
    finally:
        for part in partial:
            if part.exists():
                part.unlink()
    record = {"source": name, "fps": info.fps, "num_frames": decoded, "cuts": cuts,
              "dropped_scenes": [list(d) for d in dropped], "clips": clips}
    if decoded < info.num_frames:
        record["container_frames"] = info.num_frames
        record["damaged"] = f"only {decoded} of the {info.num_frames} frames its header lists decode"
    return record


def _export(path, plan, outputs, fps: float, crf: int, pix_fmt: str) -> int:
    """Write each planned range to its output in one sequential decode; returns how many frames
    were decoded (fewer than planned when the file breaks off: a decode error after the first
    frame ends the file there, as a broken download does)."""
    writers = [VideoWriter(out, fps, crf=crf, pix_fmt=pix_fmt) for out in outputs]
    seen, clip = 0, 0
    frames = iter_frames(path)
    try:
        while clip < len(plan):
            try:
                index, frame = next(frames)
            except StopIteration:
                break
            except InputError:
                if seen == 0:
                    raise
                break
            seen = index + 1
            while clip < len(plan) and index >= plan[clip][1]:
                writers[clip].close()
                clip += 1
            if clip < len(plan) and index >= plan[clip][0]:
                writers[clip].write(frame)
    finally:
        frames.close()
        for writer in writers:
            writer.close()
    return seen

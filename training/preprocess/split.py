"""Stage 1: cut source videos into single-scene clips of a few seconds.

Scene cuts come from PySceneDetect's content detector run as a cascade of (threshold,
frame_skip) passes, as in the reference (10/0, 20/1, 30/2): low thresholds on every frame catch
hard cuts exactly; higher thresholds on skipped frames catch gradual changes. The cuts of all
passes are united; a coarser pass reports a cut the finer passes already found up to
``frame_skip + 1`` frames late, so such near-duplicates are merged into the finer pass's cut
instead of leaving a one-frame sliver between them.

Scenes shorter than ``min_seconds`` are dropped; longer than ``max_seconds`` are cut into
consecutive ``max_seconds`` pieces, and the remainder is kept when it is at least
``min_seconds`` long. Clips are re-encoded frame-exactly with H.264 (audio is not kept: the
trainers do not use it) in one sequential decode of the source.
"""

from __future__ import annotations

import itertools
import os
from dataclasses import dataclass
from pathlib import Path

from easyanimate_core.errors import InputError
from easyanimate_core.video_io import VideoWriter, iter_frames, probe_video

VIDEO_SUFFIXES = {".mp4", ".webm", ".mkv", ".avi", ".flv", ".mov", ".m4v"}


@dataclass(frozen=True)
class SplitOptions:
    thresholds: tuple = (10.0, 20.0, 30.0)
    frame_skips: tuple = (0, 1, 2)
    min_scene_frames: int = 10  # PySceneDetect's min_scene_len, in frames
    min_seconds: float = 3.0
    max_seconds: float = 10.0
    crf: int = 18
    pix_fmt: str = "yuv420p"

    def __post_init__(self):
        if len(self.thresholds) != len(self.frame_skips):
            raise InputError(f"--thresholds and --frame-skips pair up one to one, got {len(self.thresholds)} "
                             f"thresholds and {len(self.frame_skips)} frame skips; give as many of each")
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


def detect_cuts(path, options: SplitOptions) -> list[int]:
    """Frame indices where a new scene starts (never 0), united over the detector cascade."""
    from scenedetect import ContentDetector, SceneManager, open_video

    cuts: list[int] = []
    for threshold, skip in sorted(zip(options.thresholds, options.frame_skips), key=lambda pair: pair[1]):
        video = open_video(str(path), backend="pyav")
        manager = SceneManager()
        manager.add_detector(ContentDetector(threshold=threshold, min_scene_len=options.min_scene_frames))
        manager.detect_scenes(video, frame_skip=skip)
        for start, _ in manager.get_scene_list()[1:]:
            frame = start.frame_num
            if all(abs(frame - cut) > skip + 1 for cut in cuts):
                cuts.append(frame)
    return sorted(cuts)


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
    cuts = detect_cuts(path, options)
    plan, dropped = plan_clips(cuts, info.num_frames, info.fps, options)
    stem = Path(name).with_suffix("")
    targets = [clips_dir / f"{stem}-Scene-{k:03d}.mp4" for k in range(1, len(plan) + 1)]
    partial = [target.with_name(target.stem + ".part.mp4") for target in targets]
    clips = []
    try:
        seen = _export(path, plan, partial, info.fps, options.crf, options.pix_fmt)
        min_frames = round(options.min_seconds * info.fps)
        for (start, end), part, target in zip(plan, partial, targets):
            if min(end, seen) - start < min_frames:  # the header over-counted the frames
                dropped.append((start, end, "short"))
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
    return {"source": name, "fps": info.fps, "num_frames": info.num_frames, "cuts": cuts,
            "dropped_scenes": [list(d) for d in dropped], "clips": clips}


def _export(path, plan, outputs, fps: float, crf: int, pix_fmt: str) -> int:
    """Write each planned range to its output in one sequential decode; returns how many
    frames the source actually had (headers can over-count)."""
    writers = [VideoWriter(out, fps, crf=crf, pix_fmt=pix_fmt) for out in outputs]
    seen, clip = 0, 0
    try:
        for index, frame in iter_frames(path):
            seen = index + 1
            while clip < len(plan) and index >= plan[clip][1]:
                writers[clip].close()
                clip += 1
            if clip == len(plan):
                break
            if index >= plan[clip][0]:
                writers[clip].write(frame)
    finally:
        for writer in writers:
            writer.close()
    return seen

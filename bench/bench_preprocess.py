"""Preprocessing on synthetic footage at its default settings: scene-cut precision / recall beside
PySceneDetect's own detectors, throughput per stage (seconds of video per second) beside
PySceneDetect alone, and the embedded text detector's precision / recall on synthetic frames.

    python bench/bench_preprocess.py [--sources 6] [--size 144 256] [--fps 24]

Sources: a textured background panning at 0 to 12 px per frame with an object wrapping around the
frame edge, scenes of 1.5-6 s joined by hard cuts, some with burned-in subtitles (the footage of
issue 28, drawn at random). Everything runs on one thread through the CLI's own entry points.
Model stages (aesthetic, captioning with a VLM) depend on the user's model and device and are not
timed; the caption stage is timed with sidecar captions.
"""

import argparse
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT), str(ROOT / "tests")]

from synthetic_videos import FOOTAGE, FOOTAGE_FPS, footage_source, object_scene, text_frame_set

from easyanimate_core.video_io import write_video
from training.preprocess import cli
from training.preprocess.metadata import kept_records
from training.preprocess.split import SplitOptions, detect_cuts
from training.preprocess.text_score import OpenCVTextDetector

SPEEDS = [0.0, 0.5, 1.5, 3.0, 6.0, 9.0, 12.0]  # px per frame at 256 px wide


def make_sources(folder: Path, count: int, size, fps: float) -> tuple[dict, float]:
    """Write the sources; returns (true cuts per file name, seconds of video)."""
    rng = np.random.default_rng(5)
    truth, frames_total = {}, 0
    for k in range(count):
        parts = []
        for s in range(5):
            length = int(rng.uniform(1.5, 6) * fps)
            speed = float(rng.choice(SPEEDS)) * size[1] / 256 * 24 / fps
            tint = tuple(rng.uniform(0.4, 1.0, 3))
            subtitle = "and then she said hello" if rng.random() < 0.3 else None
            parts.append(object_scene(length, *size, speed, seed=1000 + 10 * k + s, tint=tint, subtitle=subtitle))
        name = f"source{k:02d}.mp4"
        write_video(folder / name, np.concatenate(parts), fps)
        (folder / name).with_suffix(".txt").write_text(f"synthetic source {k}")
        truth[name] = [int(c) for c in np.cumsum([len(p) for p in parts])[:-1]]
        frames_total += sum(len(p) for p in parts)
    return truth, frames_total / fps


def make_footage(folder: Path) -> dict:
    """The three sources of the footage test (tests/test_preprocess_footage.py); true cuts."""
    truth = {}
    for k, (name, _) in enumerate(FOOTAGE):
        frames, truth[name] = footage_source(k)
        write_video(folder / name, frames, FOOTAGE_FPS)
    return truth


def pyscenedetect_cuts(path, detector) -> list[int]:
    from scenedetect import SceneManager, open_video

    manager = SceneManager()
    manager.add_detector(detector)
    manager.detect_scenes(open_video(str(path), backend="pyav"))
    return [start.frame_num for start, _ in manager.get_scene_list()[1:]]


def score_cuts(found: dict, truth: dict, tolerance: int = 2) -> str:
    tp = sum(sum(any(abs(f - c) <= tolerance for c in truth[n]) for f in found[n]) for n in truth)
    fp = sum(len(found[n]) for n in truth) - tp
    fn = sum(sum(not any(abs(f - c) <= tolerance for f in found[n]) for c in truth[n]) for n in truth)
    return f"precision {tp / max(tp + fp, 1):.3f} recall {tp / max(tp + fn, 1):.3f} (tp {tp}, fp {fp}, fn {fn})"


def text_detector_quality(count: int, size) -> tuple:
    detector = OpenCVTextDetector()
    frames = text_frame_set(count, *size, seed=90_000)  # seeds never used while tuning
    flags = [(detector(frame) > 0.01, has_text) for frame, has_text in frames]
    tp = sum(f and t for f, t in flags)
    fp = sum(f and not t for f, t in flags)
    fn = sum(t and not f for f, t in flags)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp, fp, fn


def main():
    from scenedetect import AdaptiveDetector, ContentDetector

    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=6)
    parser.add_argument("--size", type=int, nargs=2, default=[144, 256], help="height width")
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--text-frames", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        truth, seconds = make_sources(tmp / "src", args.sources, args.size, args.fps)
        print(f"{args.sources} sources, {sum(map(len, truth.values()))} hard cuts, {seconds:.0f} s of "
              f"{args.size[1]}x{args.size[0]} video at {args.fps:g} fps, one thread")

        print("\nscene cuts (a found cut within 2 frames of a true one counts):")
        detectors = {
            "this pipeline (ContentDetector defaults + spike check)":
                lambda path: detect_cuts(path, SplitOptions())[0],
            "PySceneDetect ContentDetector() defaults": lambda path: pyscenedetect_cuts(path, ContentDetector()),
            "PySceneDetect AdaptiveDetector() defaults": lambda path: pyscenedetect_cuts(path, AdaptiveDetector()),
        }
        for label, detect in detectors.items():
            start = time.perf_counter()
            found = {name: detect(tmp / "src" / name) for name in truth}
            rate = seconds / (time.perf_counter() - start)
            print(f"  {label:<56} {score_cuts(found, truth)}  {rate:6.1f} s of video / s")
        (tmp / "footage").mkdir()
        footage = make_footage(tmp / "footage")
        print("on the footage test's three sources (5 cuts; fast textured scenes, an object wrapping around):")
        for label, detect in detectors.items():
            found = {name: detect(tmp / "footage" / name) for name in footage}
            print(f"  {label:<56} {score_cuts(found, footage)}")

        work = tmp / "work"
        clips = work / "clips"
        stages = [
            ("split", ["split", "--input", str(tmp / "src"), "--clips-dir", str(clips), "--output",
                       str(work / "split.jsonl")]),
            ("text", ["text", "--input", str(work / "split.jsonl"), "--output", str(work / "text.jsonl")]),
            ("motion", ["motion", "--input", str(work / "text.jsonl"), "--output", str(work / "motion.jsonl")]),
            ("caption", ["caption", "--input", str(work / "motion.jsonl"), "--output", str(work / "caption.jsonl"),
                         "--sources-root", str(tmp / "src")]),
        ]
        print(f"\n{'stage':<8} {'in':>5} {'kept':>5} {'video s':>8} {'seconds':>8} {'video s / s':>12}")
        total = 0.0
        for name, argv in stages:
            items = kept_records(Path(argv[2])) if name != "split" else None
            video = seconds if name == "split" else sum(r["num_frames"] / r["fps"] for r in items)
            start = time.perf_counter()
            cli.main("preprocess", argv)
            elapsed = time.perf_counter() - start
            total += elapsed
            out = len(kept_records(Path(argv[argv.index("--output") + 1])))
            count = args.sources if name == "split" else len(items)
            print(f"{name:<8} {count:>5} {out:>5} {video:>8.1f} {elapsed:>8.2f} {video / elapsed:>12.1f}")
        print(f"{'all':<8} {'':>5} {'':>5} {seconds:>8.1f} {total:>8.2f} {seconds / total:>12.1f}  "
              f"(source seconds per second, whole chain)")

    print()
    for size in ([120, 160], [240, 320]):
        precision, recall, tp, fp, fn = text_detector_quality(args.text_frames, size)
        print(f"text detector (opencv, drop > 1% area) on {args.text_frames} synthetic {size[1]}x{size[0]} frames, "
              f"half with text: precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})")


if __name__ == "__main__":
    main()

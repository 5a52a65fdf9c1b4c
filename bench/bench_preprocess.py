"""Preprocessing throughput per stage on a synthetic set, and the embedded text detector's
precision / recall on synthetic frames with and without rendered text.

    python bench/bench_preprocess.py [--sources 8] [--size 240 320] [--fps 24]

Sources: panning textures cut into 2-14 s scenes by hard cuts, some with burned-in captions.
Stages run through the same entry point as the CLI, on one thread. Model stages (aesthetic,
captioning with a VLM) depend on the user's model and device and are not timed here; the caption
stage is timed with sidecar captions.
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

from synthetic_videos import pan_frames, text_frame_set

from easyanimate_core.video_io import VideoWriter
from training.preprocess import cli
from training.preprocess.jobs import read_jsonl
from training.preprocess.metadata import kept_records
from training.preprocess.text_score import OpenCVTextDetector


def make_sources(folder: Path, count: int, size, fps: float) -> int:
    rng = np.random.default_rng(0)
    scenes = 0
    for k in range(count):
        with VideoWriter(folder / f"source{k:02d}.mp4", fps) as writer:
            for s in range(4):
                length = int(rng.uniform(2, 14) * fps)
                frames = pan_frames(length, *size, speed=float(rng.uniform(0, 2)) * 24 / fps, seed=100 * k + s)
                if rng.random() < 0.3:  # a burned-in caption
                    for frame in frames:
                        cv2.putText(frame, "Breaking news", (10, size[0] - 20), cv2.FONT_HERSHEY_DUPLEX,
                                    size[1] / 320, (255, 255, 255), 2, cv2.LINE_AA)
                for frame in frames:
                    writer.write(frame)
                scenes += 1
        (folder / f"source{k:02d}.txt").write_text(f"synthetic source {k}")
    return scenes


def text_detector_quality(count: int, size) -> tuple:
    detector = OpenCVTextDetector()
    frames = text_frame_set(count, *size, seed=90_000)  # seeds never used while tuning
    flags = [(detector(frame) > 0.01, has_text) for frame, has_text in frames]
    tp = sum(f and t for f, t in flags)
    fp = sum(f and not t for f, t in flags)
    fn = sum(t and not f for f, t in flags)
    return tp / max(tp + fp, 1), tp / max(tp + fn, 1), tp, fp, fn


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--sources", type=int, default=8)
    parser.add_argument("--size", type=int, nargs=2, default=[240, 320])
    parser.add_argument("--fps", type=float, default=24.0)
    parser.add_argument("--text-frames", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(1)
    cv2.setNumThreads(1)

    for size in ([120, 160], [240, 320], [480, 640]):
        precision, recall, tp, fp, fn = text_detector_quality(args.text_frames, size)
        print(f"text detector (opencv, drop > 1% area) on {args.text_frames} synthetic {size[1]}x{size[0]} frames, "
              f"half with text: precision {precision:.3f} recall {recall:.3f} (tp {tp}, fp {fp}, fn {fn})")

    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        (tmp / "src").mkdir()
        scenes = make_sources(tmp / "src", args.sources, args.size, args.fps)
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
        print(f"\n{args.sources} sources, {scenes} scenes, {args.size[1]}x{args.size[0]} at {args.fps:g} fps, one thread")
        print(f"{'stage':<8} {'in':>5} {'out':>5} {'seconds':>8} {'clips/min':>10}")
        for name, argv in stages:
            items = args.sources if name == "split" else len(kept_records(Path(argv[2])))
            start = time.perf_counter()
            cli.main("preprocess", argv)
            seconds = time.perf_counter() - start
            output = Path(argv[argv.index("--output") + 1])
            out = len(kept_records(output))
            rate = (out if name == "split" else items) / seconds * 60
            unit = "clips out/min" if name == "split" else "clips/min"
            print(f"{name:<8} {items:>5} {out:>5} {seconds:>8.2f} {rate:>10.1f}  {unit}")
        assert len(read_jsonl(work / "caption.jsonl")) > 0


if __name__ == "__main__":
    main()

"""The synthetic world's captioner and the stills for image training.

Real data is captioned by a vision-language model looking at the frames; the world's
"vision-language model" is the computer-vision reader (:func:`analysis.read_clip`): it reads the
clip's colour, shape, motion and background and says them in the world's caption grammar. A
clip it cannot read fully gets no caption (dropped, as the caption stage drops empty captions),
and a clip that reads as a held-out combination is dropped too, so held-out prompts stay unseen
whatever the detector and the codec did to the clips.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from . import analysis, world


def caption_clip(frames: np.ndarray) -> tuple[str | None, str | None]:
    """(caption, None) or (None, reason)."""
    reading = analysis.read_clip(frames)
    if None in (reading.color, reading.shape, reading.motion, reading.background):
        return None, "unreadable"
    _, held = world.held_out_split(seed=0)
    if (reading.color, reading.shape, reading.motion) in {(s.color, s.shape, s.motion) for s in held}:
        return None, "held_out"
    return world.Scene(reading.color, reading.shape, reading.motion, reading.background).caption, None


def caption_records(records: list[dict], clips_root: Path) -> list[dict]:
    from easyanimate_core.video_io import read_video

    out = []
    for record in records:
        frames, _ = read_video(Path(clips_root) / record["file_path"])
        text, reason = caption_clip(frames)
        row = {**record, "caption_model": "world-reader"}
        if text is None:
            row["drop"] = reason
        else:
            row["text"] = text
        out.append(row)
    return out


def write_stills(videos_json, images_json, all_json, per_clip: int = 3) -> int:
    """``per_clip`` frames of every clip (evenly inside it) as PNGs with the clip's caption: the
    image data of DiT stage 1 and of the VAE; ``all_json`` lists clips and stills together."""
    from PIL import Image

    from easyanimate_core.video_io import read_video
    from training.preprocess.metadata import load_metadata

    videos_json = Path(videos_json)
    stills = videos_json.parent / "stills"
    stills.mkdir(parents=True, exist_ok=True)
    rows = json.loads(videos_json.read_text())
    images = []
    for row, entry in zip(rows, load_metadata(videos_json)):
        count = int(entry["num_frames"])
        picks = [count * (k + 1) // (per_clip + 1) for k in range(per_clip)]
        frames, _ = read_video(entry["file_path"], picks)
        for k, frame in enumerate(frames):
            name = f"{Path(row['file_path']).stem}-{k}.png"
            Image.fromarray(frame).save(stills / name)
            images.append({"file_path": f"stills/{name}", "text": row["text"], "type": "image",
                           "width": int(frame.shape[1]), "height": int(frame.shape[0])})
    Path(images_json).write_text(json.dumps(images, indent=1))
    Path(all_json).write_text(json.dumps(rows + images, indent=1))
    return len(images)

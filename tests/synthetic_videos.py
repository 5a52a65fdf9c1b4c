"""Synthetic test videos and frames made with numpy/OpenCV and written with PyAV.

Every generator is seeded so tests and benches see the same pixels each run:
- ``pan_frames``: a smooth random texture panned at a constant speed (px per frame), so the
  true optical flow is known everywhere (speed 0 = static);
- ``write_scenes``: scenes with different textures and colours joined by hard cuts;
- ``text_frame``: a frame on one of several backgrounds (flat, gradient, noise texture, shapes),
  with or without rendered text in several OpenCV fonts and sizes;
- ``write_corrupt``: a file named .mp4 that is not a readable video.
"""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np

from easyanimate_core.video_io import write_video

FONTS = [cv2.FONT_HERSHEY_SIMPLEX, cv2.FONT_HERSHEY_DUPLEX, cv2.FONT_HERSHEY_COMPLEX,
         cv2.FONT_HERSHEY_TRIPLEX, cv2.FONT_HERSHEY_PLAIN]
WORDS = ["SALE", "News at ten", "Hello world", "subscribe", "LIVE 24/7", "breaking", "OPEN",
         "Chapter 3", "www.example.com", "price 9.99", "the end", "GOAL!"]
BACKGROUNDS = ["flat", "gradient", "texture", "shapes", "clutter"]


def texture(rng: np.random.Generator, height: int, width: int, smooth: float = 3.0) -> np.ndarray:
    """Smooth random colour texture (blurred noise, contrast stretched), uint8 (H, W, 3)."""
    noise = rng.random((height, width, 3)).astype(np.float32)
    blurred = cv2.GaussianBlur(noise, (0, 0), smooth)
    lo, hi = blurred.min(), blurred.max()
    return ((blurred - lo) / (hi - lo + 1e-6) * 255).astype(np.uint8)


def pan_frames(num_frames: int, height: int, width: int, speed: float, seed: int = 0,
               tint=(1.0, 1.0, 1.0)) -> np.ndarray:
    """``num_frames`` windows of a larger texture sliding right by ``speed`` px per frame."""
    rng = np.random.default_rng(seed)
    span = int(np.ceil(speed * num_frames)) + 2
    big = texture(rng, height, width + span).astype(np.float32) * np.asarray(tint, np.float32)
    big = np.clip(big, 0, 255).astype(np.uint8)
    frames = []
    for i in range(num_frames):
        shift = np.float32([[1, 0, -speed * i], [0, 1, 0]])  # sub-pixel pans stay smooth
        frames.append(cv2.warpAffine(big, shift, (width + span, height), borderMode=cv2.BORDER_REFLECT)[:, :width])
    return np.stack(frames)


def write_scenes(path, scene_lengths, fps: float = 10.0, size=(96, 128), speeds=None, seed: int = 0):
    """Write scenes of ``scene_lengths`` frames joined by hard cuts; returns the cut frame
    indices (the first frame of every scene after the first)."""
    height, width = size
    speeds = speeds or [1.0] * len(scene_lengths)
    tints = [(1.0, 0.4, 0.4), (0.4, 1.0, 0.4), (0.4, 0.4, 1.0), (1.0, 1.0, 0.3), (0.3, 1.0, 1.0)]
    scenes = [pan_frames(n, height, width, speed, seed=seed + 7 * k, tint=tints[k % len(tints)])
              for k, (n, speed) in enumerate(zip(scene_lengths, speeds))]
    write_video(path, np.concatenate(scenes), fps)
    return [int(c) for c in np.cumsum(scene_lengths)[:-1]]


def background(rng: np.random.Generator, kind: str, height: int, width: int) -> np.ndarray:
    if kind == "flat":
        return np.full((height, width, 3), rng.integers(0, 256, 3), np.uint8)
    if kind == "gradient":
        a, b = rng.integers(0, 256, 3), rng.integers(0, 256, 3)
        t = np.linspace(0, 1, width, dtype=np.float32)[None, :, None]
        return np.broadcast_to(a * (1 - t) + b * t, (height, width, 3)).astype(np.uint8)
    if kind == "texture":
        return texture(rng, height, width, smooth=float(rng.uniform(1.0, 4.0)))
    if kind == "shapes":
        image = texture(rng, height, width, smooth=6.0)
        for _ in range(int(rng.integers(3, 8))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            centre = (int(rng.integers(0, width)), int(rng.integers(0, height)))
            if rng.random() < 0.5:
                cv2.circle(image, centre, int(rng.integers(4, max(5, height // 4))), colour, -1)
            else:
                half = rng.integers(4, max(5, width // 5), 2)
                cv2.rectangle(image, (centre[0] - half[0], centre[1] - half[1]),
                              (centre[0] + half[0], centre[1] + half[1]), colour, -1)
        return image
    if kind == "clutter":  # many glyph-sized blobs and strokes: the hard negatives
        image = texture(rng, height, width, smooth=2.0)
        for _ in range(int(rng.integers(20, 40))):
            colour = tuple(int(c) for c in rng.integers(0, 256, 3))
            x, y = int(rng.integers(0, width)), int(rng.integers(0, height))
            r = int(rng.integers(2, 6))
            if rng.random() < 0.5:
                cv2.circle(image, (x, y), r, colour, -1)
            else:
                dx, dy = rng.integers(-8, 9, 2)
                cv2.line(image, (x, y), (x + int(dx), y + int(dy)), colour, int(rng.integers(1, 3)))
        return image
    raise ValueError(f"unknown background {kind!r}")


def draw_text(rng: np.random.Generator, image: np.ndarray) -> np.ndarray:
    """Render a line or two of text in a contrasting colour; returns the text mask."""
    height, width = image.shape[:2]
    mask = np.zeros((height, width), np.uint8)
    for _ in range(int(rng.integers(1, 3))):
        word = WORDS[int(rng.integers(len(WORDS)))]
        font = FONTS[int(rng.integers(len(FONTS)))]
        scale = float(rng.uniform(0.35, 0.9)) * width / 160
        if font == cv2.FONT_HERSHEY_PLAIN:
            scale *= 1.6
        thickness = 1 if scale < 0.6 or rng.random() < 0.5 else 2
        (tw, th), base = cv2.getTextSize(word, font, scale, thickness)
        x = int(rng.integers(0, max(1, width - tw)))
        y = int(rng.integers(th + 1, max(th + 2, height - base)))
        region = image[max(0, y - th):y + base, x:x + tw]
        mean = region.mean() if region.size else 128
        colour = (20, 20, 20) if mean > 128 else (240, 240, 240)
        cv2.putText(image, word, (x, y), font, scale, colour, thickness, cv2.LINE_AA)
        cv2.putText(mask, word, (x, y), font, scale, 255, thickness, cv2.LINE_AA)
    return mask


def text_frame(seed: int, with_text: bool, height: int = 120, width: int = 160, kind=None) -> np.ndarray:
    rng = np.random.default_rng(seed)
    kind = kind or BACKGROUNDS[seed % len(BACKGROUNDS)]
    image = np.ascontiguousarray(background(rng, kind, height, width))
    if with_text:
        draw_text(rng, image)
    return image


def text_frame_set(count: int, height: int = 120, width: int = 160, seed: int = 1000):
    """``count`` frames, half with text, half without, over all backgrounds: [(frame, has_text)]."""
    return [(text_frame(seed + i, i % 2 == 0, height, width, kind=BACKGROUNDS[(i // 2) % len(BACKGROUNDS)]),
             i % 2 == 0) for i in range(count)]


def write_text_clip(path, with_text: bool, num_frames: int = 20, fps: float = 10.0, size=(96, 128),
                    seed: int = 0):
    """A slowly panning clip with (or without) a fixed caption burned in."""
    frames = pan_frames(num_frames, *size, speed=0.5, seed=seed)
    if with_text:
        height, width = size
        for frame in frames:
            cv2.putText(frame, "Hello world", (6, height - 12), cv2.FONT_HERSHEY_DUPLEX,
                        0.6 * width / 128, (255, 255, 255), 1, cv2.LINE_AA)
            cv2.putText(frame, "LIVE 24/7", (8, 20), cv2.FONT_HERSHEY_SIMPLEX,
                        0.5 * width / 128, (255, 255, 255), 1, cv2.LINE_AA)
    return write_video(path, frames, fps)


def write_corrupt(path) -> str:
    """A file that looks like a video by name only: a valid mp4 header cut short, then junk."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    Path(path).write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 4)
    return str(path)


def object_scene(num_frames: int, height: int, width: int, speed: float, seed: int = 0, tint=(1.0, 1.0, 1.0),
                 subtitle: str | None = None) -> np.ndarray:
    """A textured background panning at ``speed`` px per frame with a bright disc crossing the
    frame twice as fast and wrapping around its edges (the case that fools content detectors),
    optionally with a subtitle burned in at the bottom."""
    frames = pan_frames(num_frames, height, width, speed, seed=seed, tint=tint)
    rng = np.random.default_rng(seed + 1)
    x0, y = float(rng.uniform(0, width)), int(rng.uniform(0.3, 0.6) * height)
    colour = tuple(int(c) for c in rng.integers(160, 256, 3))
    for i, frame in enumerate(frames):
        if speed > 0:
            x = int(x0 + 2 * speed * i) % width
            for dx in (-width, 0, width):  # the part leaving one edge enters at the other
                cv2.circle(frame, (x + dx, y), height // 8, colour, -1, cv2.LINE_AA)
        if subtitle:
            cv2.putText(frame, subtitle, (width // 10, height - height // 10), cv2.FONT_HERSHEY_DUPLEX,
                        0.55 * width / 256, (255, 255, 255), 1, cv2.LINE_AA)
    return frames


def write_truncated(path, frames: np.ndarray, fps: float, keep: float) -> int:
    """An mp4 whose header (written first, 'faststart') counts every frame, cut after ``keep`` of
    its bytes, as a broken download leaves it; returns the header's frame count."""
    import av

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=int(fps))
        stream.height, stream.width = frames.shape[1:3]
        stream.pix_fmt = "yuv420p"
        stream.options = {"crf": "18", "preset": "veryfast", "x264-params": "log=-1"}
        for frame in frames:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode())
    data = path.read_bytes()
    path.write_bytes(data[:int(len(data) * keep)])
    return len(frames)


FOOTAGE_FPS = 24
FOOTAGE_SIZE = (144, 256)  # height, width
# (source, [(seconds, px per frame, subtitle), ...]); hard cuts between the scenes of a source
FOOTAGE = [
    ("walk.mp4", [(5.0, 1.5, None), (4.0, 0.0, None), (5.0, 9.0, None), (4.0, 3.0, None)]),
    ("news.mp4", [(4.0, 6.0, None), (4.0, 2.0, "Breaking news tonight"), (1.0, 3.0, None)]),
    ("talk.mp4", [(4.5, 4.0, "and then she said hello")]),
]


FOOTAGE_TINTS = [(1.0, 0.5, 0.5), (0.5, 1.0, 0.5), (0.5, 0.5, 1.0), (1.0, 1.0, 0.4)]


def footage_source(k: int) -> tuple[np.ndarray, list[int]]:
    """The frames of ``FOOTAGE[k]`` and its cut frames."""
    height, width = FOOTAGE_SIZE
    parts = [object_scene(round(seconds * FOOTAGE_FPS), height, width, speed, seed=31 * k + s,
                          tint=FOOTAGE_TINTS[(k + s) % 4], subtitle=subtitle)
             for s, (seconds, speed, subtitle) in enumerate(FOOTAGE[k][1])]
    return np.concatenate(parts), [int(c) for c in np.cumsum([len(p) for p in parts])[:-1]]


def write_footage(folder) -> dict:
    """The footage set a new user might bring: three sources with hard cuts and scenes moving 0 to
    9 px per frame (one still, one too short, two with burned-in subtitles), a partly
    decodable download, a corrupt file and a caption sidecar per source. Returns the truth:
    ``cuts`` per source, the ``usable`` scenes ((source, start, end, None): moving, text-free,
    long enough) and the ``unusable`` ones ((source, start, end, why))."""
    folder = Path(folder)
    height, width = FOOTAGE_SIZE
    truth = {"cuts": {}, "usable": [], "unusable": []}
    for k, (name, scenes) in enumerate(FOOTAGE):
        frames, cuts = footage_source(k)
        write_video(folder / name, frames, FOOTAGE_FPS)
        truth["cuts"][name] = cuts
        for (seconds, speed, subtitle), start, end in zip(scenes, [0, *cuts], [*cuts, len(frames)]):
            why = "still" if speed == 0 else "text" if subtitle else "short" if seconds < 3 else None
            (truth["unusable"] if why else truth["usable"]).append((name, start, end, why))
        (folder / name).with_suffix(".txt").write_text(f"footage {name[:-4]}")
    # 8 s at 2.5 px per frame of which about 60 % arrived: the decodable part is one usable scene
    frames = object_scene(8 * FOOTAGE_FPS, height, width, 2.5, seed=99, tint=(0.9, 0.8, 1.0))
    truth["truncated"] = ("download.mp4", write_truncated(folder / "download.mp4", frames, FOOTAGE_FPS, 0.6))
    (folder / "download.txt").write_text("footage download")
    write_corrupt(folder / "corrupt.mp4")
    truth["corrupt"] = "corrupt.mp4"
    return truth

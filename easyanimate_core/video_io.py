"""Reading and writing video files with PyAV.

Frames are ``uint8`` RGB arrays ``(H, W, 3)``; a clip is ``(F, H, W, 3)``. Frame indices count
decoded frames from the start of the first video stream, so they agree with what a sequential
reader (PySceneDetect, OpenCV, decord) calls frame ``i`` for constant-frame-rate files.

Writing uses H.264 in yuv420p, the pixel format every player and browser decodes; that format
needs even sizes, so an odd width or height is cropped by one pixel (documented adjustment). A
single frame is written as a PNG instead, because a one-frame video is an image.
"""

from __future__ import annotations

import math
import tempfile
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

from .errors import InputError

DEFAULT_FPS = 25.0  # used when a container does not say its frame rate


@dataclass(frozen=True)
class VideoInfo:
    width: int
    height: int
    fps: float
    num_frames: int


def _open(path):
    import av

    path = str(path)
    if not Path(path).is_file():
        raise InputError(f"video file {path} does not exist; check the path")
    try:
        container = av.open(path)
    except Exception as error:  # PyAV raises several types for unreadable containers
        raise InputError(f"video file {path} cannot be opened ({error}); re-encode or remove it") from error
    if not container.streams.video:
        container.close()
        raise InputError(f"file {path} has no video stream; expected a video file")
    return container


def _stream_fps(stream) -> float:
    rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    return float(rate) if rate else DEFAULT_FPS


def probe_video(path) -> VideoInfo:
    """Size, frame rate and frame count. The count comes from the container header when it has
    one, else from counting packets (no decoding)."""
    container = _open(path)
    try:
        stream = container.streams.video[0]
        num_frames = stream.frames
        if not num_frames:
            num_frames = sum(1 for packet in container.demux(stream) if packet.size)
        return VideoInfo(stream.codec_context.width, stream.codec_context.height,
                         _stream_fps(stream), int(num_frames))
    finally:
        container.close()


def _decode(container, path, start: int = 0, end: int | None = None, step: int = 1):
    """``(index, frame)`` of an open container's first video stream (see :func:`iter_frames`)."""
    stream = container.streams.video[0]
    stream.thread_type = "AUTO"
    try:
        for index, frame in enumerate(container.decode(stream)):
            if end is not None and index >= end:
                break
            if index >= start and (index - start) % step == 0:
                yield index, frame.to_ndarray(format="rgb24")
    except Exception as error:
        raise InputError(f"video file {path} is corrupt or truncated ({error}); re-encode or remove it") from error


def iter_frames(path, start: int = 0, end: int | None = None, step: int = 1) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(index, frame)`` for frames ``start, start+step, ...`` below ``end``, decoding
    sequentially (exact for any codec; frames before ``start`` are decoded and dropped)."""
    if step < 1:
        raise InputError(f"frame step must be at least 1, got {step}")
    container = _open(path)
    try:
        yield from _decode(container, path, start, end, step)
    finally:
        container.close()


def read_video(path, indices: Sequence[int] | None = None) -> tuple[np.ndarray, float]:
    """All frames, or the frames at ``indices`` (in the given order, repeats allowed), as
    ``(F, H, W, 3)`` uint8, plus the frame rate; the file is opened once."""
    wanted = sorted({int(i) for i in indices}) if indices is not None else None
    if wanted and wanted[0] < 0:
        raise InputError(f"frame indices must be >= 0, got {wanted[0]} for {path}")
    container = _open(path)
    try:
        fps = _stream_fps(container.streams.video[0])
        if wanted is None:
            frames = [frame for _, frame in _decode(container, path)]
        else:
            found = dict(_decode(container, path, end=wanted[-1] + 1 if wanted else 0))
            missing = [i for i in wanted if i not in found]
            if missing:
                raise InputError(f"video file {path} has only {len(found)} frames but frame {missing[0]} "
                                 f"was asked for; ask for indices below the frame count")
            frames = [found[int(i)] for i in indices]
    finally:
        container.close()
    if not frames:
        raise InputError(f"video file {path} has no decodable frames; re-encode or remove it")
    return np.stack(frames), fps


def read_sampled_frames(path, count: int) -> np.ndarray:
    """``count`` frames spread over the whole video (:func:`sample_indices`), ``(count, H, W, 3)``:
    what the preprocessing scorers and captioners look at."""
    return read_video(path, sample_indices(probe_video(path).num_frames, count))[0]


def sample_indices(num_frames: int, count: int) -> list[int]:
    """``count`` frame indices spread uniformly over a clip (the first one at 0, as numpy's
    ``linspace(0, n, count, endpoint=False)``); the middle frame when ``count`` is 1."""
    if num_frames < 1:
        raise InputError("cannot sample frames from a video with no frames")
    if count == 1:
        return [num_frames // 2]
    return sorted({int(i) for i in np.linspace(0, num_frames, count, endpoint=False)})


PIX_FMTS = ("yuv420p", "yuv444p")
VIDEO_SUFFIXES = (".mp4", ".mkv", ".mov")  # containers that take H.264


def check_fps(fps) -> float:
    if isinstance(fps, bool) or not isinstance(fps, (int, float)) or not math.isfinite(fps) or fps <= 0:
        raise InputError(f"fps {fps!r} is not a positive number of frames per second; pass e.g. 24")
    return float(fps)


def check_writable_folder(folder, what: str) -> None:
    """One :class:`InputError` unless ``folder`` is, or can be made as, a folder this process can
    write in (checked on the nearest existing folder above it, with a real temporary file)."""
    existing = Path(folder)
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise InputError(f"{what} cannot be written: {existing} is a file, not a folder; choose another path")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as error:
        raise InputError(f"{what} cannot be written: {existing} does not take new files "
                         f"({error.strerror or error}); choose another path") from error


def check_output(path, fps, frames: int) -> Path:
    """Check that ``frames`` frames can be written to ``path`` at ``fps`` - before the work that
    makes them: the container is known, H.264 can be encoded, and the folder (or the nearest
    existing one above it) is a folder this process can write in. One frame goes to a PNG
    (:func:`write_video`), so only the folder matters then."""
    path = Path(path)
    check_fps(fps)
    if path.is_dir():
        raise InputError(f"output {path} is a folder; name a file inside it, e.g. {path / 'video.mp4'}")
    if frames > 1 and path.suffix.lower() not in VIDEO_SUFFIXES:
        found = f"the extension {path.suffix!r}" if path.suffix else "no extension"
        raise InputError(f"output {path} has {found}; videos are written as H.264 in "
                         f"{' / '.join(VIDEO_SUFFIXES)}: name it e.g. {path.with_suffix('.mp4').name}")
    check_writable_folder(path.parent, f"output {path}")
    if frames > 1:
        import av

        try:
            av.codec.Codec("libx264", "w")
        except Exception as error:  # PyAV raises its own UnknownCodecError
            raise InputError("this PyAV build has no H.264 (libx264) encoder; install the 'av' wheel from PyPI, "
                             "which includes it") from error
    return path


def write_png_frames(folder, frames: Iterable[np.ndarray], start: int = 0) -> int:
    """Frames as ``frame_<index>.png`` files in ``folder`` (indices from ``start``); returns the count."""
    from PIL import Image

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    count = 0
    for index, frame in enumerate(frames, start):
        Image.fromarray(np.asarray(frame, dtype=np.uint8)).save(folder / f"frame_{index:05d}.png")
        count += 1
    return count


class VideoWriter:
    """Streaming H.264 writer: ``with VideoWriter(path, fps) as w: w.write(frame)``.

    ``pix_fmt`` "yuv420p" (default) plays everywhere; "yuv444p" keeps full-resolution colour, for
    training data: 4:2:0 chroma alone caps a small clip of saturated shapes near 30 dB PSNR."""

    def __init__(self, path, fps: float, crf: int = 18, preset: str = "veryfast", pix_fmt: str = "yuv420p"):
        if pix_fmt not in PIX_FMTS:
            raise InputError(f"pixel format {pix_fmt!r} is not one of {', '.join(PIX_FMTS)}; pick one of them")
        fps = check_fps(fps)
        self.path, self.fps, self.crf, self.preset, self.pix_fmt = str(path), fps, crf, preset, pix_fmt
        self.container = self.stream = None
        self.size = None

    def _start(self, height: int, width: int):
        import av

        if width < 2 or height < 2:
            raise InputError(f"frames of {width}x{height} are too small for H.264; need at least 2x2")
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        self.container = av.open(self.path, "w")
        rate = Fraction(self.fps).limit_denominator(1001)
        self.stream = self.container.add_stream("libx264", rate=rate)
        self.size = (height - height % 2, width - width % 2)
        self.stream.height, self.stream.width = self.size
        self.stream.pix_fmt = self.pix_fmt
        # x264 prints its statistics per file otherwise; errors still raise
        self.stream.options = {"crf": str(self.crf), "preset": self.preset, "x264-params": "log=-1"}

    def write(self, frame: np.ndarray) -> None:
        import av

        frame = np.asarray(frame)
        if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[2] != 3:
            raise InputError(f"a video frame must be uint8 (H, W, 3), got {frame.dtype} {frame.shape}")
        if self.container is None:
            self._start(*frame.shape[:2])
        h, w = self.size
        picture = av.VideoFrame.from_ndarray(np.ascontiguousarray(frame[:h, :w]), format="rgb24")
        for packet in self.stream.encode(picture):
            self.container.mux(packet)

    def close(self) -> None:
        if self.container is not None:
            for packet in self.stream.encode():
                self.container.mux(packet)
            self.container.close()
            self.container = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def write_video(path, frames: Iterable[np.ndarray], fps: float, crf: int = 18, pix_fmt: str = "yuv420p") -> str:
    """Write ``(F, H, W, 3)`` uint8 frames as an H.264 mp4, or one frame as a PNG (the suffix is
    changed to ``.png``). Returns the path written. ``pix_fmt``: see :class:`VideoWriter`."""
    frames = list(frames) if not isinstance(frames, np.ndarray) else frames
    if len(frames) == 0:
        raise InputError(f"no frames to write to {path}; pass at least one frame")
    if len(frames) == 1:
        from PIL import Image

        path = str(Path(path).with_suffix(".png"))
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.asarray(frames[0], dtype=np.uint8)).save(path)
        return path
    with VideoWriter(path, fps, crf=crf, pix_fmt=pix_fmt) as writer:
        for frame in frames:
            writer.write(frame)
    return str(path)

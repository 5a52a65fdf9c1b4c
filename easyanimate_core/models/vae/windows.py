"""Which frames / latents each network call sees and produces: the slice and chunk schedules.

Both published modes cut time into windows that are run one after another, which is what bounds
memory:

- slice mode (v3): an odd leading frame (or latent) alone in FIRST_FRAME mode, then slices of
  ``mini_batch_encoder`` frames encoded independently; latents decoded ``mini_batch_decoder`` at a
  time, each seeing the previous and next slice's latents as context through ``conv_in`` and the
  mid block only;
- causal mode (v2): independent chunks of ``mini_batch_encoder`` frames / ``mini_batch_decoder``
  latents with causal padding.

A :class:`Window` is pure arithmetic; the frame counts come from the network's own per-block
length rules, so the schedule and the model cannot disagree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from itertools import pairwise

from .layers import CAUSAL, FIRST_FRAME, SLICE


@dataclass(frozen=True)
class Window:
    start: int        # first input frame / latent this window produces output for
    stop: int
    ctx_start: int    # input actually fed to the network (context included)
    ctx_stop: int
    mode: str
    out_start: int    # where its output lands on the output time axis
    out_stop: int

    @property
    def keep(self):
        """The current frames' positions inside the context window."""
        return self.start - self.ctx_start, self.stop - self.ctx_start


LengthFn = Callable[[int, str], int]


def encode_windows(frames: int, slice_mode: bool, chunk: int, out_len: LengthFn) -> list[Window]:
    """Frame windows of the encoder; no context is shared between them."""
    spans, mode = _chunks(frames, slice_mode, chunk)
    return _place([(a, b, a, b, m) for a, b, m in zip(spans[:-1], spans[1:], mode)], out_len)


def decode_windows(latents: int, slice_mode: bool, chunk: int, out_len: LengthFn) -> list[Window]:
    """Latent windows of the decoder. In slice mode each slice sees the previous slice (never the
    lone first latent) and the next ``chunk`` latents as context."""
    spans, modes = _chunks(latents, slice_mode, chunk)
    first_slice = 1 if slice_mode and latents % 2 else 0
    items = []
    for a, b, m in zip(spans[:-1], spans[1:], modes):
        if m == SLICE:
            items.append((a, b, max(first_slice, a - chunk), min(latents, b + chunk), m))
        else:
            items.append((a, b, a, b, m))
    return _place(items, out_len)


def blend_windows(latents: int, chunk: int, out_len: LengthFn) -> list[Window]:
    """Slice-mode windows shifted by half a slice, one across each boundary between two slices,
    with the same context rule as :func:`decode_windows`. Used to hide slice seams."""
    primary = decode_windows(latents, True, chunk, out_len)
    slices = [w for w in primary if w.mode == SLICE]
    shift = chunk // 2
    first_slice = slices[0].start if slices else 0
    result = []
    for left, right in pairwise(slices):
        a = left.start + shift
        b = min(a + chunk, right.stop)
        out_start = left.out_start + out_len(a - left.start, SLICE)
        result.append(Window(a, b, max(first_slice, a - chunk), min(latents, b + chunk), SLICE,
                             out_start, out_start + out_len(b - a, SLICE)))
    return result


def total_out(windows: list[Window]) -> int:
    return windows[-1].out_stop if windows else 0


def _chunks(length, slice_mode, chunk):
    """Boundaries and modes of the windows over ``length`` input steps."""
    if length < 1:
        return [0], []
    if not slice_mode:
        bounds = list(range(0, length, chunk)) + [length]
        return bounds, [CAUSAL] * (len(bounds) - 1)
    bounds, modes = [0], []
    if length % 2:
        bounds.append(1)
        modes.append(FIRST_FRAME)
    bounds += list(range(bounds[-1] + chunk, length, chunk)) + [length]
    bounds = sorted(set(bounds))
    modes += [SLICE] * (len(bounds) - 1 - len(modes))
    return bounds, modes


def _place(items, out_len):
    windows, offset = [], 0
    for a, b, ca, cb, mode in items:
        n = out_len(b - a, mode)
        windows.append(Window(a, b, ca, cb, mode, offset, offset + n))
        offset += n
    return windows

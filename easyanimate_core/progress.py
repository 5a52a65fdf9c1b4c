"""Host-agnostic progress reporting and interruption.

Every long loop in the core (sampling steps, VAE slices, training steps, preprocessing items)
takes ``progress``: any callable ``progress(done, total, preview=None)``. ``preview`` is an
optional latent the host may turn into a picture (a cheap projection; hosts that show no previews
ignore it). A host cancels work by raising :class:`Interrupted` from inside the callable; loops
call it after every unit of work, so cancellation lands within one step.

ComfyUI's adapter lives in ``nodes/host.py``; the CLI uses :func:`console`.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from typing import TypeVar

ProgressFn = Callable[..., None]
T = TypeVar("T")


class Interrupted(Exception):
    """Raised by a progress callable to stop the loop that called it."""


def silent(done: int, total: int, preview=None) -> None:
    """The default: report nothing, never interrupt."""


def track(items: Iterable[T], total: int, progress: ProgressFn | None) -> Iterator[T]:
    """Yield ``items``, reporting ``(i + 1, total)`` after each one is processed."""
    progress = progress or silent
    for i, item in enumerate(items):
        yield item
        progress(i + 1, total)


def console(desc: str, unit: str = "it") -> ProgressFn:
    """A tqdm bar for headless use; the bar resets when a new total starts."""
    from tqdm.auto import tqdm

    state = {"bar": None}

    def report(done: int, total: int, preview=None) -> None:
        bar = state["bar"]
        if bar is None or bar.total != total or done < bar.n:
            if bar is not None:
                bar.close()
            bar = state["bar"] = tqdm(total=total, desc=desc, unit=unit, dynamic_ncols=True)
        bar.update(done - bar.n)
        if done >= total:
            bar.close()
            state["bar"] = None

    return report

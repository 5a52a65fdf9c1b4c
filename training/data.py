"""Training data: metadata entries -> deterministic, bucketed batches of pixels and captions.

Everything random about the data (epoch order, clip starts, crops, frame-count draws) comes from
generators seeded by ``(seed, epoch, ...)``, so a resumed run sees exactly the batches an
uninterrupted run would have seen: the data position is just ``(epoch, batch index)``.

Batches are homogeneous: images and videos never share a batch, and with ``buckets`` on, a batch
holds one aspect-ratio bucket of EasyAnimate's ``ASPECT_RATIO_512`` table (scaled to
``sample_size``). Video batches have one frame count, a multiple of the VAE slice ``interval``.
Unreadable samples are replaced by the next readable one of the same type and counted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from easyanimate_core.errors import InputError
from training import buckets

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".webp", ".bmp"}


def seeded_generator(*parts) -> torch.Generator:
    """A generator whose seed is a stable hash of ``parts`` (ints and strings)."""
    digest = hashlib.sha256(repr(parts).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def load_entries(metadata: str, data_root: str | None) -> list[dict]:
    """Metadata entries with absolute ``file_path``, ``text`` and ``type`` ("image"/"video"), read by
    the one metadata reader (the preprocessing pipeline's, which writes the format)."""
    from training.preprocess.metadata import load_metadata

    if not metadata:
        raise InputError("data.metadata is not set; give the JSON/JSONL/CSV metadata file (make one with "
                         "'python training/run.py preprocess').")
    return load_metadata(metadata, data_root or None)


@dataclass
class Item:
    """One planned sample: which entry, at what size and frame count, with which random draws."""
    index: int
    height: int
    width: int
    frames: int
    seed: tuple


def _media_size(entry: dict) -> tuple[int, int, int]:
    """(height, width, frame count) from the metadata when it says, else from the file header."""
    if entry.get("width") and entry.get("height") and (entry["type"] == "image" or entry.get("num_frames")):
        return int(entry["height"]), int(entry["width"]), int(entry.get("num_frames") or 1)
    if entry["type"] == "image":
        from PIL import Image

        with Image.open(entry["file_path"]) as image:
            return image.height, image.width, 1
    from easyanimate_core.video_io import probe_video

    info = probe_video(entry["file_path"])
    return info.height, info.width, info.num_frames


class BatchPlan:
    """Which items each rank trains on, batch by batch, epoch by epoch.

    All ranks compute the same global list of batches for an epoch and take every
    ``world_size``-th one, so every rank runs the same number of steps, and the ``world_size``
    batches of one step come from the same bucket (type, aspect ratio).
    """

    def __init__(self, entries: list[dict], cfg: dict, seed: int, interval: int,
                 rank: int = 0, world_size: int = 1):
        self.entries, self.cfg, self.seed, self.interval = entries, cfg, seed, interval
        self.rank, self.world_size = rank, world_size
        self.unreadable = 0
        self.shape = {}  # index -> (h, w, frames) of readable entries
        self._grouped = {}  # epoch -> global batch list (memo of the last two epochs)
        self._per_rank = {}  # epoch -> batches per rank (every epoch: steps_before sums them)
        for i, entry in enumerate(entries):
            if cfg["types"] != "both" and entry["type"] != cfg["types"]:
                continue
            try:
                self.shape[i] = _media_size(entry)
            except (OSError, ValueError, RuntimeError):  # unreadable files of any kind: counted
                self.unreadable += 1
        if not self.shape:
            raise InputError(f"no readable {cfg['types']} samples in the metadata "
                             f"({len(entries)} entries, {self.unreadable} unreadable); check "
                             f"data.metadata, data.root and data.types.")

    def _bucket(self, index: int) -> tuple:
        h, w, _ = self.shape[index]
        kind = self.entries[index]["type"]
        ratio = buckets.closest_ratio(h, w) if self.cfg["buckets"] else 1.0
        return kind, ratio

    def _frames_for(self, index: int) -> int:
        """How many frames the clip sampler can give this entry (EasyAnimate's 0.8 rule)."""
        n = self.shape[index][2]
        if self.entries[index]["type"] == "image":
            return 1
        return max(1, min(self.cfg["frames"], int(0.8 * n)))

    def max_frames(self, index: int) -> int:
        """The frame count of this entry in a batch of its own."""
        if self.entries[index]["type"] == "image":
            return 1
        return buckets.frame_bucket([self._frames_for(index)], self.interval, self.cfg["frames"])

    def item_size(self, index: int, sample_size: int) -> tuple[int, int]:
        if not self.cfg["buckets"]:
            return sample_size, sample_size
        return buckets.bucket_size(self._bucket(index)[1], sample_size)

    def sample_sizes(self) -> list[int]:
        """Every training size of the run (progressive resolution lists several)."""
        schedule = self.cfg.get("resolution_schedule") or []
        return sorted({int(size) for _, size in schedule} | ({self.cfg["sample_size"]} if not schedule else set()))

    def sample_size_at(self, step: int) -> int:
        """``resolution_schedule`` [[from_step, size], ...] (progressive resolution), else
        ``sample_size``."""
        size = self.cfg["sample_size"]
        for start, value in sorted(self.cfg.get("resolution_schedule") or []):
            if step >= start:
                size = int(value)
        return size

    def drop(self, indices) -> None:
        """Exclude entries found unreadable after planning (counted as unreadable)."""
        for index in indices:
            if self.shape.pop(index, None) is not None:
                self.unreadable += 1
        self._grouped.clear()
        self._per_rank.clear()

    def _global_batches(self, epoch: int) -> list:
        if epoch not in self._grouped:
            order = torch.randperm(len(self.entries), generator=seeded_generator(self.seed, "order", epoch))
            groups: dict[tuple, list[int]] = {}
            batches = []
            for index in order.tolist():
                if index not in self.shape:
                    continue
                group = groups.setdefault(self._bucket(index), [])
                group.append(index)
                if len(group) == self.cfg["batch_size"]:
                    batches.append((self._bucket(index), list(group)))
                    group.clear()
            # The ranks of one step take batches of one bucket: a step waits for its slowest rank,
            # so a still batch beside a clip batch would idle for the clip's time (an 8-frame clip
            # costs a small VAE ~4 stills). A bucket's last batches short of a step are left out.
            steps, waiting = [], {}
            for key, indices in batches:
                same = waiting.setdefault(key, [])
                same.append((key, indices))
                if len(same) == self.world_size:
                    steps.extend(same)
                    same.clear()
            per_rank = len(steps) // self.world_size
            if per_rank == 0:
                raise InputError(f"the data gives {len(batches)} full batches per epoch, too few for one step "
                                 f"of {self.world_size} processes with a bucket each; lower data.batch_size, "
                                 f"add samples, or turn off data.buckets.")
            self._grouped = {e: v for e, v in self._grouped.items() if e >= epoch - 1}
            self._grouped[epoch] = steps
            self._per_rank[epoch] = per_rank
        return self._grouped[epoch]

    def steps_before(self, epoch: int) -> int:
        """Steps of the epochs before ``epoch`` (each epoch's grouping is computed once per run)."""
        for e in range(epoch):
            if e not in self._per_rank:
                self._global_batches(e)
        return sum(self._per_rank[e] for e in range(epoch))

    def epoch_batches(self, epoch: int) -> list[list[Item]]:
        cfg = self.cfg
        first_step = self.steps_before(epoch) if cfg.get("resolution_schedule") else 0
        out = []
        for position, (key, indices) in enumerate(self._global_batches(epoch)):
            if position % self.world_size != self.rank:
                continue
            step = first_step + position // self.world_size
            draw = seeded_generator(self.seed, "batch", epoch, position)
            kind, _ = key
            height, width = self.item_size(indices[0], self.sample_size_at(step))
            if kind == "image":
                frames = 1
            else:
                frames = buckets.frame_bucket([self._frames_for(i) for i in indices], self.interval,
                                              cfg["frames"])
                if cfg["random_frame_crop"]:
                    frames = min(frames, buckets.random_frame_crop(cfg["frames"], self.interval, draw))
            out.append([Item(i, height, width, frames, (self.seed, epoch, position, k))
                        for k, i in enumerate(indices)])
        return out


def _to_tensor(frames: np.ndarray) -> torch.Tensor:
    """(F, H, W, 3) uint8 -> (3, F, H, W) float in [-1, 1]."""
    return torch.from_numpy(np.array(frames, dtype=np.uint8)).permute(3, 0, 1, 2).float().div(127.5).sub(1.0)


def _resize(video: torch.Tensor, height: int, width: int) -> torch.Tensor:
    frames = video.permute(1, 0, 2, 3)  # (F, 3, H, W)
    frames = F.interpolate(frames, size=(height, width), mode="bilinear", align_corners=False,
                           antialias=True)
    return frames.permute(1, 0, 2, 3)


def clip_indices(num_frames: int, count: int, stride: int, generator) -> list[int]:
    """EasyAnimate's clip sampler: ``count`` frames at ``stride`` from a random start that skips the
    first 10% and the last 10% of the video, shrinking the stride when the video is short."""
    count = max(1, min(count, num_frames))
    video_length = max(count, int(0.9 * num_frames))
    clip_length = min(video_length, (count - 1) * stride + 1)
    low = min(int(0.1 * video_length), video_length - clip_length)
    start = low + int(torch.randint(video_length - clip_length - low + 1, (), generator=generator))
    return np.linspace(start, start + clip_length - 1, count).round().astype(int).tolist()


class MediaDataset(torch.utils.data.Dataset):
    """Loads planned :class:`Item` s as ``{"pixels": (3, F, H, W), "text": str, "type": str}``.

    ``cfg["stride"]``: the frame step of a clip, or a list of steps of which each clip draws one.
    ``crop``: "center" (resize to cover the bucket, center crop; the DiT trainers) or
    "random_square" (a random square of side U(0.25, 1) x the shorter side, resized; the VAE
    trainer). ``static_frames``: take one random frame of a video, repeated (domain adapter).
    ``transform``: an optional callable ``(video, generator) -> video`` (camera augmentation).
    ``cfg["memory_cache_mb"]``: keep whole decoded videos in memory up to this many MiB, so a small
    dataset trained for many epochs decodes each file once (opening and decoding a short clip
    costs more than a small VAE's step on it); files past the budget are decoded every time.
    """

    CROPS = ("random_square", "center")

    def __init__(self, entries, cfg: dict, crop: str = "center", transform=None):
        if crop not in self.CROPS:
            raise InputError(f"data.crop is {crop!r}; use 'random_square' or 'center'.")
        self.entries, self.cfg, self.crop, self.transform = entries, cfg, crop, transform
        stride = cfg.get("stride", 1)
        self.strides = list(stride) if isinstance(stride, (list, tuple)) else [stride]
        if not self.strides or not all(isinstance(s, int) and s >= 1 for s in self.strides):
            raise InputError(f"data.stride is {stride!r}; give a whole number of frames >= 1, or a list of them "
                             f"(each clip then takes one, so motion is seen at several speeds).")
        self.cache_budget = int(cfg.get("memory_cache_mb", 0) * 2**20)
        self.decoded: dict[str, np.ndarray] = {}  # file path -> all frames (F, H, W, 3) uint8
        self.cached_bytes = 0
        self.by_kind, self.rank_in_kind = {}, {}
        for i, entry in enumerate(entries):
            same = self.by_kind.setdefault(entry["type"], [])
            self.rank_in_kind[i] = len(same)
            same.append(i)

    def __len__(self):
        return len(self.entries)

    def _load(self, item: Item, index: int, generator) -> torch.Tensor:
        entry = self.entries[index]
        if entry["type"] == "image":
            from PIL import Image

            with Image.open(entry["file_path"]) as image:
                frames = np.asarray(image.convert("RGB"))[None]
            frames = np.repeat(frames, item.frames, axis=0) if item.frames > 1 else frames
        else:
            from easyanimate_core.video_io import probe_video, read_video

            decoded = self._cached_video(entry["file_path"])
            total = len(decoded) if decoded is not None else probe_video(entry["file_path"]).num_frames
            if self.cfg.get("static_frames"):
                pick = int(torch.randint(total, (), generator=generator))
                indices = [pick] * item.frames
            else:
                if total < item.frames:
                    raise InputError(f"{entry['file_path']} has {total} frames, {item.frames} needed")
                stride = self.strides[int(torch.randint(len(self.strides), (), generator=generator))] \
                    if len(self.strides) > 1 else self.strides[0]
                indices = clip_indices(total, item.frames, stride, generator)
            frames = decoded[indices] if decoded is not None else read_video(entry["file_path"], indices)[0]
        video = _to_tensor(frames)
        if self.crop == "random_square":
            _, _, h, w = video.shape
            side = max(8, int(min(h, w) * (0.25 + 0.75 * torch.rand((), generator=generator).item())))
            top = int(torch.randint(h - side + 1, (), generator=generator))
            left = int(torch.randint(w - side + 1, (), generator=generator))
            video = _resize(video[:, :, top:top + side, left:left + side], item.height, item.width)
        else:
            _, _, h, w = video.shape
            rh, rw = buckets.resize_crop_size(h, w, item.height, item.width)
            video = _resize(video, rh, rw)
            top, left = (rh - item.height) // 2, (rw - item.width) // 2
            video = video[:, :, top:top + item.height, left:left + item.width]
        if self.transform is not None:
            video = self.transform(video, generator)
        return video.clamp(-1, 1)

    def _cached_video(self, path: str):
        """All frames of ``path`` from the memory cache, decoding it into the cache if it fits;
        None once the budget is spent (the caller then reads just the frames it needs)."""
        if path in self.decoded or not self.cache_budget:
            return self.decoded.get(path)
        if self.cached_bytes >= self.cache_budget:
            return None
        from easyanimate_core.video_io import read_video

        frames = read_video(path)[0]
        if self.cached_bytes + frames.nbytes > self.cache_budget:
            self.cached_bytes = self.cache_budget  # full: later files are read frame-wise
            return frames
        self.decoded[path] = frames
        self.cached_bytes += frames.nbytes
        return frames

    def __getitem__(self, item: Item) -> dict:
        kind = self.entries[item.index]["type"]
        same_kind = self.by_kind[kind]
        start = self.rank_in_kind[item.index]
        # an unreadable sample is replaced by the next readable one of its type, and counted
        for skipped in range(min(len(same_kind), 16)):
            index = same_kind[(start + skipped) % len(same_kind)]
            generator = seeded_generator(*item.seed, skipped)
            try:
                pixels = self._load(item, index, generator)
            except (OSError, ValueError, RuntimeError):  # corrupt / truncated / too short: next one
                continue
            return {"pixels": pixels, "text": self.entries[index].get("text", ""), "type": kind,
                    "skipped": skipped, "key": self.entries[index]["file_path"]}
        raise InputError(f"16 {kind} samples in a row starting at {self.entries[item.index]['file_path']} "
                         f"could not be read; check the data files (run the preprocess checks).")


def collate(items: list[dict]) -> dict:
    """Tensors stacked, strings listed, ``skipped`` summed, ``type`` shared by the batch."""
    batch = {}
    for name, first in items[0].items():
        values = [item[name] for item in items]
        if name == "skipped":
            batch[name] = sum(values)
        elif name == "type":
            batch[name] = first
        elif torch.is_tensor(first):
            batch[name] = torch.stack(values)
        else:
            batch[name] = values
    return batch


class BatchStream:
    """Iterates batches from a data position ``(epoch, batch)`` onwards, forever, through a
    DataLoader (worker processes when ``num_workers > 0``)."""

    def __init__(self, plan: BatchPlan, dataset, num_workers: int = 0):
        self.plan, self.dataset, self.num_workers = plan, dataset, num_workers
        self.epoch, self.batch = 0, 0
        self._digest = None

    def __iter__(self):
        while True:
            planned = self.plan.epoch_batches(self.epoch)[self.batch:]
            loader = torch.utils.data.DataLoader(self.dataset, batch_sampler=planned, collate_fn=collate,
                                                 num_workers=self.num_workers)
            for batch in loader:
                self.batch += 1
                yield batch
            self.epoch, self.batch = self.epoch + 1, 0

    def plan_digest(self) -> str:
        """A fingerprint of the batch plan of every rank (its first epoch): a saved position means
        something only in the plan it was taken in (same data, sizes, buckets, seed, world size)."""
        if self._digest is None:
            import copy
            import hashlib

            ranks = []
            for rank in range(self.plan.world_size):
                view = copy.copy(self.plan)  # shares the memoised global batches
                view.rank = rank
                ranks.append(view.epoch_batches(0))
            self._digest = hashlib.sha256(repr(ranks).encode()).hexdigest()[:16]
        return self._digest

    def state_dict(self) -> dict:
        return {"epoch": self.epoch, "batch": self.batch, "plan": self.plan_digest()}

    def load_state_dict(self, state: dict) -> None:
        if "plan" in state and state["plan"] != self.plan_digest():
            raise InputError("the checkpoint's data position belongs to another batch plan (data.* options, the "
                             "metadata or train.seed changed since it was saved); resume with the config that "
                             "made it or start a new output_dir")
        self.epoch, self.batch = int(state["epoch"]), int(state["batch"])

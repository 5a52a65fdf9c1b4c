"""Pre-encoding cache: VAE latents and T5 embeddings written once, reused every epoch.

Stages 2 and 3 keep the VAE and the text encoder frozen, so encoding the same clip and caption
again each epoch is wasted work (often more than the DiT step itself). With ``cache.dir`` set,
every planned sample is encoded once, at each size it will be trained at, into
``<dir>/<hash>.safetensors`` holding the posterior ``mean`` and ``std`` (a fresh latent is drawn
from them each step, as without the cache), the caption's ``text_embeds`` and ``text_mask``.
The hash covers the file, caption, size, frame count, the VAE/text-encoder identity and the
options that decide which pixels a sample holds (frame stride, static frames, camera
augmentation), so a cache is never reused for a different model or sample. What the cache freezes: the clip start
and crop drawn the first time (augmentation happens once).

Because the slice VAE encodes its 8-frame slices independently, a batch that needs fewer frames
than were cached takes the leading latent frames, which equal the latents of the shorter clip.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import torch

from training.data import Item


def cache_key(entry: dict, height: int, width: int, frames: int, identity: str) -> str:
    text = json.dumps([entry["file_path"], entry.get("text", ""), height, width, frames, identity])
    return hashlib.sha256(text.encode()).hexdigest()[:32]


def cache_identity(vae_config: dict, text_name: str, sampling: dict) -> str:
    """What, besides the sample itself, decides the cached tensors: the encoders and the
    ``sampling`` options that change the pixels."""
    parts = [vae_config, text_name, sampling]
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:16]


class LatentCache:
    def __init__(self, folder, identity: str):
        self.folder = Path(folder)
        self.identity = identity
        self.folder.mkdir(parents=True, exist_ok=True)

    def path(self, entry, height, width, frames) -> Path:
        return self.folder / f"{cache_key(entry, height, width, frames, self.identity)}.safetensors"

    def build(self, plan, dataset, encode_pixels, encode_text, sizes, rank=0, world_size=1, progress=None):
        """Encode every readable entry of ``plan`` at each (height, width) bucket of ``sizes``;
        ranks split the work. ``encode_pixels(video) -> (mean, std)``,
        ``encode_text(texts) -> (embeds, mask)``. Returns how many files were written."""
        from easyanimate_core.checkpoints import save_state_dict

        jobs = []
        for index in sorted(plan.shape):
            for sample_size in sizes:
                height, width = plan.item_size(index, sample_size)
                frames = plan.max_frames(index)
                jobs.append((index, height, width, frames))
        written = 0
        mine = jobs[rank::world_size]
        for done, (index, height, width, frames) in enumerate(mine, 1):
            entry = plan.entries[index]
            target = self.path(entry, height, width, frames)
            if not target.is_file():
                sample = dataset[Item(index, height, width, frames, ("cache", index))]
                if sample["key"] == entry["file_path"]:  # unreadable files are not cached
                    with torch.no_grad():
                        mean, std = encode_pixels(sample["pixels"][None])
                        embeds, mask = encode_text([sample["text"]])
                    save_state_dict(target, {"mean": mean[0].float().cpu().contiguous(),
                                             "std": std[0].float().cpu().contiguous(),
                                             "text_embeds": embeds[0].float().cpu().contiguous(),
                                             "text_mask": mask[0].to(torch.uint8).cpu().contiguous()})
                    written += 1
            if progress is not None:
                progress(done, len(mine))
        return written


class CachedDataset(torch.utils.data.Dataset):
    """Serves planned items from the cache: ``latent_mean``/``latent_std`` cut to the item's
    latent frame count, plus the cached text embeddings."""

    def __init__(self, plan, cache: LatentCache, latent_frames):
        self.plan, self.cache, self.latent_frames = plan, cache, latent_frames

    def __len__(self):
        return len(self.plan.entries)

    def __getitem__(self, item: Item) -> dict:
        from easyanimate_core.checkpoints import load_state_dict

        entry = self.plan.entries[item.index]
        path = self.cache.path(entry, item.height, item.width, self.plan.max_frames(item.index))
        tensors = load_state_dict(path)
        length = self.latent_frames(item.frames)
        return {"latent_mean": tensors["mean"][:, :length], "latent_std": tensors["std"][:, :length],
                "text_embeds": tensors["text_embeds"], "text_mask": tensors["text_mask"].bool(),
                "text": entry.get("text", ""), "type": entry["type"], "skipped": 0, "key": entry["file_path"]}

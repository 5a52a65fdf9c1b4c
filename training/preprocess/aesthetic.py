"""Aesthetic score: the LAION "improved aesthetic predictor" on CLIP ViT-L/14 image embeddings.

The CLIP vision tower (``CLIPVisionModelWithProjection``, e.g. a local copy of
openai/clip-vit-large-patch14) gives the projected image embedding; it is L2-normalised and fed
to the predictor's head, a stack of linears (768-1024-128-64-16-1, dropouts between, no
activations) stored as ``layers.{0,2,4,6,7}.{weight,bias}`` in ``sac+logos+ava1-l14-linearMSE.pth``
(or a safetensors copy). The clip score is the mean over 4 uniformly sampled frames, as in the
reference. Without weights the stage passes clips through unscored and says so.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import read_sampled_frames


def aesthetic_head(embed_dim: int = 768):
    from torch import nn

    return nn.Sequential(
        nn.Linear(embed_dim, 1024), nn.Dropout(0.2),
        nn.Linear(1024, 128), nn.Dropout(0.2),
        nn.Linear(128, 64), nn.Dropout(0.1),
        nn.Linear(64, 16),
        nn.Linear(16, 1),
    )


class AestheticScorer:
    def __init__(self, clip_dir, head_path, device: str = "cpu", dtype=None):
        import torch
        from transformers import CLIPImageProcessor, CLIPVisionModelWithProjection

        clip_dir, head_path = Path(clip_dir), Path(head_path)
        if not (clip_dir / "config.json").is_file():
            raise CheckpointError(f"CLIP folder {clip_dir} has no config.json; pass --clip-model with a local "
                                  f"CLIP ViT-L/14 folder (config.json, weights, preprocessor_config.json)")
        self.model = CLIPVisionModelWithProjection.from_pretrained(str(clip_dir), dtype=dtype or torch.float32)
        self.model.to(device).eval()
        self.processor = CLIPImageProcessor.from_pretrained(str(clip_dir))
        self.head = aesthetic_head(self.model.config.projection_dim)
        self.head.load_state_dict(_read_head(head_path, self.model.config.projection_dim))
        self.head.to(device).eval()
        self.device = device

    def __call__(self, frames: np.ndarray) -> list[float]:
        """Scores of a stack of RGB uint8 frames ``(N, H, W, 3)``."""
        import torch
        import torch.nn.functional as F

        pixels = self.processor(images=list(frames), return_tensors="pt")["pixel_values"]
        with torch.no_grad():
            embeds = self.model(pixel_values=pixels.to(self.device, self.model.dtype)).image_embeds
            scores = self.head(F.normalize(embeds.float(), dim=-1))
        return [float(s) for s in scores[:, 0].cpu()]


def _read_head(path: Path, embed_dim: int) -> dict:
    import torch

    if not path.is_file():
        raise CheckpointError(f"aesthetic head file {path} does not exist; pass --aesthetic-head with the LAION "
                              f"predictor weights (e.g. sac+logos+ava1-l14-linearMSE.pth)")
    if path.suffix == ".safetensors":
        from safetensors.torch import load_file

        state = load_file(str(path))
    else:
        state = torch.load(str(path), map_location="cpu", weights_only=True)
    # the published file stores the head inside a module named "layers"
    state = {k.removeprefix("layers."): v for k, v in state.items()}
    expected = {name: tuple(p.shape) for name, p in aesthetic_head(embed_dim).state_dict().items()}
    found = {name: tuple(t.shape) for name, t in state.items()}
    if found != expected:
        raise CheckpointError(f"aesthetic head {path} does not fit the LAION predictor for {embed_dim}-d CLIP "
                              f"embeddings: expected {expected}, found {found}; use the matching head file")
    return state


def score_clip(record: dict, root: Path, scorer: AestheticScorer, minimum: float, num_frames: int = 4) -> dict:
    score = round(float(np.mean(scorer(read_sampled_frames(root / record["file_path"], num_frames)))), 5)
    out = {**record, "aesthetic_score": score}
    if score < minimum:
        out["drop"] = "aesthetic_low"
    return out

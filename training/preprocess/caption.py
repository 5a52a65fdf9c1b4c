"""Captioning: frames -> text with a local vision-language model, optionally summarised into one
"In this video ..." caption by a local language model; or captions taken from sidecar files.

Captioners take a batch of clip records and return one caption per record:
- :class:`VisionCaptioner`: any image-to-text model ``AutoModelForImageTextToText`` loads from a
  folder (BLIP, LLaVA, Qwen2-VL, ...). Models with a chat template get the reference's prompt
  ("Please describe this image in detail."); plain captioners (BLIP) caption unprompted. With
  several frames per clip, each frame is captioned and the captions are summarised (or joined).
- :class:`Summarizer`: a causal LM (``AutoModelForCausalLM``) that merges frame captions into one
  third-person paragraph starting "In this video", sampled as in the reference (T 0.8, top-p 0.95).
- :class:`SidecarCaptioner`: the text of ``clip.txt`` next to the clip, else ``source.txt`` next
  to its source video, else the ``text`` of an existing metadata file for the same file.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import read_sampled_frames

FRAME_PROMPT = "Please describe this image in detail."
SUMMARY_PROMPT = ("These are descriptions of frames taken in order from one video:\n{captions}\n"
                  "Describe the whole video in one paragraph of at most 100 words, in the third person, "
                  "starting with \"In this video\".")


def _check_folder(folder, what: str, flag: str) -> Path:
    folder = Path(folder)
    if not (folder / "config.json").is_file():
        raise CheckpointError(f"{what} folder {folder} has no config.json; pass {flag} with a local transformers "
                              f"model folder (nothing is downloaded)")
    return folder


def describe_mode(mode: str, caption_model=None, asked=None) -> str:
    """One line saying where captions come from and why, for the log and the summary."""
    if mode == "model":
        return f"model: each clip is captioned by {caption_model} (--caption-model)"
    why = "--captions sidecar" if asked == "sidecar" else "no --caption-model given"
    return (f"sidecar ({why}): a clip's caption is CLIP.txt next to it, else SOURCE.txt next to its source video, "
            f"else its text in --captions-from; clips without one are dropped as no_caption")


class VisionCaptioner:
    def __init__(self, model_dir, prompt: str = FRAME_PROMPT, max_new_tokens: int = 128,
                 device: str = "cpu", dtype=None):
        import torch
        from transformers import AutoModelForImageTextToText, AutoProcessor

        folder = _check_folder(model_dir, "captioning model", "--caption-model")
        self.processor = AutoProcessor.from_pretrained(str(folder))
        self.model = AutoModelForImageTextToText.from_pretrained(str(folder), dtype=dtype or torch.float32)
        self.model.to(device).eval()
        self.prompt, self.max_new_tokens, self.device = prompt, max_new_tokens, device
        self.name = folder.name
        tokenizer = getattr(self.processor, "tokenizer", None)
        if tokenizer is not None:
            tokenizer.padding_side = "left"  # decoder-only generation continues the last position

    def __call__(self, images: list[np.ndarray]) -> list[str]:
        import torch

        if getattr(self.processor, "chat_template", None):
            messages = [{"role": "user", "content": [{"type": "image"}, {"type": "text", "text": self.prompt}]}]
            text = self.processor.apply_chat_template(messages, add_generation_prompt=True)
            inputs = self.processor(images=list(images), text=[text] * len(images), padding=True,
                                    return_tensors="pt")
        else:
            inputs = self.processor(images=list(images), return_tensors="pt")
        inputs = inputs.to(self.device)
        with torch.no_grad():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=False)
        if "input_ids" in inputs and not self.model.config.is_encoder_decoder:
            tokens = tokens[:, inputs["input_ids"].shape[1]:]  # keep only the answer
        return [t.strip() for t in self.processor.batch_decode(tokens, skip_special_tokens=True)]


class Summarizer:
    def __init__(self, model_dir, max_new_tokens: int = 256, temperature: float = 0.8, top_p: float = 0.95,
                 device: str = "cpu", dtype=None):
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        folder = _check_folder(model_dir, "summary model", "--summary-model")
        self.tokenizer = AutoTokenizer.from_pretrained(str(folder))
        self.tokenizer.padding_side = "left"
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype or torch.float32)
        self.model.to(device).eval()
        self.max_new_tokens, self.temperature, self.top_p, self.device = max_new_tokens, temperature, top_p, device
        self.name = folder.name

    def _prompt(self, captions: list[str]) -> str:
        request = SUMMARY_PROMPT.format(captions="\n".join(f"{i}. {c}" for i, c in enumerate(captions, 1)))
        if getattr(self.tokenizer, "chat_template", None):
            return self.tokenizer.apply_chat_template([{"role": "user", "content": request}], tokenize=False,
                                                      add_generation_prompt=True)
        return request + "\nIn this video"  # a base model continues the sentence it is given

    def __call__(self, clips: list[list[str]]) -> list[str]:
        import torch

        prompts = [self._prompt(captions) for captions in clips]
        inputs = self.tokenizer(prompts, return_tensors="pt", padding=True, return_token_type_ids=False)
        inputs = inputs.to(self.device)
        sampling = {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p} if self.temperature > 0 \
            else {"do_sample": False}
        with torch.no_grad():
            tokens = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens,
                                         pad_token_id=self.tokenizer.pad_token_id, **sampling)
        answers = self.tokenizer.batch_decode(tokens[:, inputs["input_ids"].shape[1]:], skip_special_tokens=True)
        if getattr(self.tokenizer, "chat_template", None):
            return [a.strip() for a in answers]
        return [("In this video " + a.strip()).strip() for a in answers]


class SidecarCaptioner:
    name = "sidecar"

    def __init__(self, clips_root, sources_root=None, metadata: dict | None = None):
        """``metadata`` maps absolute file paths to captions (as ``load_metadata`` gives them)."""
        self.clips_root = Path(clips_root)
        self.sources_root = Path(sources_root) if sources_root else None
        self.metadata = metadata or {}

    def caption(self, record: dict) -> str | None:
        candidates = [self.clips_root / Path(record["file_path"]).with_suffix(".txt")]
        if self.sources_root is not None and record.get("source"):
            candidates.append(self.sources_root / Path(record["source"]).with_suffix(".txt"))
        for path in candidates:
            if path.is_file():
                return path.read_text(encoding="utf-8").strip()
        return self.metadata.get(str((self.clips_root / record["file_path"]).absolute()))


class ClipCaptioner:
    """The caption stage's work: a batch of clip records -> records with ``text``."""

    def __init__(self, root, frames: VisionCaptioner = None, summarizer: Summarizer = None,
                 sidecar: SidecarCaptioner = None, num_frames: int = 1):
        if (frames is None) == (sidecar is None):
            raise CheckpointError("captioning needs exactly one source of captions: --caption-model (a local "
                                  "vision-language model) or --captions sidecar")
        self.root, self.frames, self.summarizer, self.sidecar = Path(root), frames, summarizer, sidecar
        self.num_frames = num_frames

    def __call__(self, records: list[dict]) -> list[dict]:
        if self.sidecar is not None:
            return [_with_text(r, self.sidecar.caption(r), self.sidecar.name) for r in records]
        frames, owners = [], []
        for k, record in enumerate(records):
            clip = read_sampled_frames(self.root / record["file_path"], self.num_frames)
            frames += list(clip)
            owners += [k] * len(clip)
        captions = self.frames(frames)
        per_clip = [[c for c, o in zip(captions, owners) if o == k] for k in range(len(records))]
        if self.summarizer is not None:
            texts, model = self.summarizer(per_clip), f"{self.frames.name}+{self.summarizer.name}"
        else:
            texts, model = [" ".join(c) for c in per_clip], self.frames.name
        return [{**_with_text(r, t, model), "frame_captions": c} for r, t, c in zip(records, texts, per_clip)]


def _with_text(record: dict, text: str | None, model: str) -> dict:
    out = {**record, "text": (text or "").strip(), "caption_model": model}
    if not out["text"]:
        out["drop"] = "no_caption"
    return out

"""Captioning plumbing with tiny random models (their captions are gibberish: only batching,
fields and sources are checked, never quality)."""

from pathlib import Path

import pytest
import torch
from synthetic_videos import pan_frames

from easyanimate_core.errors import CheckpointError
from easyanimate_core.video_io import write_video
from training.preprocess.caption import ClipCaptioner, SidecarCaptioner, Summarizer, VisionCaptioner

WORDS = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "[DEC]", "in", "this", "video", "a", "cat", "dog", "runs",
         "red", "blue", "sky", "the", "of", "and", "is"] + [f"w{i}" for i in range(30)]


def _tokenizer(folder: Path):
    from transformers import BertTokenizer

    (folder / "vocab.txt").write_text("\n".join(WORDS))
    tokenizer = BertTokenizer(str(folder / "vocab.txt"))
    tokenizer.add_special_tokens({"bos_token": "[DEC]"})
    return tokenizer


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    """A tiny BLIP captioner and a tiny Llama summariser, saved as local folders."""
    from transformers import (
        BlipConfig,
        BlipForConditionalGeneration,
        BlipImageProcessor,
        BlipProcessor,
        LlamaConfig,
        LlamaForCausalLM,
    )

    root = tmp_path_factory.mktemp("models")
    torch.manual_seed(0)
    blip, llm = root / "blip", root / "llm"
    blip.mkdir(), llm.mkdir()
    tokenizer = _tokenizer(blip)
    text = {"vocab_size": len(tokenizer), "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1,
                "num_attention_heads": 2, "max_position_embeddings": 64, "bos_token_id": tokenizer.bos_token_id,
                "pad_token_id": tokenizer.pad_token_id, "sep_token_id": tokenizer.sep_token_id}
    vision = {"hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": 32,
                  "patch_size": 8}
    BlipForConditionalGeneration(BlipConfig(vision_config=vision, text_config=text, projection_dim=32)).save_pretrained(blip)
    BlipProcessor(image_processor=BlipImageProcessor(size={"height": 32, "width": 32}),
                  tokenizer=tokenizer).save_pretrained(blip)
    tokenizer = _tokenizer(llm)
    LlamaForCausalLM(LlamaConfig(vocab_size=len(tokenizer), hidden_size=32, intermediate_size=64, num_hidden_layers=1,
                                 num_attention_heads=2, num_key_value_heads=2, max_position_embeddings=512,
                                 pad_token_id=tokenizer.pad_token_id)).save_pretrained(llm)
    tokenizer.save_pretrained(llm)
    return blip, llm


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    folder = tmp_path_factory.mktemp("clips")
    for k in range(3):
        write_video(folder / f"clip{k}.mp4", pan_frames(12, 48, 64, speed=1.0, seed=k), fps=8)
    return folder


def test_batched_captions_equal_one_by_one(models, clips):
    captioner = VisionCaptioner(models[0], max_new_tokens=6)
    work = ClipCaptioner(clips, frames=captioner, num_frames=1)
    records = [{"file_path": f"clip{k}.mp4"} for k in range(3)]
    batched = work(records)
    single = [work([r])[0] for r in records]
    assert [r["text"] for r in batched] == [r["text"] for r in single]
    assert all(r["text"] and r["caption_model"] == "blip" and len(r["frame_captions"]) == 1 for r in batched)


def test_frame_captions_are_summarised_into_one(models, clips):
    captioner = VisionCaptioner(models[0], max_new_tokens=4)
    summarizer = Summarizer(models[1], max_new_tokens=5, temperature=0)
    work = ClipCaptioner(clips, frames=captioner, summarizer=summarizer, num_frames=3)
    out = work([{"file_path": "clip0.mp4"}, {"file_path": "clip1.mp4"}])
    assert all(len(r["frame_captions"]) == 3 for r in out)
    assert all(r["text"].startswith("In this video") and len(r["text"]) > len("In this video") for r in out)
    assert out[0]["caption_model"] == "blip+llm"


def test_sidecar_captions_come_from_clip_source_or_metadata(tmp_path):
    (tmp_path / "clips").mkdir()
    (tmp_path / "src").mkdir()
    (tmp_path / "clips" / "a.txt").write_text("  a cat runs \n")
    (tmp_path / "src" / "show.txt").write_text("the show")
    known = {str((tmp_path / "clips" / "c.mp4").absolute()): "from metadata"}
    work = ClipCaptioner(tmp_path / "clips", sidecar=SidecarCaptioner(tmp_path / "clips", tmp_path / "src", known))
    out = work([{"file_path": "a.mp4"}, {"file_path": "b.mp4", "source": "show.mp4"}, {"file_path": "c.mp4"},
                {"file_path": "d.mp4"}])
    assert [r["text"] for r in out] == ["a cat runs", "the show", "from metadata", ""]
    assert [r.get("drop") for r in out] == [None, None, None, "no_caption"]


def test_caption_errors(tmp_path):
    with pytest.raises(CheckpointError, match="--caption-model"):
        VisionCaptioner(tmp_path)
    with pytest.raises(CheckpointError, match="--summary-model"):
        Summarizer(tmp_path)
    with pytest.raises(CheckpointError, match="exactly one source"):
        ClipCaptioner(tmp_path)


def test_caption_stage_batches_and_resumes(models, clips, tmp_path):
    from training.preprocess import cli
    from training.preprocess.jobs import read_jsonl

    out = tmp_path / "caption.jsonl"
    argv = ["caption", "--input", str(clips), "--output", str(out), "--caption-model", str(models[0]),
            "--summary-model", str(models[1]), "--summary-temperature", "0", "--max-new-tokens", "5",
            "--caption-frames", "2", "--batch-size", "2"]
    assert cli.main("preprocess", argv) == 0
    first = read_jsonl(out)
    assert [r["file_path"] for r in first] == ["clip0.mp4", "clip1.mp4", "clip2.mp4"]
    assert all(r["text"].startswith("In this video") and len(r["frame_captions"]) == 2 for r in first)
    lines = out.read_text().splitlines(keepends=True)
    out.write_text("".join(lines[:1]) + lines[1][:20])  # as if killed while writing the second clip
    assert cli.main("preprocess", argv) == 0
    assert read_jsonl(out) == first  # redone identically, nothing twice

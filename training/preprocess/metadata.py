"""Stage records in, training metadata out, and the kept/dropped summary.

The training metadata is the reference's format (a JSON list; JSON lines and CSV are read too):
``{"file_path": path relative to the data root, "text": caption, "type": "video" | "image"}``
(written relative to the metadata file's own folder, the default data root when loading)
plus, from this pipeline, ``width``, ``height``, ``num_frames``, ``fps`` (so bucket samplers need
not open files) and the scores. A missing ``type`` means image, as in the reference.
"""

from __future__ import annotations

import csv
import json
import os
from collections import Counter
from pathlib import Path

from easyanimate_core.errors import InputError

from .jobs import read_jsonl

MEDIA_TYPES = ("video", "image")
TRAINING_FIELDS = ("file_path", "text", "type", "width", "height", "num_frames", "fps",
                   "motion_score", "text_score", "aesthetic_score")


def kept_records(path) -> list[dict]:
    """The items a stage passed on: records without ``error`` or ``drop``; a split record (one
    source video with its ``clips``) stands for its clips."""
    kept = []
    for record in read_jsonl(path):
        if "error" in record or "drop" in record:
            continue
        kept.extend(record.get("clips", [record]))
    return kept


def training_records(records: list[dict]) -> list[dict]:
    return [{k: record[k] for k in TRAINING_FIELDS if record.get(k) is not None} for record in records]


def write_metadata(records: list[dict], path, data_root) -> int:
    """Write a JSON list sorted by file_path, atomically. Paths are rewritten relative to the
    metadata file's folder, so the file loads with its own folder as the data root."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    rows = training_records(records)
    for row in rows:
        row["file_path"] = Path(os.path.relpath(Path(data_root) / row["file_path"], path.parent)).as_posix()
    rows.sort(key=lambda r: r["file_path"])
    temporary = path.with_name(path.name + ".tmp")
    temporary.write_text(json.dumps(rows, indent=1, ensure_ascii=False), encoding="utf-8")
    os.replace(temporary, path)
    return len(rows)


def read_rows(path) -> list[dict]:
    """The records of a metadata file as stored (JSON list, JSON lines or CSV)."""
    path = Path(path)
    if not path.is_file():
        raise InputError(f"metadata file {path} does not exist; make it with 'preprocess' or pass the right path")
    try:
        if path.suffix == ".jsonl":
            rows = read_jsonl(path)
        elif path.suffix == ".csv":
            with open(path, newline="", encoding="utf-8") as file:
                rows = list(csv.DictReader(file))
        else:
            rows = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, csv.Error, UnicodeDecodeError) as error:
        raise InputError(f"metadata file {path} cannot be parsed ({error}); expected a JSON list, JSON lines "
                         f"or CSV with file_path and text") from error
    if not isinstance(rows, list) or not all(isinstance(r, dict) and "file_path" in r for r in rows):
        raise InputError(f"metadata file {path} must be a list of records with a file_path each; "
                         f"regenerate it with 'preprocess metadata'")
    return rows


def load_metadata(path, root=None) -> list[dict]:
    """Training records with absolute ``file_path`` (relative ones joined with ``root``, default
    the metadata file's folder) and ``type`` filled in ("image" when missing)."""
    root = Path(root) if root is not None else Path(path).parent
    records = []
    for row in read_rows(path):
        record = dict(row)
        record["file_path"] = str((root / record["file_path"]).absolute())
        record["type"] = record.get("type") or "image"
        if record["type"] not in MEDIA_TYPES:
            raise InputError(f"metadata file {path} gives {record['file_path']} the type {record['type']!r}, "
                             f"expected 'video' or 'image' (or no type, meaning image); fix that record")
        record.setdefault("text", "")
        for key in ("width", "height", "num_frames"):  # CSV cells arrive as text
            if record.get(key) not in (None, ""):
                record[key] = int(float(record[key]))
        records.append(record)
    return records


SCORES = {"text": "text_score", "motion": "motion_score", "aesthetic": "aesthetic_score"}


def stage_summary(name: str, path) -> dict:
    """Counts for one stage file: items in, kept, dropped by reason (with the range of the
    stage's score over them, ``range:REASON``), errors, damaged sources."""
    counts = Counter()
    ranges = {}
    if name == "split":
        counts["clips"] = 0
    for record in read_jsonl(path):
        counts["in"] += 1
        if "error" in record:
            counts["error"] += 1
        elif "drop" in record:
            counts["drop:" + record["drop"]] += 1
            score = record.get(SCORES.get(name, ""))
            if score is not None:
                low, high = ranges.get(record["drop"], (score, score))
                ranges[record["drop"]] = (min(low, score), max(high, score))
        elif "clips" in record:  # split: one source in, its clips out
            counts["clips"] += len(record["clips"])
            counts["damaged"] += "damaged" in record
            for *_, reason in record.get("dropped_scenes", []):
                counts["drop:short_scene" if reason == "short" else "drop:" + reason] += 1
        else:
            counts["kept"] += 1
            if name == "aesthetic" and "aesthetic_score" not in record:
                counts["unscored"] += 1  # passed through: no weights were given
    return {"stage": name, **counts, **{f"range:{reason}": span for reason, span in ranges.items()}}


def _dropped(row: dict) -> list[str]:
    """'reason=count (score lo-hi)' for each reason a stage dropped items."""
    parts = []
    for key, count in sorted(row.items()):
        if key.startswith("drop:") and count:
            reason = key[5:]
            span = row.get(f"range:{reason}")
            score = f" ({SCORES[row['stage']]} {span[0]:.3g}-{span[1]:.3g})" if span else ""
            parts.append(f"{reason}={count}{score}")
    return parts


def why_nothing_kept(rows: list[dict]) -> str:
    """One clause per stage that lost items, e.g. 'motion dropped motion_low=5 (motion_score 0.01-0.9)'."""
    clauses = []
    for row in rows:
        lost = _dropped(row) + ([f"unreadable={row['error']}"] if row.get("error") else [])
        if row["stage"] == "split":
            lost = [f"{row.get('clips', 0)} clips cut from {row.get('in', 0)} sources", *lost]
        if lost:
            clauses.append(f"{row['stage']} " + ", ".join(lost))
    return "; ".join(clauses) or "no input item reached the last stage"


def summary_table(rows: list[dict]) -> str:
    lines = [f"{'stage':<10} {'in':>6} {'kept':>6} {'errors':>6}  dropped (why)"]
    for row in rows:
        kept = row.get("clips", row.get("kept", 0))
        why = ", ".join(_dropped(row)) or "-"
        if row.get("damaged"):
            why += f" ({row['damaged']} source(s) DAMAGED: only partly decodable)"
        if row.get("unscored"):
            why += f" ({row['unscored']} passed UNSCORED)"
        label = row["stage"] + ("*" if "clips" in row else "")
        lines.append(f"{label:<10} {row.get('in', 0):>6} {kept:>6} {row.get('error', 0):>6}  {why}")
    if any("clips" in row for row in rows):
        lines.append("* in = source videos, kept = clips cut from them")
    return "\n".join(lines)

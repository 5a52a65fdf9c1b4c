"""The resumable, sharded work loop every preprocessing stage runs in.

A stage reads a list of items (dicts), does its work on each and appends one JSON line per item
to its output file, flushed as soon as the item is done. Restarting a stage reads that file first
and skips every item already in it, so a killed run loses at most the item in flight and never
does an item twice. An item that fails (a corrupt video, a missing file) gets a line with an
``error`` field: it is reported, counted in the summary, and not retried on resume.

Sharding splits the items of a stage deterministically: shard ``i`` of ``n`` takes every ``n``-th
item of the key-sorted list, starting at ``i``. Each shard writes its own file
(``name.shard-00002-of-00004.jsonl``); ``merge_jsonl`` joins them.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path

from easyanimate_core.errors import InputError
from easyanimate_core.progress import Interrupted, ProgressFn, silent

Work = Callable[[list], list]


@dataclass(frozen=True)
class Shard:
    index: int = 0
    count: int = 1

    def __post_init__(self):
        if self.count < 1 or not 0 <= self.index < self.count:
            raise InputError(f"shard index must be in [0, num_shards), got index {self.index} of "
                             f"{self.count}; pass --shard-index between 0 and --num-shards - 1")

    @classmethod
    def resolve(cls, index: int | None = None, count: int | None = None) -> Shard:
        """Explicit options win; otherwise RANK / WORLD_SIZE as set by accelerate or torchrun."""
        if count is None:
            count = int(os.environ.get("WORLD_SIZE", "1"))
            index = int(os.environ.get("RANK", "0")) if index is None else index
        return cls(index or 0, count)

    def take(self, items: list, key: str) -> list:
        return sorted(items, key=lambda item: item[key])[self.index::self.count]

    def path(self, path) -> Path:
        path = Path(path)
        if self.count == 1:
            return path
        return path.with_name(f"{path.stem}.shard-{self.index + 1:05d}-of-{self.count:05d}{path.suffix}")


def shard_files(path) -> list[Path]:
    """The shard files written for ``path`` (sorted), or ``[]``."""
    path = Path(path)
    return sorted(path.parent.glob(f"{path.stem}.shard-*-of-*{path.suffix}"))


def read_jsonl(path) -> list[dict]:
    """All complete records. A last line without its newline is the trace of a killed write and
    is ignored (the item is redone); a damaged line anywhere else is an error."""
    path = Path(path)
    if not path.exists():
        return []
    # everything after the last newline is a torn write (or nothing): leave it out
    complete = path.read_text(encoding="utf-8").split("\n")[:-1]
    records = []
    for number, line in enumerate(complete, 1):
        if not line.strip():
            continue
        try:
            records.append(json.loads(line))
        except json.JSONDecodeError as error:
            raise InputError(f"line {number} of {path} is not valid JSON ({error.msg}); fix or delete "
                             f"that line and rerun") from error
    return records


class JsonlLog:
    """Append-only JSON-lines file, one flushed line per record."""

    def __init__(self, path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._drop_torn_tail()
        self.file = open(self.path, "a", encoding="utf-8")  # noqa: SIM115 (closed by close())

    def _drop_torn_tail(self):
        if not self.path.exists():
            return
        data = self.path.read_bytes()
        keep = data.rfind(b"\n") + 1
        if keep != len(data):
            with open(self.path, "r+b") as file:
                file.truncate(keep)

    def append(self, record: dict) -> None:
        self.file.write(json.dumps(record, ensure_ascii=False) + "\n")
        self.file.flush()

    def close(self):
        self.file.close()


@dataclass
class StageReport:
    name: str
    total: int  # items of this shard
    skipped: int  # already done before this run
    done: int  # done in this run
    errors: int  # done in this run with an error line


def log_skip(stage: str, key: str, reason: str) -> None:
    print(f"[{stage}] skipped {key}: {reason}", file=sys.stderr, flush=True)


def _error_record(item: dict, error: Exception) -> dict:
    message = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return {**item, "error": f"{type(error).__name__}: {message}"}


def run_stage(name: str, items: Iterable[dict], key: str, work: Work, output, *, shard: Shard = Shard(),
              batch_size: int = 1, progress: ProgressFn | None = None) -> StageReport:
    """Run ``work`` (a list of items -> a list of output records, same order) over this shard's
    items not yet in ``output``, appending each record as it is produced."""
    unique = {}
    for item in items:
        unique.setdefault(item[key], item)
    mine = shard.take(list(unique.values()), key)
    log = JsonlLog(output)
    try:
        finished = {record[key] for record in read_jsonl(output)}
        todo = [item for item in mine if item[key] not in finished]
        report = StageReport(name, len(mine), len(mine) - len(todo), 0, 0)
        progress = progress or silent
        progress(report.skipped, report.total)
        for start in range(0, len(todo), batch_size):
            batch = todo[start:start + batch_size]
            for record in _work_isolated(work, batch):
                log.append(record)
                report.done += 1
                if "error" in record:
                    report.errors += 1
                    log_skip(name, record[key], record["error"])
                progress(report.skipped + report.done, report.total)
        return report
    finally:
        log.close()


def _work_isolated(work: Work, batch: list) -> list:
    """Results for a batch; when a batch fails, each item is retried alone so one bad file costs
    only its own line."""
    try:
        records = work(batch)
        if len(records) != len(batch):
            raise RuntimeError(f"stage work returned {len(records)} records for {len(batch)} items")
        return records
    except (Interrupted, KeyboardInterrupt, MemoryError):
        raise
    except Exception as error:  # noqa: BLE001 (any failure of one item is that item's error line)
        if len(batch) == 1:
            return [_error_record(batch[0], error)]
        return [record for item in batch for record in _work_isolated(work, [item])]


def merge_jsonl(inputs: list, output, key: str) -> int:
    """Join stage files (e.g. shards) into one, one line per key (the first seen), sorted by key;
    written to a temporary file and renamed, so a crash never leaves half a merge."""
    merged = {}
    for path in inputs:
        for record in read_jsonl(path):
            merged.setdefault(record[key], record)
    output = Path(output)
    output.parent.mkdir(parents=True, exist_ok=True)
    temporary = output.with_name(output.name + ".tmp")
    with open(temporary, "w", encoding="utf-8") as file:
        file.writelines(json.dumps(merged[name], ensure_ascii=False) + "\n" for name in sorted(merged))
    os.replace(temporary, output)
    return len(merged)

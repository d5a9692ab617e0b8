"""``iterit score``: score data files into a table, resumably (shard files under a fingerprint of the run).

``run(ScoreConfig(...))`` is the command; the CLI only parses flags into the config and prints the result.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from iterit.config import ScoreConfig
from iterit.errors import IterITError
from iterit.models import DTYPES, load_model
from iterit.scoring.distributed import gather_objects, init_distributed_from_env
from iterit.scoring.engine import IFD_FORMS, score_samples
from iterit.scoring.table import ScoreTable, format_summary, summarize_scores, write_scores

if TYPE_CHECKING:
    from iterit.data import Sample

logger = logging.getLogger(__name__)


def _model_identity(model: str) -> dict[str, Any]:
    """The model's name, plus for a local folder the size and time of each weight/config file.

    Hashing the weights would cost as much as reading them; a changed checkpoint changes sizes or times.
    """
    folder = Path(model)
    if not folder.is_dir():
        return {"id": model}
    files = sorted(
        p for p in folder.iterdir() if p.suffix in (".safetensors", ".bin", ".json", ".model") and p.is_file()
    )
    return {
        "id": str(folder.resolve()),
        "files": {p.name: [p.stat().st_size, p.stat().st_mtime_ns] for p in files},
    }


def _samples_hash(samples: Sequence[Sample]) -> str:
    """SHA-256 of what is scored (ids, sources, conversations), independent of the file's formatting."""
    digest = hashlib.sha256()
    for sample in samples:
        digest.update(json.dumps([sample.id, sample.source, sample.messages], ensure_ascii=False).encode())
        digest.update(b"\n")
    return digest.hexdigest()


def _fingerprint(model: str, samples: Sequence[Sample], settings: dict[str, Any]) -> dict[str, Any]:
    return {
        "model": _model_identity(model),
        "data_sha256": _samples_hash(samples),
        "samples": len(samples),
        **settings,
    }


def _prepare_shard_folder(folder: Path, fingerprint: dict[str, Any], out: str) -> None:
    """Create the shard folder, or check that the one there was made by a run with the same arguments.

    A folder without any finished shard is reused whatever made it, so a failed start never blocks the rerun.
    """
    marker = folder / "fingerprint.json"
    if marker.exists():
        previous = json.loads(marker.read_text(encoding="utf-8"))
        if previous == fingerprint:
            return
        differing = sorted(k for k in set(previous) | set(fingerprint) if previous.get(k) != fingerprint.get(k))
        if any(folder.glob("shard-*.json")):
            raise IterITError(
                f"{folder}: holds partial results of a run with other arguments (differs in: {', '.join(differing)}); "
                f"delete that folder to start over, or choose another --out than {out}"
            )
        # An earlier start failed before finishing a shard (a wrong --model): nothing to keep, nothing to refuse.
        logger.info("%s: no finished shard of the earlier run (differs in: %s); starting afresh", folder,
                    ", ".join(differing))
    from iterit.storage import write_json

    folder.mkdir(parents=True, exist_ok=True)
    write_json(marker, fingerprint)


def _shard_path(folder: Path, index: int) -> Path:
    return folder / f"shard-{index:06d}.json"


def _write_shard(path: Path, table: ScoreTable) -> None:
    from iterit.storage import write_json

    # JSON keeps float64 exactly (shortest round-trip repr); the file is complete or absent (atomic rename).
    write_json(path, {"rows": table.to_rows(), "stats": table.stats})


def _read_shard(path: Path) -> ScoreTable:
    payload = json.loads(path.read_text(encoding="utf-8"))
    return ScoreTable.from_rows(payload["rows"], stats=payload["stats"])


def _concat_tables(tables: Sequence[ScoreTable]) -> ScoreTable:
    """One table from shards in order; stats add up (seconds are those spent on the shards, resumed or not)."""
    summed = ("seconds", "tokens", "sequences", "samples")
    stats: dict[str, Any] = {key: sum(t.stats.get(key, 0) for t in tables) for key in summed}
    computed = sum(
        t.stats.get("tokens", 0) / max(1e-12, 1 - t.stats.get("padding_share", 0.0)) for t in tables
    )
    stats["padding_share"] = 1 - stats["tokens"] / computed if computed else 0.0
    return ScoreTable(
        ids=[i for t in tables for i in t.ids],
        sources=[s for t in tables for s in t.sources],
        ifd=np.concatenate([t.ifd for t in tables]) if tables else np.zeros(0),
        loss_cond=np.concatenate([t.loss_cond for t in tables]) if tables else np.zeros(0),
        loss_prior=np.concatenate([t.loss_prior for t in tables]) if tables else np.zeros(0),
        n_response_tokens=np.concatenate([t.n_response_tokens for t in tables])
        if tables
        else np.zeros(0, np.int64),
        truncated=np.concatenate([t.truncated for t in tables]) if tables else np.zeros(0, bool),
        reasons=[r for t in tables for r in t.reasons],
        stats=stats,
    )


def _pending_shards(folder: Path, n_shards: int, rank: int, world: int) -> list[int]:
    """Shards without a finished file; rank 0 decides and tells the others, so all ranks agree."""
    pending = [k for k in range(n_shards) if not _shard_path(folder, k).exists()] if rank == 0 else None
    if world > 1:
        import torch.distributed as dist

        box = [pending]
        dist.broadcast_object_list(box, src=0)
        pending = box[0]
    return pending


def check_score_outputs(out: str, model: str, data: Sequence[str]) -> None:
    """Neither the scores, their ``.meta.json`` nor the shard folder may land on or inside an input."""
    from iterit.outputs import check_output

    inputs = {"--data": list(data), "--model": model}
    check_output(out, inputs)
    if Path(out).suffix == ".jsonl":
        check_output(Path(out).with_suffix(".meta.json"), inputs, flag="--out (its .meta.json)")
    check_output(f"{out}.shards", inputs, flag="--out (its shard folder)")


@dataclass
class ScoreResult:
    """What ``iterit score`` wrote: the summary of the table (:func:`summarize_scores`), where, and how many
    shards came from an earlier, killed run."""

    summary: dict[str, Any]
    out: str
    resumed_shards: int

    def format(self) -> str:
        """The lines the CLI prints."""
        resumed = f" ({self.resumed_shards} shards resumed)" if self.resumed_shards else ""
        return format_summary(self.summary) + f"\nwrote {self.out}{resumed}"


def validate(config: ScoreConfig) -> None:
    """All problems with the settings at once, before loading anything."""
    problems = []
    if Path(config.out).suffix not in (".parquet", ".jsonl"):
        problems.append(f"--out {config.out}: use a .parquet or .jsonl file name")
    if config.ifd_form not in IFD_FORMS:
        problems.append(f"--ifd-form: '{config.ifd_form}' is not one of {', '.join(IFD_FORMS)}")
    if config.dtype not in DTYPES:
        problems.append(f"--dtype: '{config.dtype}' is not one of {', '.join(DTYPES)}")
    for flag, value in (
        ("--max-length", config.max_length),
        ("--max-batch-tokens", config.max_batch_tokens),
        ("--shard-size", config.shard_size),
    ):
        if value < 1:
            problems.append(f"{flag}: must be at least 1, got {value}")
    if problems:
        raise IterITError("; ".join(problems))


def run(config: ScoreConfig) -> ScoreResult:
    """``iterit score``: score data files with a model into ``config.out`` (Parquet or JSON Lines), resumably.

    Results go to ``<out>.shards/shard-*.json`` every ``shard_size`` samples, each written atomically, beside a
    ``fingerprint.json`` of the settings, the data's hash and the model's identity. A killed run restarted
    with the same settings skips finished shards and writes the same output; other settings are refused.
    ``max_batch_tokens`` and ``device`` are not in the fingerprint, so a run that ran out of memory can resume
    with a smaller budget. The shard folder is removed once ``out`` is written.

    Under ``torchrun``/``accelerate launch`` every rank runs this; each scores its share and rank 0 writes.
    """
    from iterit.data import load_samples
    from iterit.storage import check_writable

    validate(config)
    model, data, out, shard_size = config.model, list(config.data), config.out, config.shard_size
    check_score_outputs(out, model, data)
    check_writable(out)
    rank, world = init_distributed_from_env()
    samples = load_samples(
        data,
        format=config.format,
        columns=config.columns,
        system_prompt=config.system_prompt,
        skip_invalid=config.skip_invalid,
        dedup=config.dedup,
        input_join=config.input_join,
    ).samples
    if not samples:
        raise IterITError(
            f"--data {' '.join(map(str, data))}: no valid samples to score; see the skipped rows above"
        )
    settings = {
        "template": config.template,
        "max_length": config.max_length,
        "ifd_form": config.ifd_form,
        "dtype": config.dtype,
        "system_prompt": config.system_prompt,
        "shard_size": shard_size,
        "response_end": config.response_end,
        "input_join": config.input_join,
    }
    fingerprint = _fingerprint(model, samples, settings)
    folder = Path(f"{out}.shards")
    if rank == 0:
        _prepare_shard_folder(folder, fingerprint, out)
    gather_objects(None, world)  # the folder check happens before any rank loads the model
    n_shards = math.ceil(len(samples) / shard_size)
    pending = _pending_shards(folder, n_shards, rank, world)
    if pending:
        loaded, tokenizer = load_model(model, dtype=config.dtype, device=config.device)
        logger.info(
            "scoring %d samples in %d shards (%d already done)",
            len(samples),
            n_shards,
            n_shards - len(pending),
        )
        for index in pending:
            chunk = samples[index * shard_size : (index + 1) * shard_size]
            table = score_samples(
                loaded,
                tokenizer,
                chunk,
                template=config.template,
                max_length=config.max_length,
                max_batch_tokens=config.max_batch_tokens,
                ifd_form=config.ifd_form,
                progress=not config.quiet,
                response_end=config.response_end,
            )
            if rank == 0:
                _write_shard(_shard_path(folder, index), table)
    table = (
        _concat_tables([_read_shard(_shard_path(folder, k)) for k in range(n_shards)]) if rank == 0 else None
    )
    summary: dict[str, Any] = {}
    if rank == 0:
        summary = summarize_scores(table)
        write_scores(table, out, metadata={"fingerprint": fingerprint, "summary": summary})
        shutil.rmtree(folder)
    summary = gather_objects(summary, world)[0]
    return ScoreResult({**summary, "out": str(out), "resumed_shards": n_shards - len(pending)}, str(out),
                       n_shards - len(pending))

"""Moving tuning results between databases: JSON export/import and merge.

The JSON form is one document::

    {"format": "braze-tuning-db", "schema": 1, "braze": "0.1.0", "exported": 1764000000.0,
     "trials": [{"uid": ..., "device": ..., "software": ..., "kernel_key": ..., "kernel_name": ...,
                 "backend": ..., "problem": {...}, "config": {...}, "status": "ok", "time_ms": 0.12,
                 "stats": {...}, "compile_ms": ..., "error": "", "origin": "search", "study": "",
                 "host": ..., "created": ...}, ...]}

Importing keeps each trial's uid, so importing the same file twice (or
merging databases that share trials) adds nothing twice; the best configs
are updated as trials arrive.
"""
from __future__ import annotations

import json
import time
from dataclasses import asdict
from typing import IO, Any, Iterable, Optional, Union

from braze.autotune.db import SCHEMA_VERSION, STATUSES, Trial, TuningDB, TuningDBError

FORMAT = "braze-tuning-db"
_FIELDS = ("device", "software", "kernel_key", "kernel_name", "backend", "problem", "config", "status", "time_ms",
           "stats", "compile_ms", "error", "origin", "study", "family", "host", "created", "uid")


def export_doc(db: TuningDB, **filters: Any) -> dict[str, Any]:
    """All trials (optionally filtered as in ``TuningDB.trials``) as a JSON-ready dict."""
    from braze.autotune.db import _braze_version  # lazy: imports sqlalchemy on first use

    return {"format": FORMAT, "schema": SCHEMA_VERSION, "braze": _braze_version(), "exported": time.time(),
            "trials": [asdict(t) for t in db.trials(**filters)]}


def export_json(db: TuningDB, out: Union[str, IO[str]], **filters: Any) -> int:
    doc = export_doc(db, **filters)
    if isinstance(out, str):
        with open(out, "w") as f:
            json.dump(doc, f, indent=1, sort_keys=True)
    else:
        json.dump(doc, out, indent=1, sort_keys=True)
    return len(doc["trials"])


def parse_doc(doc: Any, where: str = "input") -> list[Trial]:
    """Validate an export document; a clear TuningDBError for anything else."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise TuningDBError(f"{where} is not a braze tuning-database export (no \"format\": \"{FORMAT}\")")
    if not isinstance(doc.get("schema"), int) or doc["schema"] > SCHEMA_VERSION:
        raise TuningDBError(f"{where} has export schema {doc.get('schema')!r}; this braze reads up to "
                            f"{SCHEMA_VERSION}")
    trials = doc.get("trials")
    if not isinstance(trials, list):
        raise TuningDBError(f"{where}: \"trials\" is not a list")
    out = []
    for i, t in enumerate(trials):
        if not isinstance(t, dict):
            raise TuningDBError(f"{where}: trial {i} is not an object")
        missing = [f for f in ("device", "software", "kernel_key", "kernel_name", "backend", "problem", "config",
                               "status") if f not in t]
        if missing:
            raise TuningDBError(f"{where}: trial {i} lacks {', '.join(missing)}")
        if t["status"] not in STATUSES:
            raise TuningDBError(f"{where}: trial {i} has status {t['status']!r}")
        if not isinstance(t["problem"], dict) or not isinstance(t["config"], dict):
            raise TuningDBError(f"{where}: trial {i}: problem and config must be objects")
        try:
            out.append(Trial(**{k: t[k] for k in _FIELDS if k in t}))
        except (TypeError, ValueError) as e:
            raise TuningDBError(f"{where}: trial {i}: {e}") from None
    return out


def import_json(db: TuningDB, src: Union[str, IO[str]]) -> int:
    """Import an export file; returns the number of trials added (new uids)."""
    where = src if isinstance(src, str) else getattr(src, "name", "input")
    try:
        if isinstance(src, str):
            with open(src) as f:
                doc = json.load(f)
        else:
            doc = json.load(src)
    except json.JSONDecodeError as e:
        raise TuningDBError(f"{where} is not JSON: {e}") from None
    except OSError as e:
        raise TuningDBError(f"cannot read {where}: {e.strerror or e}") from None
    return import_trials(db, parse_doc(doc, where))


def import_trials(db: TuningDB, trials: Iterable[Trial], batch: int = 500) -> int:
    n = 0
    buf: list[Trial] = []
    for t in trials:
        buf.append(t)
        if len(buf) >= batch:
            n += db.record_many(buf)
            buf = []
    if buf:
        n += db.record_many(buf)
    return n


def merge(dst: TuningDB, src_url: str, src: Optional[TuningDB] = None) -> int:
    """Add every trial of the database at ``src_url`` to ``dst``."""
    import os

    from braze.autotune.db import _sqlite_path, to_url  # lazy: imports sqlalchemy on first use

    url = to_url(src_url)
    path = _sqlite_path(url)
    if path and not os.path.exists(path):
        raise TuningDBError(f"{src_url}: no such database file")
    src = src or TuningDB.open(url)
    try:
        return import_trials(dst, src.trials())
    finally:
        src.close()


__all__ = ["export_json", "export_doc", "import_json", "import_trials", "merge", "parse_doc", "FORMAT"]

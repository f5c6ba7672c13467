"""A cache of check results for ``progress``, keyed by the content of what a check depends on.

A stage's result can only change when one of these changes: the learner's files of the stage and
of every stage it builds on (its ``requires``, transitively), the provided code and the checks
(every non-exercise file of the package), the reference, the mode, or the installed versions of
Python, torch and transformers.  The key is a hash of all of them, so ``progress`` re-runs only
the stages whose inputs changed and answers at once when nothing did.  ``check`` and ``grade``
never read the cache: asked directly, a check always runs.
"""
from __future__ import annotations

import hashlib
import json
import os
import sys
from functools import lru_cache
from pathlib import Path

from .. import _modes, stages
from .harness import Result

CACHE_FILE = _modes.PACKAGE_DIR.parent / ".workbook" / "check_cache.json"
_VERSION = 1


def _digest(paths: list[Path]) -> str:
    h = hashlib.sha256()
    for p in sorted(paths):
        h.update(str(p).encode())
        try:
            h.update(p.read_bytes())
        except OSError:
            h.update(b"<missing>")
    return h.hexdigest()


@lru_cache(maxsize=1)
def _environment_digest() -> str:
    from importlib import metadata

    versions = [sys.version]
    for dist in ("torch", "transformers", "tokenizers"):
        try:
            versions.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            versions.append(f"{dist}=missing")
    exercise = {(_modes.PACKAGE_DIR.parent / f).resolve() for s in stages.STAGES for f in s.files()}
    provided = [p for p in _modes.PACKAGE_DIR.rglob("*") if p.is_file() and "__pycache__" not in p.parts
                and p.resolve() not in exercise]
    reference = [p for p in _modes.SOLUTIONS_DIR.rglob("*.py") if "__pycache__" not in p.parts]
    return hashlib.sha256("\n".join(versions + [_digest(provided), _digest(reference)]).encode()).hexdigest()


def closure(stage_id: str) -> list[str]:
    """The stage and every stage it builds on, transitively."""
    seen: list[str] = []
    todo = [stage_id]
    while todo:
        sid = todo.pop()
        if sid not in seen:
            seen.append(sid)
            todo.extend(stages.get(sid).requires)
    return sorted(seen)


def key(stage_id: str, mode: str) -> str:
    files = [_modes.PACKAGE_DIR.parent / f for sid in closure(stage_id) for f in stages.get(sid).files()]
    return hashlib.sha256(f"{_VERSION}|{mode}|{_environment_digest()}|{_digest(files)}".encode()).hexdigest()


def load(stage_ids: list[str], mode: str) -> dict[str, Result]:
    """Cached results whose key still matches (stale entries are ignored)."""
    try:
        data = json.loads(CACHE_FILE.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    out = {}
    for sid in stage_ids:
        entry = data.get(sid)
        if entry and entry.get("key") == key(sid, mode):
            try:
                out[sid] = Result.from_dict(entry["result"])
            except (KeyError, ValueError, TypeError):
                continue
    return out


def store(results: dict[str, Result], mode: str) -> None:
    """Remember `results` (the caller leaves out what must not be cached, e.g. a time-out)."""
    try:
        data = json.loads(CACHE_FILE.read_text(encoding="utf-8"))
        if not isinstance(data, dict):
            data = {}
    except (OSError, ValueError):
        data = {}
    for sid, r in results.items():
        data[sid] = {"key": key(sid, mode), "result": r.to_dict()}
    try:
        CACHE_FILE.parent.mkdir(parents=True, exist_ok=True)
        tmp = CACHE_FILE.with_name(CACHE_FILE.name + f".{os.getpid()}.tmp")
        tmp.write_text(json.dumps(data, ensure_ascii=False, indent=0), encoding="utf-8")
        os.replace(tmp, CACHE_FILE)
    except OSError:
        pass  # a read-only checkout still works, just without the cache

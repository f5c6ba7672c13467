"""Keep the stored stub templates (workbook/stubs/) equal to the exercise files of a fresh clone.

    python tools/stubs.py check              # list the exercise files that differ from their template
    python tools/stubs.py sync               # after editing a stub: copy it into workbook/stubs/
    python tools/stubs.py show 01 challenge  # print a stage's stub at a level

`sync` refuses a file that is not a stub (no ``TODO(learner)`` or no ``raise NotImplementedError``),
so a finished answer never becomes a template.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from workbook import stages, stubs  # noqa: E402


def differing() -> list[str]:
    """Exercise files whose bytes differ from their stored template (or that have none)."""
    out = []
    for rel in (f for s in stages.STAGES for f in s.files()):
        tpl = stubs.template_path(rel)
        if not tpl.is_file() or tpl.read_bytes() != (ROOT / rel).read_bytes():
            out.append(rel)
    return out


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    sub.add_parser("check")
    sub.add_parser("sync")
    p_show = sub.add_parser("show")
    p_show.add_argument("stage")
    p_show.add_argument("level", choices=stubs.LEVELS)
    args = p.parse_args(argv)

    if args.command == "show":
        for rel in stages.get(args.stage).files():
            print(f"# ===== {rel} ({args.level})\n{stubs.text(rel, args.level)}")
        return 0
    bad = differing()
    if args.command == "check":
        for rel in bad:
            print(f"differs from its template: {rel}")
        return 1 if bad else 0
    for rel in bad:
        text = (ROOT / rel).read_text(encoding="utf-8")
        if "TODO(learner)" not in text or "raise NotImplementedError" not in text:
            print(f"refused: {rel} is not a stub (no TODO(learner) / raise NotImplementedError)")
            return 1
    for rel in bad:
        tpl = stubs.template_path(rel)
        tpl.parent.mkdir(parents=True, exist_ok=True)
        tpl.write_bytes((ROOT / rel).read_bytes())
        print(f"synced {rel} -> {tpl.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""A class gradebook: ``grade --submission A --submission B …`` or ``grade --submissions FOLDER``.

Every submission is graded sealed, one after the other (``workbook.grade``), and the results go
into one table: learner × stage status, with each learner's total and each stage's count of
passes.  Outputs: the table on stdout, ``--csv F``, ``--markdown F``, ``--json F`` (every
submission's full report, schema ``minimind-workbook-gradebook/1``: {"schema", "created",
"grading_commit", "stages": [ids], "submissions": [a ``minimind-workbook-grade/2`` report, each
with "learner": its folder's name]}) and ``--junit F`` (one testsuite per learner).
"""
from __future__ import annotations

import csv
import datetime
import io
import json
import xml.etree.ElementTree as ET
from pathlib import Path

from . import grade as single
from .checks import harness

SCHEMA = "minimind-workbook-gradebook/1"
SYMBOL = {harness.PASS: "✓", harness.FAIL: "✗", harness.TODO: "·", harness.BLOCKED: "-",
          harness.TAMPERED: "!", harness.SOON: "…", harness.NO_REFERENCE: "?", harness.REFERENCE: "◇"}
LEGEND = "✓ 通过  ✗ 未通过  · 还没写  - 等前置阶段  ! 篡改嫌疑 (tampered)  ? 缺参考实现"


def submissions_in(folder: str | Path) -> list[Path]:
    """Every sub-folder of `folder` (hidden ones skipped), sorted by name: one per learner."""
    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"--submissions {folder}：不是目录")
    found = sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not found:
        raise ValueError(f"--submissions {folder}：里面没有学员的目录")
    return found


def learner_name(path: Path) -> str:
    return Path(path).resolve().name or str(path)


def _names(graded_list) -> list[str]:
    names, seen = [], {}
    for g in graded_list:
        name = learner_name(g.submission)
        seen[name] = seen.get(name, 0) + 1
        names.append(name if seen[name] == 1 else f"{name} ({seen[name]})")
    return names


def _passed(g) -> int:
    return sum(r.done for r in g.results)


def to_rows(graded_list) -> tuple[list[str], list[list[str]]]:
    """(header, rows) of the table: learner, one column per stage (its status), passed, total."""
    ids = [r.stage.id for r in graded_list[0].results]
    header = ["learner", *ids, "passed", "total"]
    rows = [[name, *[r.status for r in g.results], str(_passed(g)), str(len(g.results))]
            for name, g in zip(_names(graded_list), graded_list)]
    return header, rows


def to_csv(graded_list) -> str:
    header, rows = to_rows(graded_list)
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    counts = ["passes", *[str(sum(g.results[i].done for g in graded_list)) for i in range(len(header) - 3)],
              str(sum(_passed(g) for g in graded_list)), str(sum(len(g.results) for g in graded_list))]
    writer.writerow(counts)
    return buf.getvalue()


def to_markdown(graded_list, commit: str) -> str:
    header, rows = to_rows(graded_list)
    ids = header[1:-2]
    lines = [f"## MiniMind Workbook 成绩册 (gradebook)：{len(graded_list)} 位学员", "",
             f"评分用的课程版本 (grading commit)：`{commit}`", "", LEGEND, "",
             "| 学员 | " + " | ".join(ids) + " | 通过 |", "|---|" + "---|" * len(ids) + "---:|"]
    for row in rows:
        cells = [SYMBOL.get(s, s) for s in row[1:-2]]
        lines.append(f"| {single.md_cell(row[0])} | " + " | ".join(cells) + f" | {row[-2]}/{row[-1]} |")
    per_stage = [str(sum(g.results[i].done for g in graded_list)) for i in range(len(ids))]
    lines.append("| **通过人数** | " + " | ".join(per_stage) + " | |")
    return "\n".join(lines) + "\n"


def to_text(graded_list, commit: str) -> str:
    header, rows = to_rows(graded_list)
    ids = header[1:-2]
    name_w = max(single.width(r[0]) for r in rows) + 2
    lines = [f"MiniMind Workbook 成绩册 (gradebook)：{len(rows)} 位学员，课程版本 {commit}", "",
             "  " + single.pad("学员", name_w) + " ".join(f"{i:>2}" for i in ids) + "   通过"]
    for row in rows:
        lines.append("  " + single.pad(row[0], name_w) + " ".join(f"{SYMBOL.get(s, s):>2}" for s in row[1:-2])
                     + f"   {row[-2]}/{row[-1]}")
    lines += ["", LEGEND]
    return "\n".join(lines)


def to_json(graded_list, commit: str, ref_lines: set[str]) -> dict:
    reports = []
    for name, g in zip(_names(graded_list), graded_list):
        report = single.to_json(g, commit, ref_lines)
        report["learner"] = name
        reports.append(report)
    return {"schema": SCHEMA,
            "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
            "grading_commit": commit, "stages": [r.stage.id for r in graded_list[0].results],
            "submissions": reports}


def to_junit(graded_list, ref_lines: set[str]) -> bytes:
    root = ET.Element("testsuites", name="minimind-workbook gradebook")
    for name, g in zip(_names(graded_list), graded_list):
        single.junit_suite(root, g, name, ref_lines)
    ET.indent(root)
    return ET.tostring(root, encoding="utf-8", xml_declaration=True)


def write_reports(graded_list, *, json_path=None, csv_path=None, markdown_path=None, junit_path=None) -> str:
    """Write the requested files; returns the terminal table."""
    commit = single.grading_commit()
    ref_lines = single._reference_lines()
    if json_path:
        single.write_text(json_path, json.dumps(to_json(graded_list, commit, ref_lines), ensure_ascii=False,
                                                indent=1) + "\n")
    if csv_path:
        single.write_text(csv_path, to_csv(graded_list))
    if markdown_path:
        single.write_text(markdown_path, to_markdown(graded_list, commit))
    if junit_path:
        Path(junit_path).parent.mkdir(parents=True, exist_ok=True)
        Path(junit_path).write_bytes(to_junit(graded_list, ref_lines))
    return to_text(graded_list, commit)

"""``python -m workbook grade``: every stage checked on the learner's own files, as a report.

For a teacher (or a CI job): the checks run exactly as ``check`` runs them — in a child process,
under the time limit — but always in learner mode (``WORKBOOK_IMPL=learner``, whatever the
environment or a notebook says), so a stage served by the reference can never pass here, and a
learner file that imports the reference is reported as *tampered* (see ``checks.tamper``).

Outputs: a table on stdout, and on request ``--json F`` (schema below), ``--junit F`` (one
testcase per stage, the diagnostic as the failure message) and ``--markdown F`` (a table for a
CI job summary).  Exit status 0 only when every requested stage passes; 2 when nothing could be
graded (no reference to compare with).

JSON schema ``minimind-workbook-grade/1``::

    {"schema": "minimind-workbook-grade/1", "workbook_version": str, "created": ISO-8601 UTC,
     "mode": "learner", "passed": int, "total": int, "all_passed": bool,
     "stages": [{"stage": "03", "slug": "attention", "title": str,
                 "status": "pass" | "fail" | "todo" | "blocked" | "tampered" | "soon" | "no_reference",
                 "message": str (the diagnostic; the summary line on a pass),
                 "seconds": float}, ...]}
"""
from __future__ import annotations

import datetime
import json
import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

from . import stages
from .checks import harness

SCHEMA = "minimind-workbook-grade/1"
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# XML 1.0 forbids most control characters; a learner's print() may contain them
_XML_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
STATUS_ZH = {
    harness.PASS: "✓ 通过", harness.FAIL: "✗ 未通过", harness.TODO: "✗ 还没写",
    harness.BLOCKED: "· 等前置阶段", harness.TAMPERED: "✗ 用了参考实现", harness.SOON: "… 编写中",
    harness.NO_REFERENCE: "? 缺参考实现", harness.REFERENCE: "◇ 参考实现",
}


def parse_stages(spec: str | None) -> list[str]:
    """"00-05,08" -> ['00', …, '05', '08']; None or "all" -> every stage."""
    if not spec or spec.strip() == "all":
        return [s.id for s in stages.STAGES]
    from ._modes import ModeError, parse_mode

    try:
        chosen = parse_mode("solutions:" + spec)
    except ModeError as e:
        raise ValueError(f"--stages {spec!r} 看不懂：{str(e).split('：', 1)[-1]}") from None
    return [s.id for s in stages.STAGES if s.id in chosen]


def grade(stage_ids: list[str], timeout: float | None = None) -> list[harness.Result]:
    """Check `stage_ids` on the learner's own files; one Result per requested stage."""
    from .checks.runner import run_stages

    got = run_stages(stage_ids, mode="learner", timeout=timeout)
    return [got[s] for s in stage_ids]


def clean(text: str) -> str:
    return _XML_BAD.sub("", _ANSI.sub("", text))


def _version() -> str:
    from .export import _workbook_version

    return _workbook_version()


def to_json(results: list[harness.Result]) -> dict:
    passed = sum(r.done for r in results)
    return {
        "schema": SCHEMA,
        "workbook_version": _version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "learner",
        "passed": passed,
        "total": len(results),
        "all_passed": passed == len(results),
        "stages": [{"stage": r.stage.id, "slug": r.stage.slug, "title": r.stage.title,
                    "status": r.status, "message": clean(r.message), "seconds": round(r.seconds, 2)}
                   for r in results],
    }


def to_junit(results: list[harness.Result]) -> bytes:
    """JUnit XML: one <testcase> per stage; a failure carries the whole diagnostic."""
    failures = sum(not r.done for r in results)
    total_time = sum(r.seconds for r in results)
    suites = ET.Element("testsuites", name="minimind-workbook grade", tests=str(len(results)),
                        failures=str(failures), time=f"{total_time:.2f}")
    suite = ET.SubElement(suites, "testsuite", name="minimind-workbook", tests=str(len(results)),
                          failures=str(failures), errors="0", skipped="0", time=f"{total_time:.2f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="workbook.grade",
                             name=f"{r.stage.id} {r.stage.slug}", time=f"{r.seconds:.2f}")
        text = clean(r.message)
        if r.done:
            ET.SubElement(case, "system-out").text = text
        else:
            first = text.splitlines()[0] if text else r.status
            fail = ET.SubElement(case, "failure", type=r.status, message=f"[{r.status}] {first}")
            fail.text = text
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def _md_cell(text: str) -> str:
    return clean(text).replace("|", "\\|").replace("\n", "<br>")


def to_markdown(results: list[harness.Result]) -> str:
    """A table fit for a CI job summary ($GITHUB_STEP_SUMMARY)."""
    passed = sum(r.done for r in results)
    lines = [f"## MiniMind Workbook 评分 (grade)：{passed}/{len(results)} 个阶段通过", "",
             "| 阶段 | 内容 | 状态 | 用时 | 诊断 |", "|---|---|---|---:|---|"]
    for r in results:
        diag = "" if r.done else r.message
        lines.append(f"| {r.stage.id} | {_md_cell(r.stage.title)} | {STATUS_ZH.get(r.status, r.status)} | "
                     f"{r.seconds:.1f} s | {_md_cell(diag)} |")
    return "\n".join(lines) + "\n"


def _width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def to_text(results: list[harness.Result]) -> str:
    """The terminal report: a table, then every failing stage's whole diagnostic."""
    passed = sum(r.done for r in results)
    title_w = max(_width(r.stage.title) for r in results) + 2
    status_w = max(_width(STATUS_ZH.get(r.status, r.status)) for r in results) + 2
    lines = [f"MiniMind Workbook 评分 (grade)    按你自己的文件检查 (WORKBOOK_IMPL=learner)", "",
             f"  阶段  {_pad('内容', title_w)}{_pad('状态', status_w)}用时"]
    for r in results:
        lines.append(f"  {r.stage.id:<6}{_pad(r.stage.title, title_w)}"
                     f"{_pad(STATUS_ZH.get(r.status, r.status), status_w)}{r.seconds:5.1f} s")
    lines += ["", f"通过 {passed}/{len(results)} 个阶段。"]
    for r in results:
        if not r.done:
            lines += ["", f"✗ {r.stage.id} {r.stage.slug}（{r.stage.title}）：",
                      "  " + clean(r.message).replace("\n", "\n  ")]
    return "\n".join(lines)


def write_reports(results: list[harness.Result], *, json_path: str | None = None,
                  junit_path: str | None = None, markdown_path: str | None = None) -> None:
    for path, data in ((json_path, lambda: json.dumps(to_json(results), ensure_ascii=False, indent=1) + "\n"),
                       (markdown_path, lambda: to_markdown(results))):
        if path:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            # GitHub's job summary collects what every step appends: add to it, do not replace it
            mode = "a" if path == os.environ.get("GITHUB_STEP_SUMMARY") else "w"
            with open(path, mode, encoding="utf-8") as f:
                f.write(data())
    if junit_path:
        Path(junit_path).parent.mkdir(parents=True, exist_ok=True)
        Path(junit_path).write_bytes(to_junit(results))


def passed_notebooks(json_file: str | Path) -> list[str]:
    """The notebooks of the stages a grade JSON reports as passed (what nbval should run)."""
    data = json.loads(Path(json_file).read_text(encoding="utf-8"))
    if data.get("schema") != SCHEMA:
        raise ValueError(f"{json_file} 不是评分结果（schema 应为 {SCHEMA}）")
    return [stages.get(s["stage"]).notebook for s in data["stages"] if s["status"] == harness.PASS]

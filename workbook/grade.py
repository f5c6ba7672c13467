"""``python -m workbook grade``: a submission's stages, judged sealed, as a report.

For a teacher (or a CI job).  ``grade --submission DIR`` (plain ``grade`` = this checkout) copies
only the learner-owned exercise files of DIR into a fresh tree built from *this* copy of the course
and judges each stage there in an isolated child (see ``workbook.sealed``): the submission's checks,
registry, notebooks, ``conftest.py`` or ``sitecustomize.py`` take no part, learner code cannot read
or import the judge or the reference, and whatever it tries is reported as *tampered*.  Stages the
learner did not write are reported as such, and the stages that build on them get the reference in
their place, so a course may start at any part.

Outputs: a table on stdout, and on request ``--json F`` (schema below), ``--junit F`` (one testcase
per stage), ``--markdown F`` (a table for a CI job summary).  With several submissions
(``--submission A --submission B`` or ``--submissions FOLDER``) see ``workbook.gradebook``.  Every
message is capped (``MESSAGE_CHARS``), and any line of the reference's source is blanked out.
Exit status 0 only when every requested stage passes; 2 when nothing could be graded.

JSON schema ``minimind-workbook-grade/2``::

    {"schema": "minimind-workbook-grade/2", "workbook_version": str, "created": ISO-8601 UTC,
     "mode": "sealed", "grading_commit": str (the course's git commit, "+dirty" if changed),
     "submission": str, "passed": int, "total": int, "all_passed": bool,
     "files": {"workbook/model/norm.py": {"status": "ok" | "pristine" | "missing" | "refused",
                                          "sha256": str | null, "why": str (refused only)}, ...},
     "stages": [{"stage": "03", "slug": "attention", "title": str,
                 "status": "pass" | "fail" | "todo" | "blocked" | "tampered" | "soon" | "no_reference",
                 "message": str (the diagnostic; the summary line on a pass; <= 2,000 characters),
                 "seconds": float,
                 "served_by_reference": [stage ids of prerequisites the reference served],
                 "notebook": "pass" | "fail" | null (with --notebooks), "notebook_message": str}, ...]}
"""
from __future__ import annotations

import datetime
import json
import os
import re
import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path

from . import _modes, stages
from .checks import harness

SCHEMA = "minimind-workbook-grade/2"
MESSAGE_CHARS = 2000
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
# XML 1.0 forbids most control characters; a learner's print() may contain them
_XML_BAD = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f]")
STATUS_ZH = {
    harness.PASS: "✓ 通过", harness.FAIL: "✗ 未通过", harness.TODO: "✗ 还没写",
    harness.BLOCKED: "· 等前置阶段", harness.TAMPERED: "✗ 篡改嫌疑", harness.SOON: "… 编写中",
    harness.NO_REFERENCE: "? 缺参考实现", harness.REFERENCE: "◇ 参考实现",
}
REDACTED = "[这一行与参考实现的源代码相同，已隐去]"


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


def grade(stage_ids: list[str], *, submission: str | Path = ".", timeout: float | None = None,
          memory_gb: float | None = None, notebooks: bool = False, echo=None):
    """Grade `submission` on `stage_ids`, sealed; returns a ``workbook.sealed.run.Graded``."""
    from .sealed.run import grade_submission

    return grade_submission(Path(submission), stage_ids, timeout=timeout, memory_gb=memory_gb,
                            notebooks=notebooks, echo=echo)


def clean(text: str) -> str:
    return _XML_BAD.sub("", _ANSI.sub("", text))


def _reference_lines() -> set[str]:
    """The reference's source lines long enough to be recognisable (what a report must not hold)."""
    lines: set[str] = set()
    root = _modes.SOLUTIONS_DIR
    for rel in stages.MODULE_STAGE:
        try:
            text = (root / (rel.replace(".", "/") + ".py")).read_text(encoding="utf-8")
        except OSError:
            continue
        lines.update(s for s in (ln.strip() for ln in text.splitlines()) if len(s) >= 30)
    return lines


def report_text(text: str, reference_lines: set[str] | None = None) -> str:
    """A message as every report carries it: control characters removed, any line that holds a line
    of the reference's source blanked out, at most MESSAGE_CHARS characters."""
    text = clean(text)
    if reference_lines:
        text = "\n".join(REDACTED if any(ref in ln for ref in reference_lines) else ln
                         for ln in text.split("\n"))
    if len(text) > MESSAGE_CHARS:
        text = text[:MESSAGE_CHARS - 40].rstrip() + f"\n……（过长，只保留前 {MESSAGE_CHARS - 40} 个字符）"
    return text


def _version() -> str:
    from .export import _workbook_version

    return _workbook_version()


def grading_commit(course: Path | None = None) -> str:
    """The course's git commit ("+dirty" when its tracked files differ), or its version outside git."""
    course = course or _modes.PACKAGE_DIR.parent
    try:
        head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=course, capture_output=True, text=True,
                              check=True, timeout=30).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=course,
                               capture_output=True, text=True, check=True, timeout=30).stdout.strip()
        return head + ("+dirty" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        return f"workbook {_version()} (not a git checkout)"


def _passed(graded) -> bool:
    return all(r.done for r in graded.results) and all(
        graded.notebooks.get(r.stage.id, (None, ""))[0] in (None, harness.PASS) for r in graded.results)


def to_json(graded, commit: str | None = None, ref_lines: set[str] | None = None) -> dict:
    results = graded.results
    passed = sum(r.done for r in results)
    stages_out = []
    for r in results:
        entry = {"stage": r.stage.id, "slug": r.stage.slug, "title": r.stage.title, "status": r.status,
                 "message": report_text(r.message, ref_lines), "seconds": round(r.seconds, 2),
                 "served_by_reference": graded.served.get(r.stage.id, []), "notebook": None}
        if r.stage.id in graded.notebooks:
            entry["notebook"], note = graded.notebooks[r.stage.id]
            entry["notebook_message"] = report_text(note, ref_lines)
        stages_out.append(entry)
    return {
        "schema": SCHEMA,
        "workbook_version": _version(),
        "created": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "mode": "sealed",
        "grading_commit": commit or grading_commit(),
        "submission": str(graded.submission),
        "passed": passed,
        "total": len(results),
        "all_passed": _passed(graded),
        "files": {rel: o.to_dict() for rel, o in graded.files.items()},
        "stages": stages_out,
    }


def junit_suite(parent: ET.Element, graded, name: str, ref_lines: set[str] | None) -> None:
    results = graded.results
    failures = sum(not r.done for r in results)
    total_time = sum(r.seconds for r in results)
    suite = ET.SubElement(parent, "testsuite", name=name, tests=str(len(results)), failures=str(failures),
                          errors="0", skipped="0", time=f"{total_time:.2f}")
    for r in results:
        case = ET.SubElement(suite, "testcase", classname="workbook.grade",
                             name=f"{r.stage.id} {r.stage.slug}", time=f"{r.seconds:.2f}")
        text = report_text(r.message, ref_lines)
        if r.done:
            ET.SubElement(case, "system-out").text = text
        else:
            first = text.splitlines()[0] if text else r.status
            fail = ET.SubElement(case, "failure", type=r.status, message=f"[{r.status}] {first}")
            fail.text = text


def to_junit(graded, ref_lines: set[str] | None = None) -> bytes:
    """JUnit XML: one <testcase> per stage; a failure carries the diagnostic."""
    results = graded.results
    suites = ET.Element("testsuites", name="minimind-workbook grade", tests=str(len(results)),
                        failures=str(sum(not r.done for r in results)),
                        time=f"{sum(r.seconds for r in results):.2f}")
    junit_suite(suites, graded, "minimind-workbook", ref_lines)
    ET.indent(suites)
    return ET.tostring(suites, encoding="utf-8", xml_declaration=True)


def md_cell(text: str) -> str:
    return clean(text).replace("|", "\\|").replace("\n", "<br>")


def to_markdown(graded, ref_lines: set[str] | None = None, commit: str | None = None) -> str:
    """A table fit for a CI job summary ($GITHUB_STEP_SUMMARY)."""
    results = graded.results
    passed = sum(r.done for r in results)
    lines = [f"## MiniMind Workbook 评分 (grade)：{passed}/{len(results)} 个阶段通过", "",
             f"评分用的课程版本 (grading commit)：`{commit or grading_commit()}`", "",
             "| 阶段 | 内容 | 状态 | 用时 | 诊断 |", "|---|---|---|---:|---|"]
    for r in results:
        diag = "" if r.done else report_text(r.message, ref_lines)
        if r.done and graded.served.get(r.stage.id):
            from .sealed.run import ranges
            diag = f"前置阶段由参考实现提供: {ranges(graded.served[r.stage.id])}"
        nb = graded.notebooks.get(r.stage.id)
        if nb and nb[0] != harness.PASS:
            diag += ("<br>" if diag else "") + "笔记本没有跑通：" + report_text(nb[1], ref_lines)
        lines.append(f"| {r.stage.id} | {md_cell(r.stage.title)} | {STATUS_ZH.get(r.status, r.status)} | "
                     f"{r.seconds:.1f} s | {md_cell(diag)} |")
    return "\n".join(lines) + "\n"


def width(text: str) -> int:
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def pad(text: str, w: int) -> str:
    return text + " " * max(0, w - width(text))


def to_text(graded, ref_lines: set[str] | None = None) -> str:
    """The terminal report: a table, then every failing stage's whole diagnostic."""
    results = graded.results
    passed = sum(r.done for r in results)
    title_w = max(width(r.stage.title) for r in results) + 2
    status_w = max(width(STATUS_ZH.get(r.status, r.status)) for r in results) + 2
    lines = [f"MiniMind Workbook 评分 (grade)    只收你自己的文件，在封闭的评分环境里检查 (sealed)", "",
             f"  阶段  {pad('内容', title_w)}{pad('状态', status_w)}用时"]
    for r in results:
        nb = graded.notebooks.get(r.stage.id)
        note = "" if nb is None else ("   笔记本 ✓" if nb[0] == harness.PASS else "   笔记本 ✗")
        lines.append(f"  {r.stage.id:<6}{pad(r.stage.title, title_w)}"
                     f"{pad(STATUS_ZH.get(r.status, r.status), status_w)}{r.seconds:5.1f} s{note}")
    lines += ["", f"通过 {passed}/{len(results)} 个阶段。"]
    served = sorted({s for ids in graded.served.values() for s in ids})
    if served:
        from .sealed.run import ranges
        lines.append(f"前置阶段由参考实现提供: {ranges(served)}（这些阶段你没有写，后面的阶段用参考实现代替它们）")
    for r in results:
        if not r.done:
            lines += ["", f"✗ {r.stage.id} {r.stage.slug}（{r.stage.title}）：",
                      "  " + report_text(r.message, ref_lines).replace("\n", "\n  ")]
        nb = graded.notebooks.get(r.stage.id)
        if nb and nb[0] != harness.PASS:
            lines += ["", f"✗ {r.stage.notebook} 没有从头跑通：",
                      "  " + report_text(nb[1], ref_lines).replace("\n", "\n  ")]
    return "\n".join(lines)


def write_text(path: str, data: str) -> None:
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    # GitHub's job summary collects what every step appends: add to it, do not replace it
    mode = "a" if path == os.environ.get("GITHUB_STEP_SUMMARY") else "w"
    with open(path, mode, encoding="utf-8") as f:
        f.write(data)


def write_reports(graded, *, json_path: str | None = None, junit_path: str | None = None,
                  markdown_path: str | None = None) -> str:
    """Write the requested reports; returns the terminal text."""
    ref_lines = _reference_lines()
    commit = grading_commit()
    if json_path:
        write_text(json_path, json.dumps(to_json(graded, commit, ref_lines), ensure_ascii=False, indent=1) + "\n")
    if markdown_path:
        write_text(markdown_path, to_markdown(graded, ref_lines, commit))
    if junit_path:
        Path(junit_path).parent.mkdir(parents=True, exist_ok=True)
        Path(junit_path).write_bytes(to_junit(graded, ref_lines))
    return to_text(graded, ref_lines)

"""The rustlings-style progress table: every stage, its status, and the next step."""
from __future__ import annotations

from . import _modes, stages
from .checks import harness
from .levels import recorded as recorded_levels

_LABEL = {
    harness.PASS: "✓ 通过",
    harness.REFERENCE: "◇ 参考实现（不算完成）",
    harness.FAIL: "✗ 未通过",
    harness.TODO: "✗ 还没写",
    harness.BLOCKED: "· 等前置阶段",
    harness.SOON: "… 编写中",
    harness.TAMPERED: "✗ 用了参考实现",
    harness.NO_REFERENCE: "? 缺参考实现",
}


def _width(text: str) -> int:
    """Display width: CJK characters take two terminal columns."""
    return sum(2 if ord(ch) > 0x2E80 else 1 for ch in text)


def _pad(text: str, width: int) -> str:
    return text + " " * max(0, width - _width(text))


def results(mode: str | None = None, timeout: float | None = None,
            use_cache: bool = False) -> list[harness.Result]:
    """Every stage's Result, checked in a child process (see workbook.checks.runner).

    mode: the WORKBOOK_IMPL value to judge (None = this process's mode); a stage served by
    the reference is reported as such without running its check.
    use_cache: reuse the results of stages whose files have not changed (checks.cache);
    `progress` does, `export` and `grade` do not.
    """
    from .checks import cache
    from .checks.runner import run_stages

    ids = [s.id for s in stages.STAGES]
    mode = _modes.format_mode(_modes.reference_stages()) if mode is None else mode
    cached = cache.load(ids, mode) if use_cache else {}
    unreliable: set[str] = set()
    got = run_stages(ids, mode=mode, timeout=timeout, run_reference=False, known=cached,
                     unreliable=unreliable)
    if use_cache:
        # a time-out or a crashed check process is not the check's verdict: keep it (and what
        # it blocked) out of the cache, so the next progress runs them again
        fresh = {sid: r for sid, r in got.items() if sid not in cached
                 and not unreliable.intersection(cache.closure(sid))}
        cache.store(fresh, mode)
    return [got[s.id] for s in stages.STAGES]


def trainers_line(res: list[harness.Result]) -> str:
    """MiniMind's trainers (stages.TRAINERS): ✓ where every stage a trainer runs on passes with the learner's code."""
    done = {r.stage.id for r in res if r.done}
    marks = [f"{'✓' if set(needs) <= done else '·'} {script}" for script, _, needs in stages.TRAINERS]
    rebuilt = sum(m.startswith("✓") for m in marks)
    tail = "：MiniMind 的全部训练脚本都用你自己的代码重写了" if rebuilt == len(marks) else ""
    return f"MiniMind 的 {len(marks)} 个训练脚本 (trainers)，{rebuilt}/{len(marks)} 已用你的代码重写{tail}：" + "  ".join(marks)


def table(res: list[harness.Result] | None = None) -> str:
    res = results() if res is None else res
    title_w = max(_width(r.stage.title) for r in res) + 2
    from .use import current

    lines = [f"MiniMind Workbook 进度 (progress)    模式 (WORKBOOK_IMPL)：{current()}",
             "",
             f"  {'阶段':<4}{_pad('内容', title_w)}{'状态'}"]
    part = None
    for r in res:
        if r.stage.part != part:
            part = r.stage.part
            lines.append(f"  — {stages.PARTS.get(part, f'Part {part}')}")
        lines.append(f"  {r.stage.id:<6}{_pad(r.stage.title, title_w)}{_LABEL[r.status]}")
    done = sum(r.done for r in res)
    open_ = [r for r in res if r.status != harness.SOON]
    lines += ["", f"已完成 {done}/{len(open_)} 个开放的阶段。", trainers_line(res)]
    challenge = sorted(sid for sid, level in recorded_levels().items() if level == "challenge")
    if challenge:
        lines.append(f"挑战级 (challenge) 的阶段：{'、'.join(challenge)}（其余是引导级 (guided)）")
    served = [r.stage.id for r in res if r.status == harness.REFERENCE]
    if served:
        lines.append(f"（{_modes.format_mode(frozenset(served)).split(':', 1)[-1]} 用的是参考实现，"
                     f"不算你完成的阶段。）")
    nxt = next((r for r in res if r.status in (harness.TODO, harness.FAIL)), None)
    if nxt is None:
        nxt = next((r for r in res if r.status == harness.BLOCKED), None)
    if nxt is None and served:
        lines.append("下一步：其余阶段都通过了；把用参考实现的阶段也写完，再不设 WORKBOOK_IMPL 运行一次。")
    elif nxt is None:
        lines.append("下一步：全部开放的阶段都通过了 🎉")
    else:
        s = nxt.stage
        files = "、".join(s.files()) or "（本阶段不写新文件）"
        lines.append(f"下一步 (next)：打开 {s.notebook}，{s.goal}（{files}），"
                     f"然后运行 python -m workbook check {s.id}")
    return "\n".join(lines)

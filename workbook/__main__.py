"""Learner CLI: ``python -m workbook progress | check ID | hint ID [--level N] | reset | grade | export |
export-hf | eval | chat | serve | use | release``.  One small function per command; ``main`` only parses and dispatches."""
from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from . import stages

# export-hf's shape flags: None = not given, the config JSON beside the weights decides
_HF_SHAPE = (("hidden_size", int), ("num_hidden_layers", int), ("num_attention_heads", int),
             ("num_key_value_heads", int), ("vocab_size", int), ("intermediate_size", int),
             ("rope_theta", float), ("max_position_embeddings", int))


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m workbook",
        description="MiniMind Workbook 学习工具：看进度、跑检查、要提示。")
    sub = parser.add_subparsers(dest="command", required=True)
    p_progress = sub.add_parser("progress", help="每个阶段的状态和下一步")
    p_progress.add_argument("--no-cache", dest="no_cache", action="store_true",
                            help="不用缓存：每个阶段都重新检查（默认只重查文件有变化的阶段）")
    p_check = sub.add_parser("check", help="运行某一阶段的检查（通过时退出码 0，否则 1）")
    p_check.add_argument("stage", help="阶段编号，例如 01")
    p_grade = sub.add_parser(
        "grade", help="评分（老师用）：只收学员自己的文件，每个阶段在封闭的子进程里检查；输出表格 / JSON / JUnit / Markdown")
    p_grade.add_argument("--stages", default="all", help="只评这些阶段，例如 00-05 或 00-08,10（默认全部）")
    p_grade.add_argument("--submission", action="append", metavar="DIR", default=None,
                         help="学员的仓库（可以给多次：成绩册）；不给 = 当前这份仓库")
    p_grade.add_argument("--submissions", metavar="FOLDER", default=None,
                         help="一个目录，里面每个子目录是一位学员的仓库：写成绩册 (gradebook)")
    p_grade.add_argument("--json", dest="json_path", metavar="F", help="把结果写成 JSON（schema 见 workbook/grade.py）")
    p_grade.add_argument("--junit", dest="junit_path", metavar="F", help="把结果写成 JUnit XML（每个阶段一个 testcase）")
    p_grade.add_argument("--markdown", dest="markdown_path", metavar="F",
                         help="把结果写成 Markdown 表格（CI 的 job summary，例如 $GITHUB_STEP_SUMMARY）")
    p_grade.add_argument("--csv", dest="csv_path", metavar="F", help="成绩册写成 CSV（学员 × 阶段）")
    p_grade.add_argument("--notebooks", action="store_true",
                         help="再用课程自己的笔记本跑一遍每个通过的阶段（nbval，用学员的文件）")
    p_grade.add_argument("--memory", dest="memory_gb", type=float, default=None, metavar="GB",
                         help="每个阶段的评分进程最多用多少 GB 内存（默认 $WORKBOOK_GRADE_MEMORY_GB 或 8）")
    for p in (p_progress, p_check, p_grade):
        p.add_argument("--timeout", type=float, default=None,
                       help="每个阶段的检查最多运行多少秒（默认 $WORKBOOK_CHECK_TIMEOUT 或 180）")
        p.add_argument("--reference", dest="reference_dir", metavar="PATH", default=None,
                       help="参考实现的 solutions/ 目录（课堂发布版里没有它；= 环境变量 WORKBOOK_REFERENCE）")
    p_release = sub.add_parser("release", help="老师用：写一份不含参考实现的学生版仓库")
    p_release.add_argument("dir", help="写到这个目录（不存在或为空）")
    p_hint = sub.add_parser("hint", help="显示某一阶段的下一级提示")
    p_hint.add_argument("stage", help="阶段编号，例如 01")
    p_hint.add_argument("--level", type=int, default=None, help="直接显示第 N 级提示")
    p_reset = sub.add_parser("reset", help="把某一阶段的文件换成引导级 (guided) 或挑战级 (challenge) 占位（先备份你的代码）")
    p_reset.add_argument("stage", help="阶段编号，例如 01；all = 全部阶段")
    p_reset.add_argument("--level", default=None,
                         help="guided（引导级：逐步提示写在文件里）或 challenge（挑战级：只留签名和文档字符串）；"
                              "默认沿用这个阶段上次的级别")
    p_export = sub.add_parser("export", help="导出你的包（可安装，带 torchrun 启动脚本）")
    p_export.add_argument("dir", help="导出到这个目录（不存在或为空）")
    p_export.add_argument("--force", action="store_true", help="有阶段没通过也导出")
    p_export.add_argument("--reference", action="store_true", help="导出参考实现而不是你的代码")
    p_hf = sub.add_parser("export-hf", help="把训练好的 .pth 权重导出成 Hugging Face 目录")
    p_hf.add_argument("weights", help="MiniMind 格式的 .pth（例如 out/pretrain_512.pth）")
    p_hf.add_argument("out", help="输出目录")
    p_hf.add_argument("--llama", action="store_true",
                      help="导出原生 LlamaForCausalLM 目录：不带模型代码，不用 trust_remote_code，"
                           "是 vLLM 等 Llama 工具读的格式（MoE 模型不行）")
    p_hf.add_argument("--dtype", default="float16", choices=["float16", "bfloat16", "float32"],
                      help="safetensors 的精度 (dtype)，默认 float16：训练存下的 .pth 本来就是 float16，"
                           "导出 float16 一位不差、大小是 float32 的一半；bfloat16 要把每个权重再舍入一次"
                           "（尾数少 3 位，logits 会变）；float32 数值同 float16、体积翻倍")
    for flag, kind in _HF_SHAPE:
        p_hf.add_argument(f"--{flag}", type=kind, default=None,
                          help="不给时用权重旁边的 *_config.json，没有它就用 MiniMindConfig 的默认值")
    p_hf.add_argument("--use_moe", type=int, default=None, choices=[0, 1],
                      help="1 = 混合专家 (MoE) 模型（只能导出带模型代码的目录，不能加 --llama）")
    p_hf.add_argument("--inference_rope_scaling", type=int, default=None, choices=[0, 1],
                      help="1 = 推理时用 YaRN 把 RoPE 拉长，上下文到训练时的 16 倍")
    p_hf.add_argument("--pth", help="同时另存一份 MiniMind 格式的 .pth（fp16）")
    p_hf.add_argument("--gguf", action="store_true",
                      help="再写一个 llama.cpp 用的 GGUF 文件 OUT/model.gguf（稠密模型；--dtype float16 或 float32）")
    p_hf.add_argument("--lora", metavar="ADAPTER", default=None,
                      help="再把一个 LoRA 适配器（python -m workbook.train.lora 存的 .pth）导出成 PEFT 目录 OUT/adapter："
                           "PeftModel.from_pretrained(基座, OUT/adapter)；r = lora_alpha = 秩")
    from .eval import cli as eval_cli
    eval_cli.add_arguments(sub.add_parser("eval", help=eval_cli.HELP))
    from . import chat, serve
    from . import use as use_cmd
    chat.add_arguments(sub.add_parser("chat", help=chat.HELP))
    serve.add_arguments(sub.add_parser("serve", help=serve.HELP))
    use_cmd.add_arguments(sub.add_parser("use", help=use_cmd.HELP))
    return parser


def cmd_grade(args) -> int:
    from . import gradebook
    from .checks.harness import NO_REFERENCE
    from .grade import grade, parse_stages, write_reports

    ids = parse_stages(args.stages)
    subs = [Path(p) for p in (args.submission or [])]
    if args.submissions:
        subs += gradebook.submissions_in(args.submissions)
    for p in subs:
        if not p.is_dir():
            raise ValueError(f"--submission {p}：不是目录")
    if len(subs) <= 1:
        graded = [grade(ids, submission=subs[0] if subs else ".", timeout=args.timeout,
                        memory_gb=args.memory_gb, notebooks=args.notebooks)]
        print(write_reports(graded[0], json_path=args.json_path, junit_path=args.junit_path,
                            markdown_path=args.markdown_path))
        if args.csv_path:
            gradebook.write_reports(graded, csv_path=args.csv_path)
    else:
        graded = []
        for i, p in enumerate(subs, 1):
            print(f"[{i}/{len(subs)}] 评分 {p} …", file=sys.stderr, flush=True)
            graded.append(grade(ids, submission=p, timeout=args.timeout, memory_gb=args.memory_gb,
                                notebooks=args.notebooks))
        print(gradebook.write_reports(graded, json_path=args.json_path, csv_path=args.csv_path,
                                      markdown_path=args.markdown_path, junit_path=args.junit_path))
    if any(r.status == NO_REFERENCE for g in graded for r in g.results):
        return 2
    from .grade import _passed
    return 0 if all(_passed(g) for g in graded) else 1


def cmd_release(args) -> int:
    from .release import write_release
    dest = write_release(args.dir)
    print(f"已写出学生版 (classroom release) 到 {dest}：不含 solutions/。评分时用 "
          f"python -m workbook grade --reference <solutions 目录> --submission <学员的仓库>。")
    return 0


def cmd_progress(args) -> int:
    from .progress import results, table
    print(table(results(timeout=args.timeout, use_cache=not args.no_cache)))
    return 0


def cmd_check(args) -> int:
    from .checks.runner import run_stages
    stage = stages.get(args.stage)
    result = run_stages([stage.id], timeout=args.timeout, echo=True)[stage.id]
    print(result.report())
    if result.status == "no_reference":
        return 2
    return 0 if result.passed else 1


def cmd_export(args) -> int:
    from .export import ExportRefused, describe_failures, export_package, failing, judge_learner_files
    results = None
    if not args.reference:
        print("先按你自己的文件检查每个阶段 (WORKBOOK_IMPL=learner) …", file=sys.stderr)
        results = judge_learner_files()
    try:
        dest = export_package(args.dir, reference=args.reference, force=args.force, results=results)
    except (ExportRefused, FileExistsError, FileNotFoundError) as e:
        print(f"没有导出：{e}", file=sys.stderr)
        return 1
    bad = failing(results or [])
    if bad:
        print(f"警告：用 --force 导出了 {len(bad)} 个没有通过检查的阶段（已记在 "
              f"{dest}/workbook/export_status.json 和 README.md 里，导入时也会提醒）：\n"
              + describe_failures(bad), file=sys.stderr)
    print(f"已导出到 {dest}：pip install {dest}，然后 {dest}/train.sh --data_path ...")
    return 0


def cmd_export_hf(args) -> int:
    from .export import export_hf
    base_keys = None
    if args.lora:  # checked before anything is written
        from .export_peft import peft_adapter
        from .train.checkpoint import safe_load
        base_keys = set(safe_load(args.weights, "权重"))
        peft_adapter(args.lora, base_keys)
    given = {k: getattr(args, k) for k, _ in _HF_SHAPE}
    for k in ("use_moe", "inference_rope_scaling"):
        given[k] = None if getattr(args, k) is None else bool(getattr(args, k))
    report: dict = {}
    try:
        out = export_hf(args.weights, args.out, pth=args.pth, config_kwargs=given,
                        llama=args.llama, dtype=args.dtype, report=report, gguf=args.gguf,
                        lora=bool(args.lora))
    except NotImplementedError as e:  # the learner's model code is not written yet
        print(f"错误：export-hf 用你自己写的模型代码，它还没写完：{e}\n先通过 00–08 的检查，"
              f"或者用参考实现导出：WORKBOOK_IMPL=solutions python -m workbook export-hf …", file=sys.stderr)
        return 2
    if report["config_json"]:
        print(f"模型配置 (config) 取自 {report['config_json']}（命令行参数优先）。")
    if args.llama:
        f = report["figures"]
        print(f"已导出原生 Llama 目录 {out}（{args.dtype}）：与你的模型对比（float32），logits 最大差 "
              f"{f['logits_max_abs']:.1e}（按 {args.dtype} 存下的权重：{f['stored_logits_max_abs']:.1e}），"
              f"RoPE 逆频率 (inv_freq) 相对差 {f['inv_freq_rtol']:.1e}。"
              f"AutoModelForCausalLM.from_pretrained('{out}') 直接加载，不要 trust_remote_code。")
    else:
        print(f"已导出 Hugging Face 目录 {out}（{args.dtype}）："
              f"AutoModelForCausalLM.from_pretrained('{out}', trust_remote_code=True)；"
              f"分词器 (tokenizer) 也传 trust_remote_code=True，transformers 5 才不会停下来问。"
              f"不要 remote code：加 --llama。")
    if args.gguf:
        print(f"GGUF 文件 {report['gguf']}：llama.cpp 直接读（llama-cli -m {report['gguf']}），分词器和聊天模板都在里面。")
    if args.lora:
        from .export_peft import ADAPTER_DIR, export_peft
        folder = export_peft(args.lora, Path(out) / ADAPTER_DIR, base_keys, base_path=str(out))
        print(f"LoRA 适配器导出成 PEFT 目录 {folder}：PeftModel.from_pretrained(model, '{folder}')。")
    return 0


def cmd_reset(args) -> int:
    from .levels import reset
    print(reset(args.stage, args.level))
    return 0


def cmd_eval(args) -> int:
    from .eval import cli as eval_cli
    return eval_cli.run(args)


def cmd_chat(args) -> int:
    from .chat import run
    return run(args)


def cmd_serve(args) -> int:
    from .serve import run
    return run(args)


def cmd_use(args) -> int:
    from .use import run
    return run(args)


def cmd_hint(args) -> int:
    from .hints import show
    print(show(args.stage, args.level))
    return 0


COMMANDS = {"grade": cmd_grade, "release": cmd_release,
            "progress": cmd_progress, "check": cmd_check, "export": cmd_export, "export-hf": cmd_export_hf,
            "reset": cmd_reset, "eval": cmd_eval, "hint": cmd_hint, "chat": cmd_chat,
            "serve": cmd_serve, "use": cmd_use}


def _use_reference(path: str | None) -> int | None:
    """--reference PATH: where the reference lives, for this process and the checks it starts."""
    if not path:
        return None
    from . import _modes

    ref = os.path.abspath(path)
    if not os.path.isdir(ref):
        print(f"错误：--reference {path}：不是目录", file=sys.stderr)
        return 2
    os.environ[_modes.REFERENCE_ENV] = ref  # the check processes inherit it
    _modes.SOLUTIONS_DIR = Path(ref).resolve()
    return None


def main(argv: list[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    from .checks.runner import CheckInterrupted

    refused = _use_reference(getattr(args, "reference_dir", None))
    if refused is not None:
        return refused
    try:
        return COMMANDS[args.command](args)
    except (stages.UnknownStage, ValueError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    except (CheckInterrupted, KeyboardInterrupt):
        print("\n已中断 (Ctrl-C)：检查没有跑完，什么都没有改动。", file=sys.stderr)
        return 130


def _run() -> int:
    try:
        code = main()
        sys.stdout.flush()
        return code
    except BrokenPipeError:
        # `python -m workbook check 02 | head`: the reader left early; that is not an error
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0


if __name__ == "__main__":
    sys.exit(_run())

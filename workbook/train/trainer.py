"""One run harness for every MiniMind trainer: pretrain, SFT, and (Part 2) LoRA, DPO, distillation.

MiniMind repeats ~150 lines of set-up in each ``train_*.py``.  Here that set-up lives once, and a
trainer module only says what differs — a :class:`Task`: its flag defaults, its dataset, how its
data is checked, and what it shows at the end — so ``pretrain.py`` and ``full_sft.py`` each fit
on one screen and can be read side by side.

The harness, in the order MiniMind's trainers do it:
flags -> validation (nothing is written before it passes) -> torchrun/DDP (the learner's stage
12) -> seeds -> autocast context and GradScaler (stage 11) -> tokenizer -> every data file checked
-> model (+ ``--from_weight``, strict) -> AdamW -> resume (optimizer, scaler, RNG, data position)
-> compile -> DDP wrap -> epochs of the learner's ``train_epoch`` with callbacks for logging,
validation, atomic checkpoints and stopping -> loss plot, samples, summary, wandb.
Exit statuses: 0 done, 1 stopped during training (the last checkpoint is intact), 2 bad input
(nothing written), 130 Ctrl-C.  Exact resume: the data order of epoch e is a permutation seeded by
(seed, e); the resume file records (epoch, micro-step) and the resumed run skips what was seen.
"""
from __future__ import annotations

import argparse
import itertools
import json
import math
import os
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, Sampler

from . import guards, report
from .checkpoint import (SAVED_DTYPE, CheckpointError, SaveError, check_pair, load_resume, load_weights,
                         resume_state, save_pair, unwrap, weight_name, write_config, write_weights)

ROOT = Path(__file__).resolve().parents[2]
# In the repository the shipped data is the default; an exported package (workbook export)
# carries only the tokenizer, under workbook/assets/, and needs --data_path.
IN_REPO = (ROOT / "data" / "tokenizer").is_dir()
DEFAULT_TOKENIZER = (ROOT / "data" / "tokenizer" if IN_REPO
                     else Path(__file__).resolve().parents[1] / "assets" / "tokenizer")


class ConfigError(ValueError):
    """A bad command-line value; the message names the flag."""


@dataclass
class Task:
    """What one trainer adds to the harness.

    name: the module (``python -m workbook.train.{name}``); title: the plot's title;
    description: the --help text (Chinese); run_name: MiniMind's wandb run-name prefix;
    defaults: flag defaults (MiniMind's, for this trainer), e.g. {"save_weight": "full_sft"};
    make_dataset(path, tokenizer, max_length) -> Dataset of (input_ids, labels);
    check_data(path, tokenizer, vocab_size, max_length=--max_seq_len) -> a summary dict; raises
        ValueError naming file:line (or the flag: every reply cut away at max_length);
    describe_data(summary) -> one line for the log;
    sample(model, tokenizer, device, n) -> {"prompts": [...], "samples": [...], "metrics": {...}}
        (what the trained model writes at the end; metrics go to the summary and wandb).
    """

    name: str
    title: str
    description: str
    run_name: str
    defaults: dict
    make_dataset: Callable[[str, Any, int], Dataset]
    check_data: Callable[[str, Any, int], dict]
    describe_data: Callable[[dict], str]
    sample: Callable[[torch.nn.Module, Any, torch.device, int], dict]
    extra_arguments: Callable[[argparse.ArgumentParser], None] | None = None
    # Optional, for trainers that change the model or what they save (LoRA, DPO, distillation):
    # prepare_model(model, args) runs after --from_weight is loaded and before the optimizer is
    #   built (e.g. attach adapters and freeze the base); it may return a replacement module;
    # weight_stem(args, config) -> the file-name stem of the weights (default save_weight_hidden);
    # save_weights(model, path) writes the weights file (default: every key, fp16, MiniMind's .pth).
    prepare_model: Callable[[torch.nn.Module, Any], torch.nn.Module | None] | None = None
    weight_stem: Callable[[Any, Any], str] | None = None
    save_weights: Callable[[torch.nn.Module, Path], Any] | None = None
    # every parameter must stay finite in this dtype before a save: MiniMind's weights files are
    # fp16, and a LoRA adapter is merged into them (None: finite as it is; the written file is
    # checked either way)
    saved_dtype: torch.dtype | None = SAVED_DTYPE
    # Optional, for trainers whose loss is not the whole story (GRPO: reward, KL, length):
    # log_extra(model) -> {name: float}, the objective's own figures since the previous log line,
    #   called on every rank at each log (averaged over ranks), printed, sent to wandb and kept in
    #   the history (the plot's second panel); count_tokens False: the loop's tok/s (labelled
    #   tokens of the batch) means nothing for this trainer and is not shown.
    log_extra: Callable[[torch.nn.Module], dict] | None = None
    count_tokens: bool = True

    @classmethod
    def of_module(cls, module_name: str, **fields) -> "Task":
        """A Task whose functions are the trainer module's own ``make_dataset``, ``check_data``,
        ``describe_data`` and ``sample`` (and ``extra_arguments`` if it defines one)."""
        module = sys.modules[module_name]
        hooks = {k: getattr(module, k) for k in ("make_dataset", "check_data", "describe_data", "sample",
                                                   "extra_arguments", "prepare_model", "weight_stem",
                                                   "save_weights", "log_extra") if hasattr(module, k)}
        return cls(**fields, **hooks)


def build_parser(task: Task) -> argparse.ArgumentParser:
    """MiniMind's trainer flags (same names), with this task's defaults."""
    p = argparse.ArgumentParser(
        prog=f"python -m workbook.train.{task.name}",
        description=task.description + "计数单位：micro-step = 一个 batch 的前向+反向；"
                    "optimizer step（优化器步）= accumulation_steps 个 micro-step 之后的一次参数更新。",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    a = p.add_argument
    a("--save_dir", default="out", help="权重和 resume 文件的目录")
    a("--save_weight", default="pretrain", help="权重文件名前缀")
    a("--epochs", type=int, default=1, help="遍历数据几遍")
    a("--batch_size", type=int, default=32, help="每个进程、每个 micro-step 的样本数")
    a("--learning_rate", type=float, default=5e-4, help="峰值学习率（余弦退火到它的 1/10）")
    a("--device", default="cuda:0" if torch.cuda.is_available() else "cpu", help="cpu 或 cuda:N")
    a("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"],
      help="autocast 的低精度类型；float16 时启用 GradScaler")
    a("--num_workers", type=int, default=min(8, os.cpu_count() or 1), help="DataLoader 的工作进程数")
    a("--accumulation_steps", type=int, default=8, help="每次优化器更新累积多少个 micro-step")
    a("--grad_clip", type=float, default=1.0, help="梯度裁剪的范数上限（正数）")
    a("--log_interval", type=int, default=100, help="每多少个 micro-step 打印一次")
    a("--save_interval", type=int, default=1000, help="每多少个 micro-step 存一次档（accumulation_steps 的倍数）")
    # the model's shape: default None = from the config JSON beside --from_weight, else MiniMind's
    a("--hidden_size", type=int, default=None, help="模型宽度（默认：--from_weight 旁边的 config，否则 512）")
    a("--num_hidden_layers", type=int, default=None, help="层数（默认：同上，否则 8）")
    a("--num_attention_heads", type=int, default=None, help="query 头数（默认：同上，否则 8）")
    a("--num_key_value_heads", type=int, default=None, help="key/value 头数 (GQA)（默认：同上，否则 2）")
    a("--max_seq_len", type=int, default=340, help="每个样本的 token 数")
    a("--max_position_embeddings", type=int, default=32768, help="RoPE 表的长度")
    a("--use_moe", type=int, default=None, choices=[0, 1], help="1 = 混合专家 (MoE) 前馈层（默认：同上，否则 0）")
    a("--data_path", default="", help=".jsonl / .jsonl.gz（或预训练用 pack 出来的 .bin）")
    a("--tokenizer_path", default=str(DEFAULT_TOKENIZER), help="本地分词器目录")
    a("--from_weight", default="none",
      help="从 save_dir 里的这个权重名开始（如 pretrain → pretrain_512.pth），或一个 .pth 路径；none = 随机初始化")
    a("--from_resume", type=int, default=0, choices=[0, 1], help="1 = 从 save_dir 里的 resume 文件接着训练")
    a("--use_wandb", action="store_true", help="记录到 wandb（没登录时离线）")
    a("--wandb_project", default="MiniMind", help="wandb 项目名")
    a("--wandb_run_name", default=None, help="wandb 的运行名；默认按 MiniMind 的方式：前缀-Epoch-E-BatchSize-B-LearningRate-LR")
    a("--use_compile", type=int, default=0, choices=[0, 1], help="1 = torch.compile")
    a("--compile", dest="use_compile", action="store_const", const=1, help="= --use_compile 1")
    a("--compile_mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
      help="torch.compile 的模式；reduce-overhead = CUDA graphs（小 batch 时最快，见 bench/）")
    # extras
    a("--max_steps", type=int, default=0, help="最多这么多个 optimizer step，0 = 不限")
    a("--val_path", default="", help="验证集；空字符串 = 不做验证")
    a("--eval_interval", type=int, default=0, help="每多少个 optimizer step 算一次验证 loss，0 = 只在最后算")
    a("--eval_batches", type=int, default=20, help="每次验证用多少个 batch")
    a("--seed", type=int, default=42, help="随机种子（数据顺序、初始化）")
    a("--ddp_timeout", type=float, default=600,
      help="torchrun 下：一次进程间通信最多等多少秒；有进程卡住时所有进程在这之后报错退出")
    # GPU fast path, each part on its own switch (bench/pretrain_speed.py measures them)
    a("--fused_adamw", type=int, default=0, choices=[0, 1], help="AdamW(fused=True)：一个 kernel 更新全部参数")
    a("--moe_dense", type=int, default=0, choices=[0, 1], help="MoE 不按 token 分组：无同步、可整体编译")
    a("--flash_attn", type=int, default=1, choices=[0, 1], help="注意力用 F.scaled_dot_product_attention")
    a("--pin_memory", type=int, default=1, choices=[0, 1], help="GPU 上用锁页内存 + non_blocking 拷贝")
    # no compute on padding (workbook/train/batching.py); the post-training trainers default to 1
    a("--trim_padding", type=int, default=0, choices=[0, 1],
      help="1 = 每个 batch 只补齐到最长的那一条 (trim padding)，不在补齐的位置上计算；loss 不变")
    a("--group_by_length", type=int, default=0, choices=[0, 1],
      help="1 = 按长度分组 (length-grouped)：打乱后每 batch_size×50 条按长度排序；0 = MiniMind 的顺序")
    a("--samples", type=int, default=3, help="训练结束后生成几个样例")
    a("--no_progress", action="store_true", help="不显示进度条")
    if task.extra_arguments is not None:
        task.extra_arguments(p)
    p.set_defaults(**task.defaults)
    return p


def validate(args, config) -> None:
    """Refuse bad input before anything is built or written."""
    data = Path(args.data_path)
    if not args.data_path or not data.is_file():
        raise ConfigError(f"--data_path：找不到数据文件 {data}")
    if args.val_path and not Path(args.val_path).is_file():
        raise ConfigError(f"--val_path：找不到验证集文件 {args.val_path}（不要验证就写 --val_path ''）")
    if not Path(args.tokenizer_path).is_dir():
        raise ConfigError(f"--tokenizer_path：找不到分词器目录 {args.tokenizer_path}")
    if args.max_seq_len > config.max_position_embeddings:
        raise ConfigError(f"--max_seq_len {args.max_seq_len} 超过了 max_position_embeddings "
                          f"{config.max_position_embeddings}：RoPE 表没有这么长。")
    for flag in ("batch_size", "accumulation_steps", "log_interval", "save_interval", "epochs",
                 "max_seq_len", "eval_batches"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} 必须是正整数，现在是 {getattr(args, flag)}")
    for flag in ("learning_rate", "grad_clip", "ddp_timeout"):
        value = getattr(args, flag)
        if not math.isfinite(value) or value <= 0:  # nan fails both comparisons: refuse it here
            raise ConfigError(f"--{flag} 必须是有限的正数，现在是 {value}")
    for flag in ("max_steps", "eval_interval"):
        if getattr(args, flag) < 0:
            raise ConfigError(f"--{flag} 不能是负数，现在是 {getattr(args, flag)}")
    if args.save_interval % args.accumulation_steps:
        raise ConfigError(f"--save_interval ({args.save_interval}) 必须是 --accumulation_steps "
                          f"({args.accumulation_steps}) 的倍数：否则存档时会丢掉累积了一半的梯度，续训就接不上。")


def weights_path(args, config) -> Path:
    """--from_weight: a name in save_dir (MiniMind's convention) or a path to a .pth file."""
    if args.from_weight.endswith(".pth"):
        return Path(args.from_weight)
    return Path(args.save_dir) / f"{weight_name(args.from_weight, config.hidden_size, config.use_moe)}.pth"


# The shape flags, MiniMind's defaults for them, and the config fields they set.
SHAPE = {"hidden_size": 512, "num_hidden_layers": 8, "num_attention_heads": 8, "num_key_value_heads": 2,
         "use_moe": 0}


def resolve_shape(args) -> None:
    """Fill the shape flags the user left out: from the config JSON beside a --from_weight
    given as a .pth path (so a shipped or exported model needs no shape flags), else MiniMind's
    defaults.  A flag given on the command line always wins."""
    saved: dict = {}
    if args.from_weight.endswith(".pth"):
        cfg = Path(args.from_weight[:-len(".pth")] + "_config.json")
        if cfg.is_file():
            try:
                saved = json.loads(cfg.read_text(encoding="utf-8"))
            except ValueError as e:
                raise ConfigError(f"{cfg} 不是合法的 JSON：{e}") from None
    for flag, default in SHAPE.items():
        if getattr(args, flag) is None:
            value = saved.get(flag, default)
            setattr(args, flag, int(value) if flag == "use_moe" else value)


class SkipSampler(Sampler):
    """Another sampler's indices minus the first `skip` (the samples a resumed run already saw).

    The inner sampler is a DistributedSampler seeded by (seed, epoch): same seed and epoch, same
    order, so skipping by count resumes exactly where the interrupted run stopped.
    """

    def __init__(self, inner: Sampler, skip: int = 0):
        self.inner, self.skip = inner, skip

    def __iter__(self):
        it = iter(self.inner)
        for _ in range(self.skip):
            next(it, None)
        return it

    def __len__(self) -> int:
        return max(0, len(self.inner) - self.skip)


def cpu_has_bf16() -> bool:
    """Whether this CPU computes bf16 natively (AVX512-BF16 or AMX); without it, autocast to bf16
    on the CPU is emulated and several times slower than fp32."""
    cpu = getattr(torch, "cpu", None)
    try:
        return bool(cpu._is_avx512_bf16_supported() or cpu._is_amx_tile_supported())
    except AttributeError:  # an older torch: assume it is fine, as before
        return True


def cpu_dtype() -> str:
    """The --dtype for a CPU run: bfloat16 where the CPU computes it natively, else float32
    (make's demo targets and the bench/*_compare.py scripts default to it)."""
    return "bfloat16" if cpu_has_bf16() else "float32"


class SingleProcess:
    """What init_distributed_mode returns outside torchrun (stage 12 is not needed then)."""

    ddp, rank, local_rank, world_size = False, 0, 0, 1

    def __init__(self, device: str):
        self.device = torch.device(device)


def trim_padding(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Cut a batch's trailing positions where no row has a label (padding), on the last dim.

    Exact for a causal model: a position never sees later ones, and positions without a label
    add nothing to the loss.  Short SFT/DPO samples padded to --max_seq_len 1024 run 3-10x faster.
    """
    labelled = (y != -100).reshape(-1, y.shape[-1]).any(0).nonzero()
    keep = int(labelled.max()) + 1 if len(labelled) else 1
    return x[..., :keep], y[..., :keep]


@torch.no_grad()
def evaluate(model, dataset, batch_size: int, batches: int, device, ctx, show: bool = False) -> float:
    """Mean LM loss over the first `batches` batches of `dataset` (fixed order, eval mode).
    show: a progress bar (validation can take minutes on a CPU)."""
    from tqdm.auto import tqdm

    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    total, n = 0.0, 0
    todo = min(batches, len(loader))
    for x, y in tqdm(itertools.islice(loader, todo), total=todo, desc="验证 (validation)", unit="batch",
                     leave=False, disable=not show, file=sys.stdout, dynamic_ncols=True):
        x, y = trim_padding(x, y)
        with ctx:
            total += model(x.to(device), labels=y.to(device)).loss.float().item()
        n += 1
    model.train()
    return total / max(n, 1)


class Schedule:
    """Micro-steps and optimizer steps of a run.

    The learner's loop steps the optimizer every `acc` micro-steps and once more at the end of an
    epoch for a partial group (MiniMind's flush): ceil(iters / acc) updates per epoch.
    """

    def __init__(self, iters: int, acc: int, epochs: int, max_steps: int):
        self.iters, self.acc = iters, acc
        self.per_epoch = math.ceil(iters / acc)
        self.total = epochs * iters  # the cosine schedule's length, in micro-steps
        if max_steps:
            self.total = min(self.total, self.micro_of_opt_step(max_steps))

    def micro_of_opt_step(self, k: int) -> int:
        """The global micro-step after which optimizer step k (from 1) is taken."""
        e, j = divmod(k - 1, self.per_epoch)
        return e * self.iters + min((j + 1) * self.acc, self.iters)

    def opt_step(self, epoch: int, step: int) -> int:
        """Optimizer steps taken after micro-step `step` of `epoch` (the flush counts)."""
        done = math.ceil(step / self.acc) if step == self.iters else step // self.acc
        return epoch * self.per_epoch + done

    def is_update(self, step: int) -> bool:
        return step % self.acc == 0 or step == self.iters


def run(task: Task, argv: list[str] | None = None, status: dict | None = None) -> dict:
    """The whole run; returns a summary (also written to save_dir/{name}_summary.json).

    status: filled as the run goes (resume file, last micro-step saved) so that the caller can
    say where to resume from after an interruption.
    """
    return _Run(task, build_parser(task).parse_args(argv), {} if status is None else status).run()


class _Run:
    """One run of the harness; the methods follow the order of MiniMind's trainers."""

    def __init__(self, task: Task, args, status: dict):
        self.task, self.args, self.status = task, args, status

    # --- set-up --------------------------------------------------------------------------------

    def run(self) -> dict:
        args, status = self.args, self.status
        from transformers import AutoTokenizer

        from ..config import MiniMindConfig
        from . import loop

        self.loop = loop
        resolve_shape(args)
        config = self.config = MiniMindConfig(
            hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
            num_attention_heads=args.num_attention_heads, num_key_value_heads=args.num_key_value_heads,
            max_position_embeddings=args.max_position_embeddings, use_moe=bool(args.use_moe),
            flash_attn=bool(args.flash_attn))
        validate(args, config)
        self.save_dir = Path(args.save_dir)
        self.name = (self.task.weight_stem(args, config) if self.task.weight_stem
                     else weight_name(args.save_weight, config.hidden_size, config.use_moe))
        self.resume_path = status["resume_path"] = self.save_dir / f"{self.name}_resume.pth"
        if args.from_weight != "none" and not weights_path(args, config).is_file():
            raise ConfigError(f"--from_weight {args.from_weight}：找不到 {weights_path(args, config)}")
        resume = None
        if args.from_resume:
            if self.resume_path.is_file():
                resume = load_resume(self.resume_path, config.to_dict())  # refuses another config
            else:
                print(f"没有找到 {self.resume_path}，从头开始训练。")

        self._init_distributed()
        # every rank its own seed (dropout); DDP copies rank 0's initial weights to the others
        torch.manual_seed(args.seed + self.info.rank)
        device = self.device = self.info.device
        self.ctx = loop.autocast_context(device.type, args.dtype)
        tokenizer = self.tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_path, local_files_only=True)
        if len(tokenizer) != config.vocab_size:
            raise ConfigError(f"--tokenizer_path 的词表大小是 {len(tokenizer)}，模型的 vocab_size 是 {config.vocab_size}")
        # Read every data file once before step 1 (on every rank, so all fail alike): a bad line
        # is named now, with file:line, not hours in (and again on every --from_resume).
        for path in filter(None, (args.data_path, args.val_path)):
            checked = self.task.check_data(path, tokenizer, config.vocab_size, max_length=args.max_seq_len)
            if self.main_process:
                print(self.task.describe_data(checked), flush=True)
        self._build_model()
        self.train_ds = self.task.make_dataset(args.data_path, tokenizer, args.max_seq_len)
        self.val_ds = self.task.make_dataset(args.val_path, tokenizer, args.max_seq_len) if args.val_path else None
        self.scaler = loop.make_scaler(args.dtype, device.type)
        from .fast import enable_dense_moe, make_optimizer
        self.optimizer = make_optimizer(self.model, args.learning_rate, fused=bool(args.fused_adamw))
        if args.moe_dense:
            enable_dense_moe(self.model)
        self._restore(resume)
        if args.use_compile:  # compile first, then wrap: DDP hooks stay outside the graph
            self.model = torch.compile(self.model, mode=args.compile_mode)
        if self.info.ddp:
            self.model = self.distributed.wrap_ddp(self.model, self.info)
        self._plan()
        if resume is not None and self.start_global >= self.schedule.total:
            return self._already_finished()
        self._announce()
        self.wandb_run = (report.start_wandb(args, self.task.run_name, (resume or {}).get("wandb_id"))
                          if args.use_wandb and self.main_process else None)
        last = self._train()
        return self._finish(last)

    def _init_distributed(self) -> None:
        # torchrun sets RANK: then the learner's stage-12 code joins the process group
        if "RANK" in os.environ:
            from . import distributed
            self.distributed = distributed
            self.info = distributed.init_distributed_mode(self.args.device)
            self.main_process = distributed.is_main_process()
            # a stuck rank must not keep the others waiting for gloo's/nccl's 30/10 minutes
            guards.set_collective_timeout(self.args.ddp_timeout)
            self.status["ddp_timeout"] = f"{self.args.ddp_timeout:g}"
        else:
            self.distributed, self.info, self.main_process = None, SingleProcess(self.args.device), True

    def _build_model(self) -> None:
        from ..model.causal_lm import MiniMindForCausalLM

        self.model = MiniMindForCausalLM(self.config).to(self.device)
        if self.args.from_weight != "none":
            # strict; names any key that does not fit
            load_weights(self.model, weights_path(self.args, self.config))
        if self.task.prepare_model is not None:
            self.model = self.task.prepare_model(self.model, self.args) or self.model
        self.n_params = sum(p.numel() for p in unwrap(self.model).parameters()) / 1e6
        self.n_trainable = sum(p.numel() for p in unwrap(self.model).parameters() if p.requires_grad) / 1e6
        # what a weights file takes on disk, about (for the message when the disk is full):
        # every parameter in fp16, or (a trainer's own writer: LoRA's adapter) the trained ones in fp32
        self.weights_bytes = int(1e6 * (self.n_params * 2 if self.task.save_weights is None
                                        else self.n_trainable * 4))

    def _restore(self, resume: dict | None) -> None:
        self.start_epoch, self.start_step = 0, 0
        self.history = {"train": [], "val": []}
        if resume is None:
            return
        self._check_resume_fits(resume["model"])
        unwrap(self.model).load_state_dict(resume["model"])
        self.optimizer.load_state_dict(resume["optimizer"])
        self.scaler.load_state_dict(resume["scaler"])
        self.start_epoch, self.start_step = resume["epoch"], resume["step"]
        if resume["world_size"] == self.info.world_size:
            torch.random.set_rng_state(resume["rng"]["torch"])
        else:  # same number of samples seen, counted in the new world size's micro-steps
            from . import distributed as dist_mod
            self.start_step = dist_mod.convert_resume_step(self.start_step, resume["world_size"],
                                                           self.info.world_size)
        self.history = resume.get("history", self.history)
        self.status["resumed"] = True
        note = check_pair(resume, self.save_dir / f"{self.name}.pth")
        if note and self.main_process:
            print(note)
        if self.main_process:
            print(f"从 {self.resume_path} 续训：epoch {self.start_epoch + 1}，第 {self.start_step} 个 micro-step 之后"
                  f"（存档时 {resume['world_size']} 个进程，现在 {self.info.world_size} 个）。")

    def _check_resume_fits(self, saved: dict) -> None:
        """The resume file's model against the one built now, key by key: a trainer flag that
        changes the model's parameters (LoRA's --lora_rank) must be what it was when it was saved."""
        own = unwrap(self.model).state_dict()
        missing = [k for k in own if k not in saved]
        unexpected = [k for k in saved if k not in own]
        shapes = [(k, tuple(saved[k].shape), tuple(own[k].shape)) for k in own
                  if k in saved and tuple(saved[k].shape) != tuple(own[k].shape)]
        if not (missing or unexpected or shapes):
            return
        parts = [f"resume 文件 {self.resume_path} 里的模型和这次建的对不上，不能续训："]
        if shapes:
            k, file_shape, model_shape = shapes[0]
            parts.append(f"{k}：文件 {file_shape} ≠ 现在 {model_shape}（共 {len(shapes)} 个形状不同）")
            if ".lora.A." in k:
                parts.append(f"存档时 --lora_rank 是 {file_shape[0]}，这次是 {model_shape[0]}：用 --lora_rank "
                             f"{file_shape[0]} 续训，或换一个 --lora_name / --save_dir 从头训练这个秩。")
        if missing:
            parts.append(f"文件里没有 (missing)：{', '.join(missing[:3])}（共 {len(missing)} 个）")
        if unexpected:
            parts.append(f"文件里多出 (unexpected)：{', '.join(unexpected[:3])}（共 {len(unexpected)} 个）")
        parts.append("续训要用和存档时一样的参数；要换参数，换一个 --save_dir 从头开始。")
        raise CheckpointError("\n  ".join(parts))

    def _sampler_for(self, epoch: int) -> Sampler:
        if self.info.ddp:
            return self.distributed.make_sampler(self.train_ds, self.info, self.args.seed, epoch)
        s = DistributedSampler(self.train_ds, num_replicas=1, rank=0, shuffle=True, seed=self.args.seed)
        s.set_epoch(epoch)
        return s

    def _collate(self):
        """--trim_padding 1: cut each batch to its longest row (batching.TrimPadding)."""
        from .batching import TrimPadding

        return TrimPadding(self.tokenizer.pad_token_id or 0) if self.args.trim_padding else None

    def _grouped(self, sampler: Sampler) -> Sampler:
        """--group_by_length 1: sort by length within windows of the sampler's order."""
        if not self.args.group_by_length:
            return sampler
        from .batching import LengthGroupedSampler, sample_lengths

        if getattr(self, "_lengths", None) is None:
            start = time.perf_counter()
            if self.main_process:
                print(f"按长度分组 (group_by_length)：先读一遍 {len(self.train_ds)} 条数据量长度…", flush=True)
            self._lengths = sample_lengths(self.train_ds, self.tokenizer.pad_token_id or 0)
            if self.main_process:
                print(f"长度读完，用了 {time.perf_counter() - start:.1f} 秒", flush=True)
        return LengthGroupedSampler(sampler, self._lengths, self.args.batch_size)

    def _plan(self) -> None:
        args = self.args
        # A compiled model recompiles (and re-records CUDA graphs) for a smaller last batch: drop it.
        self.drop_last = bool(args.use_compile)
        n_rank = len(self._sampler_for(0))
        iters = n_rank // args.batch_size if self.drop_last else math.ceil(n_rank / args.batch_size)
        if iters == 0:
            raise ConfigError(f"--batch_size {args.batch_size} 比每个进程分到的样本数 {n_rank} 还大")
        self.iters = iters  # micro-steps per epoch and rank
        self.schedule = Schedule(iters, args.accumulation_steps, args.epochs, args.max_steps)
        self.start_global = self.start_epoch * iters + self.start_step
        self.status["saved_step"] = self.start_global if self.status.get("resumed") else None

    def _already_finished(self) -> dict:
        # a finished run: another step would raise the learning rate again and overwrite the
        # final weights
        if self.main_process:
            print(f"这个训练已经完成了：{self.resume_path} 记录的是第 {self.start_global} 个 micro-step，"
                  f"而这次的设置一共只有 {self.schedule.total} 个。什么都没有改动。要训练更久，加大 --max_steps "
                  f"或 --epochs（学习率调度会随之改变），或换一个 --save_weight 从 --from_weight "
                  f"{self.args.save_weight} 开始。")
        if self.info.ddp:
            self.distributed.cleanup(self.info)
        return {"finished_before": True, "steps": self.schedule.opt_step(self.start_epoch, self.start_step)}

    def _announce(self) -> None:
        if self.main_process and self.device.type == "cpu" and self.args.dtype == "bfloat16" and not cpu_has_bf16():
            print("提示：这台 CPU 没有原生 bf16 指令（AVX512-BF16 / AMX），bf16 autocast 在这里要模拟，"
                  "往往比 fp32 慢好几倍：在 CPU 上训练加 --dtype float32。", flush=True)
        if self.main_process:
            a = self.args
            trainable = (f"（训练其中 {self.n_trainable:.3f}M）" if self.n_trainable < self.n_params else "")
            print(f"模型 {self.n_params:.2f}M 参数{trainable} | 数据 {len(self.train_ds)} 条 | {self.info.world_size} 个进程 | "
                  f"每个 epoch {self.iters} 个 micro-step | 学习率调度共 {self.schedule.total} 个 micro-step | "
                  f"有效 batch {a.batch_size * self.info.world_size * a.accumulation_steps} | 设备 {self.device} | {a.dtype}")

    # --- the loop and its callbacks ------------------------------------------------------------

    def _train(self) -> int:
        from tqdm.auto import tqdm

        args = self.args
        self.bar = tqdm(total=self.schedule.total, initial=self.start_global, unit="step",
                        disable=args.no_progress or not self.main_process, dynamic_ncols=True, file=sys.stdout)
        self.epoch, self.done, self.t0 = self.start_epoch, False, time.perf_counter()
        self.model.train()
        watch = self._watch_steps() if not self.bar.disable else None
        last = self.start_step
        for epoch in range(self.start_epoch, args.epochs):
            self.epoch = epoch
            skip = self.start_step if epoch == self.start_epoch else 0
            sampler = SkipSampler(self._grouped(self._sampler_for(epoch)), skip * args.batch_size)
            loader = DataLoader(self.train_ds, batch_size=args.batch_size, sampler=sampler,
                                collate_fn=self._collate(), num_workers=args.num_workers,
                                pin_memory=bool(args.pin_memory) and self.device.type == "cuda",
                                drop_last=self.drop_last)
            last = self.loop.train_epoch(epoch, loader, self.iters, self.model, self.optimizer, self.scaler,
                                         self.ctx, lr=args.learning_rate, total_steps=self.schedule.total,
                                         accumulation_steps=args.accumulation_steps, grad_clip=args.grad_clip,
                                         device=self.device, log_interval=args.log_interval, start_step=skip,
                                         on_log=self._on_log, on_step_end=self._on_step_end)
            if self.done:
                break
        if watch is not None:
            watch.remove()
        self.bar.close()
        self._save(self.epoch, last)
        return last

    def _watch_steps(self):
        """Keep the bar's loss and tok/s live between log lines: a forward hook collects each
        training micro-step's loss and labelled tokens on the device; :meth:`_refresh_bar` reads
        them at most once a second (one host sync a second, not one per step)."""
        self.live = {"losses": [], "tokens": 0, "since": time.perf_counter()}

        def hook(module, args, kwargs, output):
            if not module.training or getattr(output, "loss", None) is None:
                return
            aux = getattr(output, "aux_loss", None)
            self.live["losses"].append(output.loss.detach() + (aux.detach() if torch.is_tensor(aux) else 0))
            labels = kwargs.get("labels", args[1] if len(args) > 1 else None)
            if labels is not None:
                self.live["tokens"] = self.live["tokens"] + (labels != -100).sum()

        return self.model.register_forward_hook(hook, with_kwargs=True)

    def _refresh_bar(self) -> None:
        live = getattr(self, "live", None)
        if live is None or not live["losses"]:
            return
        now = time.perf_counter()
        if now - live["since"] < 1.0:
            return
        loss = torch.stack(live["losses"]).float().mean().item()
        tok_s = float(live["tokens"]) / (now - live["since"])
        rate = {"tok_s": f"{tok_s:,.0f}"} if self.task.count_tokens else {}
        self.bar.set_postfix(loss=f"{loss:.3f}", lr=f"{self.optimizer.param_groups[0]['lr']:.2e}", **rate)
        live.update(losses=[], tokens=0, since=now)

    def _on_log(self, log) -> None:
        info = self.info
        if info.ddp:  # every rank reaches this at the same step: average the loss, add the tokens
            t = torch.tensor([log.loss, log.lm_loss, log.aux_loss], device=self.device)
            log.loss, log.lm_loss, log.aux_loss = self.distributed.reduce_mean(t, info).tolist()
            log.tokens *= info.world_size
        # every rank sees the same (averaged) loss, so every rank stops together
        guards.check_finite_loss(log.loss, f"epoch {log.epoch + 1} 第 {log.step} 个 micro-step")
        extra = self._log_extra()
        if not self.main_process:
            return
        tok_s = log.tokens / max(log.seconds, 1e-9)
        s = self.schedule.opt_step(log.epoch, log.step)
        self.history["train"].append((s, log.loss))
        if extra:
            self.history.setdefault("extra", []).append((s, extra))
        rate = {"tok_s": f"{tok_s:,.0f}"} if self.task.count_tokens else {}
        self.bar.set_postfix(loss=f"{log.loss:.3f}", lr=f"{log.lr:.2e}", **rate,
                             **{k: f"{v:.3g}" for k, v in list(extra.items())[:2]})
        if self.args.no_progress:
            shown = "".join(f" {k} {v:.4g}" for k, v in extra.items())
            print(f"epoch {log.epoch + 1} micro-step {log.step}/{log.iters} (optimizer step {s}) loss {log.loss:.4f} "
                  f"lm {log.lm_loss:.4f} aux {log.aux_loss:.4f} lr {log.lr:.3e}"
                  + (f" {tok_s:,.0f} tok/s" if self.task.count_tokens else "") + shown, flush=True)
        elif extra:
            self.bar.write(f"optimizer step {s}:" + "".join(f" {k} {v:.4g}" for k, v in extra.items()))
        if self.wandb_run is not None:
            self.wandb_run.log({"loss": log.loss, "lm_loss": log.lm_loss, "aux_loss": log.aux_loss,
                                "lr": log.lr, **({"tokens_per_s": tok_s} if self.task.count_tokens else {}),
                                **extra}, step=s)

    def _log_extra(self) -> dict:
        """The task's own figures since the previous log (log_extra), averaged over the ranks."""
        if self.task.log_extra is None:
            return {}
        extra = self.task.log_extra(unwrap(self.model))
        if extra and self.info.ddp:
            t = torch.tensor(list(extra.values()), dtype=torch.float32, device=self.device)
            extra = dict(zip(extra, self.distributed.reduce_mean(t, self.info).tolist()))
        return extra

    def _on_step_end(self, step: int) -> bool:
        args = self.args
        self._refresh_bar()
        self.bar.update(1)
        if self.schedule.is_update(step):  # an optimizer step was taken
            s = self.schedule.opt_step(self.epoch, step)
            if self.main_process and self.val_ds is not None and args.eval_interval and s % args.eval_interval == 0:
                v = evaluate(unwrap(self.model), self.val_ds, args.batch_size, args.eval_batches, self.device, self.ctx,
                             show=not self.bar.disable)
                self.history["val"].append((s, v))
                self.bar.write(f"optimizer step {s}: validation loss {v:.4f}")
                if self.wandb_run is not None:
                    self.wandb_run.log({"val_loss": v}, step=s)
        if step % args.save_interval == 0:
            self._save(self.epoch, step)
        if self.epoch * self.iters + step >= self.schedule.total:
            self.done = True
            return True
        return False

    def _save(self, epoch: int, step: int) -> None:
        # Never replace the last good pair with bad weights: checked on every rank (the weights
        # are identical, so all ranks stop together), in the dtype the file stores (fp16 turns
        # anything above 65504 into inf), and once more on the file as written.
        where = f"存档前（epoch {epoch + 1} 第 {step} 个 micro-step）"
        guards.check_finite_weights(self.model, where, saved_dtype=self.task.saved_dtype)
        if not self.main_process:  # one writer; the other ranks hold identical weights
            return
        weights = self.save_dir / f"{self.name}.pth"
        if self.task.save_weights is None:
            def write(tmp):
                write_weights(self.model, tmp)
        else:  # a trainer's own writer (LoRA: the adapter only, by the learner's save_lora)
            def write(tmp):
                self.task.save_weights(unwrap(self.model), tmp)
        # the model's shape beside its weights: export-hf reads it (flags only override)
        write_config(self.config, self.save_dir / f"{self.name}_config.json")
        state = resume_state(model=self.model, optimizer=self.optimizer, scaler=self.scaler,
                             epoch=epoch, step=step, world_size=self.info.world_size, config=self.config.to_dict(),
                             extra={"history": self.history,
                                    "wandb_id": self.wandb_run.id if self.wandb_run else None})
        # weights and resume file: both renamed into place, or neither
        save_pair(weights, write, self.resume_path, state,
                  verify_weights=lambda tmp: guards.check_finite_file(tmp, where),
                  weights_bytes=weights.stat().st_size if weights.is_file() else self.weights_bytes)
        self.status["saved_step"] = epoch * self.iters + step

    # --- the end -------------------------------------------------------------------------------

    def _finish(self, last: int) -> dict:
        args = self.args
        if not self.main_process:
            self.distributed.cleanup(self.info)
            return {}
        summary = {"params_M": round(self.n_params, 2), "steps": self.schedule.opt_step(self.epoch, last),
                   "seconds": round(time.perf_counter() - self.t0, 1),
                   "weights": str(self.save_dir / f"{self.name}.pth")}
        if self.val_ds is not None:
            print(f"验证 (validation)：{min(args.eval_batches, math.ceil(len(self.val_ds) / args.batch_size))} 个 batch "
                  f"（--eval_batches）……", flush=True)
            v = evaluate(unwrap(self.model), self.val_ds, args.batch_size, args.eval_batches, self.device, self.ctx,
                         show=not args.no_progress)
            if not self.history["val"] or self.history["val"][-1][0] != summary["steps"]:
                self.history["val"].append((summary["steps"], v))
            summary["val_loss"] = round(v, 4)
        summary["loss_curve"] = str(report.plot_history(self.history, self.save_dir / f"{self.name}_loss.png",
                                                        self.task.title))
        if args.samples:
            shown = self.task.sample(self.model, self.tokenizer, self.device, args.samples)
            summary.update(prompts=shown["prompts"], samples=shown["samples"], **shown.get("metrics", {}))
            summary["metrics"] = shown.get("metrics", {})
            for s in shown["samples"]:
                print("—" * 20 + "\n" + s)
            for line in shown.get("notes", []):
                print("—" * 20 + "\n" + line)
        (self.save_dir / f"{self.name}_summary.json").write_text(
            json.dumps({k: v for k, v in summary.items() if k != "metrics"}, ensure_ascii=False, indent=1),
            encoding="utf-8")
        if self.wandb_run is not None:
            report.finish_wandb(self.wandb_run, summary, summary["steps"])
        if self.info.ddp:
            self.distributed.cleanup(self.info)
        print(f"完成：{summary['steps']} 步，{summary['seconds']} 秒" +
              (f"，验证 loss {summary['val_loss']}" if "val_loss" in summary else "") +
              f"。权重 {summary['weights']}，loss 曲线 {summary['loss_curve']}")
        return {k: v for k, v in summary.items() if k != "metrics"}


def entry_points(task: Task):
    """``run(argv, status)`` and ``main(argv)`` of a trainer module, bound to its task."""
    def run_task(argv: list[str] | None = None, status: dict | None = None) -> dict:
        return run(task, argv, status)

    def main_task(argv: list[str] | None = None) -> int:
        return main(task, argv)

    run_task.__doc__ = f"The whole {task.name} run; returns its summary (see workbook.train.trainer.run)."
    main_task.__doc__ = f"python -m workbook.train.{task.name}: the run, with exit statuses (see trainer.main)."
    return run_task, main_task


def resume_command(module: str, argv: list[str]) -> str:
    """The command line that continues this run: the same flags plus --from_resume 1."""
    import shlex

    kept, skip = [], False
    for a in argv:
        if skip:
            skip = False
            continue
        if a == "--from_resume":
            skip = True
            continue
        if a.startswith("--from_resume="):
            continue
        kept.append(a)
    launcher = (f"torchrun <同样的 torchrun 参数> -m workbook.train.{module}" if "RANK" in os.environ
                else f"python -m workbook.train.{module}")
    return " ".join([launcher, *map(shlex.quote, kept), "--from_resume", "1"])


def main(task: Task, argv: list[str] | None = None) -> int:
    """Run, and turn every way a run can end badly into one clear message and an exit status:
    2 = bad input (nothing written), 1 = stopped during training (last checkpoint intact),
    130 = Ctrl-C."""
    argv = sys.argv[1:] if argv is None else argv
    status: dict = {}
    main_process = os.environ.get("RANK", "0") == "0"

    def where_to_resume() -> str:
        if status.get("saved_step") is None:
            return "还没有存过档：重新运行同一条命令即可从头开始。"
        return (f"最近一次存档在第 {status['saved_step']} 个 micro-step（{status['resume_path']}）；"
                f"续训：\n  {resume_command(task.name, argv)}")

    try:
        run(task, argv, status)
    except KeyboardInterrupt:
        if main_process:
            print(f"\n已中断 (Ctrl-C)。{where_to_resume()}", file=sys.stderr)
        return 130
    except guards.NonFiniteError as e:
        print(f"错误：{e}\n{where_to_resume()}" if main_process else f"错误：{e}", file=sys.stderr)
        return 1
    except SaveError as e:
        print(f"错误：{e}", file=sys.stderr)
        return 1
    except (ConfigError, CheckpointError, ValueError, FileNotFoundError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    except Exception as e:
        if not guards.is_collective_timeout(e):
            raise
        print(f"错误：分布式通信超时：{os.environ.get('RANK', '?')} 号进程等了 "
              f"{status.get('ddp_timeout', '?')} 秒（--ddp_timeout），"
              f"其他进程还没有到（某个进程卡住了或已经退出）。所有进程都会停下。"
              f"{where_to_resume()}\n（原始错误：{str(e).splitlines()[0][:200]}）", file=sys.stderr)
        return 1
    return 0

"""``python -m workbook.train.pretrain``: MiniMind's pretraining script, on the learner's package.

Same flags as MiniMind's ``train_pretrain.py`` (``--batch_size``, ``--accumulation_steps``,
``--from_resume``, ...), plus ``--max_steps``, ``--eval_interval``, ``--val_path``,
``--compile`` and ``--seed``.  It runs whatever ``WORKBOOK_IMPL`` selects: the learner's own
modules, or the reference.  CPU or GPU; under ``torchrun`` see stage 12.

Exact resume: the data order of epoch e is a permutation seeded by (seed, e); a resume file
records (epoch, micro-step), and the resumed run skips the batches already seen, restores the
optimiser, scaler and RNG states, and continues the same loss curve.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import re
import sys
import time
from pathlib import Path

import torch
from torch.utils.data import DataLoader, DistributedSampler, Sampler

from . import guards
from .checkpoint import (CheckpointError, SaveError, load_resume, load_weights, save_resume,
                         save_weights, unwrap, weight_name)

ROOT = Path(__file__).resolve().parents[2]
# In the repository the shipped corpus is the default; an exported package (workbook export)
# carries only the tokenizer, under workbook/assets/, and needs --data_path.
_IN_REPO = (ROOT / "data" / "tokenizer").is_dir()
DEFAULT_DATA = ROOT / "data" / "pretrain_poetry_train.jsonl.gz" if _IN_REPO else ""
DEFAULT_VAL = ROOT / "data" / "pretrain_poetry_val.jsonl.gz" if _IN_REPO else ""
DEFAULT_TOKENIZER = (ROOT / "data" / "tokenizer" if _IN_REPO
                     else Path(__file__).resolve().parents[1] / "assets" / "tokenizer")


class ConfigError(ValueError):
    """A bad command-line value; the message names the flag."""


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m workbook.train.pretrain",
        description="MiniMind 预训练 (pretraining)。计数单位：micro-step = 一个 batch 的前向+反向；"
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
    a("--hidden_size", type=int, default=512, help="模型宽度")
    a("--num_hidden_layers", type=int, default=8, help="层数")
    a("--num_attention_heads", type=int, default=8, help="query 头数")
    a("--num_key_value_heads", type=int, default=2, help="key/value 头数 (GQA)")
    a("--max_seq_len", type=int, default=340, help="每个样本的 token 数")
    a("--max_position_embeddings", type=int, default=32768, help="RoPE 表的长度")
    a("--use_moe", type=int, default=0, choices=[0, 1], help="1 = 混合专家 (MoE) 前馈层")
    a("--data_path", default=str(DEFAULT_DATA), help=".jsonl / .jsonl.gz, 或 pack 出来的 .bin")
    a("--tokenizer_path", default=str(DEFAULT_TOKENIZER), help="本地分词器目录")
    a("--from_weight", default="none",
      help="从 save_dir 里的这个权重名开始（如 pretrain → pretrain_512.pth），或一个 .pth 路径；none = 随机初始化")
    a("--from_resume", type=int, default=0, choices=[0, 1], help="1 = 从 save_dir 里的 resume 文件接着训练")
    a("--use_wandb", action="store_true", help="记录到 wandb（没登录时离线）")
    a("--wandb_project", default="MiniMind-Pretrain", help="wandb 项目名")
    a("--wandb_run_name", default=None,
      help="wandb 的运行名；默认按 MiniMind 的方式：MiniMind-Pretrain-Epoch-E-BatchSize-B-LearningRate-LR")
    a("--use_compile", type=int, default=0, choices=[0, 1], help="1 = torch.compile")
    a("--compile", dest="use_compile", action="store_const", const=1, help="= --use_compile 1")
    a("--compile_mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
      help="torch.compile 的模式；reduce-overhead = CUDA graphs（小 batch 时最快，见 bench/）")
    # extras
    a("--max_steps", type=int, default=0, help="最多这么多个 optimizer step，0 = 不限")
    a("--val_path", default=str(DEFAULT_VAL), help="验证集；空字符串 = 不做验证")
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
    a("--samples", type=int, default=3, help="训练结束后生成几首诗")
    a("--no_progress", action="store_true", help="不显示进度条")
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


class SingleProcess:
    """What init_distributed_mode returns outside torchrun (stage 12 is not needed then)."""

    ddp, rank, local_rank, world_size = False, 0, 0, 1

    def __init__(self, device: str):
        self.device = torch.device(device)


def make_dataset(path: str, tokenizer, max_length: int):
    if str(path).endswith(".bin"):
        from ..data.packed import PackedDataset
        return PackedDataset(path, max_length)
    from ..data.dataset import PretrainDataset
    return PretrainDataset(path, tokenizer, max_length)


@torch.no_grad()
def evaluate(model, dataset, batch_size: int, batches: int, device, ctx) -> float:
    """Mean LM loss over the first `batches` batches of `dataset` (fixed order, eval mode)."""
    model.eval()
    loader = DataLoader(dataset, batch_size=batch_size, shuffle=False)
    total, n = 0.0, 0
    for i, (x, y) in enumerate(loader):
        if i >= batches:
            break
        with ctx:
            total += model(x.to(device), labels=y.to(device)).loss.float().item()
        n += 1
    model.train()
    return total / max(n, 1)


def plot_history(history: dict, path: Path) -> Path:
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    if history["train"]:
        s, l = zip(*history["train"])
        ax.plot(s, l, label="train loss", lw=1)
    if history["val"]:
        s, l = zip(*history["val"])
        ax.plot(s, l, "o-", label="validation loss")
    ax.set_xlabel("optimizer step"); ax.set_ylabel("loss"); ax.set_title("MiniMind pretraining")
    ax.grid(alpha=0.3); ax.legend()
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
    return path


def generate_samples(model, tokenizer, prompts, device, max_new_tokens: int = 64, seed: int = 0):
    model.eval()
    out = []
    g_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    for prompt in prompts:
        ids = [tokenizer.bos_token_id] + tokenizer(prompt, add_special_tokens=False)["input_ids"]
        x = torch.tensor([ids], device=device)
        y = unwrap(model).generate(x, max_new_tokens=max_new_tokens, do_sample=True, temperature=0.8,
                                   top_p=0.9, eos_token_id=tokenizer.eos_token_id,
                                   pad_token_id=tokenizer.pad_token_id)
        out.append(tokenizer.decode(y[0, 1:].tolist(), skip_special_tokens=True))
    torch.random.set_rng_state(g_state)
    model.train()
    return out


def _wandb_logged_in() -> bool:
    """Ask wandb itself whether credentials are configured (WANDB_API_KEY, its settings file,
    ~/.netrc or $NETRC, an identity token): no prompt, no check against the server."""
    import wandb

    try:
        return bool(wandb.login(verify=False, prompt=False))
    except Exception:  # a broken settings file must not stop the training
        return False


def wandb_run_name(args) -> str:
    """MiniMind's run name: MiniMind-Pretrain-Epoch-1-BatchSize-32-LearningRate-0.0005."""
    return args.wandb_run_name or (f"MiniMind-Pretrain-Epoch-{args.epochs}-BatchSize-{args.batch_size}"
                                   f"-LearningRate-{args.learning_rate}")


_HAN = "[\u4e00-\u9fff]"
_REGULAR_LINE = re.compile(f"^(?:{_HAN}{{5}}|{_HAN}{{7}})[，、；：](?:{_HAN}{{5}}|{_HAN}{{7}})[。？！]$")


def regular_line_share(poems: list[str]) -> float:
    """Share of body lines shaped like regulated verse: two 5- or 7-character halves with
    punctuation ("床前明月光，疑是地上霜。").  The title line (《…》author) is not counted."""
    lines = [ln.strip() for p in poems for ln in p.split("\n")[1:] if ln.strip()]
    return sum(bool(_REGULAR_LINE.match(ln)) for ln in lines) / max(len(lines), 1)


def write_config(config, path: Path) -> None:
    """The model config as JSON (MiniMindConfig.to_dict), written atomically."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(config.to_dict(), ensure_ascii=False, indent=1, sort_keys=True) + "\n",
                   encoding="utf-8")
    os.replace(tmp, path)


def weights_path(args, config) -> Path:
    """--from_weight: a name in save_dir (MiniMind's convention) or a path to a .pth file."""
    if args.from_weight.endswith(".pth"):
        return Path(args.from_weight)
    return Path(args.save_dir) / f"{weight_name(args.from_weight, config.hidden_size, config.use_moe)}.pth"


def run(argv: list[str] | None = None, status: dict | None = None) -> dict:
    """The whole pretraining run; returns a summary (also written to save_dir/summary.json).

    status: filled as the run goes (resume file, last micro-step saved) so that the caller can
    say where to resume from after an interruption.
    """
    status = {} if status is None else status
    args = build_parser().parse_args(argv)
    from transformers import AutoTokenizer

    from ..config import MiniMindConfig
    from ..model.causal_lm import MiniMindForCausalLM
    from . import loop

    config = MiniMindConfig(hidden_size=args.hidden_size, num_hidden_layers=args.num_hidden_layers,
                            num_attention_heads=args.num_attention_heads,
                            num_key_value_heads=args.num_key_value_heads,
                            max_position_embeddings=args.max_position_embeddings,
                            use_moe=bool(args.use_moe), flash_attn=bool(args.flash_attn))
    validate(args, config)
    save_dir = Path(args.save_dir)
    name = weight_name(args.save_weight, config.hidden_size, config.use_moe)
    resume_path = save_dir / f"{name}_resume.pth"
    status["resume_path"] = resume_path
    if args.from_weight != "none" and not weights_path(args, config).is_file():
        raise ConfigError(f"--from_weight {args.from_weight}：找不到 {weights_path(args, config)}")

    resume = None
    if args.from_resume:
        if resume_path.is_file():
            resume = load_resume(resume_path, config.to_dict())  # refuses another config
        else:
            print(f"没有找到 {resume_path}，从头开始训练。")

    # torchrun sets RANK: then the learner's stage-12 code joins the process group
    if "RANK" in os.environ:
        from . import distributed
        info = distributed.init_distributed_mode(args.device)
        main_process = distributed.is_main_process()
        # a stuck rank must not keep the others waiting for gloo's/nccl's default 30/10 minutes
        guards.set_collective_timeout(args.ddp_timeout)
        status["ddp_timeout"] = f"{args.ddp_timeout:g}"
    else:
        distributed, info, main_process = None, SingleProcess(args.device), True
    # every rank its own seed (dropout); DDP copies rank 0's initial weights to the others
    torch.manual_seed(args.seed + info.rank)
    device = info.device
    ctx = loop.autocast_context(device.type, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_path, local_files_only=True)
    if len(tokenizer) != config.vocab_size:
        raise ConfigError(f"--tokenizer_path 的词表大小是 {len(tokenizer)}，模型的 vocab_size 是 {config.vocab_size}")
    # Read every data file once before step 1 (on every rank, so all fail alike): a bad line
    # is named now, with file:line, not hours in (and again on every --from_resume).
    from ..data.validate import check_pretrain_data, describe
    for path in filter(None, (args.data_path, args.val_path)):
        checked = check_pretrain_data(path, tokenizer=tokenizer, vocab_size=config.vocab_size)
        if main_process:
            print(describe(checked), flush=True)
    model = MiniMindForCausalLM(config).to(device)
    if args.from_weight != "none":
        load_weights(model, weights_path(args, config))  # strict; names any key that does not fit
    n_params = sum(p.numel() for p in unwrap(model).parameters()) / 1e6

    train_ds = make_dataset(args.data_path, tokenizer, args.max_seq_len)
    val_ds = make_dataset(args.val_path, tokenizer, args.max_seq_len) if args.val_path else None
    scaler = loop.make_scaler(args.dtype, device.type)
    from .fast import enable_dense_moe, make_optimizer
    optimizer = make_optimizer(model, args.learning_rate, fused=bool(args.fused_adamw))
    if args.moe_dense:
        enable_dense_moe(model)

    start_epoch, start_step = 0, 0
    history = {"train": [], "val": []}
    if resume is not None:
        unwrap(model).load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        scaler.load_state_dict(resume["scaler"])
        start_epoch, start_step = resume["epoch"], resume["step"]
        if resume["world_size"] == info.world_size:
            torch.random.set_rng_state(resume["rng"]["torch"])
        else:  # same number of samples seen, counted in the new world size's micro-steps
            from . import distributed as dist_mod
            start_step = dist_mod.convert_resume_step(start_step, resume["world_size"], info.world_size)
        history = resume.get("history", history)
        if main_process:
            print(f"从 {resume_path} 续训：epoch {start_epoch + 1}，第 {start_step} 个 micro-step 之后"
                  f"（存档时 {resume['world_size']} 个进程，现在 {info.world_size} 个）。")
    if args.use_compile:
        model = torch.compile(model, mode=args.compile_mode)  # compile first, then wrap: DDP hooks stay outside the graph
    if info.ddp:
        model = distributed.wrap_ddp(model, info)

    def sampler_for(epoch: int) -> Sampler:
        if info.ddp:
            return distributed.make_sampler(train_ds, info, args.seed, epoch)
        s = DistributedSampler(train_ds, num_replicas=1, rank=0, shuffle=True, seed=args.seed)
        s.set_epoch(epoch)
        return s

    # A compiled model recompiles (and re-records CUDA graphs) for a smaller last batch: drop it.
    drop_last = bool(args.use_compile)
    n_rank = len(sampler_for(0))
    iters = n_rank // args.batch_size if drop_last else math.ceil(n_rank / args.batch_size)  # per rank
    if iters == 0:
        raise ConfigError(f"--batch_size {args.batch_size} 比每个进程分到的样本数 {n_rank} 还大")
    # The loop steps the optimizer every accumulation_steps micro-steps and once more at the end
    # of an epoch for a partial group (MiniMind's flush): ceil(iters / acc) updates per epoch.
    per_epoch = math.ceil(iters / args.accumulation_steps)

    def micro_of_opt_step(k: int) -> int:
        """The global micro-step after which optimizer step k (from 1) is taken."""
        e, j = divmod(k - 1, per_epoch)
        return e * iters + min((j + 1) * args.accumulation_steps, iters)

    def opt_step(epoch: int, step: int) -> int:
        """Optimizer steps taken after micro-step `step` of `epoch` (the flush counts)."""
        done = math.ceil(step / args.accumulation_steps) if step == iters else step // args.accumulation_steps
        return epoch * per_epoch + done

    total_steps = args.epochs * iters
    if args.max_steps:
        total_steps = min(total_steps, micro_of_opt_step(args.max_steps))
    status["saved_step"] = start_epoch * iters + start_step if resume is not None else None
    if resume is not None and start_epoch * iters + start_step >= total_steps:
        # a finished run: another step would raise the learning rate again and overwrite
        # the final weights
        if main_process:
            print(f"这个训练已经完成了：{resume_path} 记录的是第 {start_epoch * iters + start_step} 个 "
                  f"micro-step，而这次的设置一共只有 {total_steps} 个。什么都没有改动。要训练更久，"
                  f"加大 --max_steps 或 --epochs（学习率调度会随之改变），或换一个 --save_weight 从 "
                  f"--from_weight {args.save_weight} 开始。")
        if info.ddp:
            distributed.cleanup(info)
        return {"finished_before": True, "steps": opt_step(start_epoch, start_step)}
    if main_process:
        print(f"模型 {n_params:.2f}M 参数 | 数据 {len(train_ds)} 条 | {info.world_size} 个进程 | "
              f"每个 epoch {iters} 个 micro-step | 学习率调度共 {total_steps} 个 micro-step | "
              f"有效 batch {args.batch_size * info.world_size * args.accumulation_steps} | 设备 {device} | {args.dtype}")

    wandb_run = None
    if args.use_wandb and main_process:
        import wandb
        # online only for a logged-in user; WANDB_MODE, when set, decides
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
        # the resume file keeps the run id: a resumed run continues the same wandb run
        wandb_run = wandb.init(project=args.wandb_project, name=wandb_run_name(args), config=vars(args),
                               mode=mode, id=(resume or {}).get("wandb_id"), resume="allow")

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start_epoch * iters + start_step, unit="step",
               disable=args.no_progress or not main_process, dynamic_ncols=True, file=sys.stdout)
    state = {"epoch": start_epoch, "done": False, "t0": time.perf_counter()}


    def on_log(log: loop.StepLog) -> None:
        if info.ddp:  # every rank reaches this at the same step: average the loss, add the tokens
            t = torch.tensor([log.loss, log.lm_loss, log.aux_loss], device=device)
            log.loss, log.lm_loss, log.aux_loss = distributed.reduce_mean(t, info).tolist()
            log.tokens *= info.world_size
        # every rank sees the same (averaged) loss, so every rank stops together
        guards.check_finite_loss(log.loss, f"epoch {log.epoch + 1} 第 {log.step} 个 micro-step")
        if not main_process:
            return
        tok_s = log.tokens / max(log.seconds, 1e-9)
        s = opt_step(log.epoch, log.step)
        history["train"].append((s, log.loss))
        bar.set_postfix(loss=f"{log.loss:.3f}", lr=f"{log.lr:.2e}", tok_s=f"{tok_s:,.0f}")
        if args.no_progress:
            print(f"epoch {log.epoch + 1} micro-step {log.step}/{log.iters} (optimizer step {s}) loss {log.loss:.4f} "
                  f"lm {log.lm_loss:.4f} aux {log.aux_loss:.4f} lr {log.lr:.3e} {tok_s:,.0f} tok/s", flush=True)
        if wandb_run is not None:
            wandb_run.log({"loss": log.loss, "lm_loss": log.lm_loss, "aux_loss": log.aux_loss,
                           "lr": log.lr, "tokens_per_s": tok_s}, step=s)

    def save(epoch: int, step: int) -> None:
        # never overwrite the last good checkpoint with NaN weights (checked on every rank:
        # the weights are identical, so all ranks stop together)
        guards.check_finite_weights(model, f"存档前（epoch {epoch + 1} 第 {step} 个 micro-step）")
        if not main_process:  # one writer; the other ranks hold identical weights
            return
        save_weights(model, save_dir / f"{name}.pth")
        # the model's shape beside its weights: export-hf reads it (flags only override)
        write_config(config, save_dir / f"{name}_config.json")
        save_resume(resume_path, model=model, optimizer=optimizer, scaler=scaler, epoch=epoch,
                    step=step, world_size=info.world_size, config=config.to_dict(),
                    extra={"history": history, "wandb_id": wandb_run.id if wandb_run else None})
        status["saved_step"] = epoch * iters + step

    def on_step_end(step: int) -> bool:
        bar.update(1)
        epoch = state["epoch"]
        global_micro = epoch * iters + step
        if step % args.accumulation_steps == 0 or step == iters:  # an optimizer step was taken
            s = opt_step(epoch, step)
            if main_process and val_ds is not None and args.eval_interval and s % args.eval_interval == 0:
                v = evaluate(unwrap(model), val_ds, args.batch_size, args.eval_batches, device, ctx)
                history["val"].append((s, v))
                bar.write(f"optimizer step {s}: validation loss {v:.4f}")
                if wandb_run is not None:
                    wandb_run.log({"val_loss": v}, step=s)
        if step % args.save_interval == 0:
            save(epoch, step)
        if global_micro >= total_steps:
            state["done"] = True
            return True
        return False

    model.train()
    for epoch in range(start_epoch, args.epochs):
        state["epoch"] = epoch
        skip = start_step if epoch == start_epoch else 0
        sampler = SkipSampler(sampler_for(epoch), skip * args.batch_size)
        loader = DataLoader(train_ds, batch_size=args.batch_size, sampler=sampler,
                            num_workers=args.num_workers, pin_memory=bool(args.pin_memory) and device.type == "cuda",
                            drop_last=drop_last)
        last = loop.train_epoch(epoch, loader, iters, model, optimizer, scaler, ctx,
                                lr=args.learning_rate, total_steps=total_steps,
                                accumulation_steps=args.accumulation_steps, grad_clip=args.grad_clip,
                                device=device, log_interval=args.log_interval, start_step=skip,
                                on_log=on_log, on_step_end=on_step_end)
        if state["done"]:
            break
    bar.close()
    save(state["epoch"], last)
    if not main_process:
        distributed.cleanup(info)
        return {}

    summary = {"params_M": round(n_params, 2), "steps": opt_step(state["epoch"], last),
               "seconds": round(time.perf_counter() - state["t0"], 1),
               "weights": str(save_dir / f"{name}.pth")}
    if val_ds is not None:
        v = evaluate(unwrap(model), val_ds, args.batch_size, args.eval_batches, device, ctx)
        if not history["val"] or history["val"][-1][0] != summary["steps"]:
            history["val"].append((summary["steps"], v))
        summary["val_loss"] = round(v, 4)
    summary["loss_curve"] = str(plot_history(history, save_dir / f"{name}_loss.png"))
    if args.samples:
        prompts = ["《春晓》", "《秋夜》", "《山居》", "《送友人》", "《江上》"][:args.samples]
        summary["samples"] = generate_samples(model, tokenizer, prompts, device)
        summary["regular_line_share"] = round(regular_line_share(summary["samples"]), 3)
        for s in summary["samples"]:
            print("—" * 20 + "\n" + s)
        print("—" * 20 + f"\n五言/七言整齐的诗句占 {summary['regular_line_share']:.0%}")
    (save_dir / f"{name}_summary.json").write_text(json.dumps(summary, ensure_ascii=False, indent=1),
                                                   encoding="utf-8")
    if wandb_run is not None:
        import wandb

        final = {"loss_curve": wandb.Image(summary["loss_curve"])}
        if "val_loss" in summary:
            final["val_loss"] = summary["val_loss"]
        if summary.get("samples"):
            final["samples"] = wandb.Table(columns=["prompt", "sample"],
                                           data=[[p, s] for p, s in zip(prompts, summary["samples"])])
            final["regular_line_share"] = summary["regular_line_share"]
        wandb_run.log(final, step=summary["steps"])
        wandb_run.finish()
    if info.ddp:
        distributed.cleanup(info)
    print(f"完成：{summary['steps']} 步，{summary['seconds']} 秒" +
          (f"，验证 loss {summary['val_loss']}" if "val_loss" in summary else "") +
          f"。权重 {summary['weights']}，loss 曲线 {summary['loss_curve']}")
    return summary


def resume_command(argv: list[str]) -> str:
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
    launcher = ("torchrun <同样的 torchrun 参数> -m workbook.train.pretrain" if "RANK" in os.environ
                else "python -m workbook.train.pretrain")
    return " ".join([launcher, *map(shlex.quote, kept), "--from_resume", "1"])


def main(argv: list[str] | None = None) -> int:
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
                f"续训：\n  {resume_command(argv)}")

    try:
        run(argv, status)
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


if __name__ == "__main__":
    sys.exit(main())

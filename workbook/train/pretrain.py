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

from .checkpoint import load_resume, save_resume, save_weights, unwrap, weight_name

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
    p = argparse.ArgumentParser(prog="python -m workbook.train.pretrain",
                                description="MiniMind 预训练 (pretraining)")
    a = p.add_argument
    a("--save_dir", default="out", help="权重和 resume 文件的目录")
    a("--save_weight", default="pretrain", help="权重文件名前缀")
    a("--epochs", type=int, default=1)
    a("--batch_size", type=int, default=32)
    a("--learning_rate", type=float, default=5e-4)
    a("--device", default="cuda:0" if torch.cuda.is_available() else "cpu")
    a("--dtype", default="bfloat16", choices=["float32", "bfloat16", "float16"])
    a("--num_workers", type=int, default=min(8, os.cpu_count() or 1))
    a("--accumulation_steps", type=int, default=8)
    a("--grad_clip", type=float, default=1.0)
    a("--log_interval", type=int, default=100)
    a("--save_interval", type=int, default=1000)
    a("--hidden_size", type=int, default=512)
    a("--num_hidden_layers", type=int, default=8)
    a("--num_attention_heads", type=int, default=8)
    a("--num_key_value_heads", type=int, default=2)
    a("--max_seq_len", type=int, default=340)
    a("--max_position_embeddings", type=int, default=32768)
    a("--use_moe", type=int, default=0, choices=[0, 1])
    a("--data_path", default=str(DEFAULT_DATA), help=".jsonl / .jsonl.gz, 或 pack 出来的 .bin")
    a("--tokenizer_path", default=str(DEFAULT_TOKENIZER))
    a("--from_weight", default="none", help="从 save_dir 里的这个权重名开始（none = 随机初始化）")
    a("--from_resume", type=int, default=0, choices=[0, 1])
    a("--use_wandb", action="store_true")
    a("--wandb_project", default="MiniMind-Pretrain")
    a("--use_compile", type=int, default=0, choices=[0, 1])
    a("--compile", dest="use_compile", action="store_const", const=1, help="= --use_compile 1")
    a("--compile_mode", default="default", choices=["default", "reduce-overhead", "max-autotune"],
      help="torch.compile 的模式；reduce-overhead = CUDA graphs（小 batch 时最快，见 bench/）")
    # extras
    a("--max_steps", type=int, default=0, help="最多这么多次优化器更新 (optimizer steps)，0 = 不限")
    a("--val_path", default=str(DEFAULT_VAL), help="验证集；空字符串 = 不做验证")
    a("--eval_interval", type=int, default=0, help="每多少个优化器步算一次验证 loss，0 = 只在最后算")
    a("--eval_batches", type=int, default=20)
    a("--seed", type=int, default=42)
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
                 "max_seq_len"):
        if getattr(args, flag) <= 0:
            raise ConfigError(f"--{flag} 必须是正整数，现在是 {getattr(args, flag)}")
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
    """An API key in the environment or in ~/.netrc (where `wandb login` puts it); no network."""
    if os.environ.get("WANDB_API_KEY"):
        return True
    try:
        return "api.wandb.ai" in (Path.home() / ".netrc").read_text()
    except OSError:
        return False


_HAN = "[\u4e00-\u9fff]"
_REGULAR_LINE = re.compile(f"^(?:{_HAN}{{5}}|{_HAN}{{7}})[，、；：](?:{_HAN}{{5}}|{_HAN}{{7}})[。？！]$")


def regular_line_share(poems: list[str]) -> float:
    """Share of body lines shaped like regulated verse: two 5- or 7-character halves with
    punctuation ("床前明月光，疑是地上霜。").  The title line (《…》author) is not counted."""
    lines = [ln.strip() for p in poems for ln in p.split("\n")[1:] if ln.strip()]
    return sum(bool(_REGULAR_LINE.match(ln)) for ln in lines) / max(len(lines), 1)


def run(argv: list[str] | None = None) -> dict:
    """The whole pretraining run; returns a summary (also written to save_dir/summary.json)."""
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
    else:
        distributed, info, main_process = None, SingleProcess(args.device), True
    # every rank its own seed (dropout); DDP copies rank 0's initial weights to the others
    torch.manual_seed(args.seed + info.rank)
    device = info.device
    ctx = loop.autocast_context(device.type, args.dtype)
    tokenizer = AutoTokenizer.from_pretrained(args.tokenizer_path)
    if len(tokenizer) != config.vocab_size:
        raise ConfigError(f"--tokenizer_path 的词表大小是 {len(tokenizer)}，模型的 vocab_size 是 {config.vocab_size}")
    model = MiniMindForCausalLM(config).to(device)
    if args.from_weight != "none":
        wpath = save_dir / f"{weight_name(args.from_weight, config.hidden_size, config.use_moe)}.pth"
        model.load_state_dict(torch.load(wpath, map_location=device), strict=False)
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
    total_steps = args.epochs * iters
    if args.max_steps:
        total_steps = min(total_steps, args.max_steps * args.accumulation_steps)
    if main_process:
        print(f"模型 {n_params:.2f}M 参数 | 数据 {len(train_ds)} 条 | {info.world_size} 个进程 | "
              f"每个 epoch {iters} 个 micro-step | 学习率调度共 {total_steps} 个 micro-step | "
              f"有效 batch {args.batch_size * info.world_size * args.accumulation_steps} | 设备 {device} | {args.dtype}")

    wandb_run = None
    if args.use_wandb and main_process:
        import wandb
        # online only for a logged-in user; WANDB_MODE, when set, decides
        mode = os.environ.get("WANDB_MODE") or ("online" if _wandb_logged_in() else "offline")
        wandb_run = wandb.init(project=args.wandb_project, config=vars(args), mode=mode,
                               id=(resume or {}).get("wandb_id"), resume="allow")

    from tqdm.auto import tqdm

    bar = tqdm(total=total_steps, initial=start_epoch * iters + start_step, unit="step",
               disable=args.no_progress or not main_process, dynamic_ncols=True, file=sys.stdout)
    state = {"epoch": start_epoch, "done": False, "t0": time.perf_counter()}

    def opt_step(epoch: int, step: int) -> int:
        return (epoch * iters + step) // args.accumulation_steps

    def on_log(log: loop.StepLog) -> None:
        if info.ddp:  # every rank reaches this at the same step: average the loss, add the tokens
            t = torch.tensor([log.loss, log.lm_loss, log.aux_loss], device=device)
            log.loss, log.lm_loss, log.aux_loss = distributed.reduce_mean(t, info).tolist()
            log.tokens *= info.world_size
        if not main_process:
            return
        tok_s = log.tokens / max(log.seconds, 1e-9)
        s = opt_step(log.epoch, log.step)
        history["train"].append((s, log.loss))
        bar.set_postfix(loss=f"{log.loss:.3f}", lr=f"{log.lr:.2e}", tok_s=f"{tok_s:,.0f}")
        if args.no_progress:
            print(f"epoch {log.epoch + 1} step {log.step}/{log.iters} loss {log.loss:.4f} "
                  f"lm {log.lm_loss:.4f} aux {log.aux_loss:.4f} lr {log.lr:.3e} {tok_s:,.0f} tok/s", flush=True)
        if wandb_run is not None:
            wandb_run.log({"loss": log.loss, "lm_loss": log.lm_loss, "aux_loss": log.aux_loss,
                           "lr": log.lr, "tokens_per_s": tok_s}, step=s)

    def save(epoch: int, step: int) -> None:
        if not main_process:  # one writer; the other ranks hold identical weights
            return
        save_weights(model, save_dir / f"{name}.pth")
        save_resume(resume_path, model=model, optimizer=optimizer, scaler=scaler, epoch=epoch,
                    step=step, world_size=info.world_size, config=config.to_dict(),
                    extra={"history": history, "wandb_id": wandb_run.id if wandb_run else None})

    def on_step_end(step: int) -> bool:
        bar.update(1)
        epoch = state["epoch"]
        global_micro = epoch * iters + step
        if step % args.accumulation_steps == 0:
            s = opt_step(epoch, step)
            if main_process and val_ds is not None and args.eval_interval and s % args.eval_interval == 0:
                v = evaluate(unwrap(model), val_ds, args.batch_size, args.eval_batches, device, ctx)
                history["val"].append((s, v))
                bar.write(f"step {s}: validation loss {v:.4f}")
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
        wandb_run.finish()
    if info.ddp:
        distributed.cleanup(info)
    print(f"完成：{summary['steps']} 步，{summary['seconds']} 秒" +
          (f"，验证 loss {summary['val_loss']}" if "val_loss" in summary else "") +
          f"。权重 {summary['weights']}，loss 曲线 {summary['loss_curve']}")
    return summary


def main(argv: list[str] | None = None) -> int:
    try:
        run(argv)
    except (ConfigError, ValueError, FileNotFoundError) as e:
        print(f"错误：{e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""What a run reports besides its log lines: the loss-curve plot and the wandb run.

Provided infrastructure shared by every trainer (see ``workbook.train.trainer``).
"""
from __future__ import annotations

import os
from pathlib import Path


def plot_history(history: dict, path: Path, title: str) -> Path:
    """Train loss (one point per log line) and validation loss against the optimizer step; a
    trainer's own figures (history["extra"]: GRPO's reward and KL) in a second panel."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    extra = history.get("extra") or []
    if extra:
        fig, (ax, ax2) = plt.subplots(1, 2, figsize=(12, 4))
        steps = [s for s, _ in extra]
        for key in extra[-1][1]:
            if key in ("kl", "length"):  # other scales: KL on its own axis, length (tokens) left out
                continue
            ax2.plot(steps, [d.get(key, float("nan")) for _, d in extra], label=key, lw=1)
        ax2.set_xlabel("optimizer step"); ax2.set_title(f"{title}: reward"); ax2.grid(alpha=0.3)
        ax2.legend(fontsize=7)
        if "kl" in extra[-1][1]:
            kl_ax = ax2.twinx()
            kl_ax.plot(steps, [d.get("kl", float("nan")) for _, d in extra], "k--", lw=1, label="KL")
            kl_ax.set_ylabel("KL (k3, per token)")
            kl_ax.legend(loc="lower right", fontsize=7)
    else:
        fig, ax = plt.subplots(figsize=(7, 4))
    if history["train"]:
        s, l = zip(*history["train"])
        ax.plot(s, l, label="train loss", lw=1)
    if history["val"]:
        s, l = zip(*history["val"])
        ax.plot(s, l, "o-", label="validation loss")
    ax.set_xlabel("optimizer step"); ax.set_ylabel("loss"); ax.set_title(title)
    ax.grid(alpha=0.3); ax.legend()
    fig.tight_layout(); fig.savefig(path, dpi=120); plt.close(fig)
    return path


def wandb_logged_in() -> bool:
    """Ask wandb itself whether credentials are configured (WANDB_API_KEY, its settings file,
    ~/.netrc or $NETRC, an identity token): no prompt, no check against the server."""
    import wandb

    try:
        return bool(wandb.login(verify=False, prompt=False))
    except Exception:  # a broken settings file must not stop the training
        return False


def wandb_run_name(args, prefix: str) -> str:
    """MiniMind's run names: MiniMind-Pretrain-Epoch-1-BatchSize-32-LearningRate-0.0005."""
    return args.wandb_run_name or (f"{prefix}-Epoch-{args.epochs}-BatchSize-{args.batch_size}"
                                   f"-LearningRate-{args.learning_rate}")


def start_wandb(args, prefix: str, run_id: str | None):
    """A wandb run: online only for a logged-in user (WANDB_MODE, when set, decides);
    `run_id` from a resume file continues the same run."""
    import wandb

    mode = os.environ.get("WANDB_MODE") or ("online" if wandb_logged_in() else "offline")
    return wandb.init(project=args.wandb_project, name=wandb_run_name(args, prefix), config=vars(args),
                      mode=mode, id=run_id, resume="allow")


def finish_wandb(run, summary: dict, step: int) -> None:
    """The end of a run in wandb: the loss plot, the final validation loss, the samples."""
    import wandb

    final = {"loss_curve": wandb.Image(summary["loss_curve"])}
    if "val_loss" in summary:
        final["val_loss"] = summary["val_loss"]
    if summary.get("samples"):
        final["samples"] = wandb.Table(columns=["prompt", "sample"],
                                       data=[list(pair) for pair in zip(summary["prompts"], summary["samples"])])
    for key, value in summary.get("metrics", {}).items():
        final[key] = value
    run.log(final, step=step)
    run.finish()

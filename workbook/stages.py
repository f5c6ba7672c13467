"""The stage registry: one row per lesson.

Everything else (the mode switch, the checks, `progress`, the notebook tests) reads this table,
so a new stage is added here first. Pure data: importing it must stay cheap (no torch).
"""
from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Stage:
    id: str  # two digits, "00", "01", …
    slug: str  # file-name part: notebooks/{id}_{slug}.ipynb, workbook/checks/stage{id}.py
    title: str  # short Chinese title with the English term
    modules: tuple[str, ...] = ()  # exercise modules, dotted, relative to the `workbook` package
    requires: tuple[str, ...] = ()  # stage ids whose checks must pass first
    goal: str = ""  # what the learner writes, one line (Chinese)
    part: int = 1  # 1: build and pretrain MiniMind (00-13); 2: post-training, MiniMind's other trainers; 3: data and RL
    extra: dict = field(default_factory=dict, compare=False)

    @property
    def notebook(self) -> str:
        return f"notebooks/{self.id}_{self.slug}.ipynb"

    @property
    def name(self) -> str:
        return f"{self.id} {self.slug}"

    def files(self) -> list[str]:
        return [f"workbook/{m.replace('.', '/')}.py" for m in self.modules]


STAGES: tuple[Stage, ...] = (
    Stage("00", "welcome", "欢迎 & 模型配置 (MiniMindConfig)", ("config",), (),
          "写 MiniMindConfig：默认值、intermediate_size 规则、参数校验"),
    Stage("01", "rmsnorm", "均方根归一化 (RMSNorm)", ("model.norm",), (),
          "写 RMSNorm：fp32 里归一化，再乘 weight"),
    Stage("02", "rope", "旋转位置编码 (RoPE + YaRN)", ("model.rope",), (),
          "写 precompute_freqs_cis 和 apply_rotary_pos_emb"),
    Stage("03", "attention", "注意力 (Attention: GQA, mask, KV cache)", ("model.attention",), ("00", "02"),
          "写 repeat_kv 和 Attention"),
    Stage("04", "feedforward", "前馈网络 (FeedForward, SwiGLU)", ("model.feedforward",), ("00",),
          "写 FeedForward"),
    Stage("05", "moe", "混合专家 (MoE)", ("model.moe",), ("00", "04"),
          "写 MoEGate 和 MOEFeedForward"),
    Stage("06", "block", "Transformer 层 (MiniMindBlock)", ("model.block",), ("01", "03", "04", "05"),
          "写 MiniMindBlock（pre-norm 残差）"),
    Stage("07", "model", "主干模型 (MiniMindModel)", ("model.minimind",), ("02", "06"),
          "写 MiniMindModel"),
    Stage("08", "causal_lm", "语言模型头 (MiniMindForCausalLM)", ("model.causal_lm",), ("07",),
          "写 MiniMindForCausalLM：loss、logits_to_keep、generate"),
    Stage("09", "tokenizer", "分词器 (BPE tokenizer)", ("data.tokenizer",), (),
          "在语料上训练 byte-level BPE 分词器"),
    Stage("10", "pretrain_dataset", "预训练数据集 (PretrainDataset)", ("data.dataset",), (),
          "写 PretrainDataset"),
    Stage("11", "train_loop", "训练循环 (training loop)", ("train.loop",), ("08", "10"),
          "写 get_lr、混合精度、梯度累积、裁剪、train_epoch"),
    Stage("12", "ddp", "分布式数据并行 (DDP)", ("train.distributed",), ("11",),
          "写 init_distributed_mode、DistributedSampler、DDP 包装"),
    Stage("13", "pretrain_and_export", "预训练与导出 (pretrain & export)", (), ("11",),
          "用你自己的包预训练、画 loss、写诗、导出"),
    Stage("14", "sft", "监督微调 (SFT)", ("data.sft",), ("10",),
          "写聊天模板渲染和 SFTDataset：只在助手的回答上算 loss", part=2),
    Stage("15", "lora", "低秩适配 (LoRA)", ("model.lora",), ("08",),
          "写 LoRA、apply_lora、save_lora/load_lora、merge_lora：只训练不到 1% 的参数", part=2),
    Stage("16", "dpo", "直接偏好优化 (DPO)", ("data.dpo", "train.dpo_loss"), ("14",),
          "写 DPODataset、逐 token 对数概率和 dpo_loss：让模型更偏好守格式的回答", part=2),
    Stage("17", "distillation", "知识蒸馏 (knowledge distillation)", ("train.distill_loss",), ("14",),
          "写蒸馏损失 distillation_loss 和它与交叉熵的混合：小学生模型向大老师模型学", part=2),
    Stage("18", "clean_dedup", "清洗与去重 (cleaning & dedup)", ("data.clean",), (),
          "写规范化、过滤规则（返回丢弃原因）、精确去重、MinHash + LSH 近似去重和去污染", part=3),
    Stage("19", "instruction_data", "指令数据 (instruction data)", ("data.instruct",), (),
          "把诗做成聊天任务（模板、对话形状）、按诗划分、任务配比、对评分请求去污染", part=3),
    Stage("20", "grpo", "组相对策略优化 (GRPO)", ("train.grpo_loss",), ("14",),
          "写分组采样、completion 掩码、组内相对优势、k3 KL 和 GRPO 损失：用能检查的奖励强化模型自己的采样", part=3),
)

BY_ID: dict[str, Stage] = {s.id: s for s in STAGES}
PARTS = {1: "第一部分：从零搭起 MiniMind 并预训练 (Part 1: build & pretrain)",
         2: "第二部分：后训练 (Part 2: post-training, MiniMind 的另外四个训练脚本)",
         3: "第三部分：数据工程与强化学习 (Part 3: data engineering & RL)"}

# MiniMind's six trainers (pretrain, SFT, LoRA, DPO, distillation, GRPO), the workbook command that rebuilds each, and the stages whose code it
# runs on: a trainer counts as rebuilt when all of them pass with the learner's own code.
TRAINERS: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("train_pretrain.py", "workbook.train.pretrain", ("08", "10", "11", "12")),
    ("train_full_sft.py", "workbook.train.full_sft", ("14",)),
    ("train_lora.py", "workbook.train.lora", ("15",)),
    ("train_dpo.py", "workbook.train.dpo", ("16",)),
    ("train_distillation.py", "workbook.train.distillation", ("17",)),
    ("train_grpo.py", "workbook.train.grpo", ("20",)),
)

# dotted module (relative to `workbook`) -> stage id
MODULE_STAGE: dict[str, str] = {m: s.id for s in STAGES for m in s.modules}


class UnknownStage(KeyError):
    def __str__(self) -> str:  # KeyError would print the repr
        return self.args[0]


def get(stage_id: str | int) -> Stage:
    """Look a stage up by id; accepts 1, "1", "01" and "01_rmsnorm"."""
    key = str(stage_id).strip().split("_")[0].split(" ")[0]
    if key.isdigit():
        key = f"{int(key):02d}"
    if key not in BY_ID:
        known = ", ".join(BY_ID)
        raise UnknownStage(f"没有阶段 (stage) '{stage_id}'。可选：{known}")
    return BY_ID[key]

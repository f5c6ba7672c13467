"""Check for stage 08: MiniMindForCausalLM (tied head, logits_to_keep, shifted loss, HF round trip).

First the learner's *own* initialisation, before any reference weight is loaded: every
parameter's spread must match a fresh reference build of the same config, and the fresh model
must start near ln(vocab) on random tokens (a reversed tie, or an `_init_weights` that redraws
weights, shows only here).  Then the model loads a MiniMind-layout fp16 .pth (every key, the tied
pair stored twice) strictly, and logits, logits_to_keep, the loss and aux_loss are compared with
the reference; save_pretrained/from_pretrained (RoPE buffers included), the Auto classes and
greedy generate() (with and without the KV cache, against a hand-written argmax loop) are
exercised on a tiny config.
"""
from __future__ import annotations

import io
import math
import tempfile
from pathlib import Path

import torch
import torch.nn.functional as F

from .. import _modes
from .stage06 import VOCAB, load_same_weights, small_config
from .tools import close, diagnose, expect, expect_shape, fail, max_err, seeded


def _build(impl, cfg, seed=0):
    with seeded(seed):
        try:
            return impl.MiniMindForCausalLM(cfg)
        except TypeError as e:
            fail(f"MiniMindForCausalLM(config) 构造失败：{e}。")


# Initial loss on random tokens (labels = input ids) must lie in [ln V - 0.5, ln V + 1.0].
# Measured for the reference (excess over ln V): this small config (V = 64, 4 x 32 tokens),
# 20 seeds: +0.07 .. +0.29 (mean +0.16); the default MiniMind2 size (V = 6400, 2 x 64 tokens),
# 5 seeds: +0.09 .. +0.24.  A reversed tie gives 33 here (474 at the default size).
INIT_LOSS_BELOW, INIT_LOSS_ABOVE = 0.5, 1.0
# A fresh parameter's std must be within this factor of the reference's: the smallest tensor
# (k_proj, 512 values) has a sampling error of ~2 %, an init twice too wide is off by 2x.
INIT_STD_FACTOR = 1.25
TIED_KEYS = ("model.embed_tokens.weight", "lm_head.weight")


def _stats(model) -> dict[str, tuple[float, float, bool]]:
    """(std, mean, all finite) of every floating state_dict entry of a freshly built model."""
    out = {}
    for k, v in model.state_dict().items():
        if v.is_floating_point():
            t = v.detach().double()
            out[k] = (t.std().item() if t.numel() > 1 else 0.0, t.mean().item(), bool(torch.isfinite(t).all()))
    return out


def _stats_differ(got, want) -> bool:
    (std, mean, finite), (r_std, r_mean, _) = got, want
    if not finite:
        return True
    if r_std < 1e-8:  # a constant (RMSNorm weights start at 1)
        return std > 1e-6 or abs(mean - r_mean) > 1e-6
    return (not r_std / INIT_STD_FACTOR <= std <= r_std * INIT_STD_FACTOR
            or abs(mean - r_mean) > 0.25 * r_std)


def _built_without_init_weights(impl, cfg):
    """The learner's model with a no-op _init_weights: what __init__ alone gives (or None)."""
    cls = impl.MiniMindForCausalLM
    bare = type(cls.__name__, (cls,), {"_init_weights": lambda self, module: None})
    with seeded(0):
        try:
            return bare(cfg)
        except Exception:  # only a diagnostic aid: the real build already worked
            return None


def _init_loss(model, cfg) -> float:
    """Loss of a fresh model on random tokens (labels = input ids), in eval mode."""
    with seeded(11):
        ids = torch.randint(0, cfg.vocab_size, (4, 32))
    was_training = model.training
    model.eval()
    with torch.no_grad():
        out = model(ids, labels=ids)
    model.train(was_training)
    loss = getattr(out, "loss", None)
    expect(isinstance(loss, torch.Tensor) and loss.dim() == 0,
           f"有 labels 时 loss 应该是 0-d 张量，你的是 {loss!r}。")
    return float(loss)


def _init_loss_line(loss: float, ref_loss: float, cfg) -> str:
    return (f"新建模型（你自己的初始化）在随机 token 上的初始 loss 是 {loss:.2f}，应接近 ln(vocab_size) = "
            f"ln {cfg.vocab_size} = {math.log(cfg.vocab_size):.2f}（参考实现 {ref_loss:.2f}）。")


def _check_fresh_init(impl, model, ref_model, cfg, loss_note: str) -> None:
    """Every parameter of the learner's fresh model (nothing loaded yet) against a fresh reference.

    loss_note: a line on the fresh model's initial loss, added to a diagnostic ("" if it is fine).
    """
    got, want = _stats(model), _stats(ref_model)
    for key, w in want.items():
        g = got.get(key)
        if g is None or not _stats_differ(g, w):
            continue  # a missing key is named by the strict load below
        std, mean, finite = g
        r_std, r_mean, _ = w
        if not finite:
            fail(f"新建的模型里 {key} 有 NaN/inf：这个参数从没被初始化 (uninitialised)。torch.empty 只分配内存，"
                 f"里面是残留的字节；参考实现新建时它的标准差 (std) 是 {r_std:.3g}。建层用 nn.Linear / "
                 f"nn.Embedding（它们自带初始化）；自己建的 nn.Parameter(torch.empty(...)) 要初始化。")
        # Who set it: __init__ (the tie, a layer) or _init_weights?  Build once more without the latter.
        bare = _built_without_init_weights(impl, cfg)
        by_init_weights = bare is not None and not _stats_differ(_stats(bare).get(key, g), w)
        culprit = ("是你的 _init_weights 改了它（不调用 _init_weights 时是对的）" if by_init_weights else
                   "是 __init__（或它建的子模块）里改的")
        if r_std < 1e-8:
            fail(f"新建的模型里 {key} 应该全是 {r_mean:g}（RMSNorm 的 weight 从 1 开始），你的均值是 {mean:.3g}、"
                 f"标准差 (std) 是 {std:.3g}：{culprit}。")
        what = f"{key} 初始化的标准差 (std) 是 {std:#.3g}，参考实现是 {r_std:#.3g}（同一个 config 新建、还没加载权重）。"
        tied = key in TIED_KEYS
        shared = "\n这个矩阵是 embed_tokens 和 lm_head 共享的：改了一个，另一个也跟着变。" if tied else ""
        if std == 0.0 and mean == 0.0:
            where = ("是你的 _init_weights 把它清零了（不调用 _init_weights 时是对的）" if by_init_weights else
                     "像是用 torch.zeros 建的参数，或者在 __init__ 里把它清零了（nn.init.zeros_）")
            fail(f"新建的模型里 {key} 全是 0：这个参数没有被初始化，{where}。参考实现新建时它的标准差 (std) 是 "
                 f"{r_std:.3g}。" + ("全 0 的共享矩阵让每个 token 的嵌入都一样，模型分不出输入的是哪个 token；"
                                    "它应保留 lm_head 的 nn.Linear 初始化，不要清零。" if tied else "")
                 + loss_note)
        if tied and not by_init_weights and 0.8 < std < 1.25:
            fail(f"{what}\n权重绑反了方向 (weight tying)：你写的像是 self.lm_head.weight = "
                 f"self.model.embed_tokens.weight，共享的矩阵于是保留了 nn.Embedding 的 N(0, 1) 初始化，"
                 f"logits 大了约 √(3·hidden) = {math.sqrt(3 * cfg.hidden_size):.1f} 倍，模型一开始就极其自信地乱猜。"
                 f"{loss_note}\n要写 self.model.embed_tokens.weight = self.lm_head.weight：共享矩阵保留 lm_head 的 "
                 f"nn.Linear 初始化 U(±1/√hidden)，初始 loss 才 ≈ ln(vocab_size)。")
        if by_init_weights:
            if 0.8 < std < 1.25:
                guess = "像是 N(0, 1)（nn.init.normal_ 没写 std）。"
            elif 0.015 < std < 0.025:
                guess = ("像是 N(0, 0.02)：transformers 默认的 _init_weights（删掉已写好的 _init_weights 就会用它），"
                         "也是 MiniMind-3 的做法。")
            elif 1.6 < std / r_std < 2.5:
                guess = f"大了 {std / r_std:.2g} 倍：初始化做了两次，或者多乘了系数？"
            else:
                guess = f"是参考实现的 {std / r_std:.2g} 倍。"
            fail(f"{what}{guess}\n是你的 _init_weights 重新初始化了它（不调用 _init_weights 时是对的）。MiniMind2 "
                 f"保留 PyTorch 建层时的默认初始化（nn.Linear 是 U(±1/√fan_in)，RMSNorm 是 1）；已写好的 "
                 f"_init_weights 只重新计算 RoPE 缓冲区，不要在里面重画参数。{shared}{loss_note}")
        fail(f"{what}\n是在 __init__（或它建的子模块）里初始化错的：建层就用 nn.Linear / nn.Embedding 的默认初始化，"
             f"不要另外初始化。{shared}{loss_note}")


def _init_loss_ok(loss: float, cfg) -> bool:
    ln_v = math.log(cfg.vocab_size)
    return ln_v - INIT_LOSS_BELOW <= loss <= ln_v + INIT_LOSS_ABOVE


def _check_init_loss(loss: float, cfg, loss_line: str) -> None:
    """Judged only after the loss itself was found right, so a wrong loss gets its own diagnostic."""
    if _init_loss_ok(loss, cfg):
        return
    ln_v = math.log(cfg.vocab_size)
    cause = ("偏大：新建模型的 logits 太大，一开始就很自信地猜错。每个参数的初始分布都对，那就看 forward："
             "是不是给 logits 乘了系数，或者 hidden_states 没有经过最后的 norm？" if loss > ln_v else
             "偏小：还没训练的模型不该比均匀地猜更准：forward 里 logits 是不是看到了要预测的 token？")
    fail(f"{loss_line}容许范围是 {ln_v - INIT_LOSS_BELOW:.2f} – {ln_v + INIT_LOSS_ABOVE:.2f}。{cause}")


def _pth_round_trip(model, ref_model) -> None:
    """Save the reference like MiniMind does (fp16, every key) and load it strictly."""
    buf = io.BytesIO()
    torch.save({k: v.half() for k, v in ref_model.state_dict().items()}, buf)
    buf.seek(0)
    sd = torch.load(buf, map_location="cpu", weights_only=True)
    load_same_weights(model, ref_model, "MiniMindForCausalLM")  # names the keys on a mismatch
    model.load_state_dict(sd, strict=True)
    ref_model.load_state_dict(sd, strict=True)


def _generate_greedy_by_hand(model, ids, n, eos):
    for _ in range(n):
        nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if nxt.item() == eos:
            break
    return ids


def check(impl, ref) -> str:
    cfg = small_config()
    model, ref_model = _build(impl, cfg), _build(ref, cfg)
    # 1. tied embedding and head, counted once
    head, emb = getattr(model, "lm_head", None), getattr(getattr(model, "model", None), "embed_tokens", None)
    expect(head is not None and emb is not None, "需要子模块 self.model (MiniMindModel) 和 self.lm_head。")
    expect(getattr(head, "bias", None) is None, "lm_head 不要偏置：nn.Linear(hidden, vocab, bias=False)。")
    if head.weight is not emb.weight:
        fail("lm_head 和 embed_tokens 没有共享权重 (weight tying)：要写 "
             "self.model.embed_tokens.weight = self.lm_head.weight，让两个名字指向同一个 Parameter。"
             f"没绑定时参数量多了 {emb.weight.numel():,} 个（vocab × hidden）。")
    n_params, n_ref = sum(p.numel() for p in model.parameters()), sum(p.numel() for p in ref_model.parameters())
    expect(n_params == n_ref, f"参数量应为 {n_ref:,}（共享的矩阵只算一次），你的是 {n_params:,}。")

    # 2. the learner's own initialisation, before any reference weight is loaded; the initial
    #    loss is measured now but judged after 5., once the loss itself is known to be right
    init_loss = _init_loss(model, cfg)
    loss_line = _init_loss_line(init_loss, _init_loss(ref_model, cfg), cfg)
    _check_fresh_init(impl, model, ref_model, cfg, "" if _init_loss_ok(init_loss, cfg) else "\n" + loss_line)

    # 3. a MiniMind .pth (fp16, tied pair stored twice) loads with strict=True
    _pth_round_trip(model, ref_model)
    expect(model.lm_head.weight is model.model.embed_tokens.weight,
           "加载 state_dict 之后 lm_head 和 embed_tokens 不再是同一个 Parameter 了。")
    model.eval(); ref_model.eval()

    with seeded(1):
        ids = torch.randint(0, VOCAB, (2, 9))
        labels = ids.clone()
        labels[0, :3] = -100   # a prompt that is not trained on
        labels[1, -2:] = -100  # right padding
        labels[1, 2] = 0       # a real token that happens to be the pad id
    with torch.no_grad():
        out = model(ids)
        ref_out = ref_model(ids)
        expect(hasattr(out, "logits"), f"forward 要返回 CausalLMOutputWithPast，你返回的是 {type(out).__name__}。")
        expect_shape(out.logits, (2, 9, VOCAB), "logits（logits_to_keep=0）")
        if not close(out.logits, ref_out.logits, atol=1e-4):
            fail(f"logits 和参考实现不一致：最大误差 {max_err(out.logits, ref_out.logits):.3g}。"
                 f"logits = self.lm_head(hidden_states)，hidden_states 是 self.model(...) 的第一个返回值。")
        expect(out.loss is None, "没有 labels 时 loss 应该是 None。")
        expect(out.past_key_values is None, "use_cache=False 时 past_key_values 应该是 None。")
        aux = getattr(out, "aux_loss", None)
        expect(isinstance(aux, torch.Tensor) and aux.dim() == 0,
               f"输出要带上 aux_loss（0-d 张量）：output.aux_loss = aux_loss。你的是 {aux!r}。")
        expect(out.hidden_states is not None and tuple(out.hidden_states.shape) == (2, 9, cfg.hidden_size),
               "output.hidden_states 应该是主干的输出 (batch, seq, hidden)。")

        # 4. logits_to_keep
        for keep in (1, 3):
            kept = model(ids, logits_to_keep=keep).logits
            if tuple(kept.shape) == (2, 9, VOCAB):
                fail(f"logits_to_keep={keep} 被忽略了：只算最后 {keep} 个位置的 logits，"
                     f"hidden_states[:, -{keep}:, :] 再进 lm_head（generate 每步只要最后一个）。")
            expect_shape(kept, (2, keep, VOCAB), f"logits（logits_to_keep={keep}）")
            if not close(kept, ref_out.logits[:, -keep:], atol=1e-4):
                fail(f"logits_to_keep={keep} 取的位置不对：应该是最后 {keep} 个位置 slice(-{keep}, None)。")
        idx = torch.tensor([0, 4])
        kept = model(ids, logits_to_keep=idx).logits
        expect(kept.shape[1] == 2 and close(kept, ref_out.logits[:, idx], atol=1e-4),
               "logits_to_keep 是张量时表示要保留的位置下标：hidden_states[:, logits_to_keep, :]。")

        # 5. the shifted loss with ignore_index = -100
        try:
            loss = model(ids, labels=labels).loss
        except (IndexError, RuntimeError) as e:
            if "-100" not in str(e):
                raise
            fail(f"计算 loss 时出错（{type(e).__name__}: {e}）：labels 里的 -100 被当成了真实的 token id。"
                 f"ignore_index 用成了别的值（例如 0，pad 的 id）？数据集把不算 loss 的位置标成 -100，"
                 f"要写 F.cross_entropy(..., ignore_index=-100)。")
        ref_loss = ref_model(ids, labels=labels).loss
        expect(isinstance(loss, torch.Tensor) and loss.dim() == 0, f"loss 应该是 0-d 张量，你的是 {loss!r}。")
        if not close(loss, ref_loss, atol=1e-5):
            lg = ref_out.logits
            V = VOCAB
            reason = diagnose(loss, [
                (lambda: F.cross_entropy(lg.reshape(-1, V), labels.reshape(-1), ignore_index=-100),
                 "loss 没有移位 (shift)：位置 t 的 logits 预测的是第 t+1 个 token。要用 logits[:, :-1] 对 "
                 "labels[:, 1:]；你的像是 logits 对 labels 逐位置直接比。"),
                (lambda: F.cross_entropy(lg[:, 1:].reshape(-1, V), labels[:, :-1].reshape(-1), ignore_index=-100),
                 "loss 移反了方向：应该是 logits[:, :-1] 对 labels[:, 1:]，你的像是 logits[:, 1:] 对 labels[:, :-1]。"),
                (lambda: F.cross_entropy(lg[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=0),
                 "ignore_index 用成了 0（pad 的 id）：数据集把不算 loss 的位置标成 -100，"
                 "要 ignore_index=-100；用 0 会把真实的 token 0 也忽略、却去算 -100 的位置。"),
                (lambda: F.cross_entropy(lg[:, :-1].reshape(-1, V), labels[:, 1:].clamp(min=0).reshape(-1)),
                 "没有忽略 -100 的位置 (ignore_index)：你像是把 -100 换成了 0 再算，padding 和提示词也进了 loss。"
                 "要 F.cross_entropy(..., ignore_index=-100)。"),
                (lambda: F.cross_entropy(lg[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1), ignore_index=-100,
                                         reduction="sum") / labels[:, 1:].numel(),
                 "loss 除以了全部位置数：被忽略 (-100) 的位置不该计入分母，用 cross_entropy 默认的 mean 即可。"),
            ], atol=1e-5)
            fail(reason or f"loss 不对：应为 {float(ref_loss):.5f}，你的是 {float(loss):.5f}。"
                           f"loss = cross_entropy(logits[:, :-1], labels[:, 1:], ignore_index=-100)。")
    _check_init_loss(init_loss, cfg, loss_line)

    # 6. gradients reach the shared matrix; aux_loss of a MoE model
    model.train()
    model.zero_grad()
    model(ids, labels=labels).loss.backward()
    g = model.lm_head.weight.grad
    expect(g is not None and g.abs().sum() > 0, "loss 的梯度没有传到 lm_head / embed_tokens：不要 detach。")
    mcfg = small_config(use_moe=True, n_routed_experts=3, aux_loss_alpha=0.1)
    mmodel, ref_m = _build(impl, mcfg, 2), _build(ref, mcfg, 2)
    load_same_weights(mmodel, ref_m, "MiniMindForCausalLM(use_moe=True)")
    mmodel.train(); ref_m.train()
    maux, raux = getattr(mmodel(ids), "aux_loss", None), ref_m(ids).aux_loss.detach()
    expect(isinstance(maux, torch.Tensor) and close(maux, raux, atol=1e-6),
           f"MoE 模型训练时 output.aux_loss 应为 {float(raux):.6g}（主干返回的第三个值），你的是 {maux!r}。")

    # 7. Hugging Face: save_pretrained / from_pretrained / Auto classes / generate
    from transformers import AutoModelForCausalLM

    from transformers.utils import logging as hf_logging

    hf = _modes.impl_module("model.hf")
    bars = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        _hf_round_trip(model, ids, hf, AutoModelForCausalLM)
    finally:
        if bars:
            hf_logging.enable_progress_bar()
    _generate(model)
    return ("权重绑定、严格加载 fp16 .pth、logits_to_keep、移位 loss 与 ignore_index、aux_loss、"
            "save_pretrained/from_pretrained、AutoModel、greedy/采样 generate：全部正确。")


def _hf_round_trip(model, ids, hf, AutoModelForCausalLM) -> None:
    cls = type(model)
    model.eval()
    with torch.no_grad():
        expected = model(ids).logits
    with tempfile.TemporaryDirectory() as tmp:
        model.save_pretrained(tmp)
        expect((Path(tmp) / "model.safetensors").is_file(), "save_pretrained 应该写出 model.safetensors。")
        loaded = cls.from_pretrained(tmp).eval()
        expect(loaded.lm_head.weight is loaded.model.embed_tokens.weight,
               "from_pretrained 之后 lm_head 和 embed_tokens 没有重新绑定：__init__ 里要绑定权重，"
               "并保留已写好的 _tied_weights_keys。")
        # from_pretrained builds on the meta device; non-persistent buffers are not in the file
        for buf in ("freqs_cos", "freqs_sin"):
            got, want = getattr(loaded.model, buf, None), getattr(model.model, buf, None)
            if isinstance(want, torch.Tensor) and not (isinstance(got, torch.Tensor) and close(got, want, atol=1e-6)):
                err = max_err(got, want) if isinstance(got, torch.Tensor) and got.shape == want.shape else float("nan")
                fail(f"from_pretrained 之后 RoPE 缓冲区 {buf} 的值不对（和新建模型的相比，最大误差 {err:.3g}，应为 0）：像是"
                     f"从没被计算过 (uninitialised)。from_pretrained 先在 meta 设备 (device='meta') 上建模型，没有数值；"
                     f"persistent=False 的缓冲区不在文件里，只能由 _init_weights 重新算。已写好的 _init_weights 里"
                     f"的 cos, sin = module.rope_tables(); module.freqs_cos.copy_(cos) … 不要删掉。")
        with torch.no_grad():
            expect(close(loaded(ids).logits, expected, atol=1e-5),
                   "save_pretrained → from_pretrained 之后 logits 变了：检查 __init__ 的最后是否调用了 self.post_init()，"
                   "以及权重绑定。")
        hf.register(cls.config_class, cls)
        auto = AutoModelForCausalLM.from_pretrained(tmp).eval()
        expect(isinstance(auto, cls), f"AutoModelForCausalLM 加载出的是 {type(auto).__name__}，不是你的类。")


def _generate(model) -> None:

    # larger random weights: greedy continuations then depend on the whole context
    with torch.no_grad(), seeded(7):
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    prompt = torch.randint(3, VOCAB, (1, 4), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        by_hand = _generate_greedy_by_hand(model, prompt, 8, model.config.eos_token_id)
    for use_cache in (True, False):
        got = model.generate(prompt, max_new_tokens=8, do_sample=False, use_cache=use_cache, pad_token_id=0)
        if not torch.equal(got, by_hand):
            fail(f"贪心 generate(use_cache={use_cache}) 和手写的 argmax 循环不一致：\n  generate: "
                 f"{got[0].tolist()}\n  手写循环: {by_hand[0].tolist()}\n"
                 + ("用 KV cache 时 generate 只送最后一个 token：forward 要把 past_key_values、use_cache 传给 "
                    "self.model，并把 presents 放进输出的 past_key_values。" if use_cache else
                    "检查 logits_to_keep（generate 传 1）。"))
    for use_cache in (True, False):
        with seeded(8):
            sampled = model.generate(prompt.repeat(2, 1), attention_mask=torch.ones(2, 4, dtype=torch.long),
                                     max_new_tokens=5, do_sample=True, top_k=10, pad_token_id=0,
                                     use_cache=use_cache)
        expect(sampled.shape[0] == 2 and 4 < sampled.shape[1] <= 9 and torch.equal(sampled[:, :4], prompt.repeat(2, 1)),
               f"采样 generate(do_sample=True, use_cache={use_cache}) 的输出不对：应保留提示词并续写 1–5 个 token，"
               f"你的形状是 {tuple(sampled.shape)}。")

"""Check for stage 07: MiniMindModel (embedding, layers, final norm, RoPE buffers, cache, aux loss).

The learner's backbone gets the reference weights (strict load), then outputs, the KV-cache
positions, the buffers and the MoE aux-loss sum are compared with the reference.  Known mistakes
are named by recomputing what they would output with the reference's own layers.
"""
from __future__ import annotations

import torch
from torch import nn

from .stage06 import HIDDEN, HEADS, KV_HEADS, MAX_POS, VOCAB, load_same_weights, randomise_norms, small_config
from .tools import close, diagnose, expect, expect_shape, expect_tensor, fail, max_err, seeded


def _build(impl, cfg, seed=0):
    with seeded(seed):
        try:
            return impl.MiniMindModel(cfg)
        except TypeError as e:
            fail(f"MiniMindModel(config) 构造失败：{e}。")


def _manual(ref_model, ids, past=None, start=0, final_norm=True):
    """The reference computation with an explicit start position (for diagnostics)."""
    h = ref_model.embed_tokens(ids)
    s = ids.shape[1]
    pe = (ref_model.freqs_cos[start:start + s], ref_model.freqs_sin[start:start + s])
    past = past or [None] * len(ref_model.layers)
    for layer, kv in zip(ref_model.layers, past):
        h, _ = layer(h, pe, past_key_value=kv, use_cache=True)
    return ref_model.norm(h) if final_norm else h


def _call(model, ids, what, **kw):
    res = model(ids, **kw)
    expect(isinstance(res, tuple) and len(res) == 3,
           f"{what} 应该返回 (hidden_states, presents, aux_loss) 三个值，你返回的是 {type(res).__name__}"
           f"{'（长度 ' + str(len(res)) + '）' if isinstance(res, tuple) else ''}。")
    expect_tensor(res[0], f"{what} 的 hidden_states")
    expect_shape(res[0], (*ids.shape, HIDDEN), f"{what} 的 hidden_states")
    return res


def check(impl, ref) -> str:
    cfg = small_config()
    model, ref_model = _build(impl, cfg), _build(ref, cfg)
    # 1. keys (no freqs buffers in the state_dict), shapes, same weights
    randomise_norms(ref_model)
    load_same_weights(model, ref_model, "MiniMindModel")
    bufs = dict(model.named_buffers())
    for name in ("freqs_cos", "freqs_sin"):
        expect(name in bufs, f"缺少 buffer {name}：用 self.register_buffer('{name}', ..., persistent=False) "
                             f"注册 RoPE 表（普通属性不会跟着 model.to(device) 走）。")
        expect_shape(bufs[name], (MAX_POS, HIDDEN // HEADS), f"buffer {name}")
        expect(close(bufs[name], getattr(ref_model, name), atol=1e-6),
               f"buffer {name} 的值不对：用 self.rope_tables()（已提供）算出的表。")
    drop = getattr(model, "dropout", None)
    expect(isinstance(drop, nn.Dropout) and abs(drop.p - cfg.dropout) < 1e-12,
           f"self.dropout 应该是 nn.Dropout(config.dropout)，你的是 {drop!r}。")

    model.eval(); ref_model.eval()
    with seeded(1):
        ids = torch.randint(0, VOCAB, (2, 7))
    with torch.no_grad():
        # 2. full forward
        h, presents, aux = _call(model, ids, "MiniMindModel")
        ref_h, _, _ = ref_model(ids)
        if not close(h, ref_h, atol=1e-5):
            reason = diagnose(h, [
                (lambda: _manual(ref_model, ids, final_norm=False),
                 "输出和没做最后一次 RMSNorm 的结果一样：所有层之后要 hidden_states = self.norm(hidden_states)"
                 "（最后的归一化 final norm）。"),
                (lambda: ref_model.norm(ref_model.embed_tokens(ids)),
                 "输出像是没经过任何层：要把 hidden_states 依次送进 self.layers 里的每一层。"),
                (lambda: _manual(ref_model, ids) * HIDDEN ** 0.5,
                 "输出被放大了 √hidden 倍：MiniMind 的词嵌入不乘 √d（那是原版 Transformer / Gemma 的做法）。"),
            ])
            fail(reason or f"MiniMindModel 的 hidden_states 和参考实现不一致：最大误差 {max_err(h, ref_h):.3g}。"
                           f"顺序：embed_tokens → dropout → 每一层 → norm。")
        expect(presents is None, "use_cache=False 时 presents 应该是 None。")
        expect(isinstance(aux, torch.Tensor) and aux.dim() == 0 and float(aux) == 0.0,
               f"稠密 (dense) 模型的 aux_loss 应该是 0-d 的零张量（torch 标量），你的是 {aux!r}。")

        # 3. KV cache: prefix, then one token; positions continue where the cache ends
        _, kv, _ = _call(model, ids[:, :5], "MiniMindModel(use_cache=True)", use_cache=True)
        expect(isinstance(kv, (list, tuple)) and len(kv) == cfg.num_hidden_layers,
               f"use_cache=True 时 presents 应该是每层一个 (k, v) 的列表（{cfg.num_hidden_layers} 层），"
               f"你的是 {type(kv).__name__}。")
        expect_shape(kv[0][0], (2, 5, KV_HEADS, HIDDEN // HEADS), "presents[0] 的 k")
        step = _call(model, ids[:, 5:6], "MiniMindModel(带 past_key_values)",
                     past_key_values=list(kv), use_cache=True)[0]
        if not close(step, ref_h[:, 5:6], atol=1e-5):
            _, rkv, _ = ref_model(ids[:, :5], use_cache=True)
            if close(step, _manual(ref_model, ids[:, 5:6], list(rkv), start=0), atol=1e-4):
                fail("用 KV cache 续写时位置不对：新 token 的 RoPE 用了位置 0。start_pos 要取缓存的长度 "
                     "past_key_values[0][0].shape[1]，RoPE 表切 [start_pos : start_pos + seq_len]。")
            fail(f"带 KV cache 逐 token 计算的结果和整段计算不一致（误差 {max_err(step, ref_h[:, 5:6]):.3g}）："
                 f"每层要拿到它自己的 past_key_values[i]，RoPE 位置从缓存长度开始。")

    # 4. dropout on the embeddings: model.dropout must run on embed_tokens' output
    seen = []
    hooks = [model.embed_tokens.register_forward_hook(lambda m, i, o: seen.append(("embed", o))),
             model.dropout.register_forward_hook(lambda m, i, o: seen.append(("dropout", i[0])))]
    with torch.no_grad():
        model(ids)
    for hk in hooks:
        hk.remove()
    names = [n for n, _ in seen]
    expect("dropout" in names and names.index("dropout") == names.index("embed") + 1
           and seen[names.index("dropout")][1] is seen[names.index("embed")][1],
           "词嵌入之后要经过 self.dropout：hidden_states = self.dropout(self.embed_tokens(input_ids))。"
           "（config.dropout 默认是 0，但 dropout>0 训练时这一步就起作用了。）")

    # 5. MoE: aux loss is the sum over layers, in training
    mcfg = small_config(use_moe=True, n_routed_experts=3, num_experts_per_tok=2, aux_loss_alpha=0.1)
    mmodel, ref_m = _build(impl, mcfg, 5), _build(ref, mcfg, 5)
    load_same_weights(mmodel, ref_m, "MiniMindModel(use_moe=True)")
    mmodel.train(); ref_m.train()
    with seeded(6):
        mids = torch.randint(0, VOCAB, (3, 6))
    mh, _, maux = _call(mmodel, mids, "MiniMindModel(use_moe=True)")
    _, _, ref_aux = ref_m(mids)
    layer_aux = [l.mlp.aux_loss.detach() for l in ref_m.layers]
    expect(isinstance(maux, torch.Tensor) and maux.dim() == 0,
           f"aux_loss 应该是 0-d 张量，你的是 {maux!r}。")
    if not close(maux, ref_aux, atol=1e-6):
        reason = diagnose(maux.detach(), [
            (lambda: layer_aux[-1], "aux_loss 只取了最后一层的：要把所有 MoE 层的 layer.mlp.aux_loss 加起来。"),
            (lambda: layer_aux[0], "aux_loss 只取了第一层的：要把所有 MoE 层的 layer.mlp.aux_loss 加起来。"),
            (lambda: sum(layer_aux) / len(layer_aux), "aux_loss 取了各层的平均：MiniMind 是求和 (sum)，不除以层数。"),
        ], atol=1e-7)
        fail(reason or f"aux_loss 不对：应为 {float(ref_aux):.6g}（各 MoE 层之和），你的是 {float(maux):.6g}。")
    expect(maux.requires_grad, "训练模式下 aux_loss 要能反向传播 (requires_grad)：不要 .item() 或 detach。")

    # 6. gradients reach the embedding
    model.train()
    model.zero_grad()
    model(ids)[0].square().mean().backward()
    g = model.embed_tokens.weight.grad
    expect(g is not None and g.abs().sum() > 0, "梯度没有传到 embed_tokens：forward 里不要 detach 或 no_grad。")
    return "state_dict 键、RoPE buffer（不存盘）、前向、final norm、KV cache 的起始位置、dropout、MoE aux_loss 求和：全部正确。"

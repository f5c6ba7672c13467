"""Tests of the reference model (solutions/model/*), loaded as `_workbook_reference.model.*`.

Tiny configs (hidden 64, 2 layers, 4 heads, 2 kv heads, vocab 128) keep the file fast on a CPU;
the full-size presets are only built on the meta device, to count parameters.
"""
from __future__ import annotations

import math

import pytest
import torch

from workbook import _modes

cfg_mod = _modes.reference_module("config")
rope = _modes.reference_module("model.rope")
attention = _modes.reference_module("model.attention")
moe = _modes.reference_module("model.moe")
minimind = _modes.reference_module("model.minimind")
causal_lm = _modes.reference_module("model.causal_lm")
hf = _modes.reference_module("model.hf")

MiniMindConfig = cfg_mod.MiniMindConfig
MiniMindForCausalLM = causal_lm.MiniMindForCausalLM


def tiny_config(**overrides) -> MiniMindConfig:
    kw = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
              vocab_size=128, max_position_embeddings=256)
    kw.update(overrides)
    return MiniMindConfig(**kw)


def tiny_moe_config(**overrides) -> MiniMindConfig:
    kw = dict(use_moe=True, n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1)
    kw.update(overrides)
    return tiny_config(**kw)


def tiny_model(seed: int = 0, **overrides) -> MiniMindForCausalLM:
    torch.manual_seed(seed)
    return MiniMindForCausalLM(tiny_config(**overrides)).eval()


# ---------------------------------------------------------------- Config

@pytest.mark.parametrize("kw, field", [
    (dict(hidden_size=512.0), "hidden_size"), (dict(num_hidden_layers=True), "num_hidden_layers"),
    (dict(intermediate_size=0), "intermediate_size"), (dict(intermediate_size=1408.0), "intermediate_size"),
    (dict(intermediate_size=True), "intermediate_size"), (dict(dropout=1.0), "dropout"),
    (dict(hidden_size=384, num_key_value_heads=3), "num_key_value_heads"),
    (dict(use_moe=True, num_experts_per_tok=5, n_routed_experts=4), "num_experts_per_tok"),
])
def test_config_rejects_bad_values(kw, field):
    with pytest.raises(ValueError, match=field):
        MiniMindConfig(**kw)


def test_config_rope_scaling_is_a_fresh_copy_and_explicit_wins():
    a, b = MiniMindConfig(inference_rope_scaling=True), MiniMindConfig(inference_rope_scaling=True)
    assert a.rope_scaling == cfg_mod.YARN_ROPE_SCALING
    assert a.rope_scaling is not b.rope_scaling and a.rope_scaling is not cfg_mod.YARN_ROPE_SCALING
    mine = {"type": "yarn", "factor": 4, "original_max_position_embeddings": 64}
    assert MiniMindConfig(inference_rope_scaling=True, rope_scaling=mine).rope_scaling == mine
    assert MiniMindConfig(dropout=0.0, intermediate_size=1).intermediate_size == 1


# ---------------------------------------------------------------- RoPE

def test_rope_table_layout_and_values():
    dim, end, base = 16, 40, 1e6
    cos, sin = rope.precompute_freqs_cis(dim, end=end, rope_base=base)
    assert cos.shape == sin.shape == (end, dim) and cos.dtype == torch.float32
    # half-split layout: dimension i and i + dim/2 share the angle
    assert torch.equal(cos[:, :dim // 2], cos[:, dim // 2:])
    for p, i in [(0, 0), (1, 0), (7, 3), (39, 7)]:
        angle = p * base ** (-2 * i / dim)
        assert cos[p, i].item() == pytest.approx(math.cos(angle), abs=1e-6)
        assert sin[p, i].item() == pytest.approx(math.sin(angle), abs=1e-6)
    with pytest.raises(ValueError, match="even"):
        rope.precompute_freqs_cis(15)


def test_rope_offset_invariance():
    # q_m · k_n depends only on m - n: shift both positions by 37, the score stays
    torch.manual_seed(0)
    hd = 32
    cos, sin = rope.precompute_freqs_cis(hd, end=128, rope_base=1e4)
    q, k = torch.randn(1, 1, 1, hd), torch.randn(1, 1, 1, hd)

    def score(m: int, n: int) -> float:
        q_m = rope.apply_rotary_pos_emb(q, q, cos[m:m + 1], sin[m:m + 1])[0]
        k_n = rope.apply_rotary_pos_emb(k, k, cos[n:n + 1], sin[n:n + 1])[1]
        return (q_m * k_n).sum().item()

    for m, n in [(5, 2), (10, 10), (3, 9)]:
        assert score(m + 37, n + 37) == pytest.approx(score(m, n), abs=1e-4)
    assert abs(score(5, 2) - score(5, 3)) > 1e-3  # but the distance itself does matter


def test_rotate_half_and_bad_shapes():
    x = torch.arange(4.0).view(1, 1, 1, 4)
    assert rope.rotate_half(x).flatten().tolist() == [-2.0, -3.0, 0.0, 1.0]
    cos, sin = rope.precompute_freqs_cis(8, end=10)
    q = torch.randn(2, 5, 4, 8)
    with pytest.raises(ValueError):
        rope.apply_rotary_pos_emb(q, q, cos, sin)  # 10 rows for 5 positions
    with pytest.raises(ValueError):
        rope.apply_rotary_pos_emb(q, q, cos[:5, :4], sin[:5, :4])  # wrong head_dim


def yarn_inv_freq_by_hand(dim, base, orig_max, factor, beta_fast, beta_slow):
    """The YaRN frequencies, one dimension at a time (independent of the vectorised reference)."""
    def inv_dim(b):
        return dim * math.log(orig_max / (2 * math.pi * b)) / (2 * math.log(base))
    low = max(math.floor(inv_dim(beta_fast)), 0)
    high = min(math.ceil(inv_dim(beta_slow)), dim // 2 - 1)
    out = []
    for i in range(dim // 2):
        gamma = min(max((i - low) / max(high - low, 0.001), 0.0), 1.0)
        out.append(base ** (-2 * i / dim) * ((1 - gamma) + gamma / factor))
    return out


def test_yarn_only_when_table_exceeds_original_context():
    dim, base = 64, 1e6
    scaling = dict(cfg_mod.YARN_ROPE_SCALING)  # orig 2048, factor 16, beta 32 / 1
    plain_cos, plain_sin = rope.precompute_freqs_cis(dim, end=2048, rope_base=base)
    # end / orig_max = 1: no rescaling at all
    cos, sin = rope.precompute_freqs_cis(dim, end=2048, rope_base=base, rope_scaling=scaling)
    assert torch.equal(cos, plain_cos) and torch.equal(sin, plain_sin)
    # end / orig_max = 2 > 1: YaRN frequencies
    cos, sin = rope.precompute_freqs_cis(dim, end=4096, rope_base=base, rope_scaling=scaling)
    inv_freq = yarn_inv_freq_by_hand(dim, base, 2048, 16, 32, 1)
    for p in (1, 100, 4095):
        expected = torch.tensor([math.cos(p * f) for f in inv_freq])
        torch.testing.assert_close(cos[p, :dim // 2], expected, atol=1e-4, rtol=0)
    assert not torch.allclose(cos[:2048], plain_cos)
    # the fastest dimension (i = 0) is left alone, the slowest is divided by `factor`
    assert cos[100, 0].item() == pytest.approx(plain_cos[100, 0].item(), abs=1e-6)
    # attention_factor scales both tables (MiniMind applies it whenever rope_scaling is given)
    for end in (2048, 4096):
        ref_cos, ref_sin = rope.precompute_freqs_cis(dim, end=end, rope_base=base, rope_scaling=scaling)
        half_cos, half_sin = rope.precompute_freqs_cis(
            dim, end=end, rope_base=base, rope_scaling={**scaling, "attention_factor": 0.5})
        torch.testing.assert_close(half_cos, 0.5 * ref_cos)
        torch.testing.assert_close(half_sin, 0.5 * ref_sin)


# ---------------------------------------------------------------- Attention

def test_repeat_kv_is_repeat_interleave():
    x = torch.randn(2, 3, 2, 4)
    assert torch.equal(attention.repeat_kv(x, 3), torch.repeat_interleave(x, 3, dim=2))
    assert attention.repeat_kv(x, 1) is x


def attention_pair(seed=0):
    """The same weights twice: with the SDPA fast path, and forced onto the manual path."""
    torch.manual_seed(seed)
    fast = attention.Attention(tiny_config(flash_attn=True)).eval()
    manual = attention.Attention(tiny_config(flash_attn=False)).eval()
    manual.load_state_dict(fast.state_dict())
    return fast, manual


def test_sdpa_matches_manual_attention():
    fast, manual = attention_pair()
    x = torch.randn(2, 9, 64)
    cos, sin = rope.precompute_freqs_cis(16, end=9)
    for mask in (None, torch.ones(2, 9, dtype=torch.long)):
        out_fast, _ = fast(x, (cos, sin), attention_mask=mask)
        out_manual, _ = manual(x, (cos, sin), attention_mask=mask)
        torch.testing.assert_close(out_fast, out_manual, atol=1e-5, rtol=0)


@pytest.mark.parametrize("flash", [True, False])
def test_attention_is_causal(flash):
    torch.manual_seed(0)
    attn = attention.Attention(tiny_config(flash_attn=flash)).eval()
    cos, sin = rope.precompute_freqs_cis(16, end=8)
    x = torch.randn(1, 8, 64)
    x2 = x.clone()
    x2[:, 5:] = torch.randn(1, 3, 64)  # change the future
    out, _ = attn(x, (cos, sin))
    out2, _ = attn(x2, (cos, sin))
    torch.testing.assert_close(out[:, :5], out2[:, :5], atol=1e-6, rtol=0)
    assert not torch.allclose(out[:, 5:], out2[:, 5:])


def test_padding_mask_hides_left_padding():
    # RoPE is relative, so a left-padded sequence must give the same outputs as the bare one
    fast, _ = attention_pair()
    torch.manual_seed(1)
    real, pad = torch.randn(1, 5, 64), torch.randn(1, 3, 64)
    cos, sin = rope.precompute_freqs_cis(16, end=8)
    bare, _ = fast(real, (cos[:5], sin[:5]))
    mask = torch.tensor([[0, 0, 0, 1, 1, 1, 1, 1]])
    padded, _ = fast(torch.cat([pad, real], dim=1), (cos, sin), attention_mask=mask)
    torch.testing.assert_close(padded[:, 3:], bare, atol=1e-5, rtol=0)
    unmasked, _ = fast(torch.cat([pad, real], dim=1), (cos, sin))
    assert not torch.allclose(unmasked[:, 3:], bare, atol=1e-3)


def test_kv_cache_is_post_rope_pre_repeat():
    fast, _ = attention_pair()
    x = torch.randn(2, 6, 64)
    cos, sin = rope.precompute_freqs_cis(16, end=6)
    out, (k, v) = fast(x, (cos, sin), use_cache=True)
    assert k.shape == v.shape == (2, 6, 2, 16)  # (batch, total, n_kv_heads, head_dim)
    k_raw = fast.k_proj(x).view(2, 6, 2, 16)
    torch.testing.assert_close(k, rope.apply_rotary_pos_emb(k_raw, k_raw, cos, sin)[1])
    torch.testing.assert_close(v, fast.v_proj(x).view(2, 6, 2, 16))
    assert fast(x, (cos, sin))[1] is None  # no cache unless asked
    # decoding the 6th token with the cache of the first 5 equals the full forward
    _, cache5 = fast(x[:, :5], (cos[:5], sin[:5]), use_cache=True)
    step, (k6, _) = fast(x[:, 5:], (cos[5:], sin[5:]), past_key_value=cache5, use_cache=True)
    torch.testing.assert_close(step, out[:, 5:], atol=1e-5, rtol=0)
    assert k6.shape == (2, 6, 2, 16)


def test_model_kv_cache_decode_equals_full_forward():
    model = tiny_model()
    ids = torch.randint(0, 128, (2, 10))
    full = model(ids).logits
    out = model(ids[:, :6], use_cache=True)
    logits = [out.logits]
    past = out.past_key_values
    assert len(past) == 2 and past[0][0].shape == (2, 6, 2, 16)
    for t in range(6, 10):
        out = model(ids[:, t:t + 1], past_key_values=past, use_cache=True)
        past = out.past_key_values
        logits.append(out.logits)
    torch.testing.assert_close(torch.cat(logits, dim=1), full, atol=1e-5, rtol=0)
    # `cache=` is accepted as another name for past_key_values
    prefix = model(ids[:, :9], use_cache=True).past_key_values
    torch.testing.assert_close(model(ids[:, 9:], cache=prefix).logits, full[:, 9:], atol=1e-5, rtol=0)


# ---------------------------------------------------------------- MoE

def test_moe_infer_equals_training_path():
    torch.manual_seed(0)
    layer = moe.MOEFeedForward(tiny_moe_config())
    x = torch.randn(2, 7, 64)
    layer.train()
    y_train = layer(x)
    assert layer.aux_loss.item() > 0
    layer.eval()
    y_eval = layer(x)
    torch.testing.assert_close(y_eval, y_train, atol=1e-5, rtol=0)
    assert layer.aux_loss.dim() == 0 and layer.aux_loss.item() == 0.0  # no aux loss in eval


def test_unused_experts_still_get_a_gradient():
    # one token, top-2 of 4: two experts get no token, yet every parameter must join the graph (DDP)
    torch.manual_seed(0)
    layer = moe.MOEFeedForward(tiny_moe_config()).train()
    layer(torch.randn(1, 1, 64)).sum().backward()
    assert all(p.grad is not None for p in layer.parameters())


@pytest.mark.parametrize("seq_aux", [True, False])
def test_gate_aux_loss_by_hand(seq_aux):
    torch.manual_seed(0)
    cfg = tiny_moe_config(seq_aux=seq_aux, aux_loss_alpha=0.1)
    gate = moe.MoEGate(cfg).train()
    b, s, E, k = 3, 5, cfg.n_routed_experts, cfg.num_experts_per_tok
    x = torch.randn(b, s, 64)
    topk_idx, topk_weight, aux = gate(x)
    assert topk_idx.shape == topk_weight.shape == (b * s, k)
    torch.testing.assert_close(topk_weight.sum(-1), torch.ones(b * s))  # renormalised

    scores = torch.softmax(x.view(-1, 64) @ gate.weight.T, dim=-1)  # (b·s, E)
    chosen = topk_idx.tolist()
    if seq_aux:
        total = 0.0
        for bi in range(b):
            for e in range(E):
                count = sum(chosen[bi * s + t].count(e) for t in range(s))
                ce = count / (s * k / E)
                mean_score = sum(scores[bi * s + t, e].item() for t in range(s)) / s
                total += ce * mean_score
        expected = cfg.aux_loss_alpha * total / b
    else:
        expected = 0.0
        for e in range(E):
            f_e = E * sum(row.count(e) for row in chosen) / (b * s * k)
            p_e = scores[:, e].mean().item()
            expected += p_e * f_e
        expected *= cfg.aux_loss_alpha
    assert aux.item() == pytest.approx(expected, rel=1e-5)
    gate.eval()
    assert gate(x)[2].item() == 0.0


def test_model_sums_aux_losses():
    torch.manual_seed(0)
    model = MiniMindForCausalLM(tiny_moe_config()).train()
    out = model(torch.randint(0, 128, (2, 6)))
    layer_sum = sum(layer.mlp.aux_loss for layer in model.model.layers)
    assert out.aux_loss.item() == pytest.approx(layer_sum.item()) and out.aux_loss.item() > 0
    dense = tiny_model().train()
    aux = dense(torch.randint(0, 128, (2, 6))).aux_loss
    assert aux.dim() == 0 and aux.item() == 0.0


# ---------------------------------------------------------------- the whole model

def count_params_on_meta(**kw) -> float:
    with torch.device("meta"):
        model = MiniMindForCausalLM(MiniMindConfig(**kw))
    # parameters() yields the tied embedding / lm_head matrix once
    return round(sum(p.numel() for p in model.parameters()) / 1e6, 2)


@pytest.mark.parametrize("kw, expected", [
    (dict(hidden_size=512, num_hidden_layers=8), 25.83),
    (dict(hidden_size=768, num_hidden_layers=16), 104.03),
    (dict(hidden_size=640, num_hidden_layers=8, use_moe=True), 145.03),
])
def test_preset_parameter_counts(kw, expected):
    assert count_params_on_meta(**kw) == expected


def test_weights_are_tied():
    model = tiny_model()
    assert model.lm_head.weight is model.model.embed_tokens.weight


def test_initial_loss_is_log_vocab():
    torch.manual_seed(0)
    model = MiniMindForCausalLM(tiny_config(vocab_size=6400)).eval()
    ids = torch.randint(0, 6400, (4, 64))
    loss = model(ids, labels=ids).loss.item()
    assert abs(loss - math.log(6400)) < 0.3, loss


def test_loss_shift_ignore_index_and_logits_to_keep():
    model = tiny_model()
    ids = torch.randint(0, 128, (2, 8))
    labels = ids.clone()
    labels[:, :3] = -100
    out = model(ids, labels=labels)
    logits = out.logits
    # mean over the kept positions of -log p(token t+1 | ≤ t), written out by hand
    logp = torch.log_softmax(logits[:, :-1], dim=-1)
    terms = [-logp[b, t, ids[b, t + 1]] for b in range(2) for t in range(7) if labels[b, t + 1] != -100]
    torch.testing.assert_close(out.loss, torch.stack(terms).mean())
    assert out.hidden_states.shape == (2, 8, 64)
    torch.testing.assert_close(model(ids, logits_to_keep=1).logits, logits[:, -1:])
    torch.testing.assert_close(model(ids, logits_to_keep=3).logits, logits[:, -3:])
    idx = torch.tensor([0, 4])
    torch.testing.assert_close(model(ids, logits_to_keep=idx).logits, logits[:, idx])


def expected_keys(cfg: MiniMindConfig) -> set[str]:
    keys = {"model.embed_tokens.weight", "model.norm.weight", "lm_head.weight"}
    for i in range(cfg.num_hidden_layers):
        p = f"model.layers.{i}."
        keys |= {p + f"self_attn.{n}_proj.weight" for n in "qkvo"}
        keys |= {p + "input_layernorm.weight", p + "post_attention_layernorm.weight"}
        if cfg.use_moe:
            keys.add(p + "mlp.gate.weight")
            for e in range(cfg.n_routed_experts):
                keys |= {p + f"mlp.experts.{e}.{n}_proj.weight" for n in ("gate", "down", "up")}
            for e in range(cfg.n_shared_experts):
                keys |= {p + f"mlp.shared_experts.{e}.{n}_proj.weight" for n in ("gate", "down", "up")}
        else:
            keys |= {p + f"mlp.{n}_proj.weight" for n in ("gate", "down", "up")}
    return keys


@pytest.mark.parametrize("make_cfg", [tiny_config, tiny_moe_config])
def test_state_dict_keys_match_minimind(make_cfg):
    cfg = make_cfg()
    sd = MiniMindForCausalLM(cfg).state_dict()
    assert set(sd) == expected_keys(cfg)  # no freqs_cos / freqs_sin: they are not persistent


def test_mlp_registration_order():
    mlp = MiniMindForCausalLM(tiny_config()).model.layers[0].mlp
    assert list(mlp.state_dict()) == ["gate_proj.weight", "down_proj.weight", "up_proj.weight"]


def test_strict_load_of_minimind_fp16_state_dict():
    source = tiny_model(seed=1)
    # a released MiniMind .pth: every key, the tied pair stored twice, fp16
    pth = {k: v.half() for k, v in source.state_dict().items()}
    assert "lm_head.weight" in pth and "model.embed_tokens.weight" in pth
    target = tiny_model(seed=2)
    target.load_state_dict(pth, strict=True)
    assert target.lm_head.weight is target.model.embed_tokens.weight
    assert target.lm_head.weight.dtype == torch.float32
    torch.testing.assert_close(target.lm_head.weight, pth["lm_head.weight"].float())
    ids = torch.randint(0, 128, (1, 6))
    torch.testing.assert_close(target(ids).logits, source.half().float()(ids).logits,
                               atol=1e-4, rtol=0)


def test_save_pretrained_round_trip(tmp_path):
    from safetensors.torch import load_file
    from transformers import AutoModelForCausalLM

    model = tiny_model(seed=3, use_moe=True)
    model.save_pretrained(tmp_path)
    assert (tmp_path / "model.safetensors").is_file()
    saved = load_file(tmp_path / "model.safetensors")
    assert not any("freqs" in k for k in saved)
    ids = torch.randint(0, 128, (2, 7))
    expected = model(ids).logits

    loaded = MiniMindForCausalLM.from_pretrained(tmp_path).eval()
    assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
    # the RoPE buffers are rebuilt, not garbage from the meta device
    torch.testing.assert_close(loaded.model.freqs_cos, model.model.freqs_cos)
    torch.testing.assert_close(loaded(ids).logits, expected)

    hf.register(MiniMindConfig, MiniMindForCausalLM)
    hf.register(MiniMindConfig, MiniMindForCausalLM)  # idempotent
    auto = AutoModelForCausalLM.from_pretrained(tmp_path).eval()
    assert isinstance(auto, MiniMindForCausalLM)
    torch.testing.assert_close(auto(ids).logits, expected)

    # loading in bf16 keeps the RoPE tables fp32; q and k must still come out bf16 like v
    bf16 = MiniMindForCausalLM.from_pretrained(tmp_path, dtype=torch.bfloat16).eval()
    assert bf16(ids).logits.dtype == torch.bfloat16


def greedy_by_hand(model, ids, max_new_tokens, eos):
    for _ in range(max_new_tokens):
        nxt = model(ids).logits[:, -1].argmax(-1, keepdim=True)
        ids = torch.cat([ids, nxt], dim=1)
        if nxt.item() == eos:
            break
    return ids


@pytest.mark.parametrize("use_moe", [False, True])
def test_greedy_generate_matches_manual_loop(use_moe):
    model = tiny_model(seed=4, use_moe=use_moe)
    # A freshly initialised tiny model greedily repeats one token, which would hardly test the
    # cache; with larger random weights the continuation depends on the whole context.
    with torch.no_grad():
        for p in model.parameters():
            p.normal_(0.0, 0.5)
    torch.manual_seed(0)
    prompt = torch.randint(3, 128, (1, 5))
    expected = greedy_by_hand(model, prompt, 12, eos=model.config.eos_token_id)
    assert len(set(expected[0, 5:].tolist())) >= 4
    for use_cache in (True, False):
        got = model.generate(prompt, max_new_tokens=12, do_sample=False, use_cache=use_cache,
                             pad_token_id=0)
        assert torch.equal(got, expected), (use_cache, got, expected)
    # an empty transformers Cache passed by the caller is replaced by MiniMind's own list
    from transformers import DynamicCache
    got = model.generate(prompt, past_key_values=DynamicCache(), max_new_tokens=12,
                         do_sample=False, pad_token_id=0)
    assert torch.equal(got, expected)


def test_sampling_and_beam_generate_run():
    model = tiny_model(seed=5)
    prompt = torch.randint(3, 128, (2, 4))
    torch.manual_seed(0)
    out = model.generate(prompt, attention_mask=torch.ones_like(prompt), max_new_tokens=6,
                         do_sample=True, temperature=0.8, top_p=0.9, top_k=20, pad_token_id=0)
    assert out.shape[0] == 2 and 4 < out.shape[1] <= 10
    assert torch.equal(out[:, :4], prompt) and int(out.max()) < 128
    beams = model.generate(prompt[:1], max_new_tokens=4, num_beams=2, do_sample=False,
                           pad_token_id=0)
    assert torch.equal(beams[:, :4], prompt[:1])

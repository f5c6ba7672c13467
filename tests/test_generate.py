"""workbook/model/generate.py: batched, left-padded, KV-cached generation equals one-by-one decoding."""
import pytest
import torch

from tests.helpers import ROOT
from workbook import _modes
from workbook.model.generate import (Sampling, decode_batch, generate, left_pad, next_tokens, prefill, prefill_groups,
                                     row_generator)

DATA = ROOT / "data"
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400)


def tiny_model(seed=0):
    config = _modes.reference_module("config").MiniMindConfig(**TINY)
    torch.manual_seed(seed)
    return _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config).eval()


def one_by_one(model, prompts, n, eos):
    """The plain loop: full forward over the growing sequence, argmax, no cache, no batch."""
    out = []
    for p in prompts:
        x, new = torch.tensor([p]), []
        with torch.no_grad():
            for _ in range(n):
                t = int(model(input_ids=x).logits[0, -1].argmax())
                new.append(t)
                if t == eos:
                    break
                x = torch.cat([x, torch.tensor([[t]])], dim=1)
        out.append(new)
    return out


def test_left_pad_puts_every_prompt_at_the_right_edge():
    ids, mask = left_pad([[5, 6, 7], [8]], pad_id=0)
    assert ids.tolist() == [[5, 6, 7], [0, 0, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]


def test_prefill_groups_cut_where_padding_costs_more_than_a_forward():
    # one long prompt among short ones: it runs alone
    assert prefill_groups([2, 3, 3, 4, 100], group_cost=24) == [0, 4]
    # similar lengths: one group (a second forward costs more than the padding it saves)
    assert prefill_groups([40, 41, 42, 44], group_cost=24) == [0]
    # free forwards: every distinct length is its own group; very dear ones: a single group
    assert prefill_groups([1, 1, 5, 9, 9], group_cost=0) == [0, 2, 3]
    assert prefill_groups([1, 1, 5, 9, 90], group_cost=10**6) == [0]


def test_grouped_prefill_equals_one_padded_forward():
    """Groups with a masked past of zeros give the padded batch's logits and cache."""
    model = tiny_model(3)
    g = torch.Generator().manual_seed(1)
    rows = [torch.randint(3, 6400, (n,), generator=g).tolist() for n in (1, 2, 4, 4, 9, 30)]
    assert len(prefill_groups([len(r) for r in rows])) > 1  # really grouped
    with torch.no_grad():
        lg, pg, mg = prefill(model, rows, grouped=True)
        lw, pw, mw = prefill(model, rows, grouped=False)
    assert torch.equal(mg, mw) and mg.shape == (6, 30)
    assert torch.allclose(lg, lw, atol=1e-5), (lg - lw).abs().max()
    real = mw.bool()  # padding slots hold zeros in one and junk in the other: never attended
    for (kg, vg), (kw, vw) in zip(pg, pw):
        assert kg.shape == kw.shape == (6, 30, 2, 16)
        assert torch.allclose(kg[real], kw[real], atol=1e-5) and torch.allclose(vg[real], vw[real], atol=1e-5)


def _nucleus_reference(logits, s, gens):
    """The textbook rule: sort everything, cut top_k and the nucleus, inverse CDF."""
    p = torch.softmax(logits / s.temperature, -1)
    sp, order = p.sort(-1, descending=True)
    if s.top_k:
        sp[:, s.top_k:] = 0
    sp = sp.masked_fill(sp.cumsum(-1) - sp >= s.top_p, 0.0)
    cdf = sp.cumsum(-1)
    u = torch.cat([torch.rand(1, generator=x) for x in gens])
    pick = torch.searchsorted(cdf, (u * cdf[:, -1])[:, None], right=True).clamp_max(cdf.shape[1] - 1)
    return order.gather(-1, pick).squeeze(-1)


def test_top_p_from_the_head_equals_a_full_sort():
    # peaked rows (the nucleus is inside the first 64 tokens) and flat rows (it is not: the
    # fallback sorts everything); the draws must be the textbook rule's, token for token
    g = torch.Generator().manual_seed(0)
    for scale in (12.0, 0.5):
        logits = torch.randn(32, 6400, generator=g) * scale
        for s in (Sampling(temperature=0.8, top_p=0.9), Sampling(temperature=1.0, top_p=0.5, top_k=100),
                  Sampling(temperature=0.7, top_k=20)):
            got = next_tokens(logits, s, [row_generator(5, i) for i in range(32)])
            want = _nucleus_reference(logits, s, [row_generator(5, i) for i in range(32)])
            assert torch.equal(got, want), (scale, s)


def test_plain_temperature_sampling_follows_the_softmax():
    # neither top_k nor top_p: no sort, the CDF runs in vocabulary order; the frequencies of
    # 20,000 draws match softmax(logits / T) (4 sigma of a binomial)
    logits = torch.tensor([[2.0, 0.0, 1.0, -1.0, 0.5]]).repeat(20000, 1)
    s = Sampling(temperature=0.8)
    got = next_tokens(logits, s, [row_generator(0, i) for i in range(20000)])
    freq = torch.bincount(got, minlength=5).float() / 20000
    want = torch.softmax(logits[0] / 0.8, -1)
    assert ((freq - want).abs() <= 4 * (want * (1 - want) / 20000).sqrt()).all(), (freq, want)


def test_greedy_batched_equals_one_by_one_on_a_tiny_model():
    model = tiny_model()
    g = torch.Generator().manual_seed(0)
    prompts = [torch.randint(3, 6400, (n,), generator=g).tolist() for n in (3, 11, 7, 7, 1, 16)]
    # an eos that some rows write early, so that rows leave the batch at different steps
    free = generate(model, prompts, 12, eos_token_id=-1, batch_size=1)
    eos = free[2][3]
    want = one_by_one(model, prompts, 12, eos)
    assert any(len(w) < 12 for w in want) and any(len(w) == 12 for w in want)
    for bs in (1, 4, 6):
        assert generate(model, prompts, 12, eos, batch_size=bs) == want, bs
    assert not model.training


def test_padding_is_really_masked():
    # the same prompt padded by 0 or 5 slots must give the same greedy answer; a different pad
    # id must not matter either (it is never attended to)
    model = tiny_model(1)
    p = [7, 300, 42, 9, 1000]
    alone = decode_batch(model, [p], 8, eos_token_id=-1)[0]
    for pad_id in (0, 5, 6399):
        got = decode_batch(model, [p, list(range(10, 20))], 8, eos_token_id=-1, pad_token_id=pad_id)[0]
        assert got == alone, pad_id


def test_sampling_is_reproducible_and_independent_of_the_batch():
    model = tiny_model(2)
    prompts = [[3, 4, 5], [9, 8, 7, 6, 5], [100], [3, 4, 5]]
    s = Sampling(temperature=1.0, top_p=0.9, top_k=50, seed=7)
    a = generate(model, prompts, 10, eos_token_id=-1, sampling=s, batch_size=4)
    assert a == generate(model, prompts, 10, eos_token_id=-1, sampling=s, batch_size=1)
    assert a != generate(model, prompts, 10, eos_token_id=-1,
                         sampling=Sampling(temperature=1.0, top_p=0.9, top_k=50, seed=8), batch_size=4)
    assert a[0] != a[3]  # the same prompt twice: two draws, not one copied
    state = torch.random.get_rng_state()
    generate(model, prompts, 3, eos_token_id=-1, sampling=s)
    assert torch.equal(state, torch.random.get_rng_state())  # the global RNG is not touched


def test_top_k_and_top_p_keep_only_the_allowed_tokens():
    logits = torch.tensor([[4.0, 3.0, 2.0, 1.0, 0.0]]).repeat(400, 1)
    gens = [row_generator(0, i) for i in range(400)]
    got = set(next_tokens(logits, Sampling(temperature=1.0, top_k=2), gens).tolist())
    assert got == {0, 1}
    # softmax of 4,3,2,1,0: 0.636, 0.234, 0.086, …; top_p 0.8 keeps tokens 0 and 1 (0.636 < 0.8)
    got = set(next_tokens(logits, Sampling(temperature=1.0, top_p=0.8), gens).tolist())
    assert got == {0, 1}
    got = set(next_tokens(logits, Sampling(temperature=1.0, top_p=0.5), gens).tolist())
    assert got == {0}
    assert next_tokens(logits[:2], Sampling()).tolist() == [0, 0]
    with pytest.raises(ValueError, match="top_p"):
        Sampling(temperature=1.0, top_p=0.0)
    with pytest.raises(ValueError, match="temperature"):
        Sampling(temperature=-1.0)


@pytest.mark.slow
def test_greedy_batched_equals_unbatched_on_the_held_out_requests():
    """The shipped SFT model on the grader's 120 requests: batch 32 (left padding) == batch 1."""
    from workbook.eval.runner import load_prompts, load_tokenizer
    from workbook.export import model_config_kwargs
    from workbook.train.checkpoint import load_weights

    tok = load_tokenizer()
    weights = DATA / "base" / "full_sft_320.pth"
    config = _modes.reference_module("config").MiniMindConfig(**model_config_kwargs(weights)[0])
    model = _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config)
    load_weights(model, weights)
    ids = [tok.apply_chat_template(p["messages"], add_generation_prompt=True, tokenize=True,
                                   return_dict=False) for p in load_prompts()]
    assert len(ids) == 120 and len({len(x) for x in ids}) > 10  # really padded
    batched = generate(model, ids, 128, tok.eos_token_id, batch_size=32)
    single = generate(model, ids, 128, tok.eos_token_id, batch_size=1)
    diff = [i for i, (a, b) in enumerate(zip(batched, single)) if a != b]
    assert not diff, f"{len(diff)} of 120 answers differ, first: request {diff[0]}"
    assert sum(r[-1] == tok.eos_token_id for r in single) > 60  # most answers stop: eos is exercised


def test_eval_flags_of_the_generator_are_checked(capsys):
    from workbook.__main__ import main

    weights = str(DATA / "base" / "full_sft_320.pth")
    for flag in ("--threads", "--batch_size"):
        assert main(["eval", weights, flag, "0", "--limit", "1"]) == 2
        assert f"{flag} 0：至少 1" in capsys.readouterr().err

"""``python -m workbook chat``: a streamed, multi-turn terminal chat in the training template."""
from __future__ import annotations

import torch

from tests.helpers import ROOT, run_py
from workbook import _modes

SFT = ROOT / "data" / "base" / "full_sft_320.pth"
REQUEST = "写一首五言绝句，题目是《山中秋夜》。"


def _tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(ROOT / "data" / "tokenizer")


def _tiny():
    config = _modes.reference_module("config").MiniMindConfig(
        hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
        intermediate_size=128, max_position_embeddings=256)
    torch.manual_seed(0)
    return _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config).eval()


def test_stream_yields_what_generate_returns_greedy_and_sampled():
    from workbook.model.generate import Sampling, generate, stream

    model = _tiny()
    prompt = [1, 300, 400, 500, 2, 1, 600]
    for sampling in (Sampling(), Sampling(temperature=0.9, top_p=0.9, seed=3)):
        streamed = list(stream(model, prompt, 12, eos_token_id=2, sampling=sampling))
        assert streamed == generate(model, [prompt], 12, eos_token_id=2, sampling=sampling)[0]


def test_the_conversation_is_rendered_as_trained_and_keeps_its_history():
    from workbook.chat import Conversation

    tok = _tokenizer()
    conv = Conversation(tok)
    conv.turns += [{"role": "user", "content": "你好"}, {"role": "assistant", "content": "春眠不觉晓"},
                   {"role": "user", "content": "再来"}]
    text = tok.decode(conv.prompt_ids())
    assert text == ("<|im_start|>user\n你好<|im_end|>\n<|im_start|>assistant\n春眠不觉晓<|im_end|>\n"
                    "<|im_start|>user\n再来<|im_end|>\n<|im_start|>assistant\n")  # no default system line
    with_system = Conversation(tok, system="你是诗人。")
    with_system.turns.append({"role": "user", "content": "你好"})
    assert tok.decode(with_system.prompt_ids()).startswith("<|im_start|>system\n你是诗人。<|im_end|>\n")
    # too long for the context: the oldest request and answer go first
    short = Conversation(tok, context=40, reserve=8)
    short.turns = [{"role": "user", "content": "一" * 10}, {"role": "assistant", "content": "二" * 10},
                   {"role": "user", "content": "三"}]
    ids = short.prompt_ids()
    assert len(ids) <= 32 and "一" not in tok.decode(ids) and len(short.turns) == 1


def test_a_piped_chat_streams_the_greedy_answer_and_obeys_reset_and_exit():
    from workbook.export import model_config_kwargs
    from workbook.model.generate import generate
    from workbook.train.checkpoint import load_weights

    kwargs, _ = model_config_kwargs(SFT)
    model = _modes.reference_module("model.causal_lm").MiniMindForCausalLM(
        _modes.reference_module("config").MiniMindConfig(**kwargs)).eval()
    load_weights(model, SFT)
    tok = _tokenizer()
    ids = tok.apply_chat_template([{"role": "user", "content": REQUEST}], tokenize=False, add_generation_prompt=True)
    new = generate(model, [tok(ids, add_special_tokens=False)["input_ids"]], 256, eos_token_id=2)[0]
    expected = tok.decode([t for t in new if t != 2], skip_special_tokens=True)
    out = run_py(["-m", "workbook", "chat", str(SFT), "--temperature", "0"], mode="solutions",
                 input=f"{REQUEST}\n/reset\n{REQUEST}\n/exit\n这一行不会被读到\n", timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.count(expected) == 2, out.stdout  # the same answer after /reset: the history was cleared
    assert "对话已清空" in out.stdout


def test_bad_flags_and_files_exit_2_with_a_message(tmp_path):
    out = run_py(["-m", "workbook", "chat", str(SFT), "--temperature", "-1"], input="", mode="solutions")
    assert out.returncode == 2 and "temperature" in out.stderr
    out = run_py(["-m", "workbook", "chat", str(tmp_path / "missing.pth")], input="", mode="solutions")
    assert out.returncode == 2 and "找不到权重文件" in out.stderr
    out = run_py(["-m", "workbook", "chat", str(SFT)], input="", mode="learner")
    assert out.returncode == 2 and "没写完" in out.stderr

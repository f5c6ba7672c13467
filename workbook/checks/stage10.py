"""Check for stage 10: PretrainDataset.

Writes small jsonl / jsonl.gz files into a temporary folder, builds the learner's dataset and the
reference on the shipped tokenizer, and compares every sample.  A wrong sample is named by a
property test (bos first, eos after the text, right padding with the pad id, truncation to
max_length - 2 tokens, -100 exactly on the padding).  Bad files (malformed JSON, no "text", a
"text" that is not a string, empty) must raise an error that names the file and the 1-based line.
"""
from __future__ import annotations

import gzip
import json
import re
import tempfile
from pathlib import Path

import torch

from .. import _modes
from .tools import expect, fail

ML = 16  # max_length of the samples built here: 14 text tokens + bos + eos
TOKENIZER_DIR = _modes.PACKAGE_DIR.parent / "data" / "tokenizer"
LONG_POEM = ("《春江花月夜》张若虚\n春江潮水连海平，海上明月共潮生。滟滟随波千万里，何处春江无月明！"
             "江流宛转绕芳甸，月照花林皆似霰。空里流霜不觉飞，汀上白沙看不见。")

_TOKENIZERS: dict = {}


def _tokenizer(who: str):
    """One AutoTokenizer per side (a HF tokenizer keeps state from its last call)."""
    if who not in _TOKENIZERS:
        from transformers import AutoTokenizer
        _TOKENIZERS[who] = AutoTokenizer.from_pretrained(TOKENIZER_DIR)
    return _TOKENIZERS[who]


def _n_tokens(tok, text: str) -> int:
    return len(tok(text, add_special_tokens=False)["input_ids"])


def _prefix_with(tok, n: int) -> str:
    """The shortest prefix of LONG_POEM that is exactly n tokens long."""
    for end in range(1, len(LONG_POEM) + 1):
        if _n_tokens(tok, LONG_POEM[:end]) == n:
            return LONG_POEM[:end]
    raise AssertionError(f"no prefix of {n} tokens")  # the shipped tokenizer always has one


def _texts(tok) -> list[tuple[str, str]]:
    """(what the sample tests, text)."""
    return [
        ("短诗（要补 padding）", "《春晓》孟浩然\n春眠不觉晓。"),
        (f"正好 {ML - 2} 个 token 的文本（不截断、不补齐）", _prefix_with(tok, ML - 2)),
        (f"{ML - 1} 个 token 的文本（要截掉 1 个）", _prefix_with(tok, ML - 1)),
        ("长诗（要截断到 max_length - 2 个 token）", LONG_POEM),
        ("正文里含有 <|endoftext|> 字样的文本", "《题》某\n春风<|endoftext|>秋月"),
        ("只有一个字", "诗"),
    ]


def _write(path: Path, lines: list[str]) -> Path:
    data = "".join(line + "\n" for line in lines)
    if path.suffix == ".gz":
        with gzip.open(path, "wt", encoding="utf-8") as f:
            f.write(data)
    else:
        path.write_text(data, encoding="utf-8")
    return path


def _jsonl_lines(texts: list[str]) -> list[str]:
    """One JSON line per text, with a blank line after the first (blank lines are skipped)."""
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts]
    return lines[:1] + [""] + lines[1:]


def _build(impl, path: Path, tok, max_length: int = ML):
    try:
        return impl.PretrainDataset(path, tok, max_length=max_length)
    except TypeError as e:
        fail(f"PretrainDataset(data_path, tokenizer, max_length=...) 构造失败：{e}。"
             f"签名应该是 PretrainDataset(data_path, tokenizer, max_length=512)。")


def _get(ds, i: int, what: str) -> tuple[torch.Tensor, torch.Tensor]:
    item = ds[i]
    if not isinstance(item, (tuple, list)) or len(item) != 2:
        n = len(item) if isinstance(item, (tuple, list)) else type(item).__name__
        extra = ("（像是旧版 MiniMind 的 X, Y, loss_mask 三元组：现在只返回 input_ids 和 labels，"
                 "错位 shift 交给模型的 loss）" if n == 3 else "")
        fail(f"{what}：ds[i] 应该返回 (input_ids, labels) 两个张量，你的返回了 {n}{extra}。")
    x, y = item
    for name, t in (("input_ids", x), ("labels", y)):
        expect(isinstance(t, torch.Tensor), f"{what}：{name} 应该是 torch.Tensor，你的是 {type(t).__name__}。")
        expect(t.dtype == torch.long, f"{what}：{name} 的 dtype 应该是 torch.long（embedding 和 "
               f"cross_entropy 都要整数 id），你的是 {t.dtype}。")
    return x, y


def _diagnose_input(x: list[int], want: list[int], core: list[int], ids: tuple[int, int, int],
                    what: str) -> None:
    """Name the mistake that makes input_ids `x` differ from `want` (core = all text tokens)."""
    bos, eos, pad = ids
    n = sum(1 for t in want if t != pad) - 2  # text tokens kept
    if len(x) != ML:
        if len(core) > ML - 2 and len(x) in (ML + 1, ML + 2):
            fail(f"{what}：input_ids 长 {len(x)}，应该正好是 max_length={ML}。截断差了 {len(x) - ML} 个："
                 f"文本要截到 max_length - 2 个 token（truncation=True, max_length=self.max_length - 2），"
                 f"给 bos 和 eos 留位置。")
        if len(x) < ML:
            fail(f"{what}：input_ids 长 {len(x)}，应该补齐 (pad) 到 max_length={ML}："
                 f"在右边补 pad_token_id，一个 batch 才是整齐的矩形。")
        fail(f"{what}：input_ids 长 {len(x)}，应该正好是 max_length={ML}。")
    left = [pad] * (ML - n - 2) + [bos] + core[:n] + [eos]
    if x == left and x != want:
        fail(f"{what}：你把 padding 补在了左边 (left padding)。预训练样本要右填充 (right padding)："
             f"[bos, 文本…, eos, pad, pad, …]，这样每个样本都从位置 0 的 bos 开始。")
    if x[0] != bos:
        if bos not in x:
            fail(f"{what}：开头没有 bos（<|im_start|>, id {bos}）：样本应是 [bos] + 文本 + [eos]。"
                 f"你的前几个 id 是 {x[:4]}。")
        fail(f"{what}：位置 0 应该是 bos（id {bos}），你的是 {x[0]}。")
    truncated = len(core) >= ML - 2
    if truncated and x[:ML - 2] == want[:ML - 2] and x[ML - 2] == eos:
        fail(f"{what}：截断多截了 1 个 token：这一行只留了 {ML - 3} 个文本 token，最后剩一个 pad。"
             f"应该截到 max_length - 2 = {ML - 2} 个。")
    if x[n + 1] != eos:
        if truncated and x == ([bos] + core + [eos])[:ML]:
            fail(f"{what}：先加了 bos/eos 再截断，结果 eos 被截掉了。应该先把文本截到 max_length - 2 "
                 f"个 token，再加 [bos] 和 [eos]：模型要学会在哪里结束。")
        if eos not in x:
            fail(f"{what}：文本后面没有 eos（<|im_end|>, id {eos}）：样本应是 [bos] + 文本 + [eos]，"
                 f"没有 eos 模型就学不会“一首诗在这里结束”。")
    tail = x[n + 2:]
    if tail and tail != [pad] * len(tail):
        if all(t == -100 for t in tail):
            fail(f"{what}：input_ids 的 padding 用了 -100。-100 只放在 labels 里（让 loss 忽略）；"
                 f"input_ids 要用 pad_token_id（{pad}）——-100 进 embedding 会越界报错。")
        if all(t == eos for t in tail):
            fail(f"{what}：padding 用了 eos（id {eos}）。用 tokenizer.pad_token_id（{pad}，<|endoftext|>）。")
        fail(f"{what}：eos 之后应该全是 pad（id {pad}），你的是 {tail}。")
    first = next(i for i, (a, b) in enumerate(zip(x, want)) if a != b)
    fail(f"{what}：input_ids 和参考实现在位置 {first} 开始不同：应为 {want}，你的是 {x}。"
         f"对照 [bos] + tokenizer(text, add_special_tokens=False, truncation=True, "
         f"max_length=max_length - 2) + [eos] + [pad]*k 检查。")


def _diagnose_labels(y: list[int], x: list[int], want: list[int], ids, what: str) -> None:
    bos, eos, pad = ids
    if y == x:
        fail(f"{what}：padding 位置的 labels 没有设成 -100（你的 labels 和 input_ids 完全一样）。"
             f"这样 loss 会把“预测 pad”也算进去：短诗样本里大部分位置都是 pad，模型会学着输出 pad。")
    pads = [i for i, t in enumerate(want) if t == -100]
    by_value = [-100 if t == pad else t for t in x]
    if y == by_value:
        fail(f"{what}：你按值 (by value) 把所有等于 pad_token_id 的位置都设成了 -100，连正文里的 "
             f"<|endoftext|> 也被 mask 了。要按位置 (by position)：只 mask eos 之后补上的那些位置。")
    if y[:1] == [-100] and y[1:] == want[1:]:
        fail(f"{what}：bos 的 label 被设成了 -100。labels 就是 input_ids 的拷贝，只在 padding 处是 -100"
             f"（模型自己会错位一格 (shift)，bos 作为输入不会被预测）。")
    if pads and y == want[:pads[0] - 1] + [-100] * (len(want) - pads[0] + 1):
        fail(f"{what}：eos 的 label 也被设成了 -100。eos 要留在 labels 里：模型要学会在哪里结束。")
    if y == x[1:] + [-100] or y[:-1] == want[1:]:
        fail(f"{what}：labels 错位了一格 (shifted)。这里不用 shift：labels = input_ids 的拷贝，"
             f"错位在模型的 loss 里做（logits[:, :-1] 对 labels[:, 1:]）。")
    fail(f"{what}：labels 应为 {want}，你的是 {y}。labels = input_ids 的拷贝，padding 位置设为 -100。")


def _compare_datasets(impl, ref, path: Path, tok_impl, tok_ref, cases, label: str) -> None:
    ds = _build(impl, path, tok_impl)
    ref_ds = ref.PretrainDataset(path, tok_ref, max_length=ML)
    expect(len(ds) == len(ref_ds),
           f"{label}：len(ds) 应该是 {len(ref_ds)}（每个非空行一个样本，空行跳过），你的是 {len(ds)}。")
    ids = (tok_ref.bos_token_id, tok_ref.eos_token_id, tok_ref.pad_token_id)
    for i, (what, text) in enumerate(cases):
        what = f"{label} ds[{i}]（{what}）"
        x, y = _get(ds, i, what)
        want_x, want_y = (t.tolist() for t in ref_ds[i])
        x, y = x.tolist(), y.tolist()
        if x != want_x:
            core = tok_ref(text, add_special_tokens=False)["input_ids"]
            _diagnose_input(x, want_x, core, ids, what)
        if y != want_y:
            _diagnose_labels(y, x, want_y, ids, what)
    # A DataLoader stacks the samples into a (batch, max_length) rectangle.
    batch = torch.utils.data.default_collate([ds[i] for i in range(len(ds))])
    expect(tuple(batch[0].shape) == (len(ds), ML),
           f"{label}：DataLoader 拼出的 batch 形状应为 {(len(ds), ML)}，你的是 {tuple(batch[0].shape)}。")


def _error_of(impl, path: Path, tok) -> BaseException | None:
    """The exception building the dataset and reading every sample raises (None: no error)."""
    try:
        ds = impl.PretrainDataset(path, tok, max_length=ML)
        for i in range(len(ds)):
            ds[i]
    except NotImplementedError:
        raise
    except Exception as e:  # noqa: BLE001 - any error is inspected below
        return e
    return None


def _numbers(message: str, path: Path) -> set[int]:
    rest = message.replace(str(path), " ").replace(path.name, " ")
    return {int(m) for m in re.findall(r"(?<![\d.])\d+(?![\d.])", rest)}


def _expect_line_error(impl, path: Path, tok, lineno: int, wrong: dict[int, str], what: str,
                       cause: str = "") -> None:
    """Building `path` and reading every sample must raise ValueError naming the file and `lineno`.

    cause: appended to the diagnostic when the error is missing or does not name file and line.
    """
    err = _error_of(impl, path, tok)
    if err is None:
        fail(f"{what}：没有报错。坏行不能悄悄跳过或当成空文本：要抛 ValueError，写明文件和行号，"
             f"例如 ValueError(f\"{{path}}:{{lineno}}: ...\")。{cause}")
    msg = str(err)
    if not isinstance(err, ValueError) or isinstance(err, (KeyError,)):
        fail(f"{what}：抛出的是 {type(err).__name__}: {msg[:80]}。要捕获它，改抛 ValueError，"
             f"并写明文件和行号 (file:line)：1.6 GB 的语料里，没有行号根本找不到坏行。{cause}")
    if path.name not in msg:
        fail(f"{what}：报错里没有文件名 {path.name}。你的报错是：{msg[:120]}{cause}")
    nums = _numbers(msg, path)
    if lineno not in nums:
        for n, why in wrong.items():
            if n in nums:
                fail(f"{what}：报错里的行号应该是 {lineno}，你的像是 {n}（{why}）。"
                     f"行号从 1 开始，空行也要算（和编辑器里显示的一样）。你的报错是：{msg[:120]}")
        fail(f"{what}：报错里没有行号 {lineno}（从 1 开始，空行也算）。你的报错是：{msg[:120]}")


def check(impl, ref) -> str:
    tok_impl, tok_ref = _tokenizer("impl"), _tokenizer("ref")
    cases = _texts(tok_ref)
    texts = [t for _, t in cases]
    with tempfile.TemporaryDirectory(prefix="workbook10_") as tmp:
        tmp = Path(tmp)
        # 1. Samples, from plain jsonl and from jsonl.gz.
        for name in ("poems.jsonl", "poems.jsonl.gz"):
            path = _write(tmp / name, _jsonl_lines(texts))
            _compare_datasets(impl, ref, path, tok_impl, tok_ref, cases, name)

        # 2. A malformed JSON line (physical line 6, the 4th non-blank one).
        ok = [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:3]]
        bad = '{"text": 春眠不觉晓}'
        for name in ("bad_json.jsonl", "bad_json.jsonl.gz"):
            path = _write(tmp / name, [ok[0], "", ok[1], "", ok[2], bad, ok[0]])
            _expect_line_error(impl, path, tok_impl, 6,
                               {5: "从 0 开始数了", 4: "没有算空行"}, f"{name} 第 6 行不是合法 JSON")

        # 3. A line without "text" (line 5), and a JSON value that is not an object (line 3).
        path = _write(tmp / "no_text.jsonl", [ok[0], "", ok[1], ok[2], '{"title": "静夜思"}'])
        _expect_line_error(impl, path, tok_impl, 5, {4: "从 0 开始数了，或没有算空行"},
                           'no_text.jsonl 第 5 行没有 "text" 字段')
        path = _write(tmp / "not_object.jsonl", [ok[0], "", '"床前明月光"', ok[1]])
        _expect_line_error(impl, path, tok_impl, 3, {2: "从 0 开始数了，或没有算空行"},
                           "not_object.jsonl 第 3 行是 JSON 字符串而不是对象 {\"text\": …}")

        # 3b. A "text" that is not a string (line 4): the same file:line error as a missing one.
        not_str = '"text" 必须是字符串 (str)：只检查 "text" 在不在不够，要写 isinstance(record.get("text"), str)，' \
                  '不是就抛和缺少 "text" 时一样的 ValueError(f"{path}:{lineno}: ...")；别把它转成字符串。'
        for name, value, kind in (("text_number.jsonl", 123, "数字 123"), ("text_null.jsonl", None, "null"),
                                  ("text_list.jsonl", ["春眠不觉晓"], '列表 (list) ["春眠不觉晓"]')):
            path = _write(tmp / name, [ok[0], "", ok[1], json.dumps({"text": value}, ensure_ascii=False), ok[2]])
            _expect_line_error(impl, path, tok_impl, 4, {3: "从 0 开始数了，或没有算空行"},
                               f'{name} 第 4 行的 "text" 是 {kind}，不是字符串', cause=f"\n{not_str}")

        # 4. Empty files: a clear error at construction, not a dataset of length 0.
        for name, lines in (("empty.jsonl", []), ("blank.jsonl", ["", "   ", ""]),
                            ("empty.jsonl.gz", [])):
            path = _write(tmp / name, lines)
            try:
                ds = impl.PretrainDataset(path, tok_impl, max_length=ML)
            except ValueError as e:
                expect(path.name in str(e),
                       f"{name}：空文件报了 ValueError，但报错里没有文件名：{str(e)[:100]}")
                continue
            except NotImplementedError:
                raise
            except Exception as e:  # noqa: BLE001
                fail(f"{name}（没有任何样本的文件）：应该在构造时抛 ValueError 并写明文件名，"
                     f"你的抛出了 {type(e).__name__}: {str(e)[:80]}。")
            fail(f"{name}（没有任何样本的文件）：构造成功了，len(ds) = {len(ds)}。应该立刻抛 ValueError "
                 f"并写明文件名——否则训练会跑 0 步、什么也不说。")
    return (f"bos/eos、右填充、labels 的 -100、截断到 max_length - 2、.jsonl 与 .jsonl.gz、"
            f"坏行（文件名 + 行号，包括 \"text\" 不是字符串）和空文件的报错：全部正确。")

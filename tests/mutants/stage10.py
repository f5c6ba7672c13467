"""Wrong PretrainDatasets a learner really writes, and what the check must say about each."""
import json
from types import SimpleNamespace

import torch

from workbook import _modes

_ref = _modes.reference_module("data.dataset")
Base = _ref.PretrainDataset


def _sample(build):
    """A mutant whose __getitem__ builds (input_ids, labels) lists with `build(self, text)`."""

    def __getitem__(self, index):
        x, y = build(self, self.text(index))
        return torch.tensor(x, dtype=torch.long), torch.tensor(y, dtype=torch.long)

    return SimpleNamespace(PretrainDataset=type("PretrainDataset", (Base,), {"__getitem__": __getitem__}))


def _ids(self, text, keep):
    return self.tokenizer(text, add_special_tokens=False)["input_ids"][:keep]


def _right(self, seq):
    n_pad = self.max_length - len(seq)
    return seq + [self.pad_id] * n_pad, seq + [-100] * n_pad


def _pads_not_masked(self, text):
    x, _ = _right(self, [self.bos_id] + _ids(self, text, self.max_length - 2) + [self.eos_id])
    return x, list(x)


def _no_bos(self, text):
    return _right(self, _ids(self, text, self.max_length - 1) + [self.eos_id])


def _no_eos(self, text):
    return _right(self, [self.bos_id] + _ids(self, text, self.max_length - 1))


def _trunc(delta):
    def build(self, text):
        return _right(self, [self.bos_id] + _ids(self, text, self.max_length - 2 + delta) + [self.eos_id])
    return build


def _eos_cut_off(self, text):
    return _right(self, ([self.bos_id] + _ids(self, text, None) + [self.eos_id])[:self.max_length])


def _left_padding(self, text):
    seq = [self.bos_id] + _ids(self, text, self.max_length - 2) + [self.eos_id]
    n_pad = self.max_length - len(seq)
    return [self.pad_id] * n_pad + seq, [-100] * n_pad + seq


def _mask_by_value(self, text):
    x, _ = _right(self, [self.bos_id] + _ids(self, text, self.max_length - 2) + [self.eos_id])
    return x, [-100 if t == self.pad_id else t for t in x]


def _pad_minus_100(self, text):
    _, y = _right(self, [self.bos_id] + _ids(self, text, self.max_length - 2) + [self.eos_id])
    return y, y


def _mask_eos(self, text):
    seq = [self.bos_id] + _ids(self, text, self.max_length - 2) + [self.eos_id]
    x, y = _right(self, seq)
    y[len(seq) - 1] = -100
    return x, y


def _shifted(self, text):
    x, y = _right(self, [self.bos_id] + _ids(self, text, self.max_length - 2) + [self.eos_id])
    return x, y[1:] + [-100]


def _text_mutant(parse):
    """A mutant whose text() parses the line with `parse(line, path, lineno, index)`."""

    def text(self, index):
        if self._texts is not None:
            return self._texts[index]
        with open(self.path, "rb") as f:
            f.seek(int(self._offsets[index]))
            line = f.readline()
        return parse(line, self.path, int(self._linenos[index]), index)

    class PretrainDataset(Base):
        def __init__(self, data_path, tokenizer, max_length=512):
            path = str(data_path)
            if path.endswith(".gz"):  # read .gz lazily too, so that text() is what is tested
                import gzip
                import os
                import tempfile
                fd, plain = tempfile.mkstemp(suffix=".jsonl")
                with gzip.open(path, "rb") as src, os.fdopen(fd, "wb") as dst:
                    dst.write(src.read())
                super().__init__(plain, tokenizer, max_length)
                self.path = type(self.path)(path)
                self._plain = plain
            else:
                super().__init__(data_path, tokenizer, max_length)
                self._plain = self.path

        def text(self, index):
            with open(self._plain, "rb") as f:
                f.seek(int(self._offsets[index]))
                line = f.readline()
            return parse(line, self.path, int(self._linenos[index]), index)

    return SimpleNamespace(PretrainDataset=PretrainDataset)


def _no_lineno(line, path, lineno, index):
    try:
        return json.loads(line)["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: 坏行 (bad line): {e}") from None


def _zero_based(line, path, lineno, index):
    try:
        return json.loads(line)["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{lineno - 1}: 坏行 (bad line)") from None


def _nonblank_index(line, path, lineno, index):
    try:
        return json.loads(line)["text"]
    except (json.JSONDecodeError, KeyError, TypeError) as e:
        raise ValueError(f"{path}:{index + 1}: 坏行 (bad line)") from None


def _bare_key(line, path, lineno, index):
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{path}:{lineno}: 不是 JSON") from None
    return record["text"]  # KeyError / TypeError leak out


def _text_not_type_checked(line, path, lineno, index):
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{path}:{lineno}: 不是 JSON") from None
    if not isinstance(record, dict) or "text" not in record:  # the mistake: 123, null, [...] get through
        raise ValueError(f'{path}:{lineno}: 没有 "text"')
    return record["text"]


def _text_made_str(line, path, lineno, index):
    try:
        record = json.loads(line)
    except json.JSONDecodeError:
        raise ValueError(f"{path}:{lineno}: 不是 JSON") from None
    if not isinstance(record, dict) or "text" not in record:
        raise ValueError(f'{path}:{lineno}: 没有 "text"')
    return str(record["text"])  # the mistake: 123 becomes the poem "123", null becomes "None"


def _skip_bad(line, path, lineno, index):
    try:
        return json.loads(line)["text"]
    except Exception:  # noqa: BLE001 - the mistake: swallow it
        return ""


class _EmptyOk(Base):
    def __init__(self, data_path, tokenizer, max_length=512):
        try:
            super().__init__(data_path, tokenizer, max_length)
        except ValueError as e:  # the mistake: an empty file quietly becomes an empty dataset
            if "no samples" not in str(e):
                raise
            self._texts, self._offsets = [], None


MUTANTS = {
    "pads_not_masked": (_sample(_pads_not_masked), "没有设成 -100"),
    "no_bos": (_sample(_no_bos), "开头没有 bos"),
    "no_eos": (_sample(_no_eos), "没有 eos"),
    "truncation_off_by_one": (_sample(_trunc(+1)), "截断差了 1 个"),
    "truncation_one_short": (_sample(_trunc(-1)), "多截了 1 个"),
    "eos_truncated_away": (_sample(_eos_cut_off), "eos 被截掉了"),
    "left_padding": (_sample(_left_padding), "left padding"),
    "mask_by_value": (_sample(_mask_by_value), "按值 (by value)"),
    "pad_input_with_minus_100": (_sample(_pad_minus_100), "-100 只放在 labels 里"),
    "eos_label_masked": (_sample(_mask_eos), "eos 的 label 也被设成了 -100"),
    "labels_shifted": (_sample(_shifted), "错位"),
    "error_without_line_number": (_text_mutant(_no_lineno), "没有行号"),
    "line_number_zero_based": (_text_mutant(_zero_based), "从 0 开始数了"),
    "line_number_skips_blank_lines": (_text_mutant(_nonblank_index), "没有算空行"),
    "missing_text_keyerror": (_text_mutant(_bare_key), "KeyError"),
    "text_not_a_string_passed_on": (_text_mutant(_text_not_type_checked), 'isinstance(record.get("text"), str)'),
    "text_not_a_string_converted": (_text_mutant(_text_made_str), "别把它转成字符串"),
    "bad_lines_skipped": (_text_mutant(_skip_bad), "没有报错"),
    "empty_file_accepted": (SimpleNamespace(PretrainDataset=_EmptyOk), "构造成功了"),
}

"""What cleaning does to a model: the same small model and token budget on raw vs cleaned poems (stage 18).

    WORKBOOK_IMPL=solutions python bench/clean_compare.py [--steps 300] [--report data/clean_compare.json]
    make clean-compare

Two corpora from ``data/poetry_raw.jsonl.xz``:
- **clean**: the training side of stage 18's funnel (``workbook.data.funnel.run``);
- **raw**: every raw record only normalised (NFKC, punctuation, Traditional -> Simplified, so the
  shipped tokenizer reads it), as ``《title》author\\nbody``: editorial notes, lost characters,
  fragments and duplicates kept.  Records sharing a 10-character run with the held-out poems are
  removed from both, so neither model has seen them.
Held out: the funnel's clean validation poems.  Each corpus is packed and a MiniMind of the same
shape is pretrained on it from the same seed for the same steps × batch × sequence length (the
workbook's trainer: whatever WORKBOOK_IMPL selects).  Measured per model: the loss on the clean
held-out poems, the share of regular 5/7-character lines in 20 sampled poems, the share of sampled
lines with an editorial mark (（ ） □ 〖 [), and the share of sampled lines (>= 5 Han) that occur
verbatim as a line of the model's own training corpus (regurgitation).
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

TITLES = ["《春晓》", "《秋夜》", "《山居》", "《送友人》", "《江上》", "《春望》", "《夜泊》", "《登高》", "《别离》", "《归雁》",
          "《月夜》", "《寒食》", "《边塞》", "《渔父》", "《题寺》", "《闻笛》", "《雪中》", "《晚眺》", "《客中》", "《怀古》"]
_HAN = re.compile("[\u3400-\u9fff]")


def corpora(out: Path) -> dict:
    from workbook.data import clean, funnel

    raw = funnel.read_raw()
    fn = funnel.run(raw, funnel.read_eval_texts())
    val = [r.text for r in fn.val]
    clean_train = [r.text for r in fn.train]
    raw_train = []
    for r in raw:
        lines = r.get("paragraphs") if isinstance(r.get("paragraphs"), list) else []
        body = clean.normalize("\n".join(x for x in lines if isinstance(x, str)))
        title = clean.normalize(r.get("title") or "")
        author = clean.normalize(r.get("author") or "")
        raw_train.append(f"《{title}》{author}\n{body}")
    val_keys = [clean.dedup_key(t.split("\n", 1)[-1]) for t in val]
    for name in ("raw_train", "clean_train"):
        texts = raw_train if name == "raw_train" else clean_train
        bad = set(clean.contaminated([clean.dedup_key(t.split("\n", 1)[-1]) for t in texts], val_keys, funnel.NGRAM))
        texts[:] = [t for i, t in enumerate(texts) if i not in bad]
    out.mkdir(parents=True, exist_ok=True)
    files = {}
    for name, texts in (("raw_train", raw_train), ("clean_train", clean_train), ("val", val)):
        path = out / f"{name}.jsonl"
        path.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in texts), encoding="utf-8")
        files[name] = {"path": path, "poems": len(texts), "chars": sum(map(len, texts))}
    return files


def pack(jsonl: Path) -> Path:
    out = jsonl.with_suffix(".bin")
    subprocess.run([sys.executable, "-m", "workbook.data.pack", str(jsonl), str(out), "--tokenizer",
                    str(ROOT / "data" / "tokenizer")], cwd=ROOT, check=True, stdout=subprocess.DEVNULL)
    return out


def train(name: str, data: Path, val: Path, out: Path, args) -> Path:
    cmd = [sys.executable, "-m", "workbook.train.pretrain", "--save_dir", str(out), "--save_weight", name,
           "--data_path", str(data), "--val_path", str(val),
           "--hidden_size", str(args.hidden), "--num_hidden_layers", str(args.layers), "--num_attention_heads", "4",
           "--num_key_value_heads", "2", "--max_seq_len", "128", "--batch_size", "32", "--accumulation_steps", "1",
           "--learning_rate", "3e-3", "--max_steps", str(args.steps), "--log_interval", "50",
           "--save_interval", str(args.steps), "--eval_interval", str(args.steps), "--eval_batches", "10",
           "--num_workers", "0", "--dtype", args.dtype, "--samples", "0", "--device", "cpu", "--no_progress",
           "--seed", "42"]
    subprocess.run(cmd, cwd=ROOT, check=True)
    return out / f"{name}_{args.hidden}.pth"


def measure(weights: Path, train_jsonl: Path, val_texts: list[str]) -> dict:
    import torch

    from clean_leak import mean, token_losses
    from workbook.eval import load_model, load_tokenizer
    from workbook.train.pretrain import generate_samples, regular_line_share

    model, _ = load_model(weights)
    tok = load_tokenizer()
    loss = mean(token_losses(model, tok, val_texts))
    poems = generate_samples(model, tok, TITLES, "cpu", max_new_tokens=64, seed=0)
    seen = set()
    with open(train_jsonl, encoding="utf-8") as f:
        for line in f:
            for ln in json.loads(line)["text"].split("\n")[1:]:
                seen.add(ln.strip())
    lines = [ln.strip() for p in poems for ln in p.split("\n")[1:] if ln.strip()]
    long_lines = [ln for ln in lines if len(_HAN.findall(ln)) >= 5]
    torch.set_num_threads(1)
    return {"val_loss_clean_heldout": round(loss, 4),
            "regular_line_share": round(regular_line_share(poems), 3),
            "lines_with_editorial_marks": round(sum(bool(re.search(r"[（）□〖\[]", ln)) for ln in lines) / max(1, len(lines)), 3),
            "verbatim_training_lines": round(sum(ln in seen for ln in long_lines) / max(1, len(long_lines)), 3),
            "sampled_lines": len(lines), "samples": poems[:5]}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--steps", type=int, default=300)
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--layers", type=int, default=4)
    # float32: on this 2-core machine bf16 autocast ran a 1.6M-parameter model at 221 tokens/s, fp32 at ~1.9k
    ap.add_argument("--dtype", default="float32")
    ap.add_argument("--out", type=Path, default=ROOT / "out" / "clean_compare")
    ap.add_argument("--report", type=Path, default=ROOT / "data" / "clean_compare.json")
    args = ap.parse_args(argv)
    start = time.perf_counter()
    files = corpora(args.out)
    val_texts = [json.loads(line)["text"] for line in files["val"]["path"].read_text(encoding="utf-8").splitlines()]
    report = {"steps": args.steps, "dtype": args.dtype, "tokens_per_model": args.steps * 32 * 128, "hidden": args.hidden, "layers": args.layers,
              "corpora": {k: {"poems": v["poems"], "chars": v["chars"]} for k, v in files.items()}, "models": {}}
    val_bin = pack(files["val"]["path"])
    for name in ("raw", "clean"):
        t0 = time.perf_counter()
        data = pack(files[f"{name}_train"]["path"])
        weights = train(name, data, val_bin, args.out, args)
        report["models"][name] = measure(weights, files[f"{name}_train"]["path"], val_texts)
        report["models"][name]["seconds"] = round(time.perf_counter() - t0, 1)
        print(name, json.dumps(report["models"][name], ensure_ascii=False), flush=True)
    report["seconds"] = round(time.perf_counter() - start, 1)
    args.report.write_text(json.dumps(report, ensure_ascii=False, indent=1) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

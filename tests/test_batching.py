"""workbook/train/batching.py: batches cut to their longest row give today's losses; length grouping."""
import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler

from tests.helpers import ROOT, pretrain_tiny, run_py
from workbook import _modes
from workbook.train.batching import LengthGroupedSampler, TrimPadding, real_lengths, sample_lengths

DATA = ROOT / "data"
TINY = dict(hidden_size=64, num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
            intermediate_size=128, vocab_size=6400)
# the losses of a trimmed batch equal the padded batch's up to float rounding of shorter sums
RTOL = 1e-5


@pytest.fixture(scope="module")
def tokenizer():
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(DATA / "tokenizer"))


def tiny_model(seed=0):
    config = _modes.reference_module("config").MiniMindConfig(**TINY)
    torch.manual_seed(seed)
    return _modes.reference_module("model.causal_lm").MiniMindForCausalLM(config).eval()


def test_real_lengths_and_trim_on_a_hand_made_batch():
    x = torch.tensor([[5, 6, 7, 0, 0, 0], [8, 9, 0, 0, 0, 0]])
    y = torch.tensor([[-100, 6, 7, -100, -100, -100], [-100, 9, -100, -100, -100, -100]])
    assert real_lengths(x, y, 0).tolist() == [3, 2]
    tx, ty = TrimPadding(0)(list(zip(x, y)))
    assert tx.tolist() == [[5, 6, 7], [8, 9, 0]] and ty.tolist() == [[-100, 6, 7], [-100, 9, -100]]
    # a label on a pad id keeps its column (never cut a labelled position)
    y2 = y.clone()
    y2[1, 4] = 0
    assert TrimPadding(0)(list(zip(x, y2)))[0].shape == (2, 5)


def test_sft_losses_of_trimmed_batches_equal_the_padded_ones(tokenizer):
    sft = _modes.reference_module("data.sft").SFTDataset(str(DATA / "sft_poetry_val.jsonl.gz"), tokenizer, 340)
    model = tiny_model()
    padded = DataLoader(sft, batch_size=8, shuffle=False)
    trimmed = DataLoader(sft, batch_size=8, shuffle=False, collate_fn=TrimPadding(tokenizer.pad_token_id))
    widths = []
    with torch.no_grad():
        for k, ((x, y), (tx, ty)) in enumerate(zip(padded, trimmed)):
            if k == 4:
                break
            assert x.shape[1] == 340 and tx.shape[1] < 340  # really trimmed
            assert torch.equal(x[:, :tx.shape[1]], tx) and (y[:, tx.shape[1]:] == -100).all()
            widths.append(tx.shape[1])
            full, cut = model(x, labels=y).loss, model(tx, labels=ty).loss
            assert torch.allclose(full, cut, rtol=RTOL, atol=0), (k, full.item(), cut.item())
    assert max(widths) < 200, widths  # poetry conversations are short


def test_dpo_losses_of_trimmed_pairs_equal_the_padded_ones(tokenizer):
    from workbook.train.dpo import PairTensors, _halves

    ref_loss = _modes.reference_module("train.dpo_loss")  # stage 16, the reference's
    pairs = PairTensors(_modes.reference_module("data.dpo").DPODataset(str(DATA / "dpo_val.jsonl.gz"),
                                                                      tokenizer, 256))
    policy, ref = tiny_model(1), tiny_model(2)

    def objective(x, labels):  # DPOObjective.forward with the reference's stage-16 functions
        x, y, mask = _halves(x, labels)
        lp = [ref_loss.logits_to_log_probs(m(x).logits, y) for m in (ref, policy)]
        return ref_loss.dpo_loss(*lp, mask, 0.1, length_normalize=True)

    padded = DataLoader(pairs, batch_size=4, shuffle=False)
    trimmed = DataLoader(pairs, batch_size=4, shuffle=False, collate_fn=TrimPadding(tokenizer.pad_token_id))
    with torch.no_grad():
        for k, ((x, y), (tx, ty)) in enumerate(zip(padded, trimmed)):
            if k == 3:
                break
            assert x.shape[-1] == 255 and tx.shape[:2] == x.shape[:2] and tx.shape[-1] < 200  # x = ids[:-1]
            full, cut = objective(x, labels=y), objective(tx, labels=ty)
            assert torch.allclose(full, cut, rtol=RTOL, atol=1e-7), (k, full.item(), cut.item())


def test_dpo_objective_leaves_the_width_to_the_batches(tokenizer, monkeypatch):
    """--trim_padding 0 must really be MiniMind's full width: the objective does not cut it."""
    import workbook.train.dpo_loss as learner_dpo_loss
    from workbook.train.dpo import DPOObjective, PairTensors

    # the objective calls stage 16's function: the reference's here, whatever the mode
    monkeypatch.setattr(learner_dpo_loss, "logits_to_log_probs",
                        _modes.reference_module("train.dpo_loss").logits_to_log_probs)

    pairs = PairTensors(_modes.reference_module("data.dpo").DPODataset(str(DATA / "dpo_val.jsonl.gz"),
                                                                      tokenizer, 256))
    x, y = next(iter(DataLoader(pairs, batch_size=2, shuffle=False)))
    objective = DPOObjective(tiny_model(1), tiny_model(2), beta=0.1, length_normalize=True)
    with torch.no_grad():
        policy, ref, mask, _ = objective.log_probs(x, y)
    assert x.shape[-1] == 255 and policy.shape == ref.shape == mask.shape == (4, 255)


def test_dpo_validation_padded_gives_the_trimmed_figures(tokenizer, monkeypatch):
    """evaluate_pairs(trim_padding=False), bench/dpo_val_speed.py's padded arm, measures the same thing."""
    import workbook.train.dpo_loss as learner_dpo_loss
    from workbook.train.dpo import DPOObjective, PairTensors, evaluate_pairs

    for name in ("logits_to_log_probs", "dpo_loss", "sequence_log_probs"):  # stage 16: the reference's
        monkeypatch.setattr(learner_dpo_loss, name, getattr(_modes.reference_module("train.dpo_loss"), name))
    pairs = PairTensors(_modes.reference_module("data.dpo").DPODataset(str(DATA / "dpo_val.jsonl.gz"),
                                                                      tokenizer, 256))
    objective = DPOObjective(tiny_model(1), tiny_model(2), beta=0.1, length_normalize=False)
    trimmed = evaluate_pairs(objective, pairs, "cpu", batch_size=4, limit=8)
    padded = evaluate_pairs(objective, pairs, "cpu", batch_size=4, limit=8, trim_padding=False)
    assert trimmed["pairs"] == padded["pairs"] == 8 and trimmed["margin"] != 0  # two different models
    assert trimmed == pytest.approx(padded, abs=2e-4), (trimmed, padded)


def test_length_grouped_sampler_keeps_the_samples_and_sorts_each_window():
    lengths = [(i * 37) % 101 for i in range(230)]
    inner = DistributedSampler(range(230), num_replicas=1, rank=0, shuffle=True, seed=3)
    grouped = list(LengthGroupedSampler(inner, lengths, batch_size=2, windows_of=50))
    assert sorted(grouped) == list(range(230)) and len(LengthGroupedSampler(inner, lengths, 2)) == 230
    order = list(inner)
    for k in range(0, 230, 100):
        window = grouped[k:k + 100]
        assert set(window) == set(order[k:k + 100])  # only reordered inside its window
        assert [lengths[i] for i in window] == sorted((lengths[i] for i in window), reverse=True)
    assert grouped == list(LengthGroupedSampler(inner, lengths, batch_size=2, windows_of=50))  # deterministic


def test_sample_lengths_are_the_real_lengths(tokenizer):
    sft = _modes.reference_module("data.sft").SFTDataset(str(DATA / "sft_poetry_val.jsonl.gz"), tokenizer, 340)

    class First(torch.utils.data.Dataset):
        def __len__(self):
            return 5

        def __getitem__(self, i):
            return sft[i]

    got = sample_lengths(First(), tokenizer.pad_token_id)
    assert got == [int((sft[i][0] != tokenizer.pad_token_id).sum()) for i in range(5)]


def test_sft_trainer_runs_trimmed_and_length_grouped(tmp_path):
    base = pretrain_tiny(tmp_path / "base")
    out = run_py(["-m", "workbook.train.full_sft", "--save_dir", str(tmp_path), "--from_weight", str(base),
                  "--data_path", str(DATA / "sft_poetry_val.jsonl.gz"), "--max_seq_len", "340",
                  "--batch_size", "8", "--num_workers", "0", "--dtype", "float32", "--no_progress",
                  "--val_path", "", "--samples", "0", "--max_steps", "2", "--group_by_length", "1"],
                 mode="solutions")
    assert out.returncode == 0, out.stderr[-3000:]
    assert (tmp_path / "full_sft_64.pth").is_file()

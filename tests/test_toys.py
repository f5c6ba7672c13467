"""workbook.toys: the tiny model and data the lessons and the checks share."""
import math

import torch

from workbook.toys import BATCH, SEQ, VOCAB, TinyLM, toy_batches


def test_batches_have_the_documented_shape_and_padding():
    batches = toy_batches(4)
    assert len(batches) == 4
    for x, y in batches:
        assert x.shape == y.shape == (BATCH, SEQ) and x.dtype == y.dtype == torch.int64
        assert ((0 <= x) & (x < VOCAB)).all()
        assert (y[:, -1] == -100).all() and torch.equal(y[:, :-1], x[:, :-1])


def test_batches_are_seeded_and_leave_the_global_rng_alone():
    state = torch.random.get_rng_state()
    a, b, c = toy_batches(3, seed=1), toy_batches(3, seed=1), toy_batches(3, seed=2)
    assert torch.equal(torch.random.get_rng_state(), state)
    assert all(torch.equal(p[0], q[0]) for p, q in zip(a, b))
    assert not all(torch.equal(p[0], q[0]) for p, q in zip(a, c))


def test_model_returns_what_a_training_loop_reads():
    torch.manual_seed(0)
    x, y = toy_batches(1)[0]
    out = TinyLM()(x, labels=y)
    assert out.logits.shape == (BATCH, SEQ, VOCAB) and out.logits.dtype == torch.float32
    assert out.loss.shape == out.aux_loss.shape == ()
    assert math.log(VOCAB) - 0.5 < out.loss.item() < math.log(VOCAB) + 1.0
    assert TinyLM()(x).loss is None


def test_router_learns_only_through_the_aux_loss():
    torch.manual_seed(0)
    model = TinyLM()
    x, y = toy_batches(1)[0]
    model(x, labels=y).loss.backward()
    assert model.router.grad is None
    model(x, labels=y).aux_loss.backward()
    assert model.router.grad.abs().sum() > 0


def test_accumulated_micro_batches_equal_one_big_batch():
    # the property stage 11's check relies on: N micro-batches, each loss / N, sum to one batch N times as big
    torch.manual_seed(0)
    small, big = TinyLM(), TinyLM()
    big.load_state_dict(small.state_dict())
    batches = toy_batches(3)
    for x, y in batches:
        out = small(x, labels=y)
        ((out.loss + out.aux_loss) / 3).backward()
    xs, ys = zip(*batches)
    out = big(torch.cat(xs), labels=torch.cat(ys))
    (out.loss + out.aux_loss).backward()
    for a, b in zip(small.parameters(), big.parameters()):
        assert torch.allclose(a.grad, b.grad, atol=1e-6)

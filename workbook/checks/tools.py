"""Small helpers the stage checks share: failing with a message, comparing tensors."""
from __future__ import annotations

from contextlib import contextmanager
from typing import Callable, Iterable

import torch

from .harness import CheckFailed


def fail(message: str) -> None:
    raise CheckFailed(message)


def expect(condition: bool, message: str) -> None:
    if not condition:
        raise CheckFailed(message)


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    return (a.detach().double() - b.detach().double()).abs().max().item()


def close(a: torch.Tensor, b: torch.Tensor, atol: float = 1e-5, rtol: float = 1e-5) -> bool:
    return a.shape == b.shape and torch.allclose(a.detach().double(), b.detach().double(),
                                                 atol=atol, rtol=rtol)


def expect_tensor(x, what: str) -> torch.Tensor:
    expect(isinstance(x, torch.Tensor), f"{what} 应该返回 torch.Tensor，你返回的是 {type(x).__name__}。")
    return x


def expect_shape(x: torch.Tensor, shape: Iterable[int], what: str) -> None:
    shape = tuple(shape)
    expect(tuple(x.shape) == shape, f"{what} 的形状 (shape) 应该是 {shape}，你的是 {tuple(x.shape)}。")


def expect_dtype(x: torch.Tensor, dtype: torch.dtype, what: str) -> None:
    expect(x.dtype == dtype, f"{what} 的 dtype 应该是 {dtype}，你的是 {x.dtype}。")


def diagnose(out: torch.Tensor, candidates: Iterable[tuple[Callable[[], torch.Tensor], str]],
             atol: float = 1e-4) -> str | None:
    """Return the message of the first known mistake whose output `out` reproduces.

    Each candidate is (a function computing what that mistake would output, its diagnostic).
    This is how a check names a mistake instead of printing an allclose dump.
    """
    for compute, message in candidates:
        try:
            guess = compute()
            if guess.shape == out.shape and close(out, guess, atol=atol, rtol=atol):
                return message
        except Exception:  # a candidate that cannot be computed for this input is no match
            continue
    return None


@contextmanager
def seeded(seed: int = 0):
    """Fix torch's RNG inside the block and restore it afterwards."""
    state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        yield
    finally:
        torch.random.set_rng_state(state)

"""Hostile tensors given to fastmqa.decode / append / prefill, without a GPU:
a cache with zero KV heads (a zero-size dimension) is a ValueError naming
the heads, not a ZeroDivisionError from the group-size check.  Nothing
reaches the library (its context is replaced by one that fails the test)."""
import pytest

torch = pytest.importorskip("torch")

import fastmqa  # noqa: E402
from fastmqa import core  # noqa: E402

F16, I32 = torch.float16, torch.int32


@pytest.fixture(autouse=True)
def no_library(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a bad argument reached the library")
    monkeypatch.setattr(core, "default_context", refuse)


def z(*shape, dtype=F16):
    return torch.zeros(*shape, dtype=dtype)


@pytest.mark.parametrize("call", [
    lambda: fastmqa.decode(z(2, 1, 8, 64), z(2, 64, 0, 64), z(2, 64, 0, 64),
                           torch.full((2,), 64, dtype=I32)),
    lambda: fastmqa.append(z(2, 3, 0, 64), z(2, 3, 0, 64), z(2, 64, 0, 64), z(2, 64, 0, 64),
                           torch.zeros(2, dtype=I32), q=z(2, 3, 8, 64)),
    lambda: fastmqa.prefill(z(64, 8, 64), z(64, 0, 64), z(64, 0, 64),
                            torch.zeros(3, dtype=I32), max_q_tokens=32),
], ids=["decode", "append", "prefill"])
def test_zero_kv_heads_is_a_value_error(call):
    with pytest.raises(ValueError, match=r"kv_heads \(0\)"):
        call()

"""fastmqa.nn.Attention without a GPU: construction and the cache format of each
level, memory figures and report() against the library and fastmqa-bench levels,
weights from torch.nn.MultiheadAttention and a Llama-style attention, and the torch
path of forward (prefill, then cached steps) against float64 SDPA attention."""
import types

import pytest

torch = pytest.importorskip("torch")

import fastmqa  # noqa: E402
from conftest import bench_levels  # noqa: E402
from fastmqa.nn import Attention, FinalOptimizedFastMQA  # noqa: E402
from reference import attention64, rel_err  # noqa: E402


def layer(level="balanced", hidden=128, heads=8, kv_heads=2, seq=32, **kw):
    torch.manual_seed(0)
    return Attention(hidden, heads, kv_heads, optimization_level=level, max_seq_len=seq, **kw)


def test_each_level_sets_the_cache_format():
    c, b, a = (layer(lv, max_batch=3) for lv in ("conservative", "balanced", "aggressive"))
    assert c.k_cache.shape == (3, 32, 2, 16) and c.k_cache.dtype == torch.float16
    assert c.k_scale is None
    assert b.k_cache.shape == (3, 8 + 4, 2, 16) and b.v_cache.dtype == torch.float16
    assert a.k_cache.dtype == torch.int8 and a.v_scale.shape == (3, 12, 2)
    assert a.v_scale.dtype == torch.float32
    assert (b.policy.window, b.policy.sink_tokens) == (8, 4)
    bf = layer("balanced", dtype=torch.bfloat16)
    assert bf.k_cache.dtype == torch.bfloat16 and bf.q_proj.weight.dtype == torch.bfloat16


def test_memory_figures_are_the_librarys():
    m = layer("aggressive", seq=4096)
    rep = fastmqa.memory_report(hidden_size=128, num_q_heads=8, num_kv_heads=2,
                                max_seq_len=4096, level="aggressive")
    assert m.memory_reduction == rep.reduction
    assert m.cache_multiplier == rep.cache_multiplier
    assert m.level == "aggressive"


def test_report_is_the_memory_table_of_fastmqa_bench_levels():
    rows = {r["level"]: r for r in bench_levels(256, 8, 2, 256)}
    lines = layer("balanced", hidden=256, heads=8, kv_heads=2, seq=256).report().splitlines()
    assert lines[0].startswith("FastMQA levels: hidden 256, 8 query heads, 2 KV heads")
    body = [ln for ln in lines if ln[2:].split()[:1] and ln[2:].split()[0] in rows]
    assert len(body) == 3 and body[1].startswith("* balanced")
    for ln in body:
        level, kv, window, sinks, spec, per_token, red, mult = ln[2:].split()
        r = rows[level]
        assert (kv, int(window), int(sinks), int(spec), int(per_token)) == \
            (r["kv_dtype"], r["window"], r["sink_tokens"], r["spec_tokens"],
             r["bytes_per_token"])
        assert red == f"{100 * r['reduction']:.1f}%" and mult == f"{r['cache_multiplier']:.1f}x"
    assert lines[-1].endswith("fastmqa-bench levels --hidden 256 --heads 8 --kv-heads 2 --seq 256")


def test_final_optimized_fastmqa_is_the_original_interface():
    torch.manual_seed(0)
    model = FinalOptimizedFastMQA(hidden_dim=2048, num_heads=32, optimization_level="balanced")
    assert model.num_kv_heads == 1 and model.head_dim == 64
    rep = fastmqa.memory_report(hidden_size=2048, num_q_heads=32, num_kv_heads=1,
                                max_seq_len=4096, level="balanced")
    assert (model.memory_reduction, model.cache_multiplier) == (rep.reduction,
                                                                rep.cache_multiplier)
    x = torch.randn(1, 5, 2048, dtype=torch.float16)
    y = model(x, use_cache=True)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert model.lengths.tolist() == [5]


@pytest.mark.parametrize("level,tol", [("conservative", 5e-3), ("balanced", 5e-3),
                                       ("aggressive", 3e-2)])
def test_cached_forward_matches_float64_attention(level, tol):
    """A 20-token prompt (torch prefill), one-token steps and a 4-token step, on a
    ring of 4 sinks + 8 slots that wraps: every output equals float64 attention
    with the same window and sinks over the whole sequence."""
    m = layer(level, max_batch=2)
    torch.manual_seed(1)
    x = torch.randn(2, 27, 128, dtype=torch.float16)
    w = m.policy.window
    ref = attention64(m, x, w, m.policy.sink_tokens)
    outs = [m(x[:, :20]), m(x[:, 20:21]), m(x[:, 21:22]), m(x[:, 22:26]), m(x[:, 26:27])]
    assert m.lengths.tolist() == [27, 27]
    assert rel_err(torch.cat(outs, 1), ref) < tol


def test_positions_restart_and_ragged_batches():
    m = layer("conservative", max_batch=2)
    torch.manual_seed(2)
    x = torch.randn(2, 10, 128, dtype=torch.float16)
    first = m(x)
    again = m(x, positions=0)  # overwrite from position 0: the same result
    assert torch.equal(first, again)
    # sequence 1 continues from 6 instead of 10: its tokens 6.. are replaced
    m(x[:, :4], positions=torch.tensor([10, 6]))
    assert m.lengths.tolist() == [14, 10]


def test_use_cache_false_is_exact_causal_attention_and_caches_nothing():
    m = layer("balanced")
    torch.manual_seed(3)
    x = torch.randn(1, 30, 128, dtype=torch.float16)
    assert rel_err(m(x, use_cache=False), attention64(m, x)) < 5e-3
    assert m.lengths.tolist() == [0]


def test_from_multihead_attention_computes_what_it_did():
    torch.manual_seed(4)
    mha = torch.nn.MultiheadAttention(64, 4, batch_first=True)
    with torch.no_grad():
        mha.in_proj_bias.normal_()
        mha.out_proj.bias.normal_()
    m = Attention.from_torch(mha, max_seq_len=16, max_batch=2)
    assert (m.num_heads, m.num_kv_heads, m.rope_theta, m.q_proj.bias is not None) == \
        (4, 4, None, True)
    x = torch.randn(2, 12, 64)
    causal = torch.ones(12, 12, dtype=torch.bool).triu(1)
    want = mha(x, x, x, attn_mask=causal, need_weights=False)[0]
    assert rel_err(m(x.half(), use_cache=False), want) < 5e-3
    full = Attention.from_torch(mha, max_seq_len=16, max_batch=2,
                                optimization_level="conservative")
    assert rel_err(full(x.half()), want) < 5e-3  # through the cache: full context


class LlamaLike(torch.nn.Module):
    """The attributes a Hugging Face LlamaAttention has."""

    def __init__(self, hidden, heads, kv_heads, head_dim, theta):
        super().__init__()
        self.config = types.SimpleNamespace(num_attention_heads=heads,
                                            num_key_value_heads=kv_heads, rope_theta=theta)
        self.head_dim = head_dim
        self.q_proj = torch.nn.Linear(hidden, heads * head_dim, bias=False)
        self.k_proj = torch.nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.v_proj = torch.nn.Linear(hidden, kv_heads * head_dim, bias=False)
        self.o_proj = torch.nn.Linear(heads * head_dim, hidden, bias=False)


def test_from_llama_style_attention_reads_heads_rope_and_weights():
    torch.manual_seed(5)
    src = LlamaLike(64, 4, 2, 16, 5e5)
    m = Attention.from_torch(src, optimization_level="conservative", max_seq_len=64)
    assert (m.num_heads, m.num_kv_heads, m.head_dim, m.rope_theta) == (4, 2, 16, 5e5)
    assert torch.equal(m.k_proj.weight, src.k_proj.weight.half())
    x = torch.randn(1, 24, 64, dtype=torch.float16)
    ref = attention64(m, x)
    assert rel_err(m(x), ref) < 5e-3
    assert rel_err(m(x[:, :1], positions=24), attention64(m, torch.cat([x, x[:, :1]], 1))[:, 24:]) \
        < 5e-3


@pytest.mark.parametrize("args,kw,exc,message", [
    ((64, 8, 3), {}, ValueError, r"num_heads \(8\) must be a multiple of num_kv_heads \(3\)"),
    ((64, 0), {}, ValueError, r"num_heads: expected a positive int, got 0"),
    ((64, 4), dict(dtype=torch.float32), TypeError, r"dtype: expected torch.float16"),
    ((64, 4), dict(optimization_level="max"), ValueError, r"optimization_level: expected one"),
    ((64, 4), dict(max_batch=0), ValueError, r"max_batch: expected a positive int"),
])
def test_bad_constructor_arguments(args, kw, exc, message):
    with pytest.raises(exc, match=message):
        Attention(*args, **kw)


def test_a_shape_the_library_rejects_raises_its_error():
    with pytest.raises(fastmqa.Error, match=r"hidden_size 66 is not a multiple of num_q_heads 4"):
        Attention(66, 4, head_dim=16)


def test_bad_forward_arguments():
    m = layer("balanced", max_batch=1, seq=16)
    with pytest.raises(ValueError, match=r"x: hidden_dim \(dimension 2\) is 64, expected 128"):
        m(torch.zeros(1, 2, 64, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"x: batch 2 exceeds max_batch 1"):
        m(torch.zeros(2, 2, 128, dtype=torch.float16))
    with pytest.raises(ValueError, match=r"a sequence would reach 18 tokens, more than "
                                         r"max_seq_len 16"):
        m(torch.zeros(1, 2, 128, dtype=torch.float16), positions=16)
    with pytest.raises(ValueError, match=r"positions: expected None, an int"):
        m(torch.zeros(1, 2, 128, dtype=torch.float16), positions=torch.tensor([1.5]))
    with pytest.raises(TypeError, match=r"module: expected torch.nn.MultiheadAttention"):
        Attention.from_torch(torch.nn.Linear(4, 4))

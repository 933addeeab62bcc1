"""fastmqa.nn.Attention without a GPU: construction and the cache format of each
level, memory figures and report() against the library and fastmqa-bench levels,
weights from torch.nn.MultiheadAttention and a Llama-style attention, the torch
path of forward (prefill, then cached steps) against float64 SDPA attention, and
the FastMQA path with float64 definitions of the kernels in their place."""
import types

import pytest

torch = pytest.importorskip("torch")

import fastmqa  # noqa: E402
from conftest import bench_levels  # noqa: E402
from fastmqa import ops  # noqa: E402
from fastmqa.nn import Attention, FinalOptimizedFastMQA, _ring_slots  # noqa: E402
from reference import attention64, rel_err, ring_steps, rope64, run_calls  # noqa: E402


def layer(level="balanced", hidden=128, heads=8, kv_heads=2, seq=32, **kw):
    torch.manual_seed(0)
    return Attention(hidden, heads, kv_heads, optimization_level=level, max_seq_len=seq, **kw)


def test_each_level_sets_the_cache_format():
    # 128 tokens: the compressed balanced preset, run in its ring form (nn.py);
    # aggressive keeps full context here: its 16 score rows cost 136 / 40 bytes
    # per call (d 16, int8), so one score step in 114, and 114 steps of 4 drafts
    # leave no room in 128 tokens (fmqa_level_policy_preset)
    c, b, a = (layer(lv, max_batch=3, seq=128) for lv in ("conservative", "balanced",
                                                          "aggressive"))
    assert c.k_cache.shape == (3, 128, 2, 16) and c.k_cache.dtype == torch.float16
    assert c.k_scale is None
    assert b.k_cache.shape == (3, 32 + 4, 2, 16) and b.v_cache.dtype == torch.float16
    assert a.k_cache.dtype == torch.int8 and a.v_scale.shape == (3, 128, 2)
    assert a.v_scale.dtype == torch.float32
    assert (b.policy.window, b.policy.sink_tokens, b.policy.heavy) == (32, 4, 0)
    bf = layer("balanced", dtype=torch.bfloat16)
    assert bf.k_cache.dtype == torch.bfloat16 and bf.q_proj.weight.dtype == torch.bfloat16


def own_report(m):
    """The library's memory report of the policy the layer runs (a compressed
    level runs in its ring form: nn.py)."""
    return fastmqa.core.default_context().memory_report(m.model, m.policy, n_seqs=1)


def test_memory_figures_are_the_librarys():
    m = layer("aggressive", seq=4096)
    rep = own_report(m)
    assert m.policy.heavy == 0 and m.policy.window == 1024  # the ring form
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
        if ln.startswith("*"):  # the layer's own policy: the ring form of the level
            continue
        assert (kv, int(window), int(sinks), int(spec), int(per_token)) == \
            (r["kv_dtype"], r["window"], r["sink_tokens"], r["spec_tokens"],
             r["bytes_per_token"])
        assert red == f"{100 * r['reduction']:.1f}%" and mult == f"{r['cache_multiplier']:.1f}x"
    assert lines[-1].endswith("fastmqa-bench levels --hidden 256 --heads 8 --kv-heads 2 --seq 256")


def test_final_optimized_fastmqa_is_the_original_interface():
    torch.manual_seed(0)
    model = FinalOptimizedFastMQA(hidden_dim=2048, num_heads=32, optimization_level="balanced")
    assert model.num_kv_heads == 1 and model.head_dim == 64
    rep = own_report(model)
    assert (model.memory_reduction, model.cache_multiplier) == (rep.reduction,
                                                                rep.cache_multiplier)
    x = torch.randn(1, 5, 2048, dtype=torch.float16)
    y = model(x, use_cache=True)
    assert y.shape == x.shape and torch.isfinite(y).all()
    assert model.lengths.tolist() == [5]


def test_forward_names_a_dtype_that_is_not_the_weights():
    """A float32 x into the float16 layer failed in torch's matmul ("expected m1
    and m2 to have the same dtype"), naming neither x nor the layer."""
    model = layer()
    with pytest.raises(TypeError, match=r"x: expected a torch.float16 tensor on cpu like the "
                                        r"layer's weights, got torch.float32 on cpu"):
        model(torch.randn(1, 3, 128))
    assert model.lengths.tolist()[0] == 0  # nothing was cached


CALLS = (20, 1, 1, 4, 1)  # a prompt (torch prefill), then decode steps


@pytest.mark.parametrize("level,tol", [("conservative", 5e-3), ("balanced", 5e-3),
                                       ("aggressive", 3e-2)])
def test_cached_forward_matches_float64_attention(level, tol):
    """A 20-token prompt (torch prefill), one-token steps and a 4-token step, on a
    ring of 4 sinks + 8 slots that wraps: every output equals float64 attention
    with the same window and sinks over the whole sequence, where a step's tokens
    see what the ring holds after its append."""
    m = layer(level, max_batch=2)
    torch.manual_seed(1)
    x = torch.randn(2, 27, 128, dtype=torch.float16)
    outs = run_calls(m, x, CALLS)
    assert m.lengths.tolist() == [27, 27]
    steps = ring_steps(m, CALLS)
    assert rel_err(outs, attention64(m, x, m.policy.window, m.policy.sink_tokens, steps)) < tol
    whole = rel_err(outs, attention64(m, x, m.policy.window, m.policy.sink_tokens))
    if steps and m._period() == m.policy.window:
        assert whole > tol  # the 4-token step's early tokens lost 3 ring positions
    elif steps:
        assert whole < tol  # draft slots (spec_tokens - 1): every query sees its window


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
    ((64, 4), dict(head_dim=15), ValueError, r"head_dim: RoPE needs an even head_dim, got 15"),
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


# ---------------------------------------------------------------- the kernel path, on the CPU

def slot_of(pos, sinks, period, ring):
    """The cache slot of position(s) pos: the module's ring map (nn._ring_slots)."""
    pos = torch.as_tensor(pos, dtype=torch.long)
    return _ring_slots(pos, sinks, period) if ring else pos


def reference_append(k_new, v_new, k, v, start_pos, *, q=None, k_scale=None, v_scale=None,
                     page_table=None, kv_len=None, window=0, sink_tokens=0, ring=False,
                     rope="none", rope_theta=0.0, draft_slots=0):
    """fmqa_append as docs/reference.md defines it (contiguous caches, int8 or 16-bit),
    after the package's own argument checks."""
    ops.check_append(k_new, v_new, k, v, start_pos, q, k_scale, v_scale, page_table, kv_len,
                     window, sink_tokens, ring, rope, draft_slots)
    layout = fastmqa.Rope.parse(rope, "rope")
    rotate, gptj = layout != fastmqa.Rope.NONE, layout == fastmqa.Rope.GPTJ
    theta = rope_theta or 10000.0
    for b in range(k_new.shape[0]):
        s0 = int(start_pos[b])
        kn = rope64(k_new[b:b + 1].double(), s0, theta, gptj)[0] if rotate else \
            k_new[b].double()
        if q is not None and rotate:
            q[b] = rope64(q[b:b + 1].double(), s0, theta, gptj)[0].to(q.dtype)
        for t in range(k_new.shape[1]):
            slot = slot_of(s0 + t, sink_tokens, window + draft_slots, ring)
            for row, cache, scale in ((kn[t], k, k_scale), (v_new[b, t].double(), v, v_scale)):
                if scale is None:
                    cache[b, slot] = row.to(cache.dtype)
                    continue
                sc = (row.abs().amax(-1) / 127).float()
                codes = torch.where(sc[:, None] > 0, row / sc.double()[:, None],
                                    torch.zeros_like(row))
                cache[b, slot] = codes.round().clamp(-127, 127).to(torch.int8)
                scale[b, slot] = sc


def reference_decode(q, k, v, kv_lens, *, out=None, k_scale=None, v_scale=None,
                     page_table=None, kv_len=None, window=0, sink_tokens=0, causal=True,
                     ring=False, tree_mask=None, lse=None, sm_scale=0.0, workspace=None,
                     draft_slots=0):
    """fmqa_decode as docs/reference.md defines it (rules 1, 2, 3 and 5), in float64."""
    ops.check_decode(q, k, v, kv_lens, out, k_scale, v_scale, page_table, tree_mask, lse,
                     workspace, kv_len, window, sink_tokens, causal, ring, draft_slots)
    period = window + draft_slots
    B, tq, H, d = q.shape
    g = H // k.shape[2]
    for b in range(B):
        n = int(kv_lens[b])
        for t in range(tq):
            p = n - tq + t
            seen = [j for j in range(n) if j <= p and (not window or j > p - window or
                                                         j < sink_tokens)
                    and (not ring or j < sink_tokens or j >= n - period)]
            slots = slot_of(seen, sink_tokens, period, ring)
            kk, vv = k[b, slots].double(), v[b, slots].double()
            if k_scale is not None:
                kk = kk * k_scale[b, slots].double()[..., None]
                vv = vv * v_scale[b, slots].double()[..., None]
            for h in range(H):
                w = torch.softmax(kk[:, h // g] @ q[b, t, h].double() / d ** 0.5, 0)
                out[b, t, h] = (w @ vv[:, h // g]).to(out.dtype)
    return out


@pytest.mark.parametrize("level,tol", [("conservative", 5e-3), ("balanced", 5e-3),
                                       ("aggressive", 3e-2), ("gptj", 5e-3)])
def test_kernel_path_passes_what_the_kernels_need(monkeypatch, level, tol):
    """The module's FastMQA path (append with fused or torch RoPE, then decode, and
    the prefill's append) run with the float64 definitions of fmqa_append and
    fmqa_decode in place of the kernels, on the CPU: the arguments the module
    passes pass the package's checks and give float64 attention's outputs."""
    monkeypatch.setattr(Attention, "_kernels", lambda self, t: True)
    monkeypatch.setattr(ops, "_devices", lambda named, device=None: None)
    monkeypatch.setattr(ops, "append", reference_append)
    monkeypatch.setattr(ops, "decode", reference_decode)
    monkeypatch.setattr(ops, "decode_workspace",
                        lambda *a, **k: torch.empty(16, dtype=torch.uint8))
    if level == "gptj":  # a balanced policy with interleaved RoPE pairs
        pol = fastmqa.level_policy(hidden_size=128, num_q_heads=8, num_kv_heads=2,
                                   head_dim=16, max_seq_len=32, level="balanced")
        pol.rope = fastmqa.Rope.GPTJ
        m = layer(policy=pol, max_batch=2)
        assert m.rope_layout == fastmqa.Rope.GPTJ
    else:
        m = layer(level, max_batch=2)
    torch.manual_seed(1)
    x = torch.randn(2, 27, 128, dtype=torch.float16)
    with torch.no_grad():
        outs = run_calls(m, x, CALLS)
    steps = ring_steps(m, CALLS)
    assert rel_err(outs, attention64(m, x, m.policy.window, m.policy.sink_tokens, steps)) < tol

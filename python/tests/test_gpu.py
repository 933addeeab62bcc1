"""On a GPU: fastmqa.plan, decode, mla_decode, append and prefill against float64 references
computed with torch (SDPA for attention) on the same inputs, nn.Attention.forward against
float64 SDPA attention, a decode step captured in a CUDA graph and replayed on new
inputs, and decode under torch.compile.  Without a GPU every test skips with the
reason."""
import pytest

torch = pytest.importorskip("torch")

import torch.nn.functional as F  # noqa: E402

import fastmqa  # noqa: E402
from conftest import requires_gpu  # noqa: E402
from fastmqa.nn import Attention, _quantize  # noqa: E402
from reference import attention64, rel_err, ring_steps, rope64, run_calls  # noqa: E402

pytestmark = requires_gpu
DEV = "cuda"
TOL = {torch.float16: 2e-3, torch.bfloat16: 1e-2}


def cache(B, T, Hkv, d, kv, gen):
    """k, v [B, T, Hkv, d] in kv's format, their scales (8-bit) and their exact
    float64 values."""
    k, v = (torch.randn(B, T, Hkv, d, generator=gen, device=DEV) for _ in range(2))
    if kv in (torch.float16, torch.bfloat16):
        k, v = k.to(kv), v.to(kv)
        return k, v, None, None, k.double(), v.double()
    (kq, ks), (vq, vs) = _quantize(k, kv), _quantize(v, kv)
    k64, v64 = kq.double() * ks.double()[..., None], vq.double() * vs.double()[..., None]
    return kq, vq, ks, vs, k64, v64


def decode64(q, k64, v64, lens, window=0, sinks=0):
    """float64 decode: query token t of sequence b at position lens[b] - Tq + t sees
    positions <= its own (and within the window or a sink)."""
    B, Tq, H, d = q.shape
    g = H // k64.shape[2]
    out = []
    for b in range(B):
        n = int(lens[b])
        qpos = torch.arange(n - Tq, n, device=DEV)[:, None]
        j = torch.arange(n, device=DEV)[None, :]
        m = j <= qpos
        if window:
            m &= (j > qpos - window) | (j < sinks)
        kb = k64[b, :n].repeat_interleave(g, 1).transpose(0, 1)
        vb = v64[b, :n].repeat_interleave(g, 1).transpose(0, 1)
        out.append(F.scaled_dot_product_attention(q[b].double().transpose(0, 1), kb, vb,
                                                  attn_mask=m).transpose(0, 1))
    return torch.stack(out)


def test_plan_says_how_the_variant_was_chosen():
    p = fastmqa.level_problem(hidden_size=2048, num_q_heads=32, num_kv_heads=1,
                              max_seq_len=4096, batch=8)
    plan = fastmqa.plan(p)
    assert plan.source in ("tuned", "nearest", "default") and plan.template and plan.config
    assert plan.workspace_bytes >= 0
    assert fastmqa.device_info().sm_count > 0


@pytest.mark.parametrize("B,Tq,H,Hkv,d,kv,window", [
    (3, 1, 32, 1, 128, torch.float16, 0),
    (2, 4, 16, 2, 64, torch.bfloat16, 0),
    (2, 1, 8, 8, 64, torch.float16, 48),
    (2, 2, 32, 1, 128, torch.int8, 0),
    (1, 1, 32, 4, 128, torch.float8_e4m3fn, 0),
])
def test_decode_matches_float64_sdpa(B, Tq, H, Hkv, d, kv, window):
    gen = torch.Generator(device=DEV).manual_seed(7)
    T = 300
    qdt = torch.bfloat16 if kv == torch.bfloat16 else torch.float16
    q = torch.randn(B, Tq, H, d, generator=gen, device=DEV).to(qdt)
    k, v, ks, vs, k64, v64 = cache(B, T, Hkv, d, kv, gen)
    lens = torch.tensor([T - 37 * b for b in range(B)], dtype=torch.int32, device=DEV)
    out = torch.full((B, Tq, H, d), float("nan"), dtype=qdt, device=DEV)
    fastmqa.decode(q, k, v, lens, out=out, k_scale=ks, v_scale=vs, window=window,
                   sink_tokens=4 if window else 0)
    ref = decode64(q, k64, v64, lens.tolist(), window, 4 if window else 0)
    assert rel_err(out, ref) < TOL[qdt]


@pytest.mark.parametrize("kv,window", [(None, 0), (None, 40), (torch.float16, 0),
                                       (torch.int8, 48)])
def test_prefill_matches_float64_sdpa(kv, window):
    """Varlen prefill, K/V packed new tokens (kv None) or a cache holding a prefix
    and the new tokens (chunked prefill), against decode64 per sequence."""
    gen = torch.Generator(device=DEV).manual_seed(11)
    H, Hkv, d, tq = 16, 2, 64, [70, 1, 33]
    cu = torch.tensor([0, 70, 71, 104], dtype=torch.int32, device=DEV)
    q = torch.randn(104, H, d, generator=gen, device=DEV).half()
    sinks = 4 if window else 0
    out = torch.full((104, H, d), float("nan"), dtype=torch.float16, device=DEV)
    if kv is None:
        k, v = (torch.randn(104, Hkv, d, generator=gen, device=DEV).half() for _ in range(2))
        fastmqa.prefill(q, k, v, cu, max_q_tokens=70, out=out, window=window, sink_tokens=sinks)
        seqs = [(k[a:a + n].double()[None], v[a:a + n].double()[None], n)
                for a, n in zip((0, 70, 71), tq)]
    else:
        k, v, ks, vs, k64, v64 = cache(3, 200, Hkv, d, kv, gen)
        lens = [150, 40, 200]
        kv_lens = torch.tensor(lens, dtype=torch.int32, device=DEV)
        fastmqa.prefill(q, k, v, cu, max_q_tokens=70, out=out, kv_lens=kv_lens, k_scale=ks,
                        v_scale=vs, window=window, sink_tokens=sinks)
        seqs = [(k64[b:b + 1], v64[b:b + 1], lens[b]) for b in range(3)]
    for (kb, vb, n), a, t in zip(seqs, (0, 70, 71), tq):
        ref = decode64(q[a:a + t][None], kb, vb, [n], window, sinks)[0]
        assert rel_err(out[a:a + t], ref) < TOL[torch.float16]


def test_prefill_with_learned_sinks_and_softcap_matches_float64():
    """gpt-oss sinks (a logit in each head's denominator) and Gemma soft-capping
    (s = c tanh(s / c)) through fastmqa.prefill, against float64 per sequence."""
    gen = torch.Generator(device=DEV).manual_seed(13)
    H, Hkv, d, cap, tq = 8, 2, 64, 20.0, [40, 9]
    cu = torch.tensor([0, 40, 49], dtype=torch.int32, device=DEV)
    q, k, v = (torch.randn(49, h, d, generator=gen, device=DEV).half() * 2
               for h in (H, Hkv, Hkv))
    sinks = torch.randn(H, generator=gen, device=DEV)
    lse = torch.empty(49, H, device=DEV)
    out = fastmqa.prefill(q, k, v, cu, max_q_tokens=40, sinks=sinks, softcap=cap, lse=lse)
    for a, n in zip((0, 40), tq):
        qb, kb, vb = (t[a:a + n].double().transpose(0, 1) for t in (q, k, v))
        kb, vb = kb.repeat_interleave(H // Hkv, 0), vb.repeat_interleave(H // Hkv, 0)
        s = cap * torch.tanh(qb @ kb.transpose(1, 2) / d ** 0.5 / cap)
        s = s.masked_fill(~torch.ones(n, n, dtype=torch.bool, device=DEV).tril(), float("-inf"))
        s = torch.cat((s, sinks.double()[:, None, None].expand(H, n, 1)), dim=2)
        ref_lse = torch.logsumexp(s, dim=2)
        ref = (torch.exp(s[..., :n] - ref_lse[..., None]) @ vb).transpose(0, 1)
        assert rel_err(out[a:a + n], ref) < TOL[torch.float16]
        assert torch.allclose(lse[a:a + n].double(), ref_lse.transpose(0, 1), atol=1e-3)


@pytest.mark.parametrize("B,Tq,H,kv,window,split_q", [
    (2, 1, 16, torch.bfloat16, 0, False),
    (2, 2, 32, torch.float8_e4m3fn, 64, True),
])
def test_mla_decode_matches_float64_sdpa(B, Tq, H, kv, window, split_q):
    """MLA as the MQA of a latent row: K = the row, V = its first 512 values."""
    gen = torch.Generator(device=DEV).manual_seed(9)
    T, dc = 300, 512
    q = torch.randn(B, Tq, H, dc + 64, generator=gen, device=DEV).bfloat16()
    lat, ks = _quantize(torch.randn(B, T, 1, dc + 64, generator=gen, device=DEV), kv)
    lat64 = lat.double() * (ks.double()[..., None] if ks is not None else 1)
    lens = torch.tensor([T - 37 * b for b in range(B)], dtype=torch.int32, device=DEV)
    q_nope, q_pe = (q[..., :dc].clone(), q[..., dc:].clone()) if split_q else \
        (q[..., :dc], q[..., dc:])
    out = torch.full((B, Tq, H, dc), float("nan"), dtype=q.dtype, device=DEV)
    fastmqa.mla_decode(q_nope, q_pe, lat[:, :, 0], lens, out=out,
                       kv_scale=ks[:, :, 0] if ks is not None else None, window=window,
                       sink_tokens=4 if window else 0)
    ref = decode64(q, lat64, lat64[..., :dc], lens.tolist(), window, 4 if window else 0)
    assert rel_err(out, ref) < TOL[torch.bfloat16]


@pytest.mark.parametrize("kv", [torch.float16, torch.int8])
def test_append_writes_rotated_rows_and_rotates_q(kv):
    gen = torch.Generator(device=DEV).manual_seed(8)
    B, n, H, Hkv, d, T = 2, 3, 8, 2, 64, 32
    kn, vn = (torch.randn(B, n, Hkv, d, generator=gen, device=DEV).half() for _ in range(2))
    q = torch.randn(B, n, H, d, generator=gen, device=DEV).half()
    q0 = q.clone()
    k = torch.zeros(B, T, Hkv, d, dtype=kv, device=DEV)
    v = torch.zeros_like(k)
    eight = kv == torch.int8
    ks = torch.zeros(B, T, Hkv, device=DEV) if eight else None
    vs = torch.zeros(B, T, Hkv, device=DEV) if eight else None
    start = torch.tensor([0, 5], dtype=torch.int32, device=DEV)
    fastmqa.append(kn, vn, k, v, start, q=q, k_scale=ks, v_scale=vs, rope="neox",
                   rope_theta=10000.0)
    tol = 1e-2 if eight else 2e-3
    for b, s in enumerate((0, 5)):
        want_k = rope64(kn[b:b + 1].double(), s, 10000.0)[0]
        got_k, got_v = k[b, s:s + n].double(), v[b, s:s + n].double()
        if eight:
            got_k = got_k * ks[b, s:s + n, :, None].double()
            got_v = got_v * vs[b, s:s + n, :, None].double()
        assert rel_err(got_k, want_k) < tol
        assert rel_err(got_v, vn[b]) < tol
        assert rel_err(q[b], rope64(q0[b:b + 1].double(), s, 10000.0)[0]) < 2e-3
        others = torch.ones(T, dtype=torch.bool)
        others[s:s + n] = False
        assert not k[b, others].double().abs().any(), "append wrote outside its positions"


@pytest.mark.parametrize("level,tol", [("conservative", 5e-3), ("balanced", 5e-3),
                                       ("aggressive", 3e-2)])
def test_attention_forward_matches_float64_sdpa(level, tol):
    torch.manual_seed(0)
    m = Attention(1024, 16, 2, optimization_level=level, max_batch=2, max_seq_len=64,
                  device=DEV)
    x = torch.randn(2, 40, 1024, dtype=torch.float16, device=DEV)
    calls = (30, 1, 1, 1, 1, 1, 1, 4)  # a prompt (torch prefill), then FastMQA steps
    ref = attention64(m, x, m.policy.window, m.policy.sink_tokens, ring_steps(m, calls))
    with torch.no_grad():
        outs = run_calls(m, x, calls)
    assert m.lengths.tolist() == [40, 40]
    assert rel_err(outs, ref) < tol


def test_final_optimized_fastmqa_on_the_gpu():
    torch.manual_seed(0)
    model = fastmqa.nn.FinalOptimizedFastMQA(hidden_dim=2048, num_heads=32,
                                             optimization_level="balanced", device=DEV)
    x = torch.randn(1, 17, 2048, dtype=torch.float16, device=DEV)
    with torch.no_grad():
        y = torch.cat([model(x[:, :16], use_cache=True), model(x[:, 16:], use_cache=True)], 1)
    steps = ring_steps(model, (16, 1))
    assert rel_err(y, attention64(model, x, model.policy.window, 4, steps)) < 5e-3


def decode_inputs(seed):
    gen = torch.Generator(device=DEV).manual_seed(seed)
    q = torch.randn(4, 1, 32, 128, generator=gen, device=DEV).half()
    k, v = (torch.randn(4, 1024, 1, 128, generator=gen, device=DEV).half() for _ in range(2))
    lens = torch.tensor([1024, 1000, 517, 3], dtype=torch.int32, device=DEV)
    return q, k, v, lens


def test_a_decode_step_captured_in_a_cuda_graph_replays_on_new_inputs():
    q, k, v, lens = decode_inputs(9)
    out = torch.empty_like(q)
    ws = fastmqa.decode_workspace(q, k, v, lens, out)
    s = torch.cuda.Stream()
    s.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(s):  # warm-up: the plan (and kernel) is built here
        fastmqa.decode(q, k, v, lens, out=out, workspace=ws)
    torch.cuda.current_stream().wait_stream(s)
    g = torch.cuda.CUDAGraph()
    with torch.cuda.graph(g):
        fastmqa.decode(q, k, v, lens, out=out, workspace=ws)
    q2, k2, v2, _ = decode_inputs(10)
    for dst, src in ((q, q2), (k, k2), (v, v2)):
        dst.copy_(src)
    out.fill_(float("nan"))
    g.replay()
    torch.cuda.synchronize()
    want = fastmqa.decode(q2, k2, v2, lens)
    assert torch.equal(out, want)
    assert rel_err(out, decode64(q2, k2.double(), v2.double(), lens.tolist())) < 2e-3


def test_decode_under_torch_compile_equals_eager():
    q, k, v, lens = decode_inputs(11)
    ws = fastmqa.decode_workspace(q, k, v, lens, torch.empty_like(q))

    def step(q, k, v, lens, ws):
        return fastmqa.decode(q * 0.5, k, v, lens, workspace=ws) + 1

    got = torch.compile(step, fullgraph=True)(q, k, v, lens, ws)
    assert torch.equal(got, step(q, k, v, lens, ws))

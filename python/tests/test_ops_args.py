"""Bad tensors given to fastmqa.decode / mla_decode / append / prefill: a ValueError or TypeError
that names the argument and what was expected, before anything reaches the
library or the GPU (the library's context is replaced by one that fails the test
if it is asked for).  The checks run in the order type, rank, shape, dtype,
layout, device, so CPU tensors exercise every check but the last; correct CPU
tensors then fail on the device alone.  Also: the custom ops and their fake
implementations under torch.compile, on fake CUDA tensors (no GPU needed)."""
import pytest

torch = pytest.importorskip("torch")

import fastmqa  # noqa: E402
from fastmqa import core  # noqa: E402

F16 = torch.float16


@pytest.fixture(autouse=True)
def no_library(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError("a bad argument reached the library")
    monkeypatch.setattr(core, "default_context", refuse)


def dec(B=2, T=64, H=8, Hkv=2, d=64, Tq=1, kv=F16):
    """Well-formed decode arguments on the CPU."""
    a = dict(q=torch.zeros(B, Tq, H, d, dtype=F16), k=torch.zeros(B, T, Hkv, d, dtype=kv),
             v=torch.zeros(B, T, Hkv, d, dtype=kv),
             kv_lens=torch.full((B,), T, dtype=torch.int32))
    if kv in (torch.int8, torch.float8_e4m3fn):
        a["k_scale"] = torch.zeros(B, T, Hkv)
        a["v_scale"] = torch.zeros(B, T, Hkv)
    return a


def call_decode(a):
    a = dict(a)
    return fastmqa.decode(a.pop("q"), a.pop("k"), a.pop("v"), a.pop("kv_lens"), **a)


def app(B=2, n=3, T=64, H=8, Hkv=2, d=64):
    return dict(k_new=torch.zeros(B, n, Hkv, d, dtype=F16), v_new=torch.zeros(B, n, Hkv, d,
                                                                               dtype=F16),
                k=torch.zeros(B, T, Hkv, d, dtype=F16), v=torch.zeros(B, T, Hkv, d, dtype=F16),
                start_pos=torch.zeros(B, dtype=torch.int32),
                q=torch.zeros(B, n, H, d, dtype=F16))


def call_append(a):
    a = dict(a)
    return fastmqa.append(a.pop("k_new"), a.pop("v_new"), a.pop("k"), a.pop("v"),
                          a.pop("start_pos"), **a)


@pytest.mark.parametrize("change,exc,message", [
    (dict(q=[1.0]), TypeError, r"q: expected a torch.Tensor \[batch, q_tokens, heads, head_dim\]"),
    (dict(q=torch.zeros(2, 8, 64, dtype=F16)), ValueError, r"q: expected 4 dimensions"),
    (dict(q=torch.zeros(2, 1, 8, 64)), TypeError,
     r"q: expected dtype torch.float16 or torch.bfloat16, got torch.float32"),
    (dict(q=torch.zeros(2, 17, 8, 64, dtype=F16)), ValueError,
     r"q: q_tokens \(dimension 1\) is 17, decode serves 1..16"),
    (dict(q=torch.zeros(2, 1, 64, 8, dtype=F16).transpose(2, 3)), ValueError,
     r"q: the head dimension must be contiguous"),
    (dict(q=torch.zeros(2, 1, 8, 68, dtype=F16)[..., :64]), ValueError,
     r"q: strides \(544, 544, 68, 1\) \(elements of 2 bytes\) must be non-negative "
     r"multiples of 16 bytes"),
    (dict(q=torch.zeros(2 * 1 * 8 * 64 + 1, dtype=F16)[1:].view(2, 1, 8, 64)), ValueError,
     r"q: starts 1 elements into its storage"),
    (dict(q=torch.zeros(2, 1, 7, 64, dtype=F16)), ValueError,
     r"q: heads \(7\) must be a multiple of the cache's kv_heads \(2\)"),
    (dict(k=torch.zeros(2, 64, 2, 32, dtype=F16)), ValueError,
     r"k: head_dim \(dimension 3\) is 32, expected 64 \(q's head_dim\)"),
    (dict(k=torch.zeros(3, 64, 2, 64, dtype=F16), v=torch.zeros(3, 64, 2, 64, dtype=F16)),
     ValueError, r"k: batch \(dimension 0\) is 3, expected 2 \(q's batch\)"),
    (dict(v=torch.zeros(2, 32, 2, 64, dtype=F16)), ValueError,
     r"v: slots \(dimension 1\) is 32, expected 64 \(as in k\)"),
    (dict(k=torch.zeros(2, 64, 2, 64), v=torch.zeros(2, 64, 2, 64)), TypeError,
     r"k: expected dtype float16, bfloat16, int8 or float8_e4m3fn, got torch.float32"),
    (dict(v=torch.zeros(2, 64, 2, 64, dtype=torch.bfloat16)), TypeError,
     r"v: expected dtype torch.float16 like k, got torch.bfloat16"),
    (dict(k=torch.zeros(2, 64, 64, 2, dtype=F16).transpose(2, 3)), ValueError,
     r"k: the head dimension must be contiguous"),
    (dict(k_scale=torch.zeros(2, 64, 2)), ValueError,
     r"k_scale: only an 8-bit cache has scales; k is torch.float16"),
    (dict(kv_lens=torch.zeros(2, dtype=torch.int64)), TypeError,
     r"kv_lens: expected dtype torch.int32, got torch.int64"),
    (dict(kv_lens=torch.zeros(3, dtype=torch.int32)), ValueError,
     r"kv_lens: batch \(dimension 0\) is 3, expected 2 \(one per sequence of q\)"),
    (dict(out=torch.zeros(2, 1, 8, 32, dtype=F16)), ValueError,
     r"out: head_dim_v \(dimension 3\) is 32, expected 64"),
    (dict(out=torch.zeros(2, 1, 8, 64, dtype=torch.int8)), TypeError, r"out: expected dtype"),
    (dict(lse=torch.zeros(2, 1, 8, dtype=F16)), TypeError,
     r"lse: expected dtype torch.float32, got torch.float16"),
    (dict(tree_mask=torch.zeros(2, 2, dtype=torch.int64)), ValueError,
     r"tree_mask: q_tokens \(dimension 1\) is 2, expected 1"),
    (dict(workspace=torch.zeros(16, dtype=torch.float32)), TypeError,
     r"workspace: expected dtype torch.uint8"),
    (dict(ring=True, window=16, sink_tokens=4), ValueError,
     r"kv_len: required with ring=True"),
    (dict(ring=True, window=64, sink_tokens=4, kv_len=4096), ValueError,
     r"k: a ring of 4 sinks \+ 64 window \+ 0 draft slots needs 68 slots, the cache has 64"),
    (dict(ring=True), ValueError, r"ring: a ring cache needs window > 0"),
    (dict(kv_len=65), ValueError, r"kv_len: 65 exceeds the cache's 64 slots"),
    (dict(window=-1), ValueError,
     r"window \(-1\), sink_tokens \(0\) and draft_slots \(0\) must not be negative"),
    (dict(page_table=torch.zeros(2, 4, dtype=torch.int64)), TypeError,
     r"page_table: expected dtype torch.int32"),
    (dict(draft_slots=3), ValueError, r"draft_slots: 3 without ring=True"),
    (dict(ring=True, window=56, sink_tokens=4, draft_slots=5, kv_len=4096), ValueError,
     r"k: a ring of 4 sinks \+ 56 window \+ 5 draft slots needs 65 slots, the cache has 64"),
    (dict(sinks=torch.zeros(7)), ValueError, r"sinks: heads \(dimension 0\) is 7, expected 8"),
    (dict(sinks=torch.zeros(8, dtype=F16)), TypeError, r"sinks: expected dtype torch.float32"),
    (dict(softcap=-1.0), ValueError, r"softcap: -1.0, must be 0 \(off\) or finite"),
    (dict(softcap=float("nan")), ValueError, r"softcap: nan, must be 0 \(off\) or finite"),
    ({}, ValueError, r"q: expected a CUDA tensor, got device cpu"),
])
def test_bad_decode_arguments(change, exc, message):
    a = dec()
    a.update(change)
    with pytest.raises(exc, match=message):
        call_decode(a)


def test_8bit_cache_needs_float32_scales_of_its_shape():
    a = dec(kv=torch.int8)
    del a["v_scale"]
    with pytest.raises(ValueError, match=r"v_scale: required for an 8-bit cache"):
        call_decode(a)
    a = dec(kv=torch.float8_e4m3fn)
    a["k_scale"] = torch.zeros(2, 64, 1)
    with pytest.raises(ValueError, match=r"k_scale: kv_heads \(dimension 2\) is 1, expected 2"):
        call_decode(a)
    a = dec(kv=torch.int8)
    a["k_scale"] = a["k_scale"].half()
    with pytest.raises(TypeError, match=r"k_scale: expected dtype torch.float32"):
        call_decode(a)


def test_paged_cache_shapes_are_checked():
    a = dec()
    a["k"] = a["v"] = torch.zeros(10, 16, 2, 64, dtype=F16)  # pages of 16 tokens
    a["page_table"] = torch.zeros(3, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"page_table: batch \(dimension 0\) is 3, expected 2"):
        call_decode(a)
    a["page_table"] = torch.zeros(2, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"q: expected a CUDA tensor"):  # shapes accepted
        call_decode(a)


def test_every_tensor_must_be_on_the_same_cuda_device():
    from fastmqa.ops import _devices
    cuda = torch.empty(1, device="meta")  # a stand-in with device.type != cpu
    with pytest.raises(ValueError, match=r"k: expected a CUDA tensor, got device meta"):
        _devices([("q", None), ("k", cuda)])


@pytest.mark.parametrize("change,exc,message", [
    (dict(k_new=torch.zeros(2, 3, 2, 64)), TypeError, r"k_new: expected dtype torch.float16"),
    (dict(v_new=torch.zeros(2, 4, 2, 64, dtype=F16)), ValueError,
     r"v_new: new_tokens \(dimension 1\) is 4, expected 3 \(as in k_new\)"),
    (dict(q=torch.zeros(2, 3, 8, 32, dtype=F16)), ValueError,
     r"q: head_dim \(dimension 3\) is 32, expected 64 \(k_new's head_dim\)"),
    (dict(q=torch.zeros(2, 3, 8, 64, dtype=torch.bfloat16)), TypeError,
     r"q: expected dtype torch.float16 like k_new"),
    (dict(q=torch.zeros(2, 3, 64, 8, dtype=F16).transpose(2, 3)), ValueError,
     r"q: the head dimension must be contiguous"),
    (dict(k=torch.zeros(2, 64, 4, 64, dtype=F16), v=torch.zeros(2, 64, 4, 64, dtype=F16)),
     ValueError, r"k: kv_heads \(dimension 2\) is 4, expected 2 \(k_new's kv_heads\)"),
    (dict(k=torch.zeros(2, 64, 2, 32, dtype=F16), v=torch.zeros(2, 64, 2, 32, dtype=F16)),
     ValueError, r"k: head_dim \(dimension 3\) is 32, expected 64 \(k_new's head_dim\)"),
    (dict(k=torch.zeros(3, 64, 2, 64, dtype=F16), v=torch.zeros(3, 64, 2, 64, dtype=F16)),
     ValueError, r"k: batch \(dimension 0\) is 3, expected 2 \(k_new's batch\)"),
    (dict(start_pos=torch.zeros(2, dtype=torch.int16)), TypeError,
     r"start_pos: expected dtype torch.int32"),
    (dict(start_pos=torch.zeros(4, dtype=torch.int32)[::2]), ValueError,
     r"start_pos: must be contiguous"),
    (dict(rope="yarn"), ValueError, r"rope: expected one of none, neox, gptj"),
    (dict(ring=True, window=8), ValueError, r"kv_len: required with ring=True"),
    ({}, ValueError, r"k_new: expected a CUDA tensor, got device cpu"),
])
def test_bad_append_arguments(change, exc, message):
    a = app()
    a.update(change)
    with pytest.raises(exc, match=message):
        call_append(a)


# ---------------------------------------------------------------- torch.compile, no GPU

def test_ops_compile_into_one_graph_with_fake_cuda_tensors(monkeypatch):
    """torch.compile(fullgraph=True) traces append, decode and prefill (their
    register_fake) with no graph break; fake CUDA tensors need no GPU, and nothing
    reaches the library."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    def step(q, k, v, kn, vn, start, lens, ws, cu, sinks):
        fastmqa.append(kn, vn, k, v, start, q=q, rope="neox", rope_theta=1e4)
        pre = fastmqa.prefill(q.view(2, 8, 64), k.view(256, 2, 64)[:2], v.view(256, 2, 64)[:2],
                              cu, max_q_tokens=1, workspace=ws, sinks=sinks, softcap=30.0)
        return fastmqa.decode(q, k, v, lens, workspace=ws) * 2 + pre.view(2, 1, 8, 64)

    with FakeTensorMode():
        c = dict(device="cuda", dtype=F16)
        q = torch.empty(2, 1, 8, 64, **c)
        k, v = torch.empty(2, 128, 2, 64, **c), torch.empty(2, 128, 2, 64, **c)
        kn, vn = torch.empty(2, 1, 2, 64, **c), torch.empty(2, 1, 2, 64, **c)
        ints = dict(device="cuda", dtype=torch.int32)
        start, lens = torch.empty(2, **ints), torch.empty(2, **ints)
        ws = torch.empty(64, device="cuda", dtype=torch.uint8)
        cu = torch.empty(3, **ints)
        sinks = torch.empty(8, device="cuda")
        out = torch.compile(step, backend=backend, fullgraph=True)(q, k, v, kn, vn, start,
                                                                    lens, ws, cu, sinks)
        assert out.shape == (2, 1, 8, 64) and out.device.type == "cuda"
    code = graphs[0].code
    assert len(graphs) == 1
    assert "torch.ops.fastmqa.append" in code and "torch.ops.fastmqa.decode" in code
    assert "torch.ops.fastmqa.prefill" in code


def test_ops_are_registered_with_their_schemas():
    assert "Tensor(a4!) out" in str(torch.ops.fastmqa.decode.default._schema)
    schema = str(torch.ops.fastmqa.append.default._schema)
    assert "Tensor(a2!) k" in schema and "Tensor(a5!)? q" in schema
    schema = str(torch.ops.fastmqa.prefill.default._schema)
    assert "Tensor(a4!) out" in schema and "Tensor(a10!)? lse" in schema, schema
    assert "Tensor? sinks, float softcap" in schema, schema


# ---------------------------------------------------------------- prefill

def pre(B=3, Tq=50, H=8, Hkv=2, d=64, cache=False, T=256):
    """Well-formed varlen prefill arguments on the CPU: B sequences of up to Tq new
    tokens packed by cu_seqlens_q; K/V packed, or (cache) a [B, T, Hkv, d] cache."""
    total = B * Tq - 7
    a = dict(q=torch.zeros(total, H, d, dtype=F16),
             cu_seqlens_q=torch.tensor([0, Tq, 2 * Tq, total], dtype=torch.int32)[:B + 1],
             max_q_tokens=Tq)
    if cache:
        a.update(k=torch.zeros(B, T, Hkv, d, dtype=F16), v=torch.zeros(B, T, Hkv, d, dtype=F16),
                 kv_lens=torch.full((B,), T, dtype=torch.int32))
    else:
        a.update(k=torch.zeros(total, Hkv, d, dtype=F16), v=torch.zeros(total, Hkv, d, dtype=F16))
    return a


def call_prefill(a):
    a = dict(a)
    return fastmqa.prefill(a.pop("q"), a.pop("k"), a.pop("v"), a.pop("cu_seqlens_q"), **a)


@pytest.mark.parametrize("cache,change,exc,message", [
    (0, dict(q=torch.zeros(2, 143, 8, 64, dtype=F16)), ValueError,
     r"q: expected 3 dimensions \[total_q, heads, head_dim\]"),
    (0, dict(q=torch.zeros(143, 8, 64)), TypeError, r"q: expected dtype torch.float16 or"),
    (0, dict(q=torch.zeros(143, 64, 8, dtype=F16).transpose(1, 2)), ValueError,
     r"q: the head dimension must be contiguous"),
    (0, dict(cu_seqlens_q=torch.zeros(4, dtype=torch.int64)), TypeError,
     r"cu_seqlens_q: expected dtype torch.int32"),
    (0, dict(cu_seqlens_q=torch.zeros(1, dtype=torch.int32)), ValueError,
     r"cu_seqlens_q: must be contiguous with batch \+ 1 >= 2 offsets"),
    (0, dict(max_q_tokens=0), ValueError, r"max_q_tokens: 0, expected an int >= 1"),
    (0, dict(max_q_tokens=40), ValueError,
     r"q: total_q \(dimension 0\) is 143, more than batch 3 x max_q_tokens 40"),
    (0, dict(k=torch.zeros(142, 2, 64, dtype=F16)), ValueError,
     r"k: total_q \(dimension 0\) is 142, expected 143 \(q's total_q\)"),
    (0, dict(k=torch.zeros(143, 2, 64, dtype=torch.bfloat16),
             v=torch.zeros(143, 2, 64, dtype=torch.bfloat16)), TypeError,
     r"k: expected dtype torch.float16 like q \(new tokens\)"),
    (0, dict(k=torch.zeros(143, 2, 32, dtype=F16)), ValueError,
     r"k: head_dim \(dimension 2\) is 32, expected 64"),
    (0, dict(v=torch.zeros(143, 4, 64, dtype=F16)), ValueError,
     r"v: kv_heads \(dimension 1\) is 4, expected 2 \(as in k\)"),
    (0, dict(q=torch.zeros(143, 7, 64, dtype=F16)), ValueError,
     r"q: heads \(7\) must be a multiple of kv_heads \(2\)"),
    (0, dict(page_table=torch.zeros(3, 4, dtype=torch.int32)), ValueError,
     r"page_table: only a cache \(kv_lens given\) has one"),
    (0, dict(kv_len=64), ValueError, r"kv_len: 64, without a cache the new tokens are all"),
    (0, dict(out=torch.zeros(143, 8, 32, dtype=F16)), ValueError,
     r"out: head_dim_v \(dimension 2\) is 32, expected 64"),
    (0, dict(lse=torch.zeros(143, 8, dtype=F16)), TypeError, r"lse: expected dtype torch.float32"),
    (0, dict(window=-2), ValueError, r"window \(-2\) and sink_tokens \(0\) must not be negative"),
    (1, dict(kv_lens=torch.zeros(2, dtype=torch.int32)), ValueError,
     r"kv_lens: batch \(dimension 0\) is 2, expected 3 \(one per sequence of q\)"),
    (1, dict(k=torch.zeros(2, 256, 2, 64, dtype=F16), v=torch.zeros(2, 256, 2, 64, dtype=F16)),
     ValueError, r"k: batch \(dimension 0\) is 2, expected 3 \(q's batch\)"),
    (1, dict(k=torch.zeros(3, 256, 2, 64, dtype=torch.int8),
             v=torch.zeros(3, 256, 2, 64, dtype=torch.int8)), ValueError,
     r"k_scale: required for an 8-bit cache"),
    (1, dict(max_q_tokens=300, kv_len=256), ValueError,
     r"max_q_tokens: 300 exceeds kv_len 256 \(the cache holds the new tokens\)"),
    (1, dict(kv_len=257), ValueError, r"kv_len: 257 exceeds the cache's 256 slots"),
    (0, {}, ValueError, r"q: expected a CUDA tensor, got device cpu"),
    (1, {}, ValueError, r"q: expected a CUDA tensor, got device cpu"),
    (0, dict(sinks=torch.zeros(4)), ValueError,
     r"sinks: heads \(dimension 0\) is 4, expected 8 \(q's heads\)"),
    (0, dict(sinks=torch.zeros(8, dtype=F16)), TypeError, r"sinks: expected dtype torch.float32"),
    (1, dict(sinks=torch.zeros(8, 2)[:, 0]), ValueError, r"sinks: must be contiguous"),
    (0, dict(softcap=-1.0), ValueError, r"softcap: -1.0, must be 0 \(off\) or finite"),
    (1, dict(softcap=float("inf")), ValueError, r"softcap: inf, must be 0 \(off\) or finite"),
    (0, dict(sinks=torch.zeros(8), softcap=30.0), ValueError,
     r"q: expected a CUDA tensor, got device cpu"),
])
def test_bad_prefill_arguments(cache, change, exc, message):
    a = pre(cache=bool(cache))
    a.update(change)
    with pytest.raises(exc, match=message):
        call_prefill(a)


def test_prefill_problem_fields(monkeypatch):
    from fastmqa import ops
    from fastmqa.ops import check_prefill
    monkeypatch.setattr(ops, "_devices", lambda named: None)  # CPU tensors stand in
    a = pre(cache=True)
    f = check_prefill(a["q"], a["k"], a["v"], a["cu_seqlens_q"], torch.zeros(143, 8, 64, dtype=F16),
                      50, kv_lens=a["kv_lens"], window=64, sink_tokens=4)
    assert (f["op"], f["batch"], f["q_tokens"], f["kv_len"]) == (fastmqa.Op.PREFILL, 3, 50, 256)
    assert f["flags"] == fastmqa.FLAG_CAUSAL | fastmqa.FLAG_KV_CACHE
    a = pre()
    f = check_prefill(a["q"], a["k"], a["v"], a["cu_seqlens_q"], torch.zeros(143, 8, 64, dtype=F16),
                      50, lse=torch.zeros(143, 8), causal=False)
    assert (f["kv_len"], f["flags"], f["num_kv_heads"]) == (50, fastmqa.FLAG_LSE, 2)
    assert f["logit_softcap"] == 0.0
    f = check_prefill(a["q"], a["k"], a["v"], a["cu_seqlens_q"], torch.zeros(143, 8, 64, dtype=F16),
                      50, sinks=torch.zeros(8), softcap=30.0)
    assert f["logit_softcap"] == 30.0


def test_prefill_passes_sinks_and_softcap_to_the_library(monkeypatch):
    """The op fills fmqa_prefill_args.sinks and problem.logit_softcap (what the C
    API takes); the library call is intercepted, CPU tensors stand in for the
    op's function (_init_fn: what the CUDA kernel registration runs)."""
    from fastmqa import ops
    seen = {}

    class Ctx:
        def prefill_raw(self, problem, args, stream):
            seen.update(softcap=problem.logit_softcap, sinks=args.sinks)

    monkeypatch.setattr(ops, "_devices", lambda named: None)
    monkeypatch.setattr(core, "default_context", lambda device: Ctx())
    monkeypatch.setattr(ops, "_stream", lambda device: 0)
    a = pre()
    sinks = torch.zeros(8)
    ops._prefill_op._init_fn(a["q"], a["k"], a["v"], a["cu_seqlens_q"], torch.zeros(143, 8, 64, dtype=F16),
                    torch.zeros(64, dtype=torch.uint8), None, None, None, None, None, 50, 50, 0,
                    0, True, 0.0, sinks, 30.0)
    assert seen == dict(softcap=30.0, sinks=sinks.data_ptr())
    ops._prefill_op._init_fn(a["q"], a["k"], a["v"], a["cu_seqlens_q"], torch.zeros(143, 8, 64, dtype=F16),
                    torch.zeros(64, dtype=torch.uint8), None, None, None, None, None, 50, 50, 0,
                    0, True, 0.0, None, 0.0)
    assert seen == dict(softcap=0.0, sinks=None)


def csr_dec(B=2, pages=10, ps=16):
    """Decode arguments over a CSR page table (lengths from the table)."""
    a = dec(B=B)
    a["k"] = a["v"] = torch.zeros(pages, ps, 2, 64, dtype=F16)
    a["kv_lens"] = None
    a["page_indptr"] = torch.tensor([0, 3, 5], dtype=torch.int32)
    a["page_indices"] = torch.arange(5, dtype=torch.int32)
    a["last_page_len"] = torch.tensor([7, 16], dtype=torch.int32)
    return a


def test_layout_csr_page_table_is_checked(monkeypatch):
    """FlashInfer's paged_kv arrays: all three, int32 of their sizes, kv_lens None."""
    from fastmqa import ops
    with pytest.raises(ValueError, match=r"q: expected a CUDA tensor"):  # shapes accepted
        call_decode(csr_dec())
    monkeypatch.setattr(ops, "_devices", lambda named: None)  # CPU tensors, fields only
    fields = ops.check_decode(**{**csr_dec(), "out": torch.zeros(2, 1, 8, 64, dtype=F16)})
    assert fields["flags"] & fastmqa._capi.FLAG_PAGE_CSR and fields["page_size"] == 16
    assert fields["kv_len"] == 160  # every page of the cache
    for change, exc, message in [
        (dict(kv_lens=torch.zeros(2, dtype=torch.int32)), ValueError,
         r"kv_lens: must be None with a CSR page table"),
        (dict(last_page_len=None), ValueError, r"a CSR page table needs all of them"),
        (dict(page_indptr=torch.zeros(2, dtype=torch.int32)), ValueError,
         r"page_indptr: batch_plus_1 \(dimension 0\) is 2, expected 3"),
        (dict(page_indices=torch.zeros(5, dtype=torch.int64)), TypeError,
         r"page_indices: expected dtype torch.int32"),
        (dict(page_table=torch.zeros(2, 4, dtype=torch.int32)), ValueError,
         r"a 2-D page table or a CSR one, not both"),
    ]:
        with pytest.raises(exc, match=message):
            call_decode({**csr_dec(), **change})


def test_layout_hnd_pages_are_a_transposed_view(monkeypatch):
    """HND pages [pages, Hkv, page_size, d] pass as k.transpose(1, 2): the
    strides carry the layout into the args."""
    from fastmqa import ops
    monkeypatch.setattr(ops, "_devices", lambda named: None)  # CPU tensors, fields only
    hnd = torch.zeros(10, 2, 16, 64, dtype=F16)
    a = dec()
    a["k"] = hnd.transpose(1, 2)
    a["v"] = torch.zeros(10, 16, 2, 64, dtype=F16)  # V NHD: K and V may differ
    a["page_table"] = torch.zeros(2, 4, dtype=torch.int32)
    fields = ops.check_decode(**a, out=torch.zeros(2, 1, 8, 64, dtype=F16))
    assert fields["page_size"] == 16 and fields["num_kv_heads"] == 2
    args = fastmqa._capi.DecodeArgs()
    ops._fill(args, "k", a["k"])
    assert (args.k_stride_batch, args.k_stride_token, args.k_stride_head) == (2048, 64, 1024)


def test_layout_slot_mapping_is_checked(monkeypatch):
    """vLLM's slot mapping: [batch, new_tokens] int32, instead of a page table."""
    from fastmqa import ops
    a = app()
    a["k"] = a["v"] = torch.zeros(10, 16, 2, 64, dtype=F16)
    a["slot_mapping"] = torch.zeros(2, 3, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"k_new: expected a CUDA tensor"):
        call_append(a)
    monkeypatch.setattr(ops, "_devices", lambda named: None)  # CPU tensors, fields only
    fields = ops.check_append(**a)
    assert fields["flags"] & fastmqa._capi.FLAG_SLOT_MAPPING
    assert fields["flags"] & fastmqa._capi.FLAG_PAGED and fields["page_size"] == 16
    for change, exc, message in [
        (dict(slot_mapping=torch.zeros(2, 4, dtype=torch.int32)), ValueError,
         r"slot_mapping: new_tokens \(dimension 1\) is 4, expected 3"),
        (dict(slot_mapping=torch.zeros(2, 3, dtype=torch.int64)), TypeError,
         r"slot_mapping: expected dtype torch.int32"),
        (dict(page_table=torch.zeros(2, 4, dtype=torch.int32)), ValueError,
         r"slot_mapping: replaces the page table"),
    ]:
        with pytest.raises(exc, match=message):
            call_append({**a, **change})


# ---------------------------------------------------------------- MLA decode

def mla(B=2, T=64, H=16, Tq=1, kv=F16, d_c=512, d_r=64):
    """Well-formed MLA decode arguments on the CPU: q_nope and q_pe the two parts
    of one query tensor, a latent cache [B, T, d_c + d_r]."""
    q = torch.zeros(B, Tq, H, d_c + d_r, dtype=F16)
    a = dict(q_nope=q[..., :d_c], q_pe=q[..., d_c:], kv=torch.zeros(B, T, d_c + d_r, dtype=kv),
             kv_lens=torch.full((B,), T, dtype=torch.int32))
    if kv == torch.float8_e4m3fn:
        a["kv_scale"] = torch.zeros(B, T)
    return a


def call_mla(a):
    a = dict(a)
    return fastmqa.mla_decode(a.pop("q_nope"), a.pop("q_pe"), a.pop("kv"), a.pop("kv_lens"), **a)


@pytest.mark.parametrize("change,exc,message", [
    (dict(q_nope=[1.0]), TypeError,
     r"q_nope: expected a torch.Tensor \[batch, q_tokens, heads, latent\]"),
    (dict(q_pe=torch.zeros(2, 1, 8, 64, dtype=F16)), ValueError,
     r"q_pe: heads \(dimension 2\) is 8, expected 16 \(as in q_nope\)"),
    (dict(q_pe=torch.zeros(2, 1, 16, 64, dtype=torch.bfloat16)), TypeError,
     r"q_pe: expected dtype torch.float16 like q_nope"),
    (dict(q_nope=torch.zeros(2, 17, 16, 512, dtype=F16),
          q_pe=torch.zeros(2, 17, 16, 64, dtype=F16)), ValueError,
     r"q_nope: q_tokens \(dimension 1\) is 17, decode serves 1..16"),
    (dict(q_pe=torch.zeros(2, 1, 16, 68, dtype=F16)[..., :64]), ValueError,
     r"q_pe: strides \(1088, 1088, 68, 1\)"),
    (dict(kv=torch.zeros(2, 64, 512, dtype=F16)), ValueError,
     r"kv: latent_rope \(dimension 2\) is 512, expected 576 \(q_nope's latent \+ q_pe's rope\)"),
    (dict(kv=torch.zeros(3, 64, 576, dtype=F16)), ValueError,
     r"kv: batch \(dimension 0\) is 3, expected 2 \(q_nope's batch\)"),
    (dict(kv=torch.zeros(2, 64, 576, dtype=torch.int8)), TypeError,
     r"kv: expected dtype float16, bfloat16 or float8_e4m3fn, got torch.int8"),
    (dict(kv_scale=torch.zeros(2, 64)), ValueError,
     r"kv_scale: only an fp8 latent cache has scales; kv is torch.float16"),
    (dict(out=torch.zeros(2, 1, 16, 576, dtype=F16)), ValueError,
     r"out: latent \(dimension 3\) is 576, expected 512 \(q_nope's latent\); shape "
     r"\(2, 1, 16, 576\), expected \(2, 1, 16, 512\)"),
    # The query's parts and the cache disagree: the part off the sizes the kernels
    # serve (latent 512 + rope 64) is named, with the shape it should have.
    (dict(q_nope=torch.zeros(2, 1, 16, 256, dtype=F16)), ValueError,
     r"q_nope: latent \(dimension 3\) is 256, expected 512 \(kv's latent_rope 576 - q_pe's "
     r"rope 64\); shape \(2, 1, 16, 256\), expected \(2, 1, 16, 512\)"),
    (dict(q_pe=torch.zeros(2, 1, 16, 32, dtype=F16)), ValueError,
     r"q_pe: rope \(dimension 3\) is 32, expected 64 \(kv's latent_rope 576 - q_nope's latent "
     r"512\); shape \(2, 1, 16, 32\), expected \(2, 1, 16, 64\)"),
    (dict(out=torch.zeros(2, 1, 16, 512)), TypeError,
     r"out: expected dtype torch.float16 or torch.bfloat16, got torch.float32"),
    (dict(lse=torch.zeros(2, 1, 16, dtype=F16)), TypeError, r"lse: expected dtype torch.float32"),
    (dict(lse=torch.zeros(2, 1, 32)[..., ::2]), ValueError, r"lse: must be contiguous"),
    (dict(workspace=torch.zeros(64)), TypeError, r"workspace: expected dtype torch.uint8"),
    (dict(kv_lens=torch.zeros(2, dtype=torch.int64)), TypeError,
     r"kv_lens: expected dtype torch.int32"),
    (dict(lse=torch.zeros(2, 1, 8)), ValueError, r"lse: heads \(dimension 2\) is 8, expected 16"),
    (dict(sinks=torch.zeros(16, dtype=F16)), TypeError, r"sinks: expected dtype torch.float32"),
    (dict(ring=True, window=32, sink_tokens=4, kv_len=4096, draft_slots=29), ValueError,
     r"kv: a ring of 4 sinks \+ 32 window \+ 29 draft slots needs 65 slots, the cache has 64"),
    (dict(page_table=torch.zeros(2, 4, dtype=torch.int64)), TypeError,
     r"page_table: expected dtype torch.int32"),
    ({}, ValueError, r"q_nope: expected a CUDA tensor, got device cpu"),
])
def test_bad_mla_decode_arguments(change, exc, message):
    a = mla()
    a.update(change)
    with pytest.raises(exc, match=message):
        call_mla(a)


def test_fp8_latent_needs_float32_scales_of_its_shape():
    a = mla(kv=torch.float8_e4m3fn)
    del a["kv_scale"]
    with pytest.raises(ValueError, match=r"kv_scale: required for an fp8 latent cache"):
        call_mla(a)
    a = mla(kv=torch.float8_e4m3fn)
    a["kv_scale"] = torch.zeros(2, 32)
    with pytest.raises(ValueError, match=r"kv_scale: slots \(dimension 1\) is 32, expected 64"):
        call_mla(a)


def test_paged_latent_cache_shapes_are_checked():
    a = mla()
    a["kv"] = torch.zeros(10, 16, 576, dtype=F16)  # pages of 16 tokens
    a["page_table"] = torch.zeros(3, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"page_table: batch \(dimension 0\) is 3, expected 2"):
        call_mla(a)
    a["page_table"] = torch.zeros(2, 4, dtype=torch.int32)
    with pytest.raises(ValueError, match=r"q_nope: expected a CUDA tensor"):  # shapes accepted
        call_mla(a)


def test_mla_query_parts_are_read_in_place_when_adjacent():
    from fastmqa.ops import _joined_q
    q = torch.randn(2, 1, 16, 576).half()
    joined = _joined_q(q[..., :512], q[..., 512:])
    assert joined.data_ptr() == q.data_ptr() and torch.equal(joined, q)
    apart = (q[..., :512].clone(), q[..., 512:].clone())  # two tensors: one copy
    joined = _joined_q(*apart)
    assert joined.data_ptr() != q.data_ptr() and torch.equal(joined, q)


def test_mla_decode_op_is_registered_and_compiles_with_fake_cuda_tensors():
    from torch._subclasses.fake_tensor import FakeTensorMode
    schema = str(torch.ops.fastmqa.mla_decode.default._schema)
    assert "Tensor(a4!) out" in schema and "Tensor? sinks" in schema
    graphs = []

    def backend(gm, inputs):
        graphs.append(gm)
        return gm.forward

    def step(q_nope, q_pe, kv, lens, ws):
        return fastmqa.mla_decode(q_nope, q_pe, kv, lens, workspace=ws) + 1

    with FakeTensorMode():
        c = dict(device="cuda", dtype=torch.bfloat16)
        q = torch.empty(2, 1, 16, 576, **c)
        kv = torch.empty(2, 128, 576, **c)
        lens = torch.empty(2, device="cuda", dtype=torch.int32)
        ws = torch.empty(64, device="cuda", dtype=torch.uint8)
        out = torch.compile(step, backend=backend, fullgraph=True)(q[..., :512], q[..., 512:],
                                                                    kv, lens, ws)
        assert out.shape == (2, 1, 16, 512)
    assert len(graphs) == 1 and "torch.ops.fastmqa.mla_decode" in graphs[0].code


# ---------------------------------------------------------------- every argument named

def _well_formed(op, dev):
    """Keyword arguments of ops.check_<op> that pass every check, on `dev` (fake
    tensors: any device without one), with every optional tensor given."""
    i32 = dict(dtype=torch.int32, device=dev)
    f16, f32 = dict(dtype=F16, device=dev), dict(device=dev)
    if op == "decode":
        return dict(q=torch.empty(2, 2, 8, 64, **f16), k=torch.empty(2, 64, 2, 64, device=dev,
                    dtype=torch.int8), v=torch.empty(2, 64, 2, 64, device=dev, dtype=torch.int8),
                    kv_lens=torch.empty(2, **i32), out=torch.empty(2, 2, 8, 64, **f16),
                    k_scale=torch.empty(2, 64, 2, **f32), v_scale=torch.empty(2, 64, 2, **f32),
                    tree_mask=torch.empty(2, 2, dtype=torch.int64, device=dev),
                    lse=torch.empty(2, 2, 8, **f32), workspace=torch.empty(64, dtype=torch.uint8,
                                                                           device=dev),
                    sinks=torch.empty(8, **f32))
    if op == "mla_decode":
        return dict(q_nope=torch.empty(2, 1, 16, 512, **f16), q_pe=torch.empty(2, 1, 16, 64, **f16),
                    kv=torch.empty(2, 64, 576, dtype=torch.float8_e4m3fn, device=dev),
                    kv_lens=torch.empty(2, **i32), out=torch.empty(2, 1, 16, 512, **f16),
                    kv_scale=torch.empty(2, 64, **f32), lse=torch.empty(2, 1, 16, **f32),
                    sinks=torch.empty(16, **f32))
    if op == "append":
        return dict(k_new=torch.empty(2, 3, 2, 64, **f16), v_new=torch.empty(2, 3, 2, 64, **f16),
                    k=torch.empty(2, 64, 2, 64, **f16), v=torch.empty(2, 64, 2, 64, **f16),
                    start_pos=torch.empty(2, **i32), q=torch.empty(2, 3, 8, 64, **f16))
    return dict(q=torch.empty(40, 8, 64, **f16), k=torch.empty(2, 64, 2, 64, **f16),
                v=torch.empty(2, 64, 2, 64, **f16), cu_seqlens_q=torch.empty(3, **i32),
                out=torch.empty(40, 8, 64, **f16), max_q_tokens=20, kv_lens=torch.empty(2, **i32),
                page_table=None, lse=torch.empty(40, 8, **f32), sinks=torch.empty(8, **f32))


@pytest.mark.parametrize("op", ["decode", "mla_decode", "append", "prefill"])
def test_every_tensor_argument_is_named_for_its_shape_dtype_and_device(op):
    """For each tensor argument of each op: one more dimension, a float64 dtype,
    or the CPU instead of the others' CUDA device is reported as that argument's
    fault (the message starts with its name), not another's."""
    from torch._subclasses.fake_tensor import FakeTensorMode
    from fastmqa import ops
    check = getattr(ops, f"check_{op}")
    with FakeTensorMode(allow_non_fake_inputs=False):
        good = _well_formed(op, "cuda")
        check(**good)  # well-formed: no error
        for name, t in good.items():
            if not isinstance(t, torch.Tensor):
                continue
            for how, bad in (("rank", t.unsqueeze(0)), ("dtype", t.to(torch.float64)),
                             ("device", torch.empty(t.shape, dtype=t.dtype, device="cpu"))):
                with pytest.raises((ValueError, TypeError)) as e:
                    check(**dict(good, **{name: bad}))
                assert str(e.value).startswith(f"{name}:"), (op, name, how, str(e.value))

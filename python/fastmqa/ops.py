"""ops.py -- decode, MLA decode, append and prefill on torch tensors, as torch custom ops.

decode(), mla_decode(), append() and prefill() check their tensors in Python (type,
rank, shape, dtype, head-dim contiguity, 16-byte strides, device: in that order, so
the first fault found is named with the argument and what was expected) and then
call the custom ops torch.ops.fastmqa.decode / mla_decode / append / prefill.  The ops launch on the
current torch stream of the tensors' device through default_context(device), do
no host synchronisation and allocate nothing, so they can be captured in a CUDA
graph once a first eager call has built the launch plan (plans compile kernels,
which graph capture does not allow); their fake implementations make them
traceable by torch.compile.  Pass `workspace` (decode_workspace(),
prefill_workspace()) when compiling or capturing: computing its size asks the
library, which torch.compile cannot trace.

Layouts follow include/fastmqa.h, strides are read off the tensors:
  q, out       [batch, q_tokens, heads, head_dim]
  k, v cache   [batch, slots, kv_heads, head_dim]  (paged: [pages, page_size, ...])
               HND pages [pages, kv_heads, page_size, head_dim]: pass the view
               k.transpose(1, 2) (the strides carry the layout; K and V may differ)
  k/v_scale    [batch | pages, slots, kv_heads] float32 (8-bit caches only)
  kv_lens      [batch] int32: each sequence's length including its query tokens
  start_pos    [batch] int32: position of each sequence's first new token
  prefill (varlen): q, out [total_q, heads, head_dim] packed by cu_seqlens_q
               [batch + 1] int32; k, v packed likewise [total_q, kv_heads,
               head_dim], or with kv_lens a cache as above
  page tables  page_table [batch, pages_per_seq] int32, or FlashInfer's CSR form:
               page_indptr [batch + 1], page_indices [nnz], last_page_len [batch]
               int32 (decode: the lengths are the table's, kv_lens None); append
               also takes vLLM's slot_mapping [batch, new_tokens] int32 (-1: skip)
  MLA: q_nope [batch, q_tokens, heads, latent] (absorbed: q_nope W_UK), q_pe
  [batch, q_tokens, heads, rope], latent cache kv [batch, slots, latent + rope]
  (paged: [pages, page_size, latent + rope]), kv_scale [batch | pages, slots]
  float32 (fp8 caches only), out [batch, q_tokens, heads, latent]
"""
import contextlib
from typing import Optional

import torch

from . import _capi, core
from ._capi import AppendArgs, DecodeArgs, Dtype, MlaDecodeArgs, Op, PrefillArgs, Problem, Rope

_TO_FMQA = {torch.float16: Dtype.F16, torch.bfloat16: Dtype.BF16, torch.int8: Dtype.INT8}
if hasattr(torch, "float8_e4m3fn"):
    _TO_FMQA[torch.float8_e4m3fn] = Dtype.FP8_E4M3
_FROM_FMQA = {v: k for k, v in _TO_FMQA.items()}
_HALF = (torch.float16, torch.bfloat16)
MAX_DECODE_TOKENS = 16  # fmqa_problem.q_tokens of a decode: 1..16


def torch_dtype(dtype):
    """The torch dtype of an fmqa dtype (name, Dtype or int)."""
    return _FROM_FMQA[Dtype.parse(dtype, "dtype")]


def fmqa_dtype(dtype):
    """The Dtype of a torch dtype (f16, bf16, int8, float8_e4m3fn)."""
    return _TO_FMQA[dtype]


# ---------------------------------------------------------------- argument checks

def _tensor(name, t, layout, optional=False):
    """t is a tensor of len(layout) dimensions (layout names them), or None if optional."""
    if t is None and optional:
        return None
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{name}: expected a torch.Tensor {_shape_text(layout)}, "
                        f"got {type(t).__name__}")
    if t.dim() != len(layout):
        raise ValueError(f"{name}: expected {len(layout)} dimensions {_shape_text(layout)}, "
                         f"got shape {tuple(t.shape)}")
    return t


def _shape_text(layout):
    return "[" + ", ".join(layout) + "]"


def _size(name, t, axis, layout, expected, why):
    if t.shape[axis] != expected:
        want = tuple(t.shape[:axis]) + (expected,) + tuple(t.shape[axis + 1:])
        raise ValueError(f"{name}: {layout[axis]} (dimension {axis}) is {t.shape[axis]}, "
                         f"expected {expected} ({why}); shape {tuple(t.shape)}, expected {want}")


def _dtype(name, t, allowed, what):
    if t.dtype not in allowed:
        raise TypeError(f"{name}: expected dtype {what}, got {t.dtype}")


def _rows(name, t):
    """A tensor the kernels read with 16-byte vector loads: contiguous last
    (head) dimension, every other stride and the start a multiple of 16 bytes."""
    if t.shape[-1] > 1 and t.stride(-1) != 1:
        raise ValueError(f"{name}: the head dimension must be contiguous (stride 1), got "
                         f"strides {tuple(t.stride())}; call .contiguous()")
    esz = t.element_size()
    bad = [s for s in t.stride()[:-1] if s < 0 or (s * esz) % 16]
    if bad:
        raise ValueError(f"{name}: strides {tuple(t.stride())} (elements of {esz} bytes) must "
                         f"be non-negative multiples of 16 bytes")
    if (t.storage_offset() * esz) % 16:
        raise ValueError(f"{name}: starts {t.storage_offset()} elements into its storage, "
                         f"not on a 16-byte boundary")


def _index(name, t, batch):
    """An int32 per sequence, contiguous."""
    _tensor(name, t, ("batch",))
    _size(name, t, 0, ("batch",), batch, "one per sequence of q")
    _dtype(name, t, (torch.int32,), "torch.int32")
    if t.stride(0) != 1:
        raise ValueError(f"{name}: must be contiguous, got stride {t.stride(0)}")


def _devices(named, device=None):
    """Every tensor on one CUDA device (the first one's); returns it."""
    for name, t in named:
        if t is None:
            continue
        if t.device.type != "cuda":
            raise ValueError(f"{name}: expected a CUDA tensor, got device {t.device}")
        if device is None:
            device = t.device
        elif t.device != device:
            raise ValueError(f"{name}: expected a tensor on {device} like the others, got "
                             f"{t.device}")
    return device


def _workspace_tensor(workspace):
    if workspace is not None:
        _tensor("workspace", workspace, ("bytes",))
        _dtype("workspace", workspace, (torch.uint8,), "torch.uint8")
        if workspace.stride(0) != 1 or workspace.storage_offset() % 16:
            raise ValueError("workspace: must be contiguous and start on a 16-byte boundary")


def _query(name, q, layout, decode=False):
    """A query tensor of `layout`: float16/bfloat16 rows the kernels read with
    vector loads; decode: 1..MAX_DECODE_TOKENS tokens in dimension 1."""
    _tensor(name, q, layout)
    if decode and not 1 <= q.shape[1] <= MAX_DECODE_TOKENS:
        raise ValueError(f"{name}: q_tokens (dimension 1) is {q.shape[1]}, decode serves 1.."
                         f"{MAX_DECODE_TOKENS} query tokens per sequence")
    _dtype(name, q, _HALF, "torch.float16 or torch.bfloat16")
    _rows(name, q)


def _outputs(out, lse, layout, sizes, whys):
    """out of `layout` and `sizes` (whys: where each size comes from), float16 or
    bfloat16 rows; lse, when given, float32 and contiguous over every axis but
    the last.  Returns FLAG_LSE with lse, else 0."""
    _tensor("out", out, layout)
    for axis, (n, why) in enumerate(zip(sizes, whys)):
        _size("out", out, axis, layout, n, why)
    _dtype("out", out, _HALF, "torch.float16 or torch.bfloat16")
    _rows("out", out)
    if lse is None:
        return 0
    _tensor("lse", lse, layout[:-1])
    for axis, (n, why) in enumerate(zip(sizes[:-1], whys)):
        _size("lse", lse, axis, layout, n, why)
    _dtype("lse", lse, (torch.float32,), "torch.float32")
    if not lse.is_contiguous():
        raise ValueError("lse: must be contiguous")
    return _capi.FLAG_LSE


def _sinks(sinks, heads, src):
    """sinks: None or float32 [heads] learned sink logits, contiguous; src names
    the argument heads comes from."""
    if sinks is not None:
        _tensor("sinks", sinks, ("heads",))
        _size("sinks", sinks, 0, ("heads",), heads, f"{src}'s heads")
        _dtype("sinks", sinks, (torch.float32,), "torch.float32")
        if not sinks.is_contiguous():
            raise ValueError("sinks: must be contiguous")


def _softcap(softcap):
    """softcap: 0 (off) or a finite cap >= 2^-100 (fmqa_problem.logit_softcap)."""
    if not (softcap == 0.0 or 2.0 ** -100 <= softcap < float("inf")):
        raise ValueError(f"softcap: {softcap}, must be 0 (off) or finite and >= 2^-100")


def _cache(k, v, k_scale, v_scale, page_table, batch, head_dim, pages=False, src="q"):
    """Checks the cache tensors; returns (kv Dtype, slots per sequence, page size).
    pages: paged by a CSR table or a slot mapping (no page_table): a sequence
    may own every page.  src: the argument head_dim and batch come from, which
    the messages name."""
    paged = page_table is not None or pages
    lay = ("pages", "page_size", "kv_heads", "head_dim") if paged else \
        ("batch", "slots", "kv_heads", "head_dim")
    _tensor("k", k, lay)
    _tensor("v", v, lay)
    _size("k", k, 3, lay, head_dim, f"{src}'s head_dim")
    for axis in range(3):
        _size("v", v, axis, lay, k.shape[axis], "as in k")
    if not paged:
        _size("k", k, 0, lay, batch, f"{src}'s batch")
    _dtype("k", k, tuple(_TO_FMQA), "float16, bfloat16, int8 or float8_e4m3fn")
    _dtype("v", v, (k.dtype,), f"{k.dtype} like k")
    _rows("k", k)
    _rows("v", v)
    kv = _TO_FMQA[k.dtype]
    eight = kv in (Dtype.INT8, Dtype.FP8_E4M3)
    slay = (lay[0], lay[1], "kv_heads")
    for name, s in (("k_scale", k_scale), ("v_scale", v_scale)):
        if not eight:
            if s is not None:
                raise ValueError(f"{name}: only an 8-bit cache has scales; k is {k.dtype}")
            continue
        if s is None:
            raise ValueError(f"{name}: required for an 8-bit cache ({k.dtype}): float32 "
                             f"{_shape_text(slay)}")
        _tensor(name, s, slay)
        for axis in range(3):
            _size(name, s, axis, slay, k.shape[axis], "as in k")
        _dtype(name, s, (torch.float32,), "torch.float32")
    if pages and page_table is None:  # a CSR table or a slot mapping: any page
        return kv, k.shape[0] * k.shape[1], k.shape[1]
    return (kv,) + _pages(page_table, batch, k.shape[1])


def _pages(page_table, batch, rows):
    """(slots per sequence, page size) of a cache whose dimension 1 has `rows` rows:
    a page's with a page table (checked), else a sequence's."""
    if page_table is None:
        return rows, 0
    _tensor("page_table", page_table, ("batch", "pages_per_seq"))
    _size("page_table", page_table, 0, ("batch", "pages_per_seq"), batch, "q's batch")
    _dtype("page_table", page_table, (torch.int32,), "torch.int32")
    if page_table.stride(1) != 1:
        raise ValueError("page_table: rows must be contiguous (stride 1 in dimension 1)")
    return page_table.shape[1] * rows, rows


def _int32s(name, t, n, what):
    """A contiguous int32 vector of n entries (None: skipped)."""
    if t is None:
        return
    _tensor(name, t, (what,))
    if n is not None:
        _size(name, t, 0, (what,), n, "one per sequence of q" if what == "batch" else
              "batch + 1")
    _dtype(name, t, (torch.int32,), "torch.int32")
    if t.numel() > 1 and t.stride(0) != 1:
        raise ValueError(f"{name}: must be contiguous, got stride {t.stride(0)}")


def _csr(page_table, page_indptr, page_indices, last_page_len, batch, lengths):
    """Checks a CSR page table (lengths: last_page_len is part of it); returns
    FLAG_PAGE_CSR, or 0 without one."""
    given = [x is not None for x in (page_indptr, page_indices) +
             ((last_page_len,) if lengths else ())]
    if not any(given):
        return 0
    if not all(given):
        raise ValueError("page_indptr, page_indices" + (" and last_page_len" if lengths else "")
                         + ": a CSR page table needs all of them")
    if page_table is not None:
        raise ValueError("page_table: give a 2-D page table or a CSR one, not both")
    _int32s("page_indptr", page_indptr, batch + 1, "batch_plus_1")
    _int32s("page_indices", page_indices, None, "pages")
    _int32s("last_page_len", last_page_len, batch, "batch")
    return _capi.FLAG_PAGE_CSR


def _window(kv_len, slots, window, sink_tokens, ring, draft_slots=0, cache="k"):
    """Checks the window arguments (cache: what messages call the cache tensor);
    returns (kv_len, flags)."""
    if window < 0 or sink_tokens < 0 or draft_slots < 0:
        raise ValueError(f"window ({window}), sink_tokens ({sink_tokens}) and draft_slots "
                         f"({draft_slots}) must not be negative")
    if draft_slots and not ring:
        raise ValueError(f"draft_slots: {draft_slots} without ring=True (only a ring cache "
                         f"has draft slots)")
    if ring:
        if window <= 0:
            raise ValueError("ring: a ring cache needs window > 0")
        need = sink_tokens + window + draft_slots
        if need > slots:
            raise ValueError(f"{cache}: a ring of {sink_tokens} sinks + {window} window + "
                             f"{draft_slots} draft slots needs {need} slots, the cache has "
                             f"{slots}")
        if kv_len is None:
            raise ValueError("kv_len: required with ring=True (the largest logical length "
                             "a sequence may reach)")
    elif kv_len is None:
        kv_len = slots
    elif kv_len > slots:
        raise ValueError(f"kv_len: {kv_len} exceeds the cache's {slots} slots per sequence")
    return int(kv_len), _capi.FLAG_RING if ring else 0


def check_decode(q, k, v, kv_lens, out, k_scale=None, v_scale=None, page_table=None,
                 tree_mask=None, lse=None, workspace=None, kv_len=None, window=0,
                 sink_tokens=0, causal=True, ring=False, draft_slots=0, sinks=None,
                 softcap=0.0, page_indptr=None, page_indices=None, last_page_len=None):
    """Checks decode's arguments (ValueError / TypeError naming the argument);
    returns the fmqa_problem fields as a dict.  Needs no GPU and no library."""
    _query("q", q, ("batch", "q_tokens", "heads", "head_dim"), decode=True)
    batch, q_tokens, heads, head_dim = q.shape
    csr = _csr(page_table, page_indptr, page_indices, last_page_len, batch, True)
    kv, slots, page_size = _cache(k, v, k_scale, v_scale, page_table, batch, head_dim, csr)
    kv_heads, head_dim_v = k.shape[2], v.shape[3]
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"q: heads ({heads}) must be a multiple of the cache's kv_heads "
                         f"({kv_heads})")
    if not csr:
        _index("kv_lens", kv_lens, batch)
    elif kv_lens is not None:
        raise ValueError("kv_lens: must be None with a CSR page table (its lengths are "
                         "(pages - 1) * page_size + last_page_len)")
    flags = _outputs(out, lse, ("batch", "q_tokens", "heads", "head_dim_v"),
                     (batch, q_tokens, heads, head_dim_v),
                     ("q's batch", "q's q_tokens", "q's heads", "v's head_dim"))
    flags |= _capi.FLAG_CAUSAL if causal else 0
    if tree_mask is not None:
        _tensor("tree_mask", tree_mask, ("batch", "q_tokens"))
        _size("tree_mask", tree_mask, 0, ("batch", "q_tokens"), batch, "q's batch")
        _size("tree_mask", tree_mask, 1, ("batch", "q_tokens"), q_tokens, "q's q_tokens")
        _dtype("tree_mask", tree_mask, (torch.int64,), "torch.int64 (64 mask bits)")
        if not tree_mask.is_contiguous():
            raise ValueError("tree_mask: must be contiguous")
        flags |= _capi.FLAG_TREE_MASK
    _workspace_tensor(workspace)
    _sinks(sinks, heads, "q")
    _softcap(softcap)
    kv_len, ring_flag = _window(kv_len, slots, window, sink_tokens, ring, draft_slots)
    if kv_len < q_tokens:
        raise ValueError(f"kv_len: {kv_len} is less than q_tokens {q_tokens} (the cache holds "
                         f"the query tokens)")
    flags |= ring_flag | csr | (_capi.FLAG_PAGED if page_size else 0)
    _devices([("q", q), ("k", k), ("v", v), ("kv_lens", kv_lens), ("out", out),
              ("k_scale", k_scale), ("v_scale", v_scale), ("page_table", page_table),
              ("tree_mask", tree_mask), ("lse", lse), ("workspace", workspace),
              ("sinks", sinks), ("page_indptr", page_indptr), ("page_indices", page_indices),
              ("last_page_len", last_page_len)])
    return dict(op=Op.DECODE, batch=batch, num_q_heads=heads, num_kv_heads=kv_heads,
                head_dim_qk=head_dim, head_dim_v=head_dim_v, q_tokens=q_tokens, kv_len=kv_len,
                q_dtype=_TO_FMQA[q.dtype], kv_dtype=kv, out_dtype=_TO_FMQA[out.dtype],
                page_size=page_size, window=window, sink_tokens=sink_tokens,
                rope=Rope.NONE, flags=flags, logit_softcap=float(softcap),
                draft_slots=draft_slots)


_MLA_KV = tuple(t for t in _TO_FMQA if t != torch.int8)  # the MLA kernels' latent types
# The sizes the MLA kernels serve (templates/mla_decode*.lua, LATENT and ROPE):
# they tell which of q_nope, q_pe and kv is wrong when the three disagree.
MLA_LATENT, MLA_ROPE = 512, 64
MLA_Q_LAYOUT = ("batch", "q_tokens", "heads", "latent")


def _latent(kv, kv_scale, page_table, q_nope, q_pe):
    """Checks the latent cache against the query's parts; returns (kv Dtype,
    slots per sequence, page size)."""
    lay = ("pages", "page_size", "latent_rope") if page_table is not None else \
        ("batch", "slots", "latent_rope")
    batch, latent, rope = q_nope.shape[0], q_nope.shape[3], q_pe.shape[3]
    _tensor("kv", kv, lay)
    row = kv.shape[2]
    if row != latent + rope and row == MLA_LATENT + MLA_ROPE:  # the cache fits the kernels
        if latent != MLA_LATENT:
            _size("q_nope", q_nope, 3, MLA_Q_LAYOUT, row - rope,
                  f"kv's latent_rope {row} - q_pe's rope {rope}")
        _size("q_pe", q_pe, 3, MLA_Q_LAYOUT[:3] + ("rope",), row - latent,
              f"kv's latent_rope {row} - q_nope's latent {latent}")
    _size("kv", kv, 2, lay, latent + rope, "q_nope's latent + q_pe's rope")
    if page_table is None:
        _size("kv", kv, 0, lay, batch, "q_nope's batch")
    _dtype("kv", kv, _MLA_KV, "float16, bfloat16 or float8_e4m3fn")
    _rows("kv", kv)
    kvt = _TO_FMQA[kv.dtype]
    slay = lay[:2]
    if kvt != Dtype.FP8_E4M3:
        if kv_scale is not None:
            raise ValueError(f"kv_scale: only an fp8 latent cache has scales; kv is {kv.dtype}")
    elif kv_scale is None:
        raise ValueError(f"kv_scale: required for an fp8 latent cache: float32 "
                         f"{_shape_text(slay)}")
    else:
        _tensor("kv_scale", kv_scale, slay)
        for axis in range(2):
            _size("kv_scale", kv_scale, axis, slay, kv.shape[axis], "as in kv")
        _dtype("kv_scale", kv_scale, (torch.float32,), "torch.float32")
    return (kvt,) + _pages(page_table, batch, kv.shape[1])


def check_mla_decode(q_nope, q_pe, kv, kv_lens, out, kv_scale=None, page_table=None, lse=None,
                     workspace=None, kv_len=None, window=0, sink_tokens=0, causal=True,
                     ring=False, draft_slots=0, sinks=None):
    """Checks mla_decode's arguments (ValueError / TypeError naming the argument);
    returns the fmqa_problem fields as a dict.  Needs no GPU and no library."""
    play = MLA_Q_LAYOUT[:3] + ("rope",)
    _query("q_nope", q_nope, MLA_Q_LAYOUT, decode=True)
    _tensor("q_pe", q_pe, play)
    batch, q_tokens, heads, latent = q_nope.shape
    for axis in range(3):
        _size("q_pe", q_pe, axis, play, q_nope.shape[axis], "as in q_nope")
    _dtype("q_pe", q_pe, (q_nope.dtype,), f"{q_nope.dtype} like q_nope")
    _rows("q_pe", q_pe)
    kvt, slots, page_size = _latent(kv, kv_scale, page_table, q_nope, q_pe)
    _index("kv_lens", kv_lens, batch)
    flags = _outputs(out, lse, MLA_Q_LAYOUT, q_nope.shape,
                     tuple(f"q_nope's {n}" for n in MLA_Q_LAYOUT))
    flags |= _capi.FLAG_CAUSAL if causal else 0
    _workspace_tensor(workspace)
    _sinks(sinks, heads, "q_nope")
    kv_len, ring_flag = _window(kv_len, slots, window, sink_tokens, ring, draft_slots, "kv")
    if kv_len < q_tokens:
        raise ValueError(f"kv_len: {kv_len} is less than q_tokens {q_tokens} (the cache holds "
                         f"the query tokens)")
    flags |= ring_flag | (_capi.FLAG_PAGED if page_size else 0)
    _devices([("q_nope", q_nope), ("q_pe", q_pe), ("kv", kv), ("kv_lens", kv_lens),
              ("out", out), ("kv_scale", kv_scale), ("page_table", page_table), ("lse", lse),
              ("workspace", workspace), ("sinks", sinks)])
    return dict(op=Op.MLA_DECODE, batch=batch, num_q_heads=heads, num_kv_heads=1,
                head_dim_qk=latent + q_pe.shape[3], head_dim_v=latent, q_tokens=q_tokens,
                kv_len=kv_len, q_dtype=_TO_FMQA[q_nope.dtype], kv_dtype=kvt,
                out_dtype=_TO_FMQA[out.dtype], page_size=page_size, window=window,
                sink_tokens=sink_tokens, rope=Rope.NONE, flags=flags, draft_slots=draft_slots)


def check_append(k_new, v_new, k, v, start_pos, q=None, k_scale=None, v_scale=None,
                 page_table=None, kv_len=None, window=0, sink_tokens=0, ring=False,
                 rope="none", draft_slots=0, page_indptr=None, page_indices=None,
                 slot_mapping=None):
    """Checks append's arguments like check_decode; returns the problem fields."""
    rope = Rope.parse(rope, "rope")
    nlay = ("batch", "new_tokens", "kv_heads", "head_dim")
    _tensor("k_new", k_new, nlay)
    batch, n_new, kv_heads, head_dim = k_new.shape
    _tensor("v_new", v_new, nlay)
    for axis in range(3):
        _size("v_new", v_new, axis, nlay, k_new.shape[axis], "as in k_new")
    _dtype("k_new", k_new, _HALF, "torch.float16 or torch.bfloat16")
    _dtype("v_new", v_new, (k_new.dtype,), f"{k_new.dtype} like k_new")
    _rows("k_new", k_new)
    _rows("v_new", v_new)
    heads = kv_heads
    if q is not None:
        qlay = ("batch", "new_tokens", "heads", "head_dim")
        _tensor("q", q, qlay)
        _size("q", q, 0, qlay, batch, "k_new's batch")
        _size("q", q, 1, qlay, n_new, "k_new's new_tokens")
        _size("q", q, 3, qlay, head_dim, "k_new's head_dim")
        _dtype("q", q, (k_new.dtype,), f"{k_new.dtype} like k_new")
        _rows("q", q)
        heads = q.shape[2]
        if kv_heads < 1 or heads % kv_heads:
            raise ValueError(f"q: heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    pages = _csr(page_table, page_indptr, page_indices, None, batch, False)
    if slot_mapping is not None:
        if page_table is not None or pages:
            raise ValueError("slot_mapping: replaces the page table; pass neither page_table "
                             "nor page_indptr / page_indices")
        slay = ("batch", "new_tokens")
        _tensor("slot_mapping", slot_mapping, slay)
        _size("slot_mapping", slot_mapping, 0, slay, batch, "k_new's batch")
        _size("slot_mapping", slot_mapping, 1, slay, n_new, "k_new's new_tokens")
        _dtype("slot_mapping", slot_mapping, (torch.int32,), "torch.int32")
        if not slot_mapping.is_contiguous():
            raise ValueError("slot_mapping: must be contiguous")
        pages = _capi.FLAG_SLOT_MAPPING
    kv, slots, page_size = _cache(k, v, k_scale, v_scale, page_table, batch, head_dim, pages,
                                  "k_new")
    _size("k", k, 2, ("", "", "kv_heads"), kv_heads, "k_new's kv_heads")
    _size("v", v, 3, ("", "", "", "head_dim_v"), v_new.shape[3], "v_new's head_dim")
    _index("start_pos", start_pos, batch)
    kv_len, flags = _window(kv_len, slots, window, sink_tokens, ring, draft_slots)
    flags |= pages | (_capi.FLAG_PAGED if page_size else 0)
    _devices([("k_new", k_new), ("v_new", v_new), ("k", k), ("v", v),
              ("start_pos", start_pos), ("q", q), ("k_scale", k_scale), ("v_scale", v_scale),
              ("page_table", page_table), ("page_indptr", page_indptr),
              ("page_indices", page_indices), ("slot_mapping", slot_mapping)])
    return dict(op=Op.APPEND, batch=batch, num_q_heads=heads, num_kv_heads=kv_heads,
                head_dim_qk=head_dim, head_dim_v=v_new.shape[3], q_tokens=n_new,
                kv_len=kv_len, q_dtype=_TO_FMQA[k_new.dtype], kv_dtype=kv,
                out_dtype=_TO_FMQA[k_new.dtype], page_size=page_size, window=window,
                sink_tokens=sink_tokens, rope=rope, flags=flags, draft_slots=draft_slots)


def check_prefill(q, k, v, cu_seqlens_q, out, max_q_tokens, kv_lens=None, k_scale=None,
                  v_scale=None, page_table=None, lse=None, workspace=None, kv_len=None,
                  window=0, sink_tokens=0, causal=True, sinks=None, softcap=0.0):
    """Checks prefill's arguments like check_decode; returns the problem fields."""
    qlay = ("total_q", "heads", "head_dim")
    _query("q", q, qlay)
    total_q, heads, head_dim = q.shape
    _tensor("cu_seqlens_q", cu_seqlens_q, ("batch + 1",))
    _dtype("cu_seqlens_q", cu_seqlens_q, (torch.int32,), "torch.int32")
    if cu_seqlens_q.shape[0] < 2 or cu_seqlens_q.stride(0) != 1:
        raise ValueError(f"cu_seqlens_q: must be contiguous with batch + 1 >= 2 offsets, got "
                         f"shape {tuple(cu_seqlens_q.shape)}")
    batch = cu_seqlens_q.shape[0] - 1
    if isinstance(max_q_tokens, bool) or not isinstance(max_q_tokens, int) or max_q_tokens < 1:
        raise ValueError(f"max_q_tokens: {max_q_tokens!r}, expected an int >= 1 (the most "
                         f"new tokens a sequence brings; the launch is sized by it)")
    if total_q > batch * max_q_tokens:
        raise ValueError(f"q: total_q (dimension 0) is {total_q}, more than batch {batch} x "
                         f"max_q_tokens {max_q_tokens}")
    flags = (_capi.FLAG_CAUSAL if causal else 0)
    page_size = 0
    if kv_lens is None:  # K and V are the new tokens, packed like q
        for name, t in (("k", k), ("v", v)):
            _tensor(name, t, ("total_q", "kv_heads", "head_dim"))
            _size(name, t, 0, ("total_q",), total_q, "q's total_q")
            _dtype(name, t, (q.dtype,), f"{q.dtype} like q (new tokens)")
            _rows(name, t)
        _size("k", k, 2, qlay, head_dim, "q's head_dim")
        _size("v", v, 1, ("", "kv_heads"), k.shape[1], "as in k")
        for name, t in (("k_scale", k_scale), ("v_scale", v_scale), ("page_table", page_table)):
            if t is not None:
                raise ValueError(f"{name}: only a cache (kv_lens given) has one")
        kv = _TO_FMQA[k.dtype]
        kv_heads, head_dim_v = k.shape[1], v.shape[2]
        if kv_len is not None and kv_len != max_q_tokens:
            raise ValueError(f"kv_len: {kv_len}, without a cache the new tokens are all there "
                             f"is (kv_len = max_q_tokens {max_q_tokens})")
        kv_len = max_q_tokens
        if window < 0 or sink_tokens < 0:
            raise ValueError(f"window ({window}) and sink_tokens ({sink_tokens}) must not be "
                             f"negative")
    else:
        kv, slots, page_size = _cache(k, v, k_scale, v_scale, page_table, batch, head_dim)
        kv_heads, head_dim_v = k.shape[2], v.shape[3]
        _index("kv_lens", kv_lens, batch)
        kv_len, _ = _window(kv_len, slots, window, sink_tokens, False)
        if max_q_tokens > kv_len:
            raise ValueError(f"max_q_tokens: {max_q_tokens} exceeds kv_len {kv_len} (the "
                             f"cache holds the new tokens)")
        flags |= _capi.FLAG_KV_CACHE | (_capi.FLAG_PAGED if page_size else 0)
    if kv_heads < 1 or heads % kv_heads:
        raise ValueError(f"q: heads ({heads}) must be a multiple of kv_heads ({kv_heads})")
    flags |= _outputs(out, lse, ("total_q", "heads", "head_dim_v"), (total_q, heads, head_dim_v),
                      ("q's total_q", "q's heads", "v's head_dim"))
    _workspace_tensor(workspace)
    _sinks(sinks, heads, "q")
    _softcap(softcap)
    _devices([("q", q), ("k", k), ("v", v), ("cu_seqlens_q", cu_seqlens_q), ("out", out),
              ("kv_lens", kv_lens), ("k_scale", k_scale), ("v_scale", v_scale),
              ("page_table", page_table), ("lse", lse), ("workspace", workspace),
              ("sinks", sinks)])
    return dict(op=Op.PREFILL, batch=batch, num_q_heads=heads, num_kv_heads=kv_heads,
                head_dim_qk=head_dim, head_dim_v=head_dim_v, q_tokens=max_q_tokens,
                kv_len=kv_len, q_dtype=_TO_FMQA[q.dtype], kv_dtype=kv,
                out_dtype=_TO_FMQA[out.dtype], page_size=page_size, window=window,
                sink_tokens=sink_tokens, rope=Rope.NONE, flags=flags,
                logit_softcap=float(softcap))


# ---------------------------------------------------------------- filling the C structs

def _ptr(t):
    return t.data_ptr() if t is not None and t.numel() else None


def _fill(args, name, t):
    """Pointer and the three strides of a 4-D (or 3-D scale) tensor."""
    if t is None:
        return
    setattr(args, name, t.data_ptr())
    for axis, dim in enumerate(("batch", "token", "head")):
        setattr(args, f"{name}_stride_{dim}", t.stride(axis))


def _stream(device):
    return torch.cuda.current_stream(device).cuda_stream


_workspace_bytes = {}


def _workspace(fields, device):
    """A uint8 workspace for the problem of `fields` (its size asked once per problem)."""
    key = tuple(sorted((n, x if isinstance(x, float) else int(x)) for n, x in fields.items()))
    n = _workspace_bytes.get(key)
    if n is None:
        ctx = core.default_context(device.index or 0)
        p = Problem(**fields)
        n = _workspace_bytes[key] = (ctx.prefill_workspace_size(p) if fields["op"] == Op.PREFILL
                                     else ctx.decode_workspace_size(p))
    return torch.empty(max(n, 16), dtype=torch.uint8, device=device)


def decode_workspace(q, k, v, kv_lens, out, **kw):
    """A uint8 workspace tensor large enough for this decode (the plan is resolved,
    and the kernel compiled, on first use of a problem).  Same arguments as decode()."""
    return _workspace(check_decode(q, k, v, kv_lens, out, **kw), q.device)


def prefill_workspace(q, k, v, cu_seqlens_q, out, max_q_tokens, **kw):
    """The same for prefill (fmqa_prefill_workspace_size); same arguments as prefill()."""
    return _workspace(check_prefill(q, k, v, cu_seqlens_q, out, max_q_tokens, **kw), q.device)


def mla_decode_workspace(q_nope, q_pe, kv, kv_lens, out, **kw):
    """A uint8 workspace tensor large enough for this MLA decode (as
    decode_workspace()).  Same arguments as mla_decode()."""
    return _workspace(check_mla_decode(q_nope, q_pe, kv, kv_lens, out, **kw), q_nope.device)


def _joined_q(q_nope, q_pe):
    """The query [B, Tq, H, latent + rope] the library reads: a view when q_pe's
    rows continue q_nope's in memory (two parts of one tensor), else one copy."""
    d = q_nope.shape[3]
    if (q_pe.stride() == q_nope.stride() and q_pe.storage_offset() == q_nope.storage_offset() + d
            and q_pe.untyped_storage().data_ptr() == q_nope.untyped_storage().data_ptr()):
        return q_nope.as_strided(q_nope.shape[:3] + (d + q_pe.shape[3],), q_nope.stride())
    return torch.cat((q_nope, q_pe), dim=-1)


@torch.library.custom_op("fastmqa::mla_decode", mutates_args=("out", "workspace", "lse"),
                         device_types="cuda")
def _mla_decode_op(q_nope: torch.Tensor, q_pe: torch.Tensor, kv: torch.Tensor,
                   kv_lens: torch.Tensor, out: torch.Tensor, workspace: torch.Tensor,
                   kv_scale: Optional[torch.Tensor], page_table: Optional[torch.Tensor],
                   lse: Optional[torch.Tensor], kv_len: int, window: int, sink_tokens: int,
                   causal: bool, ring: bool, sm_scale: float, draft_slots: int,
                   sinks: Optional[torch.Tensor]) -> None:
    fields = check_mla_decode(q_nope, q_pe, kv, kv_lens, out, kv_scale, page_table, lse,
                              workspace, kv_len, window, sink_tokens, causal, ring, draft_slots,
                              sinks)
    q = _joined_q(q_nope, q_pe)
    a = MlaDecodeArgs()
    a.q = q.data_ptr()
    a.q_stride_batch, a.q_stride_token, a.q_stride_head = q.stride()[:3]
    a.kv, (a.kv_stride_batch, a.kv_stride_token) = kv.data_ptr(), kv.stride()[:2]
    if kv_scale is not None:
        a.kv_scale = kv_scale.data_ptr()
        a.kv_scale_stride_batch, a.kv_scale_stride_token = kv_scale.stride()
    a.kv_lens, a.lse, a.sinks = _ptr(kv_lens), _ptr(lse), _ptr(sinks)
    if page_table is not None:
        a.page_table, a.page_table_stride = _ptr(page_table), page_table.stride(0)
    a.o = out.data_ptr()
    a.o_stride_batch, a.o_stride_token, a.o_stride_head = out.stride()[:3]
    a.sm_scale = sm_scale
    a.workspace, a.workspace_size = _ptr(workspace), workspace.numel()
    ctx = core.default_context(q.device.index)
    ctx.mla_decode_raw(Problem(**fields), a, _stream(q.device))


@_mla_decode_op.register_fake
def _(q_nope, q_pe, kv, kv_lens, out, workspace, kv_scale, page_table, lse, kv_len, window,
      sink_tokens, causal, ring, sm_scale, draft_slots, sinks):
    return None


@torch.library.custom_op("fastmqa::decode", mutates_args=("out", "workspace", "lse"),
                         device_types="cuda")
def _decode_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               kv_lens: Optional[torch.Tensor],
               out: torch.Tensor, workspace: torch.Tensor, k_scale: Optional[torch.Tensor],
               v_scale: Optional[torch.Tensor], page_table: Optional[torch.Tensor],
               tree_mask: Optional[torch.Tensor], lse: Optional[torch.Tensor], kv_len: int,
               window: int, sink_tokens: int, causal: bool, ring: bool,
               sm_scale: float, draft_slots: int, sinks: Optional[torch.Tensor],
               softcap: float, page_indptr: Optional[torch.Tensor],
               page_indices: Optional[torch.Tensor],
               last_page_len: Optional[torch.Tensor]) -> None:
    fields = check_decode(q, k, v, kv_lens, out, k_scale, v_scale, page_table, tree_mask, lse,
                          workspace, kv_len, window, sink_tokens, causal, ring, draft_slots,
                          sinks, softcap, page_indptr, page_indices, last_page_len)
    a = DecodeArgs()
    for name, t in (("q", q), ("k", k), ("v", v), ("o", out), ("k_scale", k_scale),
                    ("v_scale", v_scale)):
        _fill(a, name, t)
    a.kv_lens, a.tree_mask, a.lse = _ptr(kv_lens), _ptr(tree_mask), _ptr(lse)
    if page_table is not None:
        a.page_table, a.page_table_stride = _ptr(page_table), page_table.stride(0)
    a.page_indptr, a.page_indices = _ptr(page_indptr), _ptr(page_indices)
    a.last_page_len = _ptr(last_page_len)
    a.sm_scale = sm_scale
    a.sinks = _ptr(sinks)
    a.workspace, a.workspace_size = _ptr(workspace), workspace.numel()
    ctx = core.default_context(q.device.index)
    ctx.decode_raw(Problem(**fields), a, _stream(q.device))


@_decode_op.register_fake
def _(q, k, v, kv_lens, out, workspace, k_scale, v_scale, page_table, tree_mask, lse, kv_len,
      window, sink_tokens, causal, ring, sm_scale, draft_slots, sinks, softcap, page_indptr,
      page_indices, last_page_len):
    return None


@torch.library.custom_op("fastmqa::append", mutates_args=("k", "v", "k_scale", "v_scale", "q"),
                         device_types="cuda")
def _append_op(k_new: torch.Tensor, v_new: torch.Tensor, k: torch.Tensor, v: torch.Tensor,
               start_pos: torch.Tensor, q: Optional[torch.Tensor],
               k_scale: Optional[torch.Tensor], v_scale: Optional[torch.Tensor],
               page_table: Optional[torch.Tensor], kv_len: int, window: int, sink_tokens: int,
               ring: bool, rope: int, rope_theta: float, draft_slots: int,
               page_indptr: Optional[torch.Tensor], page_indices: Optional[torch.Tensor],
               slot_mapping: Optional[torch.Tensor]) -> None:
    fields = check_append(k_new, v_new, k, v, start_pos, q, k_scale, v_scale, page_table,
                          kv_len, window, sink_tokens, ring, rope, draft_slots, page_indptr,
                          page_indices, slot_mapping)
    a = AppendArgs()
    for name, t in (("k_new", k_new), ("v_new", v_new), ("q", q), ("k", k), ("v", v),
                    ("k_scale", k_scale), ("v_scale", v_scale)):
        _fill(a, name, t)
    a.start_pos = _ptr(start_pos)
    if page_table is not None:
        a.page_table, a.page_table_stride = _ptr(page_table), page_table.stride(0)
    a.page_indptr, a.page_indices = _ptr(page_indptr), _ptr(page_indices)
    a.slot_mapping = _ptr(slot_mapping)
    a.rope_theta = rope_theta
    ctx = core.default_context(k.device.index)
    ctx.append_raw(Problem(**fields), a, _stream(k.device))


@_append_op.register_fake
def _(k_new, v_new, k, v, start_pos, q, k_scale, v_scale, page_table, kv_len, window,
      sink_tokens, ring, rope, rope_theta, draft_slots, page_indptr, page_indices, slot_mapping):
    return None


@torch.library.custom_op("fastmqa::prefill", mutates_args=("out", "workspace", "lse"),
                         device_types="cuda")
def _prefill_op(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cu_seqlens_q: torch.Tensor,
                out: torch.Tensor, workspace: torch.Tensor, kv_lens: Optional[torch.Tensor],
                k_scale: Optional[torch.Tensor], v_scale: Optional[torch.Tensor],
                page_table: Optional[torch.Tensor], lse: Optional[torch.Tensor],
                max_q_tokens: int, kv_len: int, window: int, sink_tokens: int, causal: bool,
                sm_scale: float, sinks: Optional[torch.Tensor], softcap: float) -> None:
    fields = check_prefill(q, k, v, cu_seqlens_q, out, max_q_tokens, kv_lens, k_scale, v_scale,
                           page_table, lse, workspace, kv_len, window, sink_tokens, causal,
                           sinks, softcap)
    a = PrefillArgs()
    for name, t in (("q", q), ("o", out)) + ((("k", k), ("v", v)) if kv_lens is None else ()):
        setattr(a, name, t.data_ptr())
        setattr(a, f"{name}_stride_token", t.stride(0))
        setattr(a, f"{name}_stride_head", t.stride(1))
    if kv_lens is not None:
        for name, t in (("k", k), ("v", v), ("k_scale", k_scale), ("v_scale", v_scale)):
            _fill(a, name, t)
        a.kv_lens = _ptr(kv_lens)
    if page_table is not None:
        a.page_table, a.page_table_stride = _ptr(page_table), page_table.stride(0)
    a.cu_seqlens_q, a.lse, a.sm_scale = _ptr(cu_seqlens_q), _ptr(lse), sm_scale
    a.sinks = _ptr(sinks)
    a.workspace, a.workspace_size = _ptr(workspace), workspace.numel()
    a.total_q = q.shape[0]
    ctx = core.default_context(q.device.index)
    ctx.prefill_raw(Problem(**fields), a, _stream(q.device))


@_prefill_op.register_fake
def _(q, k, v, cu_seqlens_q, out, workspace, kv_lens, k_scale, v_scale, page_table, lse,
      max_q_tokens, kv_len, window, sink_tokens, causal, sm_scale, sinks, softcap):
    return None


# ---------------------------------------------------------------- the public functions

def _kv_len(k, page_table, kv_len, pages=False):
    """kv_len's default (the cache's slots per sequence; every page with a CSR
    table or a slot mapping), traceable by torch.compile."""
    if kv_len is not None:
        return kv_len
    return k.shape[1] * (page_table.shape[1] if page_table is not None else
                         k.shape[0] if pages else 1)


def decode(q, k, v, kv_lens, *, out=None, k_scale=None, v_scale=None, page_table=None,
           kv_len=None, window=0, sink_tokens=0, causal=True, ring=False, tree_mask=None,
           lse=None, sm_scale=0.0, workspace=None, stream=None, draft_slots=0, sinks=None,
           softcap=0.0, page_indptr=None, page_indices=None, last_page_len=None):
    """Decode attention (fmqa_decode) on CUDA tensors; returns out.

    q [B, Tq, H, d] f16/bf16 (Tq 1..16); k [B, T, Hkv, d], v [B, T, Hkv, dv] in f16,
    bf16, int8 or float8_e4m3fn (8-bit: k_scale, v_scale float32 [B, T, Hkv]);
    paged: k, v [pages, page_size, Hkv, d] and page_table int32 [B, pages_per_seq],
    or a CSR table (FlashInfer's paged_kv): page_indptr int32 [B + 1], page_indices
    int32, last_page_len int32 [B], with kv_lens None (the lengths are the table's);
    HND pages [pages, Hkv, page_size, d]: pass k.transpose(1, 2), v likewise.
    kv_lens int32 [B], each sequence's length including its Tq query tokens (the
    last Tq positions).  out [B, Tq, H, dv] (allocated in q's dtype if None).
    kv_len: the largest length the call plans for (default: the cache's slots;
    required with ring=True, where the cache holds sink_tokens + window slots).
    window/sink_tokens: sliding window with sinks; causal: token t sees positions up
    to its own; tree_mask int64 [B, Tq]: draft visibility bits; lse float32
    [B, Tq, H] receives the log-sum-exp (of the whole denominator, sinks included);
    sm_scale 0 = 1/sqrt(d).  draft_slots: a ring's slots beyond the window for
    speculative drafts (the ring holds sink_tokens + window + draft_slots slots;
    docs/reference.md, "Speculative decoding"); sinks float32 [H]: learned sink
    logits (gpt-oss); softcap > 0: scores capped to softcap * tanh(s / softcap)
    (Gemma 2/3).  workspace: uint8
    tensor (decode_workspace()), allocated when None.  Runs on `stream` (a
    torch.cuda.Stream) or the current stream.  Raises ValueError/TypeError for bad
    tensors before anything reaches the GPU, fastmqa.Error when the library fails."""
    if out is None and isinstance(q, torch.Tensor) and isinstance(v, torch.Tensor) \
            and q.dim() == 4 and v.dim() == 4:
        out = q.new_empty(q.shape[:3] + v.shape[3:])
    kw = dict(k_scale=k_scale, v_scale=v_scale, page_table=page_table, tree_mask=tree_mask,
              lse=lse, kv_len=kv_len, window=window, sink_tokens=sink_tokens, causal=causal,
              ring=ring, draft_slots=draft_slots, sinks=sinks, softcap=softcap,
              page_indptr=page_indptr, page_indices=page_indices, last_page_len=last_page_len)
    if torch.compiler.is_compiling():  # the op checks its tensors when it runs
        kv_len = _kv_len(k, page_table, kv_len, page_indptr is not None)
    else:
        kv_len = check_decode(q, k, v, kv_lens, out, workspace=workspace, **kw)["kv_len"]
    if workspace is None:
        workspace = decode_workspace(q, k, v, kv_lens, out, **kw)
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        torch.ops.fastmqa.decode(q, k, v, kv_lens, out, workspace, k_scale, v_scale,
                                 page_table, tree_mask, lse, kv_len, window,
                                 sink_tokens, causal, ring, float(sm_scale), int(draft_slots),
                                 sinks, float(softcap), page_indptr, page_indices,
                                 last_page_len)
    return out


def _latent_len(kv, page_table, kv_len):
    """kv_len's default for a latent cache, traceable by torch.compile."""
    if kv_len is not None:
        return kv_len
    return kv.shape[1] * (page_table.shape[1] if page_table is not None else 1)


def mla_decode(q_nope, q_pe, kv, kv_lens, *, out=None, kv_scale=None, page_table=None,
               kv_len=None, window=0, sink_tokens=0, causal=True, ring=False, lse=None,
               sm_scale=0.0, workspace=None, stream=None, draft_slots=0, sinks=None):
    """Multi-head Latent Attention decode (fmqa_mla_decode) on CUDA tensors; returns out.

    q_nope [B, Tq, H, d_c] (absorbed: q_nope W_UK) and q_pe [B, Tq, H, d_r], f16/bf16
    (Tq 1..16); the latent cache kv [B, T, d_c + d_r] in f16, bf16 or float8_e4m3fn
    (fp8: kv_scale float32 [B, T], one scale per token); paged: kv [pages,
    page_size, d_c + d_r], kv_scale [pages, page_size] and page_table int32 [B,
    pages_per_seq]; kv_lens int32 [B] as decode().  V is each row's first d_c
    values; out [B, Tq, H, d_c] (allocated in q_nope's dtype if None) holds o before
    W_UV.  The kernels serve d_c = 512, d_r = 64 (others: fastmqa.Error,
    UNSUPPORTED).  When q_pe's rows continue q_nope's in memory (the two parts of one
    [.., d_c + d_r] tensor) the library reads them in place, else the op joins them
    (one copy).  kv_len, window, sink_tokens, causal, ring, draft_slots, lse,
    sinks, sm_scale (0 = 1/sqrt(d_c + d_r)), workspace (mla_decode_workspace()),
    stream and the errors are decode()'s."""
    if out is None and isinstance(q_nope, torch.Tensor) and q_nope.dim() == 4:
        out = q_nope.new_empty(q_nope.shape)
    kw = dict(kv_scale=kv_scale, page_table=page_table, lse=lse, kv_len=kv_len, window=window,
              sink_tokens=sink_tokens, causal=causal, ring=ring, draft_slots=draft_slots,
              sinks=sinks)
    if torch.compiler.is_compiling():  # the op checks its tensors when it runs
        kv_len = _latent_len(kv, page_table, kv_len)
    else:
        kv_len = check_mla_decode(q_nope, q_pe, kv, kv_lens, out, workspace=workspace,
                                  **kw)["kv_len"]
    if workspace is None:
        workspace = mla_decode_workspace(q_nope, q_pe, kv, kv_lens, out, **kw)
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        torch.ops.fastmqa.mla_decode(q_nope, q_pe, kv, kv_lens, out, workspace, kv_scale,
                                     page_table, lse, kv_len, window, sink_tokens, causal, ring,
                                     float(sm_scale), int(draft_slots), sinks)
    return out


def append(k_new, v_new, k, v, start_pos, *, q=None, k_scale=None, v_scale=None,
           page_table=None, kv_len=None, window=0, sink_tokens=0, ring=False, rope="none",
           rope_theta=0.0, stream=None, draft_slots=0, page_indptr=None, page_indices=None,
           slot_mapping=None):
    """KV append (fmqa_append): writes the new tokens k_new, v_new [B, n, Hkv, d] of
    each sequence b at positions start_pos[b] .. start_pos[b] + n - 1 of the cache
    (layouts as decode()), applying RoPE ('none', 'neox', 'gptj'; base rope_theta,
    0 = 10000) to K and, when q [B, n, H, d] is given, to q in place; 8-bit caches
    are quantized per token and head with their scales written.  ring=True maps
    positions to sinks + a ring of window + draft_slots slots (kv_len then
    required).  Pages as decode() (page_table, or page_indptr and page_indices),
    or vLLM's slot_mapping int32 [B, n]: token t of sequence b goes to cache slot
    slot_mapping[b, t] (page slot // page_size, row slot % page_size), -1 not
    written.  Same errors and stream as decode()."""
    pages = page_indptr is not None or slot_mapping is not None
    if torch.compiler.is_compiling():  # the op checks its tensors when it runs
        kv_len = _kv_len(k, page_table, kv_len, pages)
    else:
        kv_len = check_append(k_new, v_new, k, v, start_pos, q, k_scale, v_scale, page_table,
                              kv_len, window, sink_tokens, ring, rope, draft_slots,
                              page_indptr, page_indices, slot_mapping)["kv_len"]
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        torch.ops.fastmqa.append(k_new, v_new, k, v, start_pos, q, k_scale, v_scale,
                                 page_table, kv_len, window, sink_tokens, ring,
                                 int(Rope.parse(rope, "rope")), float(rope_theta),
                                 int(draft_slots), page_indptr, page_indices, slot_mapping)


def prefill(q, k, v, cu_seqlens_q, *, max_q_tokens, out=None, kv_lens=None, k_scale=None,
            v_scale=None, page_table=None, kv_len=None, window=0, sink_tokens=0, causal=True,
            lse=None, sm_scale=0.0, workspace=None, stream=None, sinks=None, softcap=0.0):
    """Prefill attention over a ragged batch (fmqa_prefill) on CUDA tensors; returns out.

    q [total_q, H, d] f16/bf16: sequence b's new tokens are rows cu_seqlens_q[b] ..
    cu_seqlens_q[b + 1] - 1 (cu_seqlens_q int32 [B + 1], 0 first, non-decreasing:
    read by the kernel, not checked here).  max_q_tokens: the most new tokens any
    sequence brings (an int; the launch is sized by it, keep it constant across
    calls to keep the plan).  Without kv_lens, k and v [total_q, Hkv, d] are the new
    tokens' own, packed like q, in q's dtype, and token i of a sequence sits at
    position i.  With kv_lens int32 [B] (chunked prefill), k, v are a cache laid out
    as decode()'s (contiguous [B, T, Hkv, d] or paged with page_table; f16, bf16,
    int8 or float8_e4m3fn with k_scale, v_scale) that already holds the new tokens
    (append() them first): sequence b holds kv_lens[b] positions, its new tokens
    last, so they see the cached prefix and themselves; kv_len: the largest
    kv_lens[b] (default: the cache's slots).  causal: a token sees positions up to
    its own; window/sink_tokens: only the last `window` positions and the first
    sink_tokens.  out [total_q, H, dv] (allocated in q's dtype if None); lse float32
    [total_q, H] (of the whole denominator, sinks included); sinks float32 [H]:
    learned sink logits (gpt-oss); softcap > 0: scores capped to softcap *
    tanh(s / softcap) (Gemma 2/3), both as decode(); sm_scale 0 = 1/sqrt(d); workspace (prefill_workspace()) allocated
    when None; `stream` as decode().  Raises ValueError/TypeError for bad tensors
    before anything reaches the GPU, fastmqa.Error when the library fails."""
    if out is None and isinstance(q, torch.Tensor) and isinstance(v, torch.Tensor) \
            and q.dim() == 3 and v.dim() >= 3:
        out = q.new_empty(q.shape[:2] + v.shape[-1:])
    kw = dict(kv_lens=kv_lens, k_scale=k_scale, v_scale=v_scale, page_table=page_table,
              lse=lse, kv_len=kv_len, window=window, sink_tokens=sink_tokens, causal=causal,
              sinks=sinks, softcap=softcap)
    if torch.compiler.is_compiling():  # the op checks its tensors when it runs
        kv_len = max_q_tokens if kv_lens is None else _kv_len(k, page_table, kv_len)
    else:
        kv_len = check_prefill(q, k, v, cu_seqlens_q, out, max_q_tokens,
                               workspace=workspace, **kw)["kv_len"]
    if workspace is None:
        workspace = prefill_workspace(q, k, v, cu_seqlens_q, out, max_q_tokens, **kw)
    with torch.cuda.stream(stream) if stream is not None else contextlib.nullcontext():
        torch.ops.fastmqa.prefill(q, k, v, cu_seqlens_q, out, workspace, kv_lens, k_scale,
                                  v_scale, page_table, lse, int(max_q_tokens), kv_len, window,
                                  sink_tokens, causal, float(sm_scale), sinks, float(softcap))
    return out

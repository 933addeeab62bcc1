"""nn.py -- fastmqa.nn.Attention: an attention layer whose KV cache and decode
steps are FastMQA's.

The layer owns its projections (torch Linear), RoPE (base rope_theta, None = no
RoPE; NeoX half-split pairs unless the policy says GPT-J) and a KV cache in the
format of its optimization level: the policy fmqa_level_policy_preset() gives
(conservative: 16-bit, full context; balanced: 4 sinks + a ring of
max_seq_len / 4 recent tokens, RoPE fused into the append; aggressive: the same
ring in int8 with per-token scales, or full context where the preset's score
schedule leaves no room to compress).  The presets' heavy-hitter compression
(fmqa_compress on the steps fmqa_level_step names, from the scores of the
steps before them, docs/levels.md) is not run by this layer yet: a compressed
policy is served in that ring form.

forward(x, positions, use_cache=True) on CUDA with at most 16 new tokens per
sequence (a step): fastmqa.append writes the new K/V into the cache (applying
RoPE to K and, in place, to q where the level fuses it), then fastmqa.decode
attends over the cache.  Anything else runs the documented torch path (prefill
has no FastMQA kernel yet): RoPE in torch, attention in float32 over the cached
prefix (dequantized, with the level's window and sinks) and the call's own
tokens at full precision, then the new tokens are stored in the cache (by
fastmqa.append on CUDA, by torch on the CPU, with the same slot mapping and
quantization as the kernel).  A step on the CPU also hides what a ring cache
lost, as fmqa_decode does, so a CPU module computes what the GPU one does, up
to rounding (and, for 8-bit caches, the step's own tokens, which the kernel reads
quantized).
The layer is for inference: gradients do not flow through the FastMQA kernels
or the cache.
"""
import math

import torch

from . import core, ops
from ._capi import Dtype, Level, LevelPolicy, ModelConfig, Rope

_8BIT = (Dtype.INT8, Dtype.FP8_E4M3)
_QMAX = {Dtype.INT8: 127.0, Dtype.FP8_E4M3: 448.0}


def _ring_slots(pos, sink_tokens, period):
    """The cache slot of each position of pos (an integer tensor) in a ring cache,
    as fmqa_append writes it: the sinks at their positions, then a ring of
    `period` slots (window + draft slots) holding position p at sink_tokens +
    (p - sink_tokens) % period."""
    return torch.where(pos < sink_tokens, pos, sink_tokens + (pos - sink_tokens) % period)


def _positive(name, value):
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return value


class Attention(torch.nn.Module):
    """Multi-query / grouped-query / multi-head attention with a FastMQA KV cache.

    hidden_dim, num_heads; num_kv_heads (default num_heads; 1 = MQA); head_dim
    (default hidden_dim // num_heads); optimization_level 'conservative',
    'balanced' or 'aggressive' (or a LevelPolicy as `policy`); rope_theta (None:
    no RoPE); max_batch sequences of at most max_seq_len tokens are cached;
    dtype float16 or bfloat16; bias on the projections.
    """

    def __init__(self, hidden_dim, num_heads, num_kv_heads=None, head_dim=None,
                 optimization_level="balanced", rope_theta=10000.0, max_batch=1,
                 max_seq_len=4096, *, dtype=torch.float16, device=None, bias=False,
                 policy=None):
        super().__init__()
        _positive("hidden_dim", hidden_dim)
        _positive("num_heads", num_heads)
        num_kv_heads = _positive("num_kv_heads", num_kv_heads or num_heads)
        head_dim = _positive("head_dim", head_dim or hidden_dim // num_heads)
        if num_heads % num_kv_heads:
            raise ValueError(f"num_heads ({num_heads}) must be a multiple of num_kv_heads "
                             f"({num_kv_heads})")
        if dtype not in (torch.float16, torch.bfloat16):
            raise TypeError(f"dtype: expected torch.float16 or torch.bfloat16, got {dtype}")
        self.max_batch = _positive("max_batch", max_batch)
        self.num_heads, self.num_kv_heads, self.head_dim = num_heads, num_kv_heads, head_dim
        self.rope_theta = None if rope_theta is None else float(rope_theta)
        if self.rope_theta is not None and head_dim % 2:
            raise ValueError(f"head_dim: RoPE needs an even head_dim, got {head_dim}")
        self.model = ModelConfig(hidden_size=hidden_dim, num_q_heads=num_heads,
                                 num_kv_heads=num_kv_heads, head_dim=head_dim,
                                 max_seq_len=_positive("max_seq_len", max_seq_len),
                                 dtype=ops.fmqa_dtype(dtype))
        ctx = core.default_context()
        if policy is None:
            policy = ctx.level_policy(self.model, Level.parse(optimization_level,
                                                              "optimization_level"))
        elif not isinstance(policy, LevelPolicy):
            raise TypeError(f"policy: expected a fastmqa.LevelPolicy, got "
                            f"{type(policy).__name__}")
        if policy.page_size:
            raise ValueError("policy.page_size: nn.Attention keeps a contiguous cache "
                             "(page_size 0)")
        if policy.heavy:
            # The layer does not run fmqa_compress yet: a compressed level's
            # cache becomes its ring form, 4 sinks + max_seq_len / 4 recent.
            policy = LevelPolicy.from_buffer_copy(policy)
            policy.heavy, policy.pooling, policy.pool = 0, 0, 0
            policy.window = self.model.max_seq_len // 4
            if policy.window + policy.sink_tokens >= self.model.max_seq_len:
                policy.window = policy.sink_tokens = 0
        self.policy = policy
        # RoPE's pair layout: the policy's fused one, else NeoX (applied in torch).
        self.rope_layout = Rope(policy.rope) if policy.rope != Rope.NONE else Rope.NEOX
        self.memory = ctx.memory_report(self.model, policy, n_seqs=self.max_batch)
        kw = dict(bias=bias, dtype=dtype, device=device)
        self.q_proj = torch.nn.Linear(hidden_dim, num_heads * head_dim, **kw)
        self.k_proj = torch.nn.Linear(hidden_dim, num_kv_heads * head_dim, **kw)
        self.v_proj = torch.nn.Linear(hidden_dim, num_kv_heads * head_dim, **kw)
        self.o_proj = torch.nn.Linear(num_heads * head_dim, hidden_dim, **kw)
        shape = (self.max_batch, self.memory.tokens_kept, num_kv_heads, head_dim)
        cdt = ops.torch_dtype(policy.kv_dtype)
        self.register_buffer("k_cache", torch.zeros(shape, dtype=cdt, device=device),
                             persistent=False)
        self.register_buffer("v_cache", torch.zeros(shape, dtype=cdt, device=device),
                             persistent=False)
        scales = policy.kv_dtype in _8BIT
        for name in ("k_scale", "v_scale"):
            buf = torch.zeros(shape[:3], dtype=torch.float32, device=device) if scales else None
            self.register_buffer(name, buf, persistent=False)
        self.lengths = torch.zeros(self.max_batch, dtype=torch.int64)  # host: tokens cached
        self._workspaces = {}

    # ------------------------------------------------------------ what the level costs

    @property
    def level(self):
        return str(Level(self.policy.level))

    @property
    def memory_reduction(self):
        """1 - this layer's cache bytes / an fp16 MHA cache's (fmqa_memory_report)."""
        return self.memory.reduction

    @property
    def cache_multiplier(self):
        """fp16 MHA cache bytes / this layer's: how many more tokens fit."""
        return self.memory.cache_multiplier

    def report(self):
        """The memory columns of `fastmqa-bench levels` for this layer's shape, one row
        per level (this layer's marked *), from the library's presets and memory
        report; the accuracy columns need the float64 reference: the last line gives
        the fastmqa-bench command that prints them."""
        ctx = core.default_context()
        m = self.model
        lines = [f"FastMQA levels: hidden {m.hidden_size}, {m.num_q_heads} query heads, "
                 f"{m.num_kv_heads} KV heads, head dim {self.head_dim}, {m.max_seq_len} "
                 f"tokens, {Dtype(m.dtype)}; one layer, one sequence",
                 f"  {'level':<13} {'kv_dtype':>8} {'window':>6} {'sinks':>5} {'spec':>4} "
                 f"{'bytes/token':>11} {'reduction':>9} {'multiplier':>10}"]
        for lvl in Level:
            pol = self.policy if lvl == self.policy.level else ctx.level_policy(m, lvl)
            rep = ctx.memory_report(m, pol)
            mark = "*" if lvl == self.policy.level else " "
            lines.append(f"{mark} {str(lvl):<13} {str(Dtype(pol.kv_dtype)):>8} "
                         f"{pol.window:>6} {pol.sink_tokens:>5} {pol.spec_tokens:>4} "
                         f"{rep.bytes_per_token:>11} {100 * rep.reduction:>8.1f}% "
                         f"{rep.cache_multiplier:>9.1f}x")
        lines.append(f"errors and decode time: fastmqa-bench levels --hidden {m.hidden_size} "
                     f"--heads {m.num_q_heads} --kv-heads {m.num_kv_heads} "
                     f"--seq {m.max_seq_len}")
        return "\n".join(lines)

    def reset_cache(self):
        """Forgets every cached token (the cache memory stays allocated)."""
        self.lengths.zero_()

    # ------------------------------------------------------------ forward

    def forward(self, x, positions=None, use_cache=True):
        """x [batch, tokens, hidden_dim] -> [batch, tokens, hidden_dim].

        use_cache=True: the tokens continue each sequence's cached context at
        `positions` (None: where the cache ends; an int or an int tensor [batch]:
        each sequence's first position, earlier cached tokens stay visible) and are
        cached.  use_cache=False: exact causal attention over x alone (positions
        then only offset RoPE), nothing cached."""
        if not isinstance(x, torch.Tensor) or x.dim() != 3:
            raise ValueError(f"x: expected a tensor [batch, tokens, hidden_dim], got "
                             f"{tuple(x.shape) if isinstance(x, torch.Tensor) else type(x)}")
        if x.shape[2] != self.model.hidden_size:
            raise ValueError(f"x: hidden_dim (dimension 2) is {x.shape[2]}, expected "
                             f"{self.model.hidden_size}")
        w = self.q_proj.weight
        if x.dtype != w.dtype or x.device != w.device:
            raise TypeError(f"x: expected a {w.dtype} tensor on {w.device} like the layer's "
                            f"weights, got {x.dtype} on {x.device}")
        batch, n = x.shape[:2]
        start = self._starts(positions, batch, use_cache)
        q, k, v = self._project(x)
        if not use_cache:
            q, k = self._rope(q, start), self._rope(k, start)
            o = self._torch_attention(q, k, v, start, None, mode="exact")
        elif self._kernels(x) and n <= ops.MAX_DECODE_TOKENS:
            o = self._fastmqa_step(q, k, v, start)
        else:
            q, k = self._rope(q, start), self._rope(k, start)
            mode = "step" if n <= ops.MAX_DECODE_TOKENS else "prefill"
            o = self._torch_attention(q, k, v, start, self._prefix(start), mode)
            self._store(k, v, start)
        if use_cache:
            self.lengths[:batch] = start + n
        return self.o_proj(o.reshape(batch, n, -1).to(x.dtype))

    def _starts(self, positions, batch, use_cache):
        """Each sequence's first position as a host int64 tensor [batch]."""
        if batch > self.max_batch:
            raise ValueError(f"x: batch {batch} exceeds max_batch {self.max_batch}")
        if positions is None:
            start = self.lengths[:batch].clone() if use_cache else torch.zeros(
                batch, dtype=torch.int64)
        elif isinstance(positions, int):
            start = torch.full((batch,), positions, dtype=torch.int64)
        elif isinstance(positions, torch.Tensor) and positions.shape == (batch,) and \
                not positions.is_floating_point():
            start = positions.to("cpu", torch.int64)
        else:
            raise ValueError(f"positions: expected None, an int or an int tensor [{batch}] "
                             f"(each sequence's first position), got {positions!r}")
        if bool((start < 0).any()):
            raise ValueError(f"positions: must not be negative, got {start.tolist()}")
        return start

    def _project(self, x):
        b, n = x.shape[:2]
        q = self.q_proj(x).view(b, n, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(b, n, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(b, n, self.num_kv_heads, self.head_dim)
        return q, k, v

    def _kernels(self, t):
        """Whether the FastMQA kernels serve tensors like t (CUDA ones)."""
        return t.is_cuda

    def _ring(self):
        return self.policy.window > 0 and self.memory.tokens_kept < self.model.max_seq_len

    def _period(self):
        """Ring slots after the sinks: the window and the spec_tokens - 1 draft slots
        fmqa_level_problem gives a ring, so no step overwrites a position a query
        of it or of a later step sees."""
        return self.policy.window + self.policy.spec_tokens - 1

    def _cache_args(self, batch):
        p = self.policy
        return dict(k_scale=None if self.k_scale is None else self.k_scale[:batch],
                    v_scale=None if self.v_scale is None else self.v_scale[:batch],
                    kv_len=self.model.max_seq_len, window=p.window,
                    sink_tokens=p.sink_tokens, ring=self._ring(),
                    draft_slots=p.spec_tokens - 1 if self._ring() else 0)

    def _check_room(self, start, n):
        end = int(start.max()) + n
        if end > self.model.max_seq_len:
            raise ValueError(f"positions: a sequence would reach {end} tokens, more than "
                             f"max_seq_len {self.model.max_seq_len}")

    @torch.no_grad()
    def _fastmqa_step(self, q, k, v, start):
        """append (RoPE fused where the level fuses it) + decode, all FastMQA."""
        batch, n = q.shape[:2]
        self._check_room(start, n)
        fused = self.rope_theta is not None and self.policy.rope != Rope.NONE
        if self.rope_theta is not None and not fused:
            q, k = self._rope(q, start), self._rope(k, start)
        q, k, v = q.contiguous(), k.contiguous(), v.contiguous()
        dev_start = start.to(q.device, torch.int32)
        cache = self._cache_args(batch)
        ops.append(k, v, self.k_cache[:batch], self.v_cache[:batch], dev_start,
                   q=q if fused else None, rope=Rope(self.policy.rope) if fused else "none",
                   rope_theta=self.rope_theta or 0.0, **cache)
        out = torch.empty_like(q)
        key = (batch, n)
        kv_lens = dev_start + n
        args = (q, self.k_cache[:batch], self.v_cache[:batch], kv_lens)
        if key not in self._workspaces:
            self._workspaces[key] = ops.decode_workspace(*args, out, **cache)
        return ops.decode(*args, out=out, workspace=self._workspaces[key], **cache)

    # ------------------------------------------------------------ the torch path

    def _rope(self, x, start):
        """RoPE (self.rope_layout) at positions start[b] + t, in float32 from float64
        angles (fmqa_append's formula)."""
        if self.rope_theta is None:
            return x
        n, d = x.shape[1], x.shape[3]
        pos = (start.view(-1, 1) + torch.arange(n)).to(x.device, torch.float64)
        inv = self.rope_theta ** (-torch.arange(0, d // 2, dtype=torch.float64,
                                                device=x.device) * 2 / d)
        ang = (pos[..., None] * inv)[:, :, None, :]  # [b, n, 1, d/2]
        cos, sin = ang.cos().float(), ang.sin().float()
        xf = x.float()
        if self.rope_layout == Rope.GPTJ:  # pairs (2i, 2i + 1)
            a, b = xf[..., 0::2], xf[..., 1::2]
            rot = torch.stack([a * cos - b * sin, b * cos + a * sin], -1).flatten(-2)
            return rot.to(x.dtype)
        a, b = xf[..., :d // 2], xf[..., d // 2:]  # NeoX: pairs (i, i + d/2)
        return torch.cat([a * cos - b * sin, b * cos + a * sin], -1).to(x.dtype)

    def _slots(self, pos):
        """Cache slot of each position (sinks, then a ring of window + draft slots)."""
        return _ring_slots(pos, self.policy.sink_tokens, self._period()) if self._ring() else pos

    def _prefix(self, start):
        """Dequantized K, V of the cached positions [0, max(start)) in float32, their
        positions and whether each is still held: (k, v, pos, held)."""
        batch, plen = start.shape[0], int(start.max()) if start.numel() else 0
        dev = self.k_cache.device
        pos = torch.arange(plen, device=dev)
        slot = self._slots(pos)
        k, v = self.k_cache[:batch, slot].float(), self.v_cache[:batch, slot].float()
        if self.k_scale is not None:
            k = k * self.k_scale[:batch, slot][..., None]
            v = v * self.v_scale[:batch, slot][..., None]
        st = start.to(dev).view(-1, 1)
        held = pos < st
        if self._ring():
            held &= (pos < self.policy.sink_tokens) | (pos >= st - self._period())
        return k, v, pos.expand(batch, plen), held

    def _torch_attention(self, q, k, v, start, prefix, mode):
        """Attention in float32 of q [b, n, H, d] at positions start + t over the
        prefix (or nothing) and the new k, v, causal.  mode 'exact': nothing else;
        'prefill': the level's window and sinks; 'step': also what fmqa_decode
        sees of a ring cache after the append (docs/reference.md, rule 5: an early
        query token of a multi-token step does not see positions the ring has
        overwritten, although its window would reach them)."""
        batch, n, heads, d = q.shape
        dev = q.device
        qpos = start.to(dev).view(-1, 1) + torch.arange(n, device=dev)
        kf, vf, kpos, held = k.float(), v.float(), qpos, torch.ones_like(qpos, dtype=torch.bool)
        if prefix is not None:
            pk, pv, ppos, pheld = prefix
            kf, vf = torch.cat([pk, kf], 1), torch.cat([pv, vf], 1)
            kpos, held = torch.cat([ppos, qpos], 1), torch.cat([pheld, held], 1)
        seen = held[:, None, :] & (kpos[:, None, :] <= qpos[:, :, None])  # [b, n, j]
        w, s = self.policy.window, self.policy.sink_tokens
        if mode != "exact" and w > 0:
            seen &= (kpos[:, None, :] > qpos[:, :, None] - w) | (kpos[:, None, :] < s)
        if mode == "step" and self._ring():
            end = start.to(dev).view(-1, 1) + n
            seen &= ((kpos < s) | (kpos >= end - self._period()))[:, None, :]
        g = heads // self.num_kv_heads
        qg = q.float().view(batch, n, self.num_kv_heads, g, d)
        scores = torch.einsum("btkgd,bjkd->bkgtj", qg, kf) / math.sqrt(d)
        scores = scores.masked_fill(~seen[:, None, None], float("-inf"))
        o = torch.einsum("bkgtj,bjkd->btkgd", scores.softmax(-1), vf)
        return o.reshape(batch, n, heads, d)

    @torch.no_grad()
    def _store(self, k, v, start):
        """Caches the new tokens (k already rotated) at positions start + t."""
        batch, n = k.shape[:2]
        self._check_room(start, n)
        if self._kernels(k):
            cache = self._cache_args(batch)
            ops.append(k.contiguous(), v.contiguous(), self.k_cache[:batch],
                       self.v_cache[:batch], start.to(k.device, torch.int32), rope="none",
                       **cache)
            return
        pos = start.view(-1, 1) + torch.arange(n)
        keep = torch.ones_like(pos, dtype=torch.bool)
        if self._ring():  # several tokens on one ring slot: the last one stays
            end = (start + n).view(-1, 1)
            keep = (pos < self.policy.sink_tokens) | (pos >= end - self._period())
        b_idx = torch.arange(batch).view(-1, 1).expand_as(pos)[keep]
        slot = self._slots(pos)[keep]
        for x, cache, scale in ((k, self.k_cache, self.k_scale), (v, self.v_cache,
                                                                   self.v_scale)):
            rows, sc = _quantize(x[keep], cache.dtype)
            cache[b_idx, slot] = rows
            if scale is not None:
                scale[b_idx, slot] = sc

    # ------------------------------------------------------------ weights from torch

    @classmethod
    def from_torch(cls, module, **kwargs):
        """An Attention with the weights of `module`: a torch.nn.MultiheadAttention
        (batch_first semantics; no RoPE; in-projection split into q, k, v) or a
        Llama-style attention with q_proj, k_proj, v_proj and o_proj Linears (heads,
        KV heads, head dim and rope_theta read from the module or its .config; NeoX
        RoPE as in Llama).  kwargs override constructor arguments (level, max_batch,
        max_seq_len, dtype, device, ...)."""
        if isinstance(module, torch.nn.MultiheadAttention):
            return cls._from_mha(module, kwargs)
        if all(hasattr(module, n) for n in ("q_proj", "k_proj", "v_proj", "o_proj")):
            return cls._from_llama(module, kwargs)
        raise TypeError(f"module: expected torch.nn.MultiheadAttention or an attention "
                        f"with q_proj/k_proj/v_proj/o_proj, got {type(module).__name__}")

    @classmethod
    def _from_mha(cls, m, kwargs):
        if not m._qkv_same_embed_dim or m.bias_k is not None or m.add_zero_attn:
            raise ValueError("module: MultiheadAttention with kdim/vdim, add_bias_kv or "
                             "add_zero_attn is not supported")
        e = m.embed_dim
        kwargs.setdefault("rope_theta", None)
        kwargs.setdefault("bias", m.in_proj_bias is not None)
        kwargs.setdefault("device", m.in_proj_weight.device)
        layer = cls(e, m.num_heads, m.num_heads, **kwargs)
        w, b = m.in_proj_weight, m.in_proj_bias
        for i, proj in enumerate((layer.q_proj, layer.k_proj, layer.v_proj)):
            _load(proj, w[i * e:(i + 1) * e], None if b is None else b[i * e:(i + 1) * e])
        _load(layer.o_proj, m.out_proj.weight, m.out_proj.bias)
        return layer

    @classmethod
    def _from_llama(cls, m, kwargs):
        cfg = getattr(m, "config", None)

        def attr(*names, default=None):
            for owner in (m, cfg):
                for n in names:
                    if owner is not None and getattr(owner, n, None) is not None:
                        return getattr(owner, n)
            return default

        heads = attr("num_heads", "num_attention_heads")
        if heads is None:
            raise ValueError("module: cannot tell the number of heads (no num_heads or "
                             "config.num_attention_heads); pass num_heads=")
        heads = kwargs.pop("num_heads", heads)
        kv = kwargs.pop("num_kv_heads", attr("num_key_value_heads", default=heads))
        head_dim = kwargs.pop("head_dim", attr("head_dim",
                                               default=m.q_proj.out_features // heads))
        theta = attr("rope_theta", default=None)
        if theta is None and hasattr(m, "rotary_emb"):
            theta = getattr(m.rotary_emb, "base", None)
        kwargs.setdefault("rope_theta", theta if theta is not None else 10000.0)
        kwargs.setdefault("bias", m.q_proj.bias is not None)
        kwargs.setdefault("device", m.q_proj.weight.device)
        layer = cls(m.q_proj.in_features, heads, kv, head_dim, **kwargs)
        for name in ("q_proj", "k_proj", "v_proj", "o_proj"):
            src = getattr(m, name)
            _load(getattr(layer, name), src.weight, src.bias)
        return layer


def _load(dst, weight, bias):
    if tuple(weight.shape) != tuple(dst.weight.shape):
        raise ValueError(f"weight shape {tuple(weight.shape)} does not fit "
                         f"{tuple(dst.weight.shape)}")
    with torch.no_grad():
        dst.weight.copy_(weight)
        if dst.bias is not None:
            dst.bias.copy_(bias if bias is not None else torch.zeros_like(dst.bias))


def _quantize(x, dtype):
    """Rows of x [..., d] as the cache stores them: 16-bit rounding, or (8-bit)
    codes and per-row float scales as docs/reference.md defines them."""
    if dtype in (torch.float16, torch.bfloat16):
        return x.to(dtype), None
    qmax = _QMAX[ops.fmqa_dtype(dtype)]
    xd = x.double()
    scale = (xd.abs().amax(-1) / qmax).float()
    s = scale.double()[..., None]
    y = torch.where(s > 0, xd / s, torch.zeros_like(xd))
    if dtype == torch.int8:
        return torch.round(y).clamp(-127, 127).to(torch.int8), scale
    return y.float().clamp(-448, 448).to(dtype), scale


class FinalOptimizedFastMQA(Attention):
    """The layer the project was first described as:
    FinalOptimizedFastMQA(hidden_dim=2048, num_heads=32, optimization_level='balanced'),
    called as model(x, use_cache=True), with model.memory_reduction and
    model.cache_multiplier.  It is Attention with one KV head (multi-query
    attention) unless num_kv_heads says otherwise."""

    def __init__(self, hidden_dim=2048, num_heads=32, optimization_level="balanced",
                 num_kv_heads=1, **kwargs):
        super().__init__(hidden_dim, num_heads, num_kv_heads,
                         optimization_level=optimization_level, **kwargs)

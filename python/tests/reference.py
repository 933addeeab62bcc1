"""A float64 attention layer computed with torch's scaled_dot_product_attention:
the reference nn.Attention is checked against (on the CPU and on the GPU)."""
import torch
import torch.nn.functional as F


def rope64(x, start, theta, gptj=False):
    """RoPE of x [b, n, h, d] (float64) at positions start + t: NeoX pairs (i, i + d/2),
    or GPT-J pairs (2i, 2i + 1)."""
    if theta is None:
        return x
    n, d = x.shape[1], x.shape[3]
    pos = torch.arange(n, dtype=torch.float64, device=x.device) + start
    inv = theta ** (-torch.arange(0, d // 2, dtype=torch.float64, device=x.device) * 2 / d)
    ang = (pos[:, None] * inv)[None, :, None, :]
    if gptj:
        a, b = x[..., 0::2], x[..., 1::2]
        return torch.stack([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()],
                           -1).flatten(-2)
    a, b = x[..., :d // 2], x[..., d // 2:]
    return torch.cat([a * ang.cos() - b * ang.sin(), b * ang.cos() + a * ang.sin()], -1)


def mask(n, window=0, sinks=0, device=None, steps=()):
    """[n, n] bool: causal, and with a window the last `window` positions or a sink.
    steps: (start, count, period) of the decode steps on a ring cache of sinks +
    period slots (period = window + draft slots): their query tokens see only what
    the ring holds after the step's append (docs/reference.md rule 5), positions
    < sinks or >= start + count - period."""
    i = torch.arange(n, device=device)[:, None]
    j = torch.arange(n, device=device)[None, :]
    m = j <= i
    if window:
        m &= (j > i - window) | (j < sinks)
    for start, count, period in steps:
        rows = slice(start, start + count)
        m[rows] &= (j < sinks) | (j >= start + count - period)
    return m


def ring_steps(layer, calls):
    """The (start, count, ring period) of each call of `calls` token counts that runs
    as a decode step (at most 16 tokens) on the layer's ring cache; () without a
    ring."""
    out, start = [], 0
    for n in calls:
        if n <= 16 and layer._ring():
            out.append((start, n, layer._period()))
        start += n
    return out


def attention64(layer, x, window=0, sinks=0, steps=()):
    """The layer's output for the whole sequence x [b, n, hidden] from position 0,
    in float64: its projections, RoPE (layer.rope_theta, layer.rope_layout), SDPA with a causal
    (windowed, with sinks, ring steps) mask over every query head's KV head."""
    b, n, _ = x.shape
    h, hkv, d = layer.num_heads, layer.num_kv_heads, layer.head_dim

    def lin(m, t):
        return F.linear(t, m.weight.double(), None if m.bias is None else m.bias.double())

    xd = x.double()
    gptj = layer.rope_layout == layer.rope_layout.GPTJ
    q = rope64(lin(layer.q_proj, xd).view(b, n, h, d), 0, layer.rope_theta, gptj)
    k = rope64(lin(layer.k_proj, xd).view(b, n, hkv, d), 0, layer.rope_theta, gptj)
    v = lin(layer.v_proj, xd).view(b, n, hkv, d)
    g = h // hkv
    k, v = k.repeat_interleave(g, dim=2), v.repeat_interleave(g, dim=2)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2),
                                       attn_mask=mask(n, window, sinks, x.device, steps))
    return lin(layer.o_proj, o.transpose(1, 2).reshape(b, n, h * d))


def run_calls(m, x, calls):
    """m's outputs for x fed in calls of the given token counts, concatenated."""
    outs, start = [], 0
    for n in calls:
        outs.append(m(x[:, start:start + n]))
        start += n
    return torch.cat(outs, 1)


def rel_err(out, ref):
    out, ref = out.detach().double(), ref.detach().double()
    assert torch.isfinite(out).all(), "non-finite output"
    return float((out - ref).norm() / ref.norm())

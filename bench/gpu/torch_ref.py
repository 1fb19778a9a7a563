"""torch_ref.py: PyTorch fp16 eager forward of the same Llama-3-8B shapes
as bench_gpu's synthetic model, for the side-by-side in bench/results/gpu.json.

One verify step = B sessions x 5 new positions after a KV cache of CTX
positions: RMSNorm, fused QKV projection, RoPE (rotate-half), KV append,
grouped-query SDPA with a causal mask over cache + new positions, output
projection, SwiGLU, final norm, head and argmax. Weights are uniform
random fp16 (the same distribution as bench_gpu), never zeros. Times are
CUDA-event medians after warm-up. Prints one JSON object.

usage: python3 torch_ref.py [--ctx 256] [--reps 30] [--sessions 1,8,32,64]
"""
import argparse, json, sys
import torch

p = argparse.ArgumentParser()
p.add_argument("--ctx", type=int, default=256)
p.add_argument("--reps", type=int, default=30)
p.add_argument("--sessions", default="1,8,32,64")
a = p.parse_args()

dim, hidden, L, H, KV, hd, V = 4096, 14336, 32, 32, 8, 128, 128256
T = 5
dev, dt = "cuda", torch.float16
torch.manual_seed(0)


def w(o, i):
    return ((torch.rand(o, i, device=dev, dtype=torch.float32) * 2 - 1) * (3.0 / i) ** 0.5).to(dt)


layers = []
for _ in range(L):
    layers.append(dict(wqkv=w(dim + 2 * KV * hd, dim), wo=w(dim, dim), wgu=w(2 * hidden, dim),
                       wd=w(dim, hidden), n1=torch.ones(dim, device=dev, dtype=dt),
                       n2=torch.ones(dim, device=dev, dtype=dt)))
emb = (torch.rand(V, dim, device=dev, dtype=torch.float32) * 2 - 1).to(dt)
wout = w(V, dim)
nf = torch.ones(dim, device=dev, dtype=dt)
inv = 1.0 / (500000.0 ** (torch.arange(0, hd, 2, device=dev, dtype=torch.float64) / hd))
weight_bytes = sum(t.numel() * 2 for l in layers for t in l.values()) + wout.numel() * 2 + dim * 2


def rms(x, wn):
    xf = x.float()
    return (xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + 1e-5)).to(dt) * wn


def rope(x, cos, sin):      # x (B, h, T, hd), rotate-half
    x1, x2 = x[..., : hd // 2], x[..., hd // 2:]
    return torch.cat((x1 * cos - x2 * sin, x2 * cos + x1 * sin), -1)


def step(tokens, kc, vc, ctx):
    B = tokens.shape[0]
    pos = torch.arange(ctx, ctx + T, device=dev, dtype=torch.float64)
    ang = pos[:, None] * inv[None, :]
    cos, sin = ang.cos().to(dt), ang.sin().to(dt)
    mask = torch.ones(T, ctx + T, device=dev, dtype=torch.bool).tril(ctx)
    x = emb[tokens]                                   # (B, T, dim)
    for i, l in enumerate(layers):
        h = rms(x, l["n1"]) @ l["wqkv"].T
        q, k, v = h.split([dim, KV * hd, KV * hd], -1)
        q = rope(q.view(B, T, H, hd).transpose(1, 2), cos, sin)
        k = rope(k.view(B, T, KV, hd).transpose(1, 2), cos, sin)
        kc[i][:, :, ctx:ctx + T] = k
        vc[i][:, :, ctx:ctx + T] = v.view(B, T, KV, hd).transpose(1, 2)
        o = torch.nn.functional.scaled_dot_product_attention(
            q, kc[i][:, :, :ctx + T], vc[i][:, :, :ctx + T], attn_mask=mask, enable_gqa=True)
        x = x + o.transpose(1, 2).reshape(B, T, dim) @ l["wo"].T
        gu = rms(x, l["n2"]) @ l["wgu"].T
        g, u = gu.split([hidden, hidden], -1)
        x = x + (torch.nn.functional.silu(g) * u) @ l["wd"].T
    return (rms(x, nf) @ wout.T).argmax(-1)


res = {"torch": torch.__version__, "device": torch.cuda.get_device_name(0), "ctx": a.ctx,
       "weight_bytes": weight_bytes, "sessions": {}}
with torch.inference_mode():
    for B in [int(s) for s in a.sessions.split(",")]:
        kc = [(torch.rand(B, KV, a.ctx + T, hd, device=dev) - 0.5).to(dt) for _ in range(L)]
        vc = [(torch.rand(B, KV, a.ctx + T, hd, device=dev) - 0.5).to(dt) for _ in range(L)]
        times = []
        for r in range(a.reps + 3):
            tok = torch.randint(0, V, (B, T), device=dev)
            e0, e1 = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            e0.record()
            out = step(tok, kc, vc, a.ctx)
            e1.record()
            out.cpu()
            if r >= 3:
                times.append(e0.elapsed_time(e1))
        times.sort()
        ms = times[len(times) // 2]
        res["sessions"][str(B)] = {"ms": ms, "verified_tps": B * T / (ms / 1e3)}
        print(f"torch fp16 {B} sessions: {ms:.3f} ms", file=sys.stderr)
        del kc, vc
        torch.cuda.empty_cache()
print(json.dumps(res))

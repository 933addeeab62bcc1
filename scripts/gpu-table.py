#!/usr/bin/env python3
"""gpu-table.py -- the last step of scripts/gpu-check.sh (issue 17): one line per
bench shape from the JSON the run left in its output directory: our time (the
dispatcher's variant as bench/peers measured it, and after the short tune as
fastmqa-bench measured it), the best peer and its time, the ratio, our fraction of
the read bandwidth or bf16 GEMM rate measured in the same run, and the verdict
against the target the shape's issue set.  Needs no torch and no GPU.

Files read from DIR (each optional; a missing one leaves its shapes out):
  peers-decode.json, peers-prefill.json  bench/peers/peers.py --json
  mla.json                               fastmqa-bench mla --json (no peer: FlashMLA
                                         is not carried to the GPU machine)
  decode-tuned.json, prefill-tuned.json, mla-tuned.json
                                         fastmqa-bench decode / prefill / mla --json
                                         on the tuned database

Targets (where each is stated):
  decode, docs/kernels.md "Not yet verified on a GPU": f16 MQA d128 >= 90% of the
    read bandwidth, >= 80% at B = 1, T = 131072; GQA Hkv = 8 >= 90%; 8-bit >= 85%
  prefill, issue 13: >= 600 TFLOP/s and >= 1.0x cuDNN's time (sm_90a)
  MLA, issue 12 (docs/tuning.md): >= 90% of the read bandwidth at H <= 32, >= 70%
    of the GEMM rate at H = 128, fp8 >= 1.7x the bf16 token rate of its shape
Usage: scripts/gpu-table.py DIR   (exit 0; the verdicts are the output)
"""
import json
import os
import sys


def load(d, name):
    path = os.path.join(d, name)
    if not os.path.exists(path):
        return None
    with open(path) as f:
        try:
            return json.load(f)
        except ValueError as e:
            print(f"gpu-table: {name}: not JSON ({e})", file=sys.stderr)
            return None


def tuned_times(doc, key, us):
    """{shape id: median us} of a fastmqa-bench --json document (None: {})."""
    if not doc:
        return {}
    rows = doc.get(key, [])
    return {r.get("id", r.get("shape")): us(r) for r in rows if "error" not in r
            and r.get("status", "OK") in ("OK", "ok")}


def decode_target(shape):
    if shape.startswith("mqa-f16-b1-t131072"):
        return "bw >= 80%", lambda r: r["pct"] >= 80
    if shape.startswith(("mqa-f16-", "gqa8-")):
        return "bw >= 90%", lambda r: r["pct"] >= 90
    if shape.startswith(("mqa-int8-", "mqa-fp8-")):
        return "bw >= 85%", lambda r: r["pct"] >= 85
    return None, None


def mla_target(shape, bf16_us):
    heads = int(shape.split("-")[1][1:])
    if "-fp8-" in shape:
        twin = bf16_us.get(shape.replace("-fp8-", "-bf16-"))
        return ("bw >= 90%, 1.7x bf16",
                lambda r: r["pct"] >= 90 and twin is not None and twin / r["best_us"] >= 1.7)
    if heads <= 32:
        return "bw >= 90%", lambda r: r["pct"] >= 90
    if heads == 128:
        return "gemm >= 70%", lambda r: r["pct"] >= 70
    return None, None


def row(shape, ours_us, tuned_us, peer, peer_us, pct, target, ok):
    """A table row; pct is of ours_us and scales to the better of the two times."""
    best = min(t for t in (ours_us, tuned_us) if t) if (ours_us or tuned_us) else None
    r = {"shape": shape, "ours_us": ours_us, "tuned_us": tuned_us, "best_us": best,
         "peer": peer or "-", "peer_us": peer_us,
         "ratio": peer_us / best if peer_us and best else None,
         "pct": pct * ours_us / best if pct is not None and ours_us and best else None}
    text, check = target
    r["target"] = text or "-"
    if not ok:
        r["verdict"] = "FAILED (verification)"
    elif not text:
        r["verdict"] = "no target"
    elif r["best_us"] is None or r["pct"] is None:
        r["verdict"] = "not measured"
    else:
        r["verdict"] = "met" if check(r) else "MISSED"
    return r


def peers_rows(doc, tuned, kind):
    out = []
    for s in (doc or {}).get("shapes", []):
        if "error" in s or not s.get("contenders"):
            out.append({"shape": s.get("shape", "?"), "verdict": "ERROR " +
                        s.get("error", "no contenders")[:60]})
            continue
        o = s["contenders"][0]
        if kind == "prefill":
            pct = 100 * o["gemm_fraction"] if o.get("gemm_fraction") else None
            cudnn = [e["median_us"] for e in s["contenders"]
                     if e["name"].startswith("cudnn/") and e.get("ok") and "median_us" in e]
            target = ("600 TFLOP/s, 1.0x cuDNN",
                      lambda r, o=o, c=cudnn: (o["tflops"] * o["median_us"] / r["best_us"] >= 600
                                               and bool(c) and min(c) / r["best_us"] >= 1.0))
        else:
            pct = 100 * o["gbps"] / doc["read_gbps"] if "gbps" in o and doc.get("read_gbps") \
                else None
            target = decode_target(s["shape"])
        out.append(row(s["shape"], o.get("median_us"), tuned.get(s["shape"]),
                       s.get("best_peer"), s.get("best_peer_us"), pct, target, s.get("ok")))
    return out


def mla_rows(doc, tuned):
    shapes = [s for s in (doc or {}).get("shapes", [])]
    bf16 = {s["id"]: min(t for t in (s.get("median_us"), tuned.get(s["id"])) if t)
            for s in shapes if "-bf16-" in s["id"] and "median_us" in s}
    out = []
    for s in shapes:
        if "error" in s:
            out.append({"shape": s["id"], "verdict": "ERROR " + s["error"]})
            continue
        heads = int(s["id"].split("-")[1][1:])
        frac = s.get("gemm_fraction") if heads == 128 else s.get("bw_fraction")
        out.append(row(s["id"], s.get("median_us"), tuned.get(s["id"]), None, None,
                       100 * frac if frac is not None else None, mla_target(s["id"], bf16),
                       s.get("pass")))
    return out


def fmt(x, spec, width):
    return f"{x:{width}{spec}}" if isinstance(x, (int, float)) else f"{'-':>{width}}"


def main(argv):
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) == 2 else 2
    d = argv[1]
    rows = peers_rows(load(d, "peers-decode.json"),
                      tuned_times(load(d, "decode-tuned.json"), "shapes",
                                  lambda r: r["timings"][0]["median_us"]), "decode")
    rows += peers_rows(load(d, "peers-prefill.json"),
                       tuned_times(load(d, "prefill-tuned.json"), "rows", lambda r: r["us"]),
                       "prefill")
    rows += mla_rows(load(d, "mla.json"),
                     tuned_times(load(d, "mla-tuned.json"), "shapes", lambda r: r["median_us"]))
    print(f"{'shape':<30} {'ours_us':>9} {'tuned_us':>9} {'best peer':<16} {'peer_us':>9} "
          f"{'peer/us':>7} {'%bw|gemm':>8}  {'target':<24} verdict")
    for r in rows:
        if "ours_us" not in r:
            print(f"{r['shape']:<30} {r['verdict']}")
            continue
        print(f"{r['shape']:<30} {fmt(r['ours_us'], '.2f', 9)} {fmt(r['tuned_us'], '.2f', 9)} "
              f"{r['peer'][:16]:<16} {fmt(r['peer_us'], '.2f', 9)} {fmt(r['ratio'], '.2f', 7)} "
              f"{fmt(r['pct'], '.1f', 8)}  {r['target']:<24} {r['verdict']}")
    if not rows:
        print("(no results: none of the JSON files is in " + d + ")")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

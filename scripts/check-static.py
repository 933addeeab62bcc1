#!/usr/bin/env python3
"""check-static.py -- runs `fastmqa-bench static --json` on one shape and checks
that the document parses and every figure is sane (decode, append, MLA
decode and --scores rows: the amortised score cost within the level presets'
3%), so the static analysis cannot
rot unnoticed (ctest nvrtc_bench_static).  Usage: check-static.py FASTMQA_BENCH
[SHAPE].  Exit 0 when every check passes, 1 otherwise (each failure printed)."""
import json
import subprocess
import sys


def check_row(r, bad):
    where = f"{r.get('shape')} {r.get('arch')} {r.get('kernel')}"

    def need(cond, what):
        if not cond:
            bad.append(f"{where}: {what} ({json.dumps(r)[:300]})")

    need("error" not in r, "error")
    if "error" in r:
        return
    need(1 <= r["registers"] <= 255, "registers outside 1..255")
    need(r["spill_bytes"] == 0, "spills")
    need(r["threads"] >= 32 and r["threads"] % 32 == 0, "threads not whole warps")
    need(r["ctas"] >= 1 and r["ctas_per_sm"] >= 1, "no CTAs or none fit an SM")
    need(0 < r["waves"] < 1000, "waves")
    if r["kernel"] == "prefill" and r["cubin_arch"] == "sm_90a":
        need(r["hgmma_static"] is not None and r["hgmma_static"] > 0, "no HGMMA in the sm_90a prefill")
        need(r.get("sass_note") is None, "SASS figures missing")
        # the consumers' loop, budgeted by the tile's wgmma: the GEMMs and the softmax
        need(r["hmma_per_tile"] and r["mufu_per_tile"] and r["fp_per_tile"],
             "no wgmma, exp or FP in the main loop")
        need(r["loop_path_exact"] is True, "main-loop path does not issue the tile's wgmma")
        return
    if r["kernel"] == "prefill":
        need(r["smem_bytes"] > 0 and r["tile_bytes"] > 0, "shared memory or tile")
        need(r.get("sass_note") is None, "SASS figures missing")
        need(r["hmma_per_tile"] and r["ldsm_per_tile"] and r["copies_per_tile"],
             "no MMAs, ldmatrix or copies in the main loop")
        need(r["loop_path_exact"] is True, "main-loop path does not issue the tile's copies")
        return
    if r["kernel"] == "scores":  # fmqa_score_schedule: within 3%, S as large / E as short as fits
        every, steps = r["score_compress_every"], r["score_steps"]
        per_call, amortised = r["score_bytes_per_kv_byte"], r["score_amortised_per_kv_byte"]
        need(per_call > 0 and 1 <= steps <= every, "score schedule")
        need(abs(amortised - per_call * steps / every) < 1e-3, "amortised != per call x S / E")
        need(amortised <= 0.03 + 5e-5, "amortised score cost above 3%")
        need(every == 16 or (steps == 1 and per_call / (every - 1) > 0.03 - 5e-4),
             "compress_every longer than the bound needs")
    if r["kernel"] not in ("decode", "mla"):
        return
    need(r["smem_bytes"] > 0 and r["tile_bytes"] > 0 and r["inflight_kb_per_sm"] > 0,
         "shared memory, tile or bytes in flight")
    need(0 < r["balance"] <= 1, "balance outside (0, 1]")
    if r["kernel"] == "mla":  # no SASS figures: bench_static.c says why
        need(r.get("sass_note"), "MLA row without the note on its SASS figures")
        if r["cubin_arch"] == "sm_90a":  # mla_decode_sm90
            need(r["hgmma_static"] is not None and r["hgmma_static"] > 0, "no HGMMA in the sm_90a MLA decode")
        need(r["splits"] <= 1 or (r["combine_ctas"] or 0) >= 1, "combine CTAs")
        return
    need(r.get("sass_note") is None, "SASS figures missing")
    need(r["insts_per_kv_byte"] is not None and 0.005 < r["insts_per_kv_byte"] < 2,
         "instructions per KV byte")
    need(r["insts_per_tile"] and r["hmma_per_tile"] and r["copies_per_tile"],
         "no instructions, MMAs or copies in the main loop")
    need(r["loop_path_exact"] is True, "main-loop path does not issue the tile's copies")
    need(r["addr_insts_per_16b_load"] is not None and 0 <= r["addr_insts_per_16b_load"] < 200,
         "address instructions per load")
    need(isinstance(r["dependent_loads_before_first_kv"], int)
         and 0 <= r["dependent_loads_before_first_kv"] < 1000, "prologue round trips")
    if r["splits"] > 1:
        need(r["combine_ctas"] and r["combine_ctas"] >= 1, "combine CTAs")
        need(isinstance(r["combine_dependent_loads_per_thread"], int)
             and r["combine_dependent_loads_per_thread"] >= 1, "combine round trips")


def main(argv):
    if len(argv) < 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if len(argv) > 1 else 2
    bench = argv[1]
    shape = argv[2] if len(argv) > 2 else ("mqa-f16-b64-t4096,mla-h16-fp8-b64-t4096,mla-h128-bf16-b64-t4096,"
                                           "prefill-b4-t4096-hkv8-d128")
    cmd = [bench, "static", "--shapes", shape, "--arch", "sm_80,sm_90,sm_90a", "--scores", "--json"]
    run = subprocess.run(cmd, capture_output=True, text=True)
    if run.returncode != 0:
        print(f"{' '.join(cmd)}: exit {run.returncode}\n{run.stderr}{run.stdout}")
        return 1
    doc = json.loads(run.stdout)
    bad = []
    if doc.get("static") is not True or not doc.get("date"):
        bad.append("header: static/date missing")
    got = {(r["arch"], r["kernel"]) for r in doc["rows"]}
    for want in [("sm_80", "decode"), ("sm_90", "decode"), ("sm_80", "scores"), ("sm_80", "append"),
                 ("sm_90", "append"), ("sm_80", "prefill"), ("sm_90", "prefill"), ("sm_90a", "prefill"),
                 ("sm_80", "mla"), ("sm_90", "mla"), ("sm_90a", "mla")]:
        if want not in got:
            bad.append(f"no row for {want}")
    for r in doc["rows"]:
        check_row(r, bad)
    for b in bad:
        print("FAIL", b)
    print(f"{len(doc['rows'])} rows, {len(bad)} failures")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))

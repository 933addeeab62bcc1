"""The C API through the package, without a GPU: memory reports (checked against
the arithmetic of docs/levels.md and against fastmqa-bench levels, the C tool),
level presets and problems, errors carrying the status and fmqa_ctx_errmsg, the
error fastmqa.plan raises without a GPU (it needs one: test_gpu.py plans on one),
tune's command line, library loading."""
import os
import subprocess
import sys

import pytest

import fastmqa
from conftest import GPU_REASON, bench_levels, build_tool
from fastmqa import Dtype, Level, Status


@pytest.mark.parametrize("level,kv_heads,seq", [("conservative", 32, 1024),
                                                ("balanced", 1, 4096),
                                                ("aggressive", 8, 4096),
                                                ("aggressive", 1, 100)])
def test_memory_report_follows_the_documented_arithmetic(level, kv_heads, seq):
    hidden, heads = 2048, 32
    d = hidden // heads
    rep = fastmqa.memory_report(hidden_size=hidden, num_q_heads=heads, num_kv_heads=kv_heads,
                                max_seq_len=seq, level=level, n_seqs=3)
    pol = fastmqa.level_policy(hidden_size=hidden, num_q_heads=heads, num_kv_heads=kv_heads,
                               max_seq_len=seq, level=level)
    eight = pol.kv_dtype in (Dtype.INT8, Dtype.FP8_E4M3)
    per_token = 2 * kv_heads * d * (1 if eight else 2) + (2 * kv_heads * 4 if eight else 0)
    if pol.heavy:  # compressed: kept slots + the tokens of compress_every steps between
        per_token += 4 * kv_heads  # compactions, a float score per head
        kept = min(seq, pol.sink_tokens + pol.window + pol.heavy +
                   pol.compress_every * pol.spec_tokens)
    else:  # a ring: sinks + window + the spec_tokens - 1 draft slots
        kept = min(seq, pol.sink_tokens + pol.window + pol.spec_tokens - 1) if pol.window else seq
    baseline = 2 * heads * d * 2 * seq
    assert (rep.bytes_per_token, rep.tokens_kept) == (per_token, kept)
    assert rep.bytes_per_seq == per_token * kept
    assert rep.total_bytes == 3 * rep.bytes_per_seq
    assert rep.baseline_bytes_per_seq == baseline
    assert rep.cache_multiplier == pytest.approx(baseline / rep.bytes_per_seq)
    assert rep.reduction == pytest.approx(1 - rep.bytes_per_seq / baseline)


def test_every_problem_flag_is_exported_by_the_package():
    """Each FMQA_FLAG_* the ctypes layer mirrors is fastmqa.FLAG_*, in __all__."""
    from fastmqa import _capi
    flags = {n for n in dir(_capi) if n.startswith("FLAG_")}
    assert {"FLAG_LATENT", "FLAG_PAGE_CSR", "FLAG_SLOT_MAPPING", "FLAG_ALL"} <= flags
    for name in flags:
        assert getattr(fastmqa, name) == getattr(_capi, name), name
        assert name in fastmqa.__all__, name


@pytest.mark.parametrize("value,exc,message", [
    (2 ** 40, ValueError, r"ModelConfig.hidden_size: 1099511627776 does not fit its C type"),
    ("2048", TypeError, r"ModelConfig.hidden_size: expected an int, got str"),
    (2048.0, TypeError, r"ModelConfig.hidden_size: expected an int, got float"),
])
def test_struct_int_fields_refuse_what_ctypes_would_wrap(value, exc, message):
    """ctypes alone stores 2**40 as 0 in an int32 (the error then blamed
    hidden_size 0) and calls a str "bytes"."""
    with pytest.raises(exc, match=message):
        fastmqa.memory_report(hidden_size=value, num_q_heads=32, num_kv_heads=1, max_seq_len=10)
    with pytest.raises(ValueError, match=r"Problem.flags: -1 does not fit"):
        fastmqa.Problem(flags=-1)
    assert fastmqa.Problem(batch=True).batch == 1  # anything with __index__ still works


def test_level_presets_are_the_documented_ones():
    model = fastmqa.ModelConfig(hidden_size=4096, num_q_heads=32, num_kv_heads=1,
                                max_seq_len=8192, dtype="bf16")
    cons = fastmqa.level_policy(model, "conservative")
    bal = fastmqa.level_policy(model, "Balanced")
    agg = fastmqa.level_policy(model, Level.AGGRESSIVE)
    assert (cons.kv_dtype, cons.window, cons.rope) == (Dtype.BF16, 0, fastmqa.Rope.NONE)
    assert (bal.kv_dtype, bal.window, bal.heavy, bal.sink_tokens, bal.rope) == \
        (Dtype.BF16, 1024, 3072, 4, fastmqa.Rope.NEOX)
    assert (agg.kv_dtype, agg.spec_tokens) == (Dtype.INT8, 4)


def test_level_problem_is_the_compressed_decode_of_the_policy():
    p = fastmqa.level_problem(hidden_size=2048, num_q_heads=32, num_kv_heads=1,
                              max_seq_len=4096, level="aggressive", batch=8)
    assert (p.op, p.batch, p.num_q_heads, p.num_kv_heads, p.head_dim_qk) == \
        (fastmqa.Op.DECODE, 8, 32, 1, 64)
    # 4 sinks + 512 recent + 1536 heavy hitters + 253 steps of 4 tokens between
    # compactions (128 rows: scores cost 1032 / 136 bytes per call, one step in 253)
    assert (p.q_tokens, p.kv_len, p.kv_dtype, p.window, p.sink_tokens) == \
        (4, 3064, Dtype.INT8, 0, 0)
    assert p.flags == fastmqa.FLAG_CAUSAL | fastmqa.FLAG_SCORES
    fastmqa.validate(p)  # the library accepts what it produced


def test_level_step_scores_before_each_compress():
    """fmqa_level_step through ctypes: the preset's score steps end each period."""
    model = fastmqa.ModelConfig(hidden_size=2048, num_q_heads=32, num_kv_heads=8,
                                max_seq_len=4096)
    ctx = fastmqa.default_context()
    pol = ctx.level_policy(model, "balanced")
    every, steps = pol.compress_every, pol.score_steps
    assert (every, steps) == (16, 3)  # 4 rows: 40 / 256 bytes per call, 3 of 16: 2.9%
    acts = [ctx.level_step(pol, s) for s in range(2 * every)]
    assert [a.score for a in acts] == 2 * ([0] * (every - steps) + [1] * steps)
    assert [a.zero_scores for a in acts] == 2 * ([0] * (every - steps) + [1] + [0] * (steps - 1))
    assert [a.compress for a in acts] == 2 * ([0] * (every - 1) + [1])
    pol.score_steps = every + 1
    with pytest.raises(fastmqa.Error, match=r"policy.score_steps 17: expected 1..compress_every"):
        ctx.level_step(pol, 0)


def test_policy_override_changes_the_report():
    model = fastmqa.ModelConfig(hidden_size=2048, num_q_heads=32, num_kv_heads=1,
                                max_seq_len=4096)
    pol = fastmqa.level_policy(model, "aggressive")
    pol.kv_dtype = Dtype.FP8_E4M3
    pol.window, pol.sink_tokens, pol.heavy = 0, 0, 0
    rep = fastmqa.memory_report(model, policy=pol)
    assert (rep.tokens_kept, rep.bytes_per_token) == (4096, 2 * 64 + 8)


def test_library_error_carries_status_and_message():
    with pytest.raises(fastmqa.Error) as e:
        fastmqa.memory_report(hidden_size=100, num_q_heads=3, max_seq_len=64)
    assert e.value.status == Status.ERR_INVALID_ARGUMENT
    assert "hidden_size 100 is not a multiple of num_q_heads 3" in e.value.message
    assert e.value.function == "fmqa_level_policy_preset"  # the preset is asked first
    assert e.value.message in str(e.value)


def test_budget_too_small_is_an_error_and_a_budget_counts_sequences():
    kw = dict(hidden_size=2048, num_q_heads=32, num_kv_heads=1, max_seq_len=1024,
              level="conservative")
    per_seq = fastmqa.memory_report(**kw).bytes_per_seq
    assert fastmqa.memory_report(budget_bytes=10 * per_seq + 1, **kw).max_seqs_in_budget == 10
    with pytest.raises(fastmqa.Error, match="too small for one sequence"):
        fastmqa.memory_report(budget_bytes=per_seq - 1, **kw)


def test_validate_names_the_bad_field():
    p = fastmqa.Problem(num_q_heads=6, num_kv_heads=4)
    with pytest.raises(fastmqa.Error, match="num_q_heads 6 is not a multiple of num_kv_heads 4"):
        fastmqa.validate(p)


def test_unknown_level_and_enum_names_are_value_errors():
    with pytest.raises(ValueError, match="level: expected one of conservative, balanced"):
        fastmqa.level_policy(hidden_size=64, num_q_heads=1, max_seq_len=8, level="turbo")
    with pytest.raises(ValueError, match="Problem.kv_dtype"):
        fastmqa.Problem(kv_dtype="int4")
    with pytest.raises(TypeError, match="no field 'heads'"):
        fastmqa.Problem(heads=3)


def test_struct_helpers():
    p = fastmqa.Problem(batch=3, kv_dtype="fp8", rope="gptj")
    assert p == fastmqa.Problem(batch=3, kv_dtype=Dtype.FP8_E4M3, rope=2)
    assert p.as_dict()["kv_dtype"] is Dtype.FP8_E4M3
    assert "kv_dtype=fp8_e4m3" in repr(p)


def test_prefill_raw_checks_arguments_before_the_gpu():
    """fmqa_prefill through the ctypes layer: a bad argument is named before any
    GPU work (here: no cu_seqlens_q), on any machine."""
    p = fastmqa.Problem(op="prefill", batch=2, num_q_heads=8, num_kv_heads=2, q_tokens=64,
                        kv_len=64, flags=fastmqa.FLAG_CAUSAL)
    a = fastmqa.PrefillArgs(q=16, k=16, v=16, o=16, q_stride_token=8 * 128, q_stride_head=128,
                            o_stride_token=8 * 128, o_stride_head=128, k_stride_token=2 * 128,
                            k_stride_head=128, v_stride_token=2 * 128, v_stride_head=128)
    with pytest.raises(fastmqa.Error) as e:
        fastmqa.default_context().prefill_raw(p, a, 0)
    assert e.value.status == Status.ERR_INVALID_ARGUMENT
    assert e.value.function == "fmqa_prefill"
    assert "args.cu_seqlens_q is NULL" in e.value.message


@pytest.mark.skipif(GPU_REASON is None, reason="a GPU is present: plan is tested in test_gpu.py")
def test_plan_without_a_gpu_raises_no_driver_or_no_device():
    p = fastmqa.level_problem(hidden_size=2048, num_q_heads=32, num_kv_heads=1,
                              max_seq_len=4096)
    with pytest.raises(fastmqa.Error) as e:
        fastmqa.plan(p)
    assert e.value.status in (Status.ERR_NO_DRIVER, Status.ERR_NO_DEVICE)
    assert e.value.function == "fmqa_plan" and e.value.message
    # what the library said, then what works without a GPU
    assert "fastmqa.plan needs a CUDA device" in str(e.value)
    assert "fastmqa-tune --dry-run --arch" in e.value.message
    fastmqa.validate(p)  # the check it points to needs no GPU


def test_context_options_reach_the_library(tmp_path):
    with fastmqa.Context(device=0, db_path=str(tmp_path / "t.db"), log_level="quiet") as ctx:
        rep = ctx.memory_report(fastmqa.ModelConfig(hidden_size=64, num_q_heads=2,
                                                    max_seq_len=16),
                                ctx.level_policy(fastmqa.ModelConfig(
                                    hidden_size=64, num_q_heads=2, max_seq_len=16)))
        assert rep.bytes_per_token == 2 * 2 * 32 * 2
    assert not ctx.handle


def test_default_db_path_follows_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert fastmqa.default_db_path() == str(tmp_path / "fastmqa" / "tune.db")


def test_version_is_the_header_version():
    assert fastmqa.version() == fastmqa.__version__


def test_library_path_is_the_loaded_file():
    assert os.path.samefile(fastmqa.library_path(), os.environ["FASTMQA_LIB"])


def test_loading_another_library_file_is_refused(tmp_path):
    with pytest.raises(OSError, match="already loaded"):
        fastmqa.load(str(tmp_path / "libfastmqa.so"))


def test_a_missing_library_names_what_was_tried(tmp_path):
    code = "import fastmqa\ntry:\n    fastmqa.load()\nexcept OSError as e:\n    print(e)\n"
    env = dict(os.environ, FASTMQA_LIB=str(tmp_path / "nope.so"))
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "libfastmqa not found" in out and "nope.so (no such file)" in out
    # without FASTMQA_LIB: each place searched once, its file names together
    env.pop("FASTMQA_LIB")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True,
                         text=True, check=True).stdout
    assert "libfastmqa not found" in out and out.count("/usr/lib/{") == 1, out
    assert "{libfastmqa.so,libfastmqa.so.0," in out and len(out) < 2000, out


def test_tune_runs_fastmqa_tune(monkeypatch):
    exe = build_tool("fastmqa-tune", "tuner")
    if exe is None:
        pytest.skip("fastmqa-tune not built beside the library")
    monkeypatch.setenv("FASTMQA_TUNE", exe)
    res = fastmqa.tune(help=True, capture_output=True)
    assert res.returncode == 0 and "usage: fastmqa-tune" in res.stdout
    with pytest.raises(subprocess.CalledProcessError):
        fastmqa.tune(no_such_option=3, capture_output=True)


def test_tune_builds_the_command_line(monkeypatch, tmp_path):
    script = tmp_path / "fastmqa-tune"
    script.write_text("#!/bin/sh\nprintf '%s\\n' \"$@\"\n")
    script.chmod(0o755)
    monkeypatch.setenv("FASTMQA_TUNE", str(script))
    res = fastmqa.tune("--resume", problem=["op=decode,batch=1", "op=decode,batch=2"],
                       budget=20, dry_run=True, db=None, capture_output=True)
    assert res.stdout.split() == ["--problem", "op=decode,batch=1", "--problem",
                                  "op=decode,batch=2", "--budget", "20", "--dry-run",
                                  "--resume"]


@pytest.mark.parametrize("kv_heads", [1, 2, 8])
def test_memory_report_equals_fastmqa_bench_levels(kv_heads):
    for row in bench_levels(256, 8, kv_heads, 256):
        rep = fastmqa.memory_report(hidden_size=256, num_q_heads=8, num_kv_heads=kv_heads,
                                    max_seq_len=256, level=row["level"])
        assert rep.bytes_per_token == row["bytes_per_token"]
        assert rep.bytes_per_seq == row["bytes_per_seq"]
        assert rep.reduction == pytest.approx(row["reduction"], abs=1e-6)
        assert rep.cache_multiplier == pytest.approx(row["cache_multiplier"], abs=1e-4)

"""core.py -- contexts, errors and the calls that need no tensors.

A Context owns one fmqa_ctx_t (one device, one tuning database).  Every failed
library call raises Error with the status and the context's fmqa_ctx_errmsg().
The module-level functions (memory_report, level_policy, level_problem, plan,
...) run on default_context(device), one per device ordinal, created on first
use and kept for the life of the process (the torch ops use the same ones).
Nothing here imports torch.
"""
import ctypes
import dataclasses
import os
import shutil
import subprocess
import threading

from . import _capi
from ._capi import (Choice, DeviceInfo, Level, LevelPolicy, LevelStepActions, MemoryReport,
                    ModelConfig, Options, Problem, Status)


class Error(RuntimeError):
    """A library call failed.  status: the fmqa_status (a Status); message: the
    context's fmqa_ctx_errmsg() (may be empty); function: the C function."""

    def __init__(self, status, message, function):
        try:
            self.status = Status(status)
        except ValueError:  # a status newer than this package
            self.status = status
        self.message = message
        self.function = function
        text = load_status_string(status)
        if message and not message.startswith(text):
            text = f"{text}: {message}"
        elif message:
            text = message
        super().__init__(f"{function}: {text}")


def load_status_string(status):
    s = _capi.load().fmqa_status_string(int(status))
    return s.decode() if s else f"status {int(status)}"


@dataclasses.dataclass(frozen=True)
class Plan:
    """The kernel variant a problem gets: source is 'tuned' (an exact tuning-database
    entry), 'nearest' (the nearest tuned shape) or 'default' (the template's);
    workspace_bytes is what a decode of the problem needs (0 for other ops); reason
    says why that source (the bucket used, or why no tuned entry was)."""
    source: str
    template: str
    config: str
    tuned_time_us: float
    workspace_bytes: int
    reason: str = ""


class Context:
    """One fmqa_ctx_t.  device: CUDA ordinal; db_path: tuning database (None = the
    library's default, ~/.cache/fastmqa/tune.db; '' = no database);
    template_dir: None = embedded templates (or $FASTMQA_TEMPLATE_DIR); log_level:
    quiet, error, warn, info or debug.  Creating one needs no GPU.  Thread-safe
    like the C context; close() (or a with block) releases it."""

    def __init__(self, device=0, db_path=None, template_dir=None, log_level="warn"):
        lib = _capi.load()
        self._lib = lib
        # The C context keeps these pointers: keep the bytes alive with it.
        self._db = None if db_path is None else os.fsencode(db_path)
        self._tdir = None if template_dir is None else os.fsencode(template_dir)
        opts = Options.init(device=int(device), log_level=log_level)
        opts.db_path, opts.template_dir = self._db, self._tdir
        self.device = int(device)
        self._ctx = ctypes.c_void_p()
        st = lib.fmqa_ctx_create(ctypes.byref(opts), ctypes.byref(self._ctx))
        if st:
            err = Error(st, self.errmsg(), "fmqa_ctx_create")
            self.close()
            raise err

    @property
    def handle(self):
        """The fmqa_ctx_t pointer (a ctypes.c_void_p) for direct _capi calls."""
        return self._ctx

    def errmsg(self):
        """The calling thread's last error message on this context."""
        if not self._ctx:
            return ""
        return (self._lib.fmqa_ctx_errmsg(self._ctx) or b"").decode(errors="replace")

    def check(self, status, function):
        """Raises Error for a non-zero status of `function` called on this context."""
        if status:
            raise Error(status, self.errmsg(), function)

    def close(self):
        if getattr(self, "_ctx", None):
            self._lib.fmqa_ctx_destroy(self._ctx)
            self._ctx = ctypes.c_void_p()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        self.close()

    # ------------------------------------------------------------ no GPU needed

    def validate(self, problem):
        """Checks a Problem (sizes, divisibility, enums, 32-bit index overflow)."""
        self.check(self._lib.fmqa_problem_validate(self._ctx, ctypes.byref(problem)),
                   "fmqa_problem_validate")

    def level_policy(self, model, level="balanced"):
        """fmqa_level_policy_preset: the LevelPolicy of a level for a ModelConfig."""
        pol = LevelPolicy()
        lvl = Level.parse(level, "level")
        self.check(self._lib.fmqa_level_policy_preset(self._ctx, lvl, ctypes.byref(model),
                                                      ctypes.byref(pol)),
                   "fmqa_level_policy_preset")
        return pol

    def level_problem(self, model, policy, batch=1):
        """fmqa_level_problem: the decode Problem a policy implies (kv_len =
        max_seq_len, q_tokens = spec_tokens, ring cache with a window)."""
        prob = Problem()
        self.check(self._lib.fmqa_level_problem(self._ctx, ctypes.byref(model),
                                                ctypes.byref(policy), int(batch),
                                                ctypes.byref(prob)), "fmqa_level_problem")
        return prob

    def level_step(self, policy, step):
        """fmqa_level_step: what decode step `step` (0 = the first after the prompt)
        of a compressed level does (LevelStepActions: zero_scores, score, compress)."""
        act = LevelStepActions()
        self.check(self._lib.fmqa_level_step(self._ctx, ctypes.byref(policy), int(step),
                                             ctypes.byref(act)), "fmqa_level_step")
        return act

    def memory_report(self, model, policy, n_seqs=1, budget_bytes=0):
        """fmqa_memory_report_compute: one layer's cache memory (MemoryReport)."""
        rep = MemoryReport()
        self.check(self._lib.fmqa_memory_report_compute(
            self._ctx, ctypes.byref(model), ctypes.byref(policy), int(n_seqs),
            int(budget_bytes), ctypes.byref(rep)), "fmqa_memory_report_compute")
        return rep

    # ------------------------------------------------------------ device needed

    def device_info(self):
        """fmqa_device_query (Error with ERR_NO_DRIVER / ERR_NO_DEVICE without a GPU)."""
        info = DeviceInfo()
        self.check(self._lib.fmqa_device_query(self._ctx, ctypes.byref(info)),
                   "fmqa_device_query")
        return info

    def plan(self, problem):
        """fmqa_plan (+ the decode workspace size): resolves, compiles and loads the
        problem's kernel without launching it.  Returns a Plan.  Needs the CUDA
        device: without one, Error with ERR_NO_DRIVER / ERR_NO_DEVICE and a
        message that says what works without a GPU."""
        ch = Choice()
        status = self._lib.fmqa_plan(self._ctx, ctypes.byref(problem), ctypes.byref(ch))
        if status in (_capi.Status.ERR_NO_DRIVER, _capi.Status.ERR_NO_DEVICE):
            raise Error(status, f"{self.errmsg()}; {NO_GPU_PLAN}", "fmqa_plan")
        self.check(status, "fmqa_plan")
        ws = (self.decode_workspace_size(problem) if problem.op == _capi.Op.DECODE else
              self.prefill_workspace_size(problem) if problem.op == _capi.Op.PREFILL else 0)
        return Plan(source=str(_capi.ChoiceSource(ch.source)),
                    template=ch.template_name.decode(), config=ch.config.decode(),
                    tuned_time_us=ch.tuned_time_us, workspace_bytes=ws,
                    reason=ch.reason.decode())

    def decode_workspace_size(self, problem):
        ws = ctypes.c_size_t()
        self.check(self._lib.fmqa_decode_workspace_size(self._ctx, ctypes.byref(problem),
                                                        ctypes.byref(ws)),
                   "fmqa_decode_workspace_size")
        return ws.value

    def prefill_workspace_size(self, problem):
        ws = ctypes.c_size_t()
        self.check(self._lib.fmqa_prefill_workspace_size(self._ctx, ctypes.byref(problem),
                                                         ctypes.byref(ws)),
                   "fmqa_prefill_workspace_size")
        return ws.value

    def level_policy_tune(self, model, policy, batch=1):
        """fmqa_level_policy_tune: a copy of policy whose 8-bit format is the one the
        tuning database measured faster on this device (else unchanged)."""
        pol = LevelPolicy.from_buffer_copy(policy)
        changed = ctypes.c_int()
        self.check(self._lib.fmqa_level_policy_tune(self._ctx, ctypes.byref(model), int(batch),
                                                    ctypes.byref(pol), ctypes.byref(changed)),
                   "fmqa_level_policy_tune")
        return pol

    def decode_raw(self, problem, args, stream):
        """fmqa_decode with a filled DecodeArgs; stream: a CUstream as an int."""
        self.check(self._lib.fmqa_decode(self._ctx, ctypes.byref(problem), ctypes.byref(args),
                                         ctypes.c_void_p(stream)), "fmqa_decode")

    def mla_decode_raw(self, problem, args, stream):
        """fmqa_mla_decode with a filled MlaDecodeArgs; stream: a CUstream as an int."""
        self.check(self._lib.fmqa_mla_decode(self._ctx, ctypes.byref(problem),
                                             ctypes.byref(args), ctypes.c_void_p(stream)),
                   "fmqa_mla_decode")

    def prefill_raw(self, problem, args, stream):
        """fmqa_prefill with a filled PrefillArgs; stream: a CUstream as an int."""
        self.check(self._lib.fmqa_prefill(self._ctx, ctypes.byref(problem), ctypes.byref(args),
                                          ctypes.c_void_p(stream)), "fmqa_prefill")

    def append_raw(self, problem, args, stream):
        """fmqa_append with a filled AppendArgs; stream: a CUstream as an int."""
        self.check(self._lib.fmqa_append(self._ctx, ctypes.byref(problem), ctypes.byref(args),
                                         ctypes.c_void_p(stream)), "fmqa_append")


_defaults = {}
_defaults_lock = threading.Lock()


def default_context(device=0):
    """The process-wide Context of a device ordinal (library defaults for the
    database and templates), created on first use."""
    device = int(device)
    with _defaults_lock:
        ctx = _defaults.get(device)
        if ctx is None:
            ctx = _defaults[device] = Context(device)
        return ctx


# ---------------------------------------------------------------- module-level API

def model_config(model=None, **fields):
    """A ModelConfig from a ModelConfig or from its fields (hidden_size,
    num_q_heads, num_kv_heads = num_q_heads, head_dim = 0, max_seq_len,
    dtype = 'f16', mla_latent_dim, mla_rope_dim)."""
    if model is not None:
        if fields:
            raise TypeError("pass either a ModelConfig or its fields, not both")
        if not isinstance(model, ModelConfig):
            raise TypeError(f"model: expected a fastmqa.ModelConfig, got {type(model).__name__}")
        return model
    return ModelConfig(**fields)


def _policy(ctx, model, level, policy):
    if policy is not None:
        if not isinstance(policy, LevelPolicy):
            raise TypeError(f"policy: expected a fastmqa.LevelPolicy, got "
                            f"{type(policy).__name__}")
        return policy
    return ctx.level_policy(model, level)


def level_policy(model=None, level="balanced", *, ctx=None, **fields):
    """The LevelPolicy preset of `level` for a model (ModelConfig or its fields)."""
    model = model_config(model, **fields)
    return (ctx or default_context()).level_policy(model, level)


def memory_report(model=None, level="balanced", *, policy=None, n_seqs=1, budget_bytes=0,
                  ctx=None, **fields):
    """One layer's KV-cache memory (a MemoryReport) under `level`'s preset, or under
    `policy` when given.  Needs no GPU.  Example:
    memory_report(hidden_size=2048, num_q_heads=32, num_kv_heads=1, max_seq_len=4096)."""
    ctx = ctx or default_context()
    model = model_config(model, **fields)
    return ctx.memory_report(model, _policy(ctx, model, level, policy), n_seqs, budget_bytes)


def level_problem(model=None, level="balanced", *, policy=None, batch=1, ctx=None, **fields):
    """The decode Problem that `level` (or `policy`) implies for a model.  No GPU."""
    ctx = ctx or default_context()
    model = model_config(model, **fields)
    return ctx.level_problem(model, _policy(ctx, model, level, policy), batch)


def validate(problem, *, ctx=None):
    """Raises Error when the library rejects a Problem.  No GPU."""
    (ctx or default_context()).validate(problem)


# What fastmqa.plan's error says without a GPU: the C API plans for the device it
# runs on (fmqa_plan loads the kernel), it has no device preset.
NO_GPU_PLAN = ("fastmqa.plan needs a CUDA device (it compiles and loads the kernel for the "
               "device it runs on); without a GPU, fastmqa-tune --dry-run --arch sm_90 "
               "--problem SPEC compiles a problem's variants for a described device and "
               "fastmqa.validate(problem) checks it")


def plan(problem, *, device=0, ctx=None):
    """Which kernel variant `problem` gets on `device` (a Plan): tuned, nearest or
    default, with the reason.  Compiles and loads the kernel if needed, so it needs
    the CUDA device: without one it raises Error (status ERR_NO_DRIVER or
    ERR_NO_DEVICE) whose message says what works without a GPU."""
    return (ctx or default_context(device)).plan(problem)


def device_info(device=0, *, ctx=None):
    return (ctx or default_context(device)).device_info()


def version():
    """The library's version string (fmqa_version_string where the library has it,
    else the header version this package was written against)."""
    lib = _capi.load()
    if hasattr(lib, "fmqa_version_string"):
        return lib.fmqa_version_string().decode()
    return _capi.VERSION_STRING


def default_db_path():
    buf = ctypes.create_string_buffer(4096)
    st = _capi.load().fmqa_default_db_path(buf, len(buf))
    if st:
        raise Error(st, "", "fmqa_default_db_path")
    return buf.value.decode()


def tune_executable():
    """fastmqa-tune: $FASTMQA_TUNE, else beside the loaded library (a build tree
    keeps it in tuner/, an install in ../bin), else on PATH."""
    env = os.environ.get("FASTMQA_TUNE")
    if env:
        return env
    libdir = os.path.dirname(os.path.realpath(_capi.library_path()))
    for rel in ("tuner", os.path.join("..", "bin"), "."):
        cand = os.path.join(libdir, rel, "fastmqa-tune")
        if os.access(cand, os.X_OK):
            return os.path.normpath(cand)
    found = shutil.which("fastmqa-tune")
    if not found:
        raise FileNotFoundError("fastmqa-tune not found: set FASTMQA_TUNE, or install "
                                "FastMQA's tools next to the library or on PATH")
    return found


def tune(*args, check=True, capture_output=False, **options):
    """Runs fastmqa-tune (tune_executable()) and returns the CompletedProcess.
    Positional args pass through; keyword options become --name value (underscores
    become dashes; True gives a bare flag, False/None omit it), e.g.
    tune(problem="op=decode,batch=8,heads=32,kv_heads=1,d=128,kv_len=4096",
    budget=20).
    check=True raises subprocess.CalledProcessError on a non-zero exit."""
    argv = [tune_executable()]
    for name, value in options.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            argv.append(flag)
        elif value not in (False, None):
            for v in (value if isinstance(value, (list, tuple)) else [value]):
                argv += [flag, str(v)]
    argv += [str(a) for a in args]
    return subprocess.run(argv, check=check, capture_output=capture_output, text=True)

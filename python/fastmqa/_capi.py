"""_capi.py -- the C API of libfastmqa (include/fastmqa.h) as ctypes declarations.

This is the one Python copy of the public header: its enums as IntEnums, its
structs as ctypes Structures (field for field, in header order), the signatures of
the fmqa_* functions the package calls, and how the shared library is found.
python/tests/test_layout.py compiles a C program against the header and checks
every struct's size and every field's offset and size against these
declarations, and that the header declares no field missing here; keep the two
in step when the header changes.

Only fmqa_* symbols of the public header are used.  The library is loaded on
first use (load()), so `import fastmqa` works without it; where it is looked for
is load()'s docstring.
"""
import ctypes
import ctypes.util
import enum
import operator
import os
import sys
import threading

# ---------------------------------------------------------------- enums


class _NamedEnum(enum.IntEnum):
    """An fmqa_* enum: parse() accepts a member, its value or its name (any case)."""

    @classmethod
    def parse(cls, value, what):
        if isinstance(value, cls):
            return value
        if isinstance(value, str):
            key = value.strip().upper().replace("-", "_")
            key = cls._aliases().get(key, key)
            if key in cls.__members__:
                return cls[key]
        elif isinstance(value, int) and not isinstance(value, bool):
            try:
                return cls(value)
            except ValueError:
                pass
        names = ", ".join(m.name.lower() for m in cls)
        raise ValueError(f"{what}: expected one of {names}, got {value!r}")

    @classmethod
    def _aliases(cls):
        return {}

    def __str__(self):
        return self.name.lower()


class Status(_NamedEnum):
    OK = 0
    ERR_INVALID_ARGUMENT = 1
    ERR_UNSUPPORTED = 2
    ERR_NO_DRIVER = 3
    ERR_NO_DEVICE = 4
    ERR_CUDA = 5
    ERR_COMPILE = 6
    ERR_TEMPLATE = 7
    ERR_DATABASE = 8
    ERR_OUT_OF_MEMORY = 9
    ERR_NOT_FOUND = 10
    ERR_IO = 11
    ERR_INTERNAL = 12


class Dtype(_NamedEnum):
    F16 = 1
    BF16 = 2
    F32 = 3
    INT8 = 4
    FP8_E4M3 = 5

    @classmethod
    def _aliases(cls):
        return {"FP8": "FP8_E4M3", "FLOAT16": "F16", "HALF": "F16", "BFLOAT16": "BF16",
                "FLOAT32": "F32"}


class Op(_NamedEnum):
    DECODE = 1
    PREFILL = 2
    MLA_DECODE = 3
    APPEND = 4
    COMPRESS = 5


class Rope(_NamedEnum):
    NONE = 0
    NEOX = 1
    GPTJ = 2


class KvScale(_NamedEnum):
    """fmqa_kv_scale_granularity: which scales an 8-bit KV cache carries."""
    TOKEN_HEAD = 0
    HEAD = 1
    TENSOR = 2


class Pooling(_NamedEnum):
    NONE = 0
    MAX = 1
    AVG = 2


class LogLevel(_NamedEnum):
    QUIET = 0
    ERROR = 1
    WARN = 2
    INFO = 3
    DEBUG = 4


class ChoiceSource(_NamedEnum):
    TUNED = 1
    NEAREST = 2
    DEFAULT = 3


class Level(_NamedEnum):
    CONSERVATIVE = 1
    BALANCED = 2
    AGGRESSIVE = 3


VERSION_STRING = "0.1.0"  # FMQA_VERSION_STRING of the header these declarations follow
FLAG_CAUSAL = 0x1
FLAG_PAGED = 0x2
FLAG_TREE_MASK = 0x4
FLAG_LSE = 0x8
FLAG_RING = 0x10
FLAG_BATCH_INVARIANT = 0x20
FLAG_SCORES = 0x80
FLAG_KV_CACHE = 0x100
FLAG_LATENT = 0x1000
FLAG_PAGE_CSR = 0x40
FLAG_SLOT_MAPPING = 0x2000
FLAG_ALL = 0x31FF
LEVEL_COMPRESS_EVERY = 16
LEVEL_SCORE_COST_PCT = 3
OPTIONS_VERSION = 1

# ---------------------------------------------------------------- structs

I32, U32, I64, F32, F64 = ctypes.c_int32, ctypes.c_uint32, ctypes.c_int64, ctypes.c_float, \
    ctypes.c_double
PTR, SIZE = ctypes.c_void_p, ctypes.c_size_t
ENUM = ctypes.c_int32  # C enums of small non-negative values: 4 bytes on every ABI we build for
_INT_CODES = tuple("bBhHiIlLqQ")  # ctypes' _type_ of the integer types (c_size_t too)


def _int_field(name, ctype, value):
    """value for an integer field (anything with __index__: int, numpy and torch
    integers) when it fits ctype; ctypes alone wraps an out-of-range int silently
    (2**32 becomes 0) and rejects a str as "bytes"."""
    try:
        value = operator.index(value)
    except TypeError:
        raise TypeError(f"{name}: expected an int, got {type(value).__name__}") from None
    bits, signed = 8 * ctypes.sizeof(ctype), ctype._type_.islower()
    lo, hi = (-(1 << (bits - 1)), (1 << (bits - 1)) - 1) if signed else (0, (1 << bits) - 1)
    if not lo <= value <= hi:
        raise ValueError(f"{name}: {value} does not fit its C type ({bits}-bit "
                         f"{'signed' if signed else 'unsigned'}: {lo}..{hi})")
    return value


class Struct(ctypes.Structure):
    """A public struct: keyword construction (enum fields take names), equality by
    value, a repr that names enums, and as_dict()."""

    _enums_ = {}

    def __init__(self, **fields):
        super().__init__()
        for name, value in fields.items():
            self._set(name, value)

    def _set(self, name, value):
        ctype = next((f[1] for f in self._fields_ if f[0] == name), None)
        if ctype is None:
            raise TypeError(f"{type(self).__name__} has no field {name!r}")
        enum_cls = self._enums_.get(name)
        if enum_cls is not None:
            value = enum_cls.parse(value, f"{type(self).__name__}.{name}")
        elif getattr(ctype, "_type_", None) in _INT_CODES:
            value = _int_field(f"{type(self).__name__}.{name}", ctype, value)
        elif isinstance(value, str):
            value = value.encode()
        setattr(self, name, value)

    def as_dict(self):
        out = {}
        for name, *_ in self._fields_:
            v = getattr(self, name)
            enum_cls = self._enums_.get(name)
            if enum_cls is not None:
                try:
                    v = enum_cls(v)
                except ValueError:
                    pass
            elif isinstance(v, bytes):
                v = v.decode(errors="replace")
            out[name] = v
        return out

    def __eq__(self, other):
        return type(self) is type(other) and bytes(self) == bytes(other)

    def __hash__(self):
        return hash(bytes(self))

    def __repr__(self):
        inner = ", ".join(f"{k}={str(v) if isinstance(v, enum.Enum) else repr(v)}"
                          for k, v in self.as_dict().items())
        return f"{type(self).__name__}({inner})"


def _strides(name):
    return [(f"{name}_stride_{d}", I64) for d in ("batch", "token", "head")]


class Problem(Struct):
    """fmqa_problem: the shape and types of one attention call."""
    _fields_ = [("op", ENUM), ("batch", I32), ("num_q_heads", I32), ("num_kv_heads", I32),
                ("head_dim_qk", I32), ("head_dim_v", I32), ("q_tokens", I32), ("kv_len", I32),
                ("q_dtype", ENUM), ("kv_dtype", ENUM), ("out_dtype", ENUM),
                ("page_size", I32), ("window", I32), ("sink_tokens", I32), ("rope", ENUM),
                ("flags", U32), ("kv_scale_granularity", ENUM), ("logit_softcap", F32),
                ("draft_slots", I32), ("rope_dim", I32)]
    _enums_ = {"op": Op, "q_dtype": Dtype, "kv_dtype": Dtype, "out_dtype": Dtype,
               "rope": Rope, "kv_scale_granularity": KvScale}

    def __init__(self, **fields):
        """fmqa_problem_init()'s defaults (decode, f16, one query token), then fields."""
        super().__init__()
        load().fmqa_problem_init(ctypes.byref(self))
        for name, value in fields.items():
            self._set(name, value)


class Options(Struct):
    """fmqa_options; FMQA_OPTIONS_INIT is Options.init()."""
    _fields_ = [("struct_size", U32), ("version", U32), ("device", I32),
                ("db_path", ctypes.c_char_p), ("template_dir", ctypes.c_char_p),
                ("log_level", ENUM)]
    _enums_ = {"log_level": LogLevel}

    @classmethod
    def init(cls, **fields):
        fields.setdefault("log_level", LogLevel.WARN)
        return cls(struct_size=ctypes.sizeof(cls), version=OPTIONS_VERSION, **fields)


class DeviceInfo(Struct):
    """fmqa_device_info."""
    _fields_ = [("name", ctypes.c_char * 256), ("ordinal", I32), ("cc_major", I32),
                ("cc_minor", I32), ("sm_count", I32), ("total_memory", I64),
                ("l2_bytes", I64), ("smem_per_block_optin", I32), ("smem_per_sm", I32),
                ("regs_per_sm", I32), ("max_threads_per_block", I32), ("clock_khz", I32),
                ("mem_clock_khz", I32), ("mem_bus_width", I32), ("driver_version", I32),
                ("nvrtc_major", I32), ("nvrtc_minor", I32), ("arch", ctypes.c_char * 16)]


class Choice(Struct):
    """fmqa_choice: how the dispatcher chose a problem's kernel variant."""
    _fields_ = [("source", ENUM), ("template_name", ctypes.c_char * 64),
                ("config", ctypes.c_char * 256), ("tuned_time_us", F64),
                ("reason", ctypes.c_char * 192)]
    _enums_ = {"source": ChoiceSource}


class DecodeArgs(Struct):
    """fmqa_decode_args: device pointers (ints) and strides in elements."""
    _fields_ = ([("q", PTR)] + _strides("q") + [("k", PTR), ("v", PTR)] + _strides("k") +
                _strides("v") + [("k_scale", PTR), ("v_scale", PTR)] + _strides("k_scale") +
                _strides("v_scale") +
                [("kv_lens", PTR), ("page_table", PTR), ("page_table_stride", I64),
                 ("tree_mask", PTR), ("o", PTR)] + _strides("o") +
                [("lse", PTR), ("sm_scale", F32), ("workspace", PTR),
                 ("workspace_size", SIZE), ("sinks", PTR),
                 ("page_indptr", PTR), ("page_indices", PTR), ("last_page_len", PTR),
                 ("scores", PTR), ("scores_stride_batch", I64), ("scores_stride_head", I64)])


class MlaDecodeArgs(Struct):
    """fmqa_mla_decode_args: device pointers (ints) and strides in elements; the
    latent cache kv is [b|page, j, d_c + d_r] (no head stride)."""
    _fields_ = ([("q", PTR)] + _strides("q") +
                [("kv", PTR), ("kv_stride_batch", I64), ("kv_stride_token", I64),
                 ("kv_scale", PTR), ("kv_scale_stride_batch", I64),
                 ("kv_scale_stride_token", I64),
                 ("kv_lens", PTR), ("page_table", PTR), ("page_table_stride", I64),
                 ("o", PTR)] + _strides("o") +
                [("lse", PTR), ("sm_scale", F32), ("workspace", PTR),
                 ("workspace_size", SIZE),
                 ("page_indptr", PTR), ("page_indices", PTR), ("last_page_len", PTR), ("sinks", PTR)])


class AppendArgs(Struct):
    """fmqa_append_args: device pointers (ints) and strides in elements."""
    _fields_ = ([("k_new", PTR), ("v_new", PTR)] + _strides("k_new") + _strides("v_new") +
                [("q", PTR)] + _strides("q") + [("k", PTR), ("v", PTR)] + _strides("k") +
                _strides("v") + [("k_scale", PTR), ("v_scale", PTR)] + _strides("k_scale") +
                _strides("v_scale") +
                [("start_pos", PTR), ("page_table", PTR), ("page_table_stride", I64),
                 ("rope_theta", F32), ("rope_cos_sin", PTR), ("rope_cos_sin_stride", I64),
                 ("rope_cos_sin_len", I64),
                 ("page_indptr", PTR), ("page_indices", PTR), ("slot_mapping", PTR),
                 ("k_pe_new", PTR), ("k_pe_new_stride_batch", I64), ("k_pe_new_stride_token", I64), ("rope_pos", PTR)])


class PrefillArgs(Struct):
    """fmqa_prefill_args: device pointers (ints) and strides in elements; q, o
    (and k, v without FLAG_KV_CACHE) packed [total_q, heads, d]."""
    _fields_ = ([("q", PTR), ("q_stride_token", I64), ("q_stride_head", I64),
                 ("k", PTR), ("v", PTR)] + _strides("k") + _strides("v") +
                [("k_scale", PTR), ("v_scale", PTR)] + _strides("k_scale") +
                _strides("v_scale") +
                [("cu_seqlens_q", PTR), ("kv_lens", PTR), ("page_table", PTR),
                 ("page_table_stride", I64), ("o", PTR), ("o_stride_token", I64),
                 ("o_stride_head", I64), ("lse", PTR), ("sm_scale", F32), ("workspace", PTR),
                 ("workspace_size", SIZE), ("total_q", I64), ("sinks", PTR),
                 ("scores", PTR), ("scores_stride_batch", I64), ("scores_stride_head", I64),
                 ("scores_window", I32)])


class CompressPolicy(Struct):
    """fmqa_compress_policy: which cache slots fmqa_compress keeps."""
    _fields_ = [("sink_tokens", I32), ("recent", I32), ("heavy", I32), ("pooling", ENUM),
                ("pool", I32), ("per_sequence", I32)]
    _enums_ = {"pooling": Pooling}


class CompressArgs(Struct):
    """fmqa_compress_args: device pointers (ints) and strides in elements."""
    _fields_ = ([("k", PTR), ("v", PTR)] + _strides("k") + _strides("v") +
                [("k_scale", PTR), ("v_scale", PTR)] + _strides("k_scale") +
                _strides("v_scale") +
                [("page_table", PTR), ("page_table_stride", I64), ("kv_lens", PTR),
                 ("new_lens", PTR), ("scores", PTR), ("scores_stride_batch", I64),
                 ("scores_stride_head", I64), ("kept", PTR), ("kept_stride_batch", I64),
                 ("kept_stride_head", I64), ("policy", CompressPolicy), ("workspace", PTR),
                 ("workspace_size", SIZE), ("free_pages", PTR)])


class ModelConfig(Struct):
    """fmqa_model_config: a model's attention shape.  num_kv_heads defaults to
    num_q_heads (MHA) and dtype to f16 when not given."""
    _fields_ = [("hidden_size", I32), ("num_q_heads", I32), ("num_kv_heads", I32),
                ("head_dim", I32), ("mla_latent_dim", I32), ("mla_rope_dim", I32),
                ("max_seq_len", I32), ("dtype", ENUM)]
    _enums_ = {"dtype": Dtype}

    def __init__(self, **fields):
        fields.setdefault("dtype", Dtype.F16)
        fields.setdefault("num_kv_heads", fields.get("num_q_heads", 0))
        super().__init__(**fields)


class LevelPolicy(Struct):
    """fmqa_level_policy: the concrete choices behind a level."""
    _fields_ = [("level", ENUM), ("kv_dtype", ENUM), ("sink_tokens", I32), ("window", I32),
                ("spec_tokens", I32), ("page_size", I32), ("rope", ENUM),
                ("kv_scale_granularity", ENUM), ("heavy", I32), ("pooling", ENUM), ("pool", I32),
                ("compress_every", I32), ("score_steps", I32)]
    _enums_ = {"level": Level, "kv_dtype": Dtype, "rope": Rope, "kv_scale_granularity": KvScale,
               "pooling": Pooling}


class LevelStepActions(Struct):
    """fmqa_level_step_actions: what one decode step of a compressed level does."""
    _fields_ = [("zero_scores", I32), ("score", I32), ("compress", I32)]


class MemoryReport(Struct):
    """fmqa_memory_report: one layer's KV-cache memory under a policy."""
    _fields_ = [("bytes_per_token", I64), ("bytes_per_seq", I64), ("tokens_kept", I64),
                ("total_bytes", I64), ("baseline_bytes_per_seq", I64), ("reduction", F64),
                ("cache_multiplier", F64), ("max_seqs_in_budget", I64),
                ("fixed_scale_bytes", I64)]


# Every public struct of fastmqa.h, by its C name (the layout test walks this).
STRUCTS = {"fmqa_problem": Problem, "fmqa_options": Options, "fmqa_device_info": DeviceInfo,
           "fmqa_choice": Choice, "fmqa_decode_args": DecodeArgs,
           "fmqa_mla_decode_args": MlaDecodeArgs,
           "fmqa_append_args": AppendArgs, "fmqa_prefill_args": PrefillArgs,
           "fmqa_compress_policy": CompressPolicy, "fmqa_compress_args": CompressArgs,
           "fmqa_model_config": ModelConfig,
           "fmqa_level_policy": LevelPolicy, "fmqa_level_step_actions": LevelStepActions,
           "fmqa_memory_report": MemoryReport}

# ---------------------------------------------------------------- functions

_P = ctypes.POINTER
_ST, _STR = ctypes.c_int, ctypes.c_char_p
SIGNATURES = {
    "fmqa_status_string": (_STR, [_ST]),
    "fmqa_dtype_name": (_STR, [ENUM]),
    "fmqa_dtype_size": (SIZE, [ENUM]),
    "fmqa_op_name": (_STR, [ENUM]),
    "fmqa_problem_init": (None, [_P(Problem)]),
    "fmqa_default_db_path": (_ST, [ctypes.c_char_p, SIZE]),
    "fmqa_ctx_create": (_ST, [_P(Options), _P(PTR)]),
    "fmqa_ctx_destroy": (None, [PTR]),
    "fmqa_ctx_errmsg": (_STR, [PTR]),
    "fmqa_device_query": (_ST, [PTR, _P(DeviceInfo)]),
    "fmqa_nvrtc_version": (_ST, [_P(ctypes.c_int), _P(ctypes.c_int)]),
    "fmqa_problem_validate": (_ST, [PTR, _P(Problem)]),
    "fmqa_plan": (_ST, [PTR, _P(Problem), _P(Choice)]),
    "fmqa_decode_workspace_size": (_ST, [PTR, _P(Problem), _P(SIZE)]),
    "fmqa_decode": (_ST, [PTR, _P(Problem), _P(DecodeArgs), PTR]),
    "fmqa_mla_decode": (_ST, [PTR, _P(Problem), _P(MlaDecodeArgs), PTR]),
    "fmqa_append": (_ST, [PTR, _P(Problem), _P(AppendArgs), PTR]),
    "fmqa_prefill_workspace_size": (_ST, [PTR, _P(Problem), _P(SIZE)]),
    "fmqa_prefill": (_ST, [PTR, _P(Problem), _P(PrefillArgs), PTR]),
    "fmqa_compress_workspace_size": (_ST, [PTR, _P(Problem), _P(SIZE)]),
    "fmqa_compress": (_ST, [PTR, _P(Problem), _P(CompressArgs), PTR]),
    "fmqa_level_name": (_STR, [ENUM]),
    "fmqa_level_from_name": (_ST, [PTR, _STR, _P(ENUM)]),
    "fmqa_level_policy_preset": (_ST, [PTR, ENUM, _P(ModelConfig), _P(LevelPolicy)]),
    "fmqa_level_step": (_ST, [PTR, _P(LevelPolicy), I64, _P(LevelStepActions)]),
    "fmqa_level_problem": (_ST, [PTR, _P(ModelConfig), _P(LevelPolicy), I32, _P(Problem)]),
    "fmqa_level_policy_tune": (_ST, [PTR, _P(ModelConfig), I32, _P(LevelPolicy),
                                     _P(ctypes.c_int)]),
    "fmqa_memory_report_compute": (_ST, [PTR, _P(ModelConfig), _P(LevelPolicy), I64, I64,
                                         _P(MemoryReport)]),
}
# Declared where the library has them (added in later versions of the header).
OPTIONAL_SIGNATURES = {
    "fmqa_version_string": (_STR, []),
}

# ---------------------------------------------------------------- loading

_LIB_NAMES = ("libfastmqa.so", "libfastmqa.so.0", "libfastmqa.dylib")
_lock = threading.Lock()
_lib = None
_lib_path = None


def _bundled():
    """A copy placed in the package (fastmqa/_lib/) when it was built as a wheel."""
    here = os.path.join(os.path.dirname(os.path.abspath(__file__)), "_lib")
    return [os.path.join(here, n) for n in _LIB_NAMES]


def _installed():
    """An installed prefix: the dynamic linker's cache, then the usual lib dirs."""
    found = ctypes.util.find_library("fastmqa")
    out = [found] if found else []
    for prefix in (sys.prefix, "/usr/local", "/usr"):
        for libdir in ("lib", "lib64", "lib/x86_64-linux-gnu", "lib/aarch64-linux-gnu"):
            out += [os.path.join(prefix, libdir, n) for n in _LIB_NAMES]
    return out


def candidates():
    """Where load() looks, in order: $FASTMQA_LIB (a file), a bundled copy, an
    installed prefix."""
    env = os.environ.get("FASTMQA_LIB")
    if env:
        return [env]  # an explicit choice is never silently replaced by another copy
    return _bundled() + _installed()


def load(path=None):
    """The loaded library (a ctypes.CDLL with its fmqa_* signatures declared).

    path, else $FASTMQA_LIB, else fastmqa/_lib/libfastmqa.so (a wheel that bundles
    it), else an installed libfastmqa (ldconfig's cache, then lib/ under
    sys.prefix, /usr/local and /usr).  Raises OSError naming
    every place tried.  The first successful load is kept; a later call with
    another path is an error."""
    global _lib, _lib_path
    with _lock:
        if _lib is not None:
            if path and os.path.realpath(path) != os.path.realpath(_lib_path):
                raise OSError(f"libfastmqa is already loaded from {_lib_path}; "
                              f"cannot also load {path}")
            return _lib
        tried, missing = [], {}  # missing: directory -> the file names not there
        for cand in ([path] if path else candidates()):
            if os.path.sep in cand and not os.path.exists(cand):
                missing.setdefault(os.path.dirname(cand), []).append(os.path.basename(cand))
                continue
            try:
                dll = ctypes.CDLL(cand)
            except OSError as e:
                tried.append(f"{cand} ({e})")
                continue
            _declare(dll)
            _lib, _lib_path = dll, cand
            return dll
        tried += [os.path.join(d, n[0] if len(n) == 1 else "{" + ",".join(n) + "}") +
                  " (no such file)" for d, n in missing.items()]
        raise OSError("libfastmqa not found: set FASTMQA_LIB to the library file "
                      "(e.g. build/libfastmqa.so) or install it; tried: " + "; ".join(tried))


def library_path():
    """The file the library was loaded from (loads it if needed)."""
    load()
    return _lib_path


def _declare(dll):
    for name, (res, argtypes) in SIGNATURES.items():
        fn = getattr(dll, name)
        fn.restype, fn.argtypes = res, argtypes
    for name, (res, argtypes) in OPTIONAL_SIGNATURES.items():
        if hasattr(dll, name):
            fn = getattr(dll, name)
            fn.restype, fn.argtypes = res, argtypes

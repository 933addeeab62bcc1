"""fastmqa -- FastMQA from Python: the libfastmqa C API through ctypes, its decode,
MLA decode, append and prefill as torch custom ops, and an attention layer
(fastmqa.nn.Attention).

Needs no compiler: libfastmqa is loaded at first use from $FASTMQA_LIB, a copy
bundled in the wheel, or an installed prefix (_capi.load).  Everything that needs
no tensors (memory_report, level_policy, level_problem, validate, plan, tune)
works without torch; decode, mla_decode, append, prefill, nn and ops import torch on
first use.

    import fastmqa
    print(fastmqa.memory_report(hidden_size=2048, num_q_heads=32, num_kv_heads=1,
                                max_seq_len=4096, level="aggressive"))
"""
import importlib

from ._capi import (FLAG_ALL, FLAG_BATCH_INVARIANT, FLAG_CAUSAL, FLAG_KV_CACHE, FLAG_LATENT,
                    FLAG_LSE, FLAG_PAGE_CSR, FLAG_PAGED, FLAG_RING, FLAG_SCORES, FLAG_SLOT_MAPPING,
                    FLAG_TREE_MASK, AppendArgs, Choice, ChoiceSource, CompressArgs, CompressPolicy,
                    DecodeArgs, DeviceInfo, Dtype, KvScale, Level, LevelPolicy,
                    LevelStepActions, LogLevel, MemoryReport, ModelConfig, Op, Options, Pooling,
                    PrefillArgs, Problem, Rope, Status, VERSION_STRING, library_path, load)
from .core import (Context, Error, Plan, default_context, default_db_path, device_info,
                   level_policy, level_problem, memory_report, model_config, plan, tune,
                   tune_executable, validate, version)

__version__ = VERSION_STRING

__all__ = ["AppendArgs", "Choice", "ChoiceSource", "CompressArgs", "CompressPolicy", "Context",
           "DecodeArgs", "DeviceInfo", "Dtype", "Error", "FLAG_ALL", "FLAG_BATCH_INVARIANT",
           "FLAG_CAUSAL", "FLAG_KV_CACHE", "FLAG_LATENT", "FLAG_LSE", "FLAG_PAGE_CSR", "FLAG_PAGED",
           "FLAG_RING", "FLAG_SCORES", "FLAG_SLOT_MAPPING", "FLAG_TREE_MASK", "KvScale", "Level",
           "LevelPolicy", "LevelStepActions", "LogLevel", "MemoryReport", "ModelConfig", "Op", "Options", "Plan",
           "Pooling", "PrefillArgs", "Problem", "Rope", "Status",
           "append", "decode",
           "decode_workspace", "prefill", "prefill_workspace", "default_context", "default_db_path", "device_info",
           "level_policy", "level_problem", "library_path", "load", "memory_report",
           "mla_decode", "mla_decode_workspace",
           "model_config", "nn", "ops", "plan", "torch_dtype", "tune", "tune_executable",
           "validate", "version"]

# Names that need torch: imported from .ops / .nn on first use.
_LAZY = {"decode": "ops", "append": "ops", "decode_workspace": "ops", "torch_dtype": "ops",
         "prefill": "ops", "prefill_workspace": "ops",
         "mla_decode": "ops", "mla_decode_workspace": "ops",
         "nn": None, "ops": None}


def __getattr__(name):
    if name not in _LAZY:
        raise AttributeError(f"module 'fastmqa' has no attribute {name!r}")
    mod = importlib.import_module(f".{_LAZY[name] or name}", __name__)
    return mod if _LAZY[name] is None else getattr(mod, name)


def __dir__():
    return sorted(list(globals()) + list(_LAZY))

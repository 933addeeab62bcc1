"""The ctypes declarations of fastmqa/_capi.py against the C compiler's view of
include/fastmqa.h (bench/peers/peers.py uses the same declarations).

A C program generated from the Python declarations prints sizeof of every
struct, offsetof and sizeof of every field, and the value of every enumerator
and FMQA_FLAG_* macro; each must equal Python's.  The header itself is read for
the other direction: every struct, field (in order), enumerator and function
signature it declares must have its Python counterpart, so a field added on one
side only fails here even where it fits in padding.
"""
import os
import re
import shutil
import subprocess

import pytest

from conftest import HEADER
from fastmqa import _capi

# Python enum class -> prefix of its C enumerators.
ENUMS = {_capi.Status: "FMQA_", _capi.Dtype: "FMQA_DTYPE_", _capi.Op: "FMQA_OP_",
         _capi.Rope: "FMQA_ROPE_", _capi.LogLevel: "FMQA_LOG_",
         _capi.ChoiceSource: "FMQA_CHOICE_", _capi.Level: "FMQA_LEVEL_",
         _capi.KvScale: "FMQA_KV_SCALE_", _capi.Pooling: "FMQA_POOL_"}
C_ENUM_OF = {_capi.Status: "fmqa_status", _capi.Dtype: "fmqa_dtype", _capi.Op: "fmqa_op",
             _capi.Rope: "fmqa_rope", _capi.LogLevel: "fmqa_log_level",
             _capi.ChoiceSource: "fmqa_choice_source", _capi.Level: "fmqa_level",
             _capi.KvScale: "fmqa_kv_scale_granularity", _capi.Pooling: "fmqa_pooling"}
FLAGS = {f"FMQA_FLAG_{n}": getattr(_capi, f"FLAG_{n}")
         for n in ("CAUSAL", "PAGED", "TREE_MASK", "LSE", "RING", "SCORES", "ALL")}
FLAGS["FMQA_OPTIONS_VERSION"] = _capi.OPTIONS_VERSION
FLAGS["FMQA_LEVEL_COMPRESS_EVERY"] = _capi.LEVEL_COMPRESS_EVERY
FLAGS["FMQA_LEVEL_SCORE_COST_PCT"] = _capi.LEVEL_SCORE_COST_PCT


def header_text():
    with open(HEADER) as f:
        text = f.read()
    return re.sub(r"/\*.*?\*/|//[^\n]*", " ", text, flags=re.S)


def declared_name(piece):
    """The identifier a declarator piece declares ('const char *db_path' -> db_path)."""
    return re.findall(r"[A-Za-z_]\w*", re.sub(r"\[[^\]]*\]", "", piece))[-1]


def header_structs():
    out = {}
    for name, body in re.findall(r"typedef struct (\w+) \{(.*?)\} \1;", header_text(), re.S):
        fields = []
        for decl in filter(None, (d.strip() for d in body.split(";"))):
            fields += [declared_name(p) for p in decl.split(",")]
        out[name] = fields
    return out


def header_enums():
    return {name: re.findall(r"\b(FMQA_\w+)\s*=", body)
            for name, body in re.findall(r"typedef enum (\w+) \{(.*?)\} \1;", header_text(),
                                         re.S)}


def header_functions():
    out = {}
    for name, params in re.findall(r"\b(fmqa_\w+)\s*\(([^()]*)\)\s*;", header_text()):
        params = params.strip()
        out[name] = 0 if params in ("", "void") else params.count(",") + 1
    return out


def c_program():
    lines = ["#include <stddef.h>", "#include <stdio.h>", '#include "fastmqa.h"',
             "int main(void) {"]
    for cname, cls in _capi.STRUCTS.items():
        lines.append(f'  printf("{cname} - %zu %zu\\n", sizeof({cname}), (size_t)0);')
        for fname, _ in cls._fields_:
            lines.append(f'  printf("{cname} {fname} %zu %zu\\n", offsetof({cname}, {fname}), '
                         f"sizeof((({cname} *)0)->{fname}));")
    consts = dict(FLAGS)
    for cls, prefix in ENUMS.items():
        consts.update({prefix + m.name: int(m) for m in cls})
    for c in consts:
        lines.append(f'  printf("const {c} %lld 0\\n", (long long)({c}));')
    lines.append('  printf("version FMQA_VERSION_STRING %s 0\\n", FMQA_VERSION_STRING);')
    lines += ["  return 0;", "}"]
    return "\n".join(lines) + "\n", consts


@pytest.fixture(scope="module")
def c_layout(tmp_path_factory):
    cc = os.environ.get("CC") or shutil.which("cc") or shutil.which("gcc")
    if not cc:
        pytest.skip("no C compiler (cc, gcc or $CC): the layout is not checked")
    src, consts = c_program()
    d = tmp_path_factory.mktemp("layout")
    (d / "layout.c").write_text(src)
    exe = d / "layout"
    subprocess.run([cc, "-std=c11", "-Wall", "-Werror", "-I", os.path.dirname(HEADER),
                    str(d / "layout.c"), "-o", str(exe)], check=True)
    rows = {}
    for line in subprocess.run([str(exe)], check=True, capture_output=True,
                               text=True).stdout.splitlines():
        a, b, x, y = line.split()
        rows[(a, b)] = (x, int(y)) if a == "version" else (int(x), int(y))
    return rows, consts


@pytest.mark.parametrize("cname", sorted(_capi.STRUCTS))
def test_struct_layout_matches_c(c_layout, cname):
    rows, _ = c_layout
    cls = _capi.STRUCTS[cname]
    import ctypes
    assert ctypes.sizeof(cls) == rows[(cname, "-")][0], f"sizeof {cname}"
    for fname, _ in cls._fields_:
        f = getattr(cls, fname)
        assert (f.offset, f.size) == rows[(cname, fname)], \
            f"{cname}.{fname}: ctypes (offset, size) {(f.offset, f.size)}, C {rows[(cname, fname)]}"


def test_header_structs_and_fields_all_declared():
    structs = header_structs()
    assert set(structs) == set(_capi.STRUCTS), "structs of fastmqa.h vs _capi.STRUCTS"
    for cname, fields in structs.items():
        assert fields == [f[0] for f in _capi.STRUCTS[cname]._fields_], \
            f"{cname}: fields in the header vs in _capi (names and order)"


def test_enum_values_match_c(c_layout):
    rows, consts = c_layout
    for name, value in consts.items():
        assert rows[("const", name)][0] == value, name


def test_version_string_is_the_headers(c_layout):
    assert c_layout[0][("version", "FMQA_VERSION_STRING")][0] == _capi.VERSION_STRING


def test_header_enumerators_all_declared():
    enums = header_enums()
    for cls, prefix in ENUMS.items():
        assert sorted(enums[C_ENUM_OF[cls]]) == sorted(prefix + m.name for m in cls), cls
    assert set(enums) == set(C_ENUM_OF.values()), "enums of fastmqa.h vs _capi"


def test_function_signatures_match_header():
    funcs = header_functions()
    for name, (_, argtypes) in {**_capi.SIGNATURES, **_capi.OPTIONAL_SIGNATURES}.items():
        if name in _capi.OPTIONAL_SIGNATURES and name not in funcs:
            continue  # not in this version of the header
        assert name in funcs, f"{name} is not declared in fastmqa.h"
        assert len(argtypes) == funcs[name], f"{name}: parameter count"

#!/usr/bin/env bash
# ptxas-decode.sh -- compiles decode specializations with nvcc for sm_80 and
# sm_90 (no GPU needed) and reports registers, spills and the SASS instruction
# mix: HMMA (mma.sync), LDGSTS (cp.async), LDSM (ldmatrix), and LDL/STL (local
# memory, which must be absent).  Each row is a problem and a full config; the
# program nvcc compiles is the one the library compiles, rendered by
# `fastmqa-gen source decode` (templates/decode.lua's specialize() and config
# defines), so the defines cannot fall behind the template.  Exits 1 if a
# render or compile fails, spills, has a stack frame or uses local memory.
# cuobjdump comes from $CUOBJDUMP or PATH (pip's nvidia-cuda-cuobjdump +
# nvidia-cuda-nvdisasm work); without it the SASS columns read "-".
# fastmqa-gen comes from $FASTMQA_GEN, else build/generator/fastmqa-gen.
# Usage: scripts/ptxas-decode.sh [--render-only] [--only REGEX] [ARCH...]
#   ARCH           80, 90, ... (default: 80 90)
#   --render-only  render every row (its problem and config legal for decode,
#                  on each arch's preset), compile nothing: needs no nvcc
#   --only REGEX   the rows whose name matches (grep -E)
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
render_only=0 only=.
while [ $# -gt 0 ]; do
  case $1 in
    --render-only) render_only=1; shift ;;
    --only) only=${2:?--only needs a REGEX}; shift 2 ;;
    -h|--help) sed -n '2,/^set -u/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
    *) break ;;
  esac
done
archs=${*:-"80 90"}
GEN=${FASTMQA_GEN:-$here/build/generator/fastmqa-gen}
[ -x "$GEN" ] || { echo "ptxas-decode.sh: $GEN not found (build first, or set FASTMQA_GEN)" >&2; exit 2; }
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
# NAME PROBLEM CONFIG: problems in fastmqa-gen's SPEC syntax (batch 1, kv_len
# 4096 unless said), configs complete (decode.lua's space).
p="op=decode,batch=1,kv_len=4096"
c="M_TILES=1,BULK=0,SPLITS=0,VBIAS=0"
table="mqa_f16_d128_g32      $p,heads=32,kv_heads=1,d=128                                BLOCK_N=64,WARPS_M=2,WARPS_N=2,STAGES=3,$c
gqa_f16_d128_g4       $p,heads=32,kv_heads=8,d=128                                BLOCK_N=64,WARPS_M=1,WARPS_N=4,STAGES=3,$c
mha_bf16_d64_g1       $p,heads=8,kv_heads=8,d=64,q=bf16,kv=bf16,out=bf16          BLOCK_N=64,WARPS_M=1,WARPS_N=4,STAGES=3,$c
d96_g6_paged          $p,heads=12,kv_heads=2,d=96,page=16,flags=causal|paged      BLOCK_N=64,WARPS_M=1,WARPS_N=4,STAGES=3,$c
d256_g8_bf16          $p,heads=8,kv_heads=1,d=256,q=bf16,kv=bf16,out=bf16         BLOCK_N=32,WARPS_M=1,WARPS_N=2,STAGES=3,$c
d256_g32_f16          $p,heads=32,kv_heads=1,d=256                                BLOCK_N=32,WARPS_M=2,WARPS_N=2,STAGES=2,$c
int8_f16_d128_g32     $p,heads=32,kv_heads=1,d=128,kv=int8                        BLOCK_N=64,WARPS_M=2,WARPS_N=2,STAGES=4,$c
int8_bf16_d128_g8     $p,heads=8,kv_heads=1,d=128,kv=int8,q=bf16,out=bf16         BLOCK_N=64,WARPS_M=1,WARPS_N=4,STAGES=4,$c
fp8_f16_d128_g32      $p,heads=32,kv_heads=1,d=128,kv=fp8_e4m3                    BLOCK_N=64,WARPS_M=2,WARPS_N=2,STAGES=4,$c
fp8_bf16_d64_g128     $p,heads=128,kv_heads=1,d=64,kv=fp8_e4m3,q=bf16,out=bf16    BLOCK_N=64,WARPS_M=4,WARPS_N=1,STAGES=4,$c
spec16_causal_g4      $p,heads=32,kv_heads=8,d=128,tq=16,flags=causal|lse         BLOCK_N=64,WARPS_M=4,WARPS_N=1,STAGES=3,$c
spec16_tree_g8_paged  $p,heads=8,kv_heads=1,d=128,tq=16,page=64,flags=tree|paged  BLOCK_N=64,WARPS_M=4,WARPS_N=1,STAGES=3,$c
window_sinks_ring     $p,heads=8,kv_heads=1,d=128,tq=4,page=32,window=1024,sinks=4,flags=causal|paged|ring|lse BLOCK_N=64,WARPS_M=2,WARPS_N=2,STAGES=3,$c
g128_t16_d256         $p,heads=128,kv_heads=1,d=256,tq=16                         BLOCK_N=32,WARPS_M=4,WARPS_N=2,STAGES=2,$c
wide_bn128_wn8        $p,heads=16,kv_heads=1,d=128                                BLOCK_N=128,WARPS_M=1,WARPS_N=8,STAGES=2,$c"
compile() { # name arch problem config
  local name=$1 arch=$2 problem=$3 config=$4
  local f="$out/$name.sm$arch"
  if ! "$GEN" source decode --arch "sm_$arch" --problem "$problem" --config "$config" \
       >"$f.cu" 2>"$f.log"; then
    echo "FAIL  $name sm_$arch: render: $(cat "$f.log")"; return 1
  fi
  if [ "$render_only" = 1 ]; then
    echo "ok    $name sm_$arch: rendered $(grep -c '^#define' "$f.cu") defines"; return 0
  fi
  if ! nvcc -arch=sm_$arch -cubin -std=c++17 -Xptxas -v -I "$here/templates" \
       -x cu "$f.cu" -o "$f.cubin" >"$f.log" 2>&1; then
    echo "FAIL  $name sm_$arch"; sed -n 1,20p "$f.log"; return 1
  fi
  local regs spill hmma=- ldgsts=- ldsm=- local_mem=0 sass
  regs=$(grep -A2 "Function properties for fmqa_decode_kernel" "$f.log" | grep -o "Used [0-9]* registers" | grep -o "[0-9]*")
  # spill and stack bytes of both entries, summed
  spill=$(grep -A1 "Function properties for" "$f.log" | grep -oE "[0-9]+ bytes (stack frame|spill)" | awk '{s+=$1} END {print s+0}')
  if [ -n "$CUOBJDUMP" ]; then
    sass=$("$CUOBJDUMP" -sass "$f.cubin" | awk '/Function : fmqa_decode_kernel/{k=1} /Function : fmqa_decode_combine/{k=0} k')
    hmma=$(grep -c HMMA <<<"$sass"); ldgsts=$(grep -c LDGSTS <<<"$sass"); ldsm=$(grep -c LDSM <<<"$sass")
    local_mem=$("$CUOBJDUMP" -sass "$f.cubin" | grep -cE "\b(LDL|STL)\b")
  fi
  printf "%-22s sm_%s regs %3s stack+spill %3s HMMA %4s LDGSTS %3s LDSM %3s LDL/STL %s\n" \
    "$name" "$arch" "$regs" "$spill" "$hmma" "$ldgsts" "$ldsm" "$local_mem"
  [ "$spill" = 0 ] && [ "$local_mem" = 0 ] && [ "$hmma" != 0 ]
}
CUOBJDUMP=${CUOBJDUMP:-$(command -v cuobjdump || true)}
export -f compile; export here out CUOBJDUMP GEN render_only
rows=$(grep -E "^[^ ]*($only)" <<<"$table") || { echo "ptxas-decode.sh: no row matches '$only'" >&2; exit 2; }
status=0
while read -r name problem config; do
  for a in $archs; do echo "$name $a $problem $config"; done
done <<<"$rows" | xargs -P 2 -L 1 bash -c 'compile "$@"' _ || status=1
exit $status

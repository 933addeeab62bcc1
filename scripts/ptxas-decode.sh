#!/usr/bin/env bash
# ptxas-decode.sh -- compiles decode.cuh specializations with nvcc for sm_80 and
# sm_90 (no GPU needed) and reports registers, spills and the SASS instruction
# mix: HMMA (mma.sync), LDGSTS (cp.async), LDSM (ldmatrix), and LDL/STL (local
# memory, which must be absent).  Exits 1 if any compile fails, spills, has a
# stack frame or uses local memory.  cuobjdump comes from $CUOBJDUMP or PATH
# (pip's nvidia-cuda-cuobjdump + nvidia-cuda-nvdisasm work); without it the
# SASS columns read "-".  Usage: scripts/ptxas-decode.sh [ARCH...] (default 80 90)
# Each line of the table below is "NAME DEFINES...", defines without -D.
set -u
here=$(cd "$(dirname "$0")/.." && pwd)
archs=${*:-"80 90"}
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
base="Q_BF16=0 OUT_BF16=0 KV_FMT=0 PAGED=0 PAGE_SIZE=0 CAUSAL=1 TREE=0 WINDOW=0 RING=0 LSE=0"
cfg="BLOCK_N=64 WARPS_M=2 WARPS_N=2 STAGES=3"
table="mqa_f16_d128_g32      HEAD_DIM=128 GROUP=32 Q_TOKENS=1 $cfg
gqa_f16_d128_g4       HEAD_DIM=128 GROUP=4 Q_TOKENS=1 BLOCK_N=64 WARPS_M=1 WARPS_N=4 STAGES=3
mha_bf16_d64_g1       HEAD_DIM=64 GROUP=1 Q_TOKENS=1 Q_BF16=1 OUT_BF16=1 KV_FMT=1 BLOCK_N=64 WARPS_M=1 WARPS_N=4 STAGES=3
d96_g6_paged          HEAD_DIM=96 GROUP=6 Q_TOKENS=1 PAGED=1 PAGE_SIZE=16 BLOCK_N=64 WARPS_M=1 WARPS_N=4 STAGES=3
d256_g8_bf16          HEAD_DIM=256 GROUP=8 Q_TOKENS=1 Q_BF16=1 OUT_BF16=1 KV_FMT=1 BLOCK_N=32 WARPS_M=1 WARPS_N=2 STAGES=3
d256_g32_f16          HEAD_DIM=256 GROUP=32 Q_TOKENS=1 BLOCK_N=32 WARPS_M=2 WARPS_N=2 STAGES=2
int8_f16_d128_g32     HEAD_DIM=128 GROUP=32 Q_TOKENS=1 KV_FMT=2 BLOCK_N=64 WARPS_M=2 WARPS_N=2 STAGES=4
int8_bf16_d128_g8     HEAD_DIM=128 GROUP=8 Q_TOKENS=1 KV_FMT=2 Q_BF16=1 OUT_BF16=1 BLOCK_N=64 WARPS_M=1 WARPS_N=4 STAGES=4
fp8_f16_d128_g32      HEAD_DIM=128 GROUP=32 Q_TOKENS=1 KV_FMT=3 BLOCK_N=64 WARPS_M=2 WARPS_N=2 STAGES=4
fp8_bf16_d64_g128     HEAD_DIM=64 GROUP=128 Q_TOKENS=1 KV_FMT=3 Q_BF16=1 OUT_BF16=1 BLOCK_N=64 WARPS_M=4 WARPS_N=1 STAGES=4
spec16_causal_g4      HEAD_DIM=128 GROUP=4 Q_TOKENS=16 BLOCK_N=64 WARPS_M=4 WARPS_N=1 STAGES=3 LSE=1
spec16_tree_g8_paged  HEAD_DIM=128 GROUP=8 Q_TOKENS=16 TREE=1 CAUSAL=0 PAGED=1 PAGE_SIZE=64 BLOCK_N=64 WARPS_M=4 WARPS_N=1 STAGES=3
window_sinks_ring     HEAD_DIM=128 GROUP=8 Q_TOKENS=4 WINDOW=1 RING=1 PAGED=1 PAGE_SIZE=32 BLOCK_N=64 WARPS_M=2 WARPS_N=2 STAGES=3 LSE=1
g128_t16_d256         HEAD_DIM=256 GROUP=128 Q_TOKENS=16 BLOCK_N=32 WARPS_M=4 WARPS_N=2 STAGES=2
wide_bn128_wn8        HEAD_DIM=128 GROUP=16 Q_TOKENS=1 BLOCK_N=128 WARPS_M=1 WARPS_N=8 STAGES=2"
compile() { # name arch defines...
  local name=$1 arch=$2; shift 2
  local defs=() kv
  for kv in $base "$@"; do defs+=("-D$kv"); done
  local f="$out/$name.sm$arch"
  if ! nvcc -arch=sm_$arch -cubin -std=c++17 -Xptxas -v -I "$here/templates" "${defs[@]}" \
       -x cu "$here/templates/decode.cuh" -o "$f.cubin" >"$f.log" 2>&1; then
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
export -f compile; export here out base CUOBJDUMP
status=0
while read -r name defs; do
  for a in $archs; do echo "$name $a $defs"; done
done <<<"$table" | xargs -P 2 -L 1 bash -c 'compile "$@"' _ || status=1
exit $status

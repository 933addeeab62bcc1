/* cuda_fp8.h -- empty: tests/emu/cuda_emu.h defines what the templates use of it. */

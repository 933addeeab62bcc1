/* cuda_bf16.h -- empty: tests/emu/cuda_emu.h defines what the templates use of it. */

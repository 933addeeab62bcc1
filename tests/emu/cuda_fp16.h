/* cuda_fp16.h -- empty: tests/emu/cuda_emu.h defines what the templates use of it. */

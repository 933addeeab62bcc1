/*
 * host_case.h -- the tuner's verification cases built on the host
 * (tun_case_create_host) for the tests that check their inputs and
 * references: one made or the test aborted, and two compared image by image.
 */
#ifndef FMQA_HOST_CASE_H
#define FMQA_HOST_CASE_H

#include <stdint.h>

#include "tun.h"

/* tun_case_create_host(p, seed, o, threads), asserting success; the caller
 * destroys the case (tun_case_destroy). */
tun_case *fmqa_test_host_case(const fmqa_problem *p, uint64_t seed, const tun_case_opts *o,
                              int threads);

/* 1 when every host image (tun_host_image) of a and b is present in both or
 * neither and byte-identical, else 0; *images (if not NULL) counts the
 * present ones (up to the first difference). */
int fmqa_test_same_images(const tun_case *a, const tun_case *b, int *images);

#endif /* FMQA_HOST_CASE_H */

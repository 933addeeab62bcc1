/*
 * fuzz_spec.c -- the problem-spec parser (gen_problem_parse, fastmqa-gen and
 * fastmqa-tune --problem SPEC): any text is parsed or refused with a message;
 * a parsed problem formats to text that parses back to the same problem.
 */
#include <stdio.h>

#include "fuzz.h"
#include "gen.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    char text[4096];
    if (size >= sizeof text)
        return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    fmqa_problem p, q;
    fmqa_err err = {0};
    if (gen_problem_parse(text, &p, &err) != FMQA_OK) {
        FUZZ_ASSERT(err.msg[0] != '\0');
        return 0;
    }
    char buf[GEN_PROBLEM_TEXT_CAP];
    FUZZ_ASSERT(gen_problem_format(&p, buf, sizeof buf) == 0);
    FUZZ_ASSERT(gen_problem_parse(buf, &q, &err) == FMQA_OK);
    FUZZ_ASSERT(memcmp(&p, &q, sizeof p) == 0);
    return 0;
}

/*
 * rt_level_tune.c -- the tuner's say in a level's choices: the 8-bit cache
 * format of a policy becomes whichever of int8 and fp8 e4m3 the tuning
 * database measured faster on this device for the level's decode problem.
 *
 * Both formats must have tuned entries (exact or nearest shape, legal for the
 * problem, as the dispatcher would use them); with one missing there is nothing
 * to compare and the policy stays as the preset made it.  Accuracy does not
 * enter: both formats' relative errors are within the aggressive level's
 * relative budget on the data of docs/levels.md, and a variant reaches the
 * database only after it matched the reference.
 */
#include "rt.h"

#include "db.h"

fmqa_status rt_level_pick_format(gen_lib *lib, struct db *db, const fmqa_device_info *dev,
                                 const fmqa_model_config *model, int32_t batch,
                                 fmqa_level_policy *policy, int *changed, fmqa_err *err)
{
    static const fmqa_dtype formats[2] = {FMQA_DTYPE_INT8, FMQA_DTYPE_FP8_E4M3};
    double time_us[2];
    *changed = 0;
    if (policy->kv_dtype != formats[0] && policy->kv_dtype != formats[1])
        return FMQA_OK;
    for (int i = 0; i < 2; i++) {
        fmqa_level_policy cand = *policy;
        fmqa_problem p;
        const gen_template *t;
        gen_config c;
        fmqa_choice choice;
        cand.kv_dtype = formats[i];
        if (fmqa_level_problem(NULL, model, &cand, batch, &p) != FMQA_OK)
            return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT,
                                "level problem: the model or policy is invalid "
                                "(fmqa_level_problem says why)");
        if (rt_choose(lib, db, dev, &p, &t, &c, &choice, NULL) != FMQA_OK ||
            choice.source == FMQA_CHOICE_DEFAULT || choice.tuned_time_us <= 0)
            return FMQA_OK; /* not tuned in this format: nothing to compare */
        time_us[i] = choice.tuned_time_us;
    }
    fmqa_dtype faster = time_us[1] < time_us[0] ? formats[1] : formats[0];
    *changed = faster != policy->kv_dtype;
    policy->kv_dtype = faster;
    return FMQA_OK;
}

fmqa_status fmqa_level_policy_tune(fmqa_ctx_t *ctx, const fmqa_model_config *model,
                                   int32_t batch, fmqa_level_policy *policy, int *changed)
{
    fmqa_err err;
    gen_lib *lib;
    int dummy;
    fmqa_problem p;
    if (!ctx)
        return FMQA_ERR_INVALID_ARGUMENT;
    if (fmqa_level_problem(ctx, model, policy, batch, &p) != FMQA_OK)
        return FMQA_ERR_INVALID_ARGUMENT; /* the message is in ctx */
    if (rt_device(ctx, &err) != FMQA_OK || rt_templates(ctx, &lib, &err) != FMQA_OK ||
        rt_level_pick_format(lib, rt_database(ctx), &ctx->info, model, batch, policy,
                             changed ? changed : &dummy, &err) != FMQA_OK)
        return rt_fail(ctx, &err);
    return rt_clear(ctx);
}

/*
 * main.c -- a consumer of an installed libfastmqa, linked shared or static.
 * Without a GPU it creates a context on a database path that does not exist
 * yet, validates a good and a bad problem, checks the version, and checks that
 * no file was created (the database is opened only when a plan needs it).
 *
 * It also defines its own db_open and rt_clear, names the library uses
 * internally: they must neither collide at a static link nor be called by the
 * library instead of its own (and the library must keep working).
 * Usage: consumer DIR (an existing, empty directory).  Exit 0 when all holds.
 */
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#include <fastmqa.h>

static int own_db_open_calls, own_rt_clear_calls;

/* The application's own functions, unrelated to the library's. */
int db_open(const char *what);
int rt_clear(void);
int db_open(const char *what) { own_db_open_calls++; return what ? 1 : 0; }
int rt_clear(void) { own_rt_clear_calls++; return 0; }

#define CHECK(cond, ...)                                          \
    do {                                                          \
        if (!(cond)) {                                            \
            fprintf(stderr, "consumer: " __VA_ARGS__);            \
            fputc('\n', stderr);                                  \
            return 1;                                             \
        }                                                         \
    } while (0)

int main(int argc, char **argv)
{
    CHECK(argc == 2, "usage: consumer DIR");
    char db[4096];
    snprintf(db, sizeof db, "%s/tune.db", argv[1]);
    printf("libfastmqa %s (%d), header %s\n", fmqa_version_string(), fmqa_version(),
           FMQA_VERSION_STRING);
    CHECK(fmqa_version() == FMQA_VERSION, "library %d, header %d", fmqa_version(), FMQA_VERSION);

    fmqa_options opts = FMQA_OPTIONS_INIT;
    opts.db_path = db;
    fmqa_ctx_t *ctx = NULL;
    CHECK(fmqa_ctx_create(&opts, &ctx) == FMQA_OK, "fmqa_ctx_create: %s", fmqa_ctx_errmsg(ctx));

    fmqa_problem p;
    fmqa_problem_init(&p);
    p.batch = 8, p.num_q_heads = 32, p.num_kv_heads = 1, p.head_dim_qk = p.head_dim_v = 128;
    p.kv_len = 4096, p.flags = FMQA_FLAG_CAUSAL;
    CHECK(fmqa_problem_validate(ctx, &p) == FMQA_OK, "valid problem refused: %s",
          fmqa_ctx_errmsg(ctx));
    p.num_kv_heads = 3;
    CHECK(fmqa_problem_validate(ctx, &p) == FMQA_ERR_INVALID_ARGUMENT, "32 heads over 3 accepted");
    printf("invalid problem: %s\n", fmqa_ctx_errmsg(ctx));
    CHECK(strlen(fmqa_ctx_errmsg(ctx)) > 0, "no reason given");
    /* The library cleared its own message through its own rt_clear. */
    p.num_kv_heads = 1;
    CHECK(fmqa_problem_validate(ctx, &p) == FMQA_OK && !*fmqa_ctx_errmsg(ctx),
          "message not cleared after success");
    CHECK(own_rt_clear_calls == 0 && own_db_open_calls == 0,
          "the library called the application's rt_clear/db_open");
    CHECK(rt_clear() == 0 && db_open("x") == 1 && own_rt_clear_calls == 1 &&
              own_db_open_calls == 1, "the application's own functions were not called");

    struct stat st;
    CHECK(stat(db, &st) != 0, "%s was created before any plan needed it", db);
    fmqa_ctx_destroy(ctx);
    printf("consumer ok\n");
    return 0;
}

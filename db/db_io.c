/*
 * db_io.c -- export to JSON lines, import, and merge of another file.
 *
 * Each table has one export SELECT and one import INSERT.  The SELECT names
 * every referenced row by its natural key (device key, template name + hash,
 * problem key, session and trial uid) instead of its id, and its column names
 * are exactly the :named parameters of the INSERT, which looks the ids up in
 * the destination.  So one generic writer and one generic binder serve every
 * table, and exporting the result of an import gives the same text back (but
 * for best entries, which then say where they were imported from).  Best rows
 * are the one table an import does not take on trust: each must be proven by
 * its trial (check_best_row, db.h's db_import).
 * Blobs (cubin data) travel as base64 strings in the field "data".
 *
 * The JSON reader accepts what the writer emits and any other flat object of
 * strings, numbers, booleans and nulls, one per line; nesting is an error.
 */
#define _POSIX_C_SOURCE 200809L
#include "db_internal.h"

#include <ctype.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

typedef struct table_io {
    const char *name;
    const char *export_sql;
    const char *import_sql;
} table_io;

#define ID_OF_DEVICE "(SELECT id FROM devices WHERE key = :device_key)"
#define ID_OF_TEMPLATE "(SELECT id FROM templates WHERE name = :template_name AND hash = :template_hash)"
#define ID_OF_PROBLEM "(SELECT id FROM problems WHERE key = :problem_key)"
#define KEYS_OF_ROW                                                                         \
    " d.key AS device_key, tp.name AS template_name, tp.hash AS template_hash,"             \
    " p.key AS problem_key,"
#define JOIN_KEYS(a)                                                                        \
    " JOIN devices d ON d.id = " a ".device_id JOIN templates tp ON tp.id = " a             \
    ".template_id JOIN problems p ON p.id = " a ".problem_id"

/* Dependency order: a row's references are imported before it. */
static const table_io TABLES[] = {
    {"devices",
     "SELECT key, name, arch, cc_major, cc_minor, sm_count, l2_bytes, smem_per_block_optin,"
     " driver_version, nvrtc_major, nvrtc_minor, first_seen FROM devices ORDER BY id",
     "INSERT INTO devices(key, name, arch, cc_major, cc_minor, sm_count, l2_bytes,"
     " smem_per_block_optin, driver_version, nvrtc_major, nvrtc_minor, first_seen)"
     " VALUES(:key, :name, :arch, :cc_major, :cc_minor, :sm_count, :l2_bytes,"
     " :smem_per_block_optin, :driver_version, :nvrtc_major, :nvrtc_minor, :first_seen)"
     " ON CONFLICT(key) DO NOTHING"},
    {"templates", "SELECT name, hash, first_seen FROM templates ORDER BY id",
     "INSERT INTO templates(name, hash, first_seen) VALUES(:name, :hash, :first_seen)"
     " ON CONFLICT(name, hash) DO NOTHING"},
    {"problems",
     "SELECT key, class_key, op, q_dtype, kv_dtype, out_dtype, num_q_heads, num_kv_heads,"
     " head_dim_qk, head_dim_v, q_tokens, page_size, window, sink_tokens, rope, flags,"
     " batch_bucket, kv_len_bucket FROM problems ORDER BY id",
     "INSERT INTO problems(key, class_key, op, q_dtype, kv_dtype, out_dtype, num_q_heads,"
     " num_kv_heads, head_dim_qk, head_dim_v, q_tokens, page_size, window, sink_tokens, rope,"
     " flags, batch_bucket, kv_len_bucket) VALUES(:key, :class_key, :op, :q_dtype, :kv_dtype,"
     " :out_dtype, :num_q_heads, :num_kv_heads, :head_dim_qk, :head_dim_v, :q_tokens,"
     " :page_size, :window, :sink_tokens, :rope, :flags, :batch_bucket, :kv_len_bucket)"
     " ON CONFLICT(key) DO NOTHING"},
    {"sessions",
     "SELECT s.uid, d.key AS device_key, s.status, s.strategy, s.budget, s.seed,"
     " s.problem_set, s.started_at, s.finished_at FROM sessions s"
     " LEFT JOIN devices d ON d.id = s.device_id ORDER BY s.id",
     "INSERT INTO sessions(uid, device_id, status, strategy, budget, seed, problem_set,"
     " started_at, finished_at) VALUES(:uid, " ID_OF_DEVICE ", :status, :strategy, :budget,"
     " :seed, :problem_set, :started_at, :finished_at)"
     " ON CONFLICT(uid) DO UPDATE SET status = excluded.status,"
     " finished_at = excluded.finished_at"
     " WHERE sessions.status <> 'done' AND excluded.status <> sessions.status"},
    {"trials",
     "SELECT t.uid, s.uid AS session_uid," KEYS_OF_ROW " t.config, t.config_hash, t.status,"
     " t.compile_ms, t.median_us, t.p20_us, t.p80_us, t.min_us, t.spread, t.runs,"
     " t.rel_l2_err, t.max_abs_err, t.sm_clock_mhz, t.mem_clock_mhz, t.tuner_version,"
     " t.message, t.created_at, t.timing_method FROM trials t" JOIN_KEYS("t")
     " LEFT JOIN sessions s ON s.id = t.session_id ORDER BY t.id",
     "INSERT INTO trials(uid, session_id, device_id, template_id, problem_id, config,"
     " config_hash, status, compile_ms, median_us, p20_us, p80_us, min_us, spread, runs,"
     " rel_l2_err, max_abs_err, sm_clock_mhz, mem_clock_mhz, tuner_version, message,"
     " created_at, timing_method) VALUES(:uid, (SELECT id FROM sessions WHERE uid = :session_uid), "
     ID_OF_DEVICE ", " ID_OF_TEMPLATE ", " ID_OF_PROBLEM ", :config, :config_hash, :status,"
     " :compile_ms, :median_us, :p20_us, :p80_us, :min_us, :spread, :runs, :rel_l2_err,"
     " :max_abs_err, :sm_clock_mhz, :mem_clock_mhz, :tuner_version, :message, :created_at,"
     " coalesce(:timing_method, 0)) ON CONFLICT(uid) DO NOTHING"},
    /* A best row names its trial; the entry takes the trial's own values (the
     * row's were checked against them, check_best_row) and is marked imported.
     * It never displaces a local entry, and an imported one only by being
     * faster. */
    {"best",
     "SELECT" KEYS_OF_ROW " t.uid AS trial_uid, b.config, b.median_us, b.default_median_us,"
     " b.updated_at, b.spread, b.tuner_version, b.timing_method, b.origin, b.origin_file,"
     " b.origin_at FROM best b" JOIN_KEYS("b") " JOIN trials t ON t.id = b.trial_id"
     " ORDER BY b.id",
     "INSERT INTO best(device_id, template_id, problem_id, trial_id, config, median_us,"
     " default_median_us, updated_at, spread, tuner_version, timing_method, origin,"
     " origin_file, origin_at)"
     " SELECT t.device_id, t.template_id, t.problem_id, t.id, t.config, t.median_us,"
     " coalesce(:default_median_us, 0), :updated_at, coalesce(t.spread, 0), t.tuner_version,"
     " t.timing_method, 'import', :import_file, :import_at"
     " FROM trials t WHERE t.uid = :trial_uid AND true"
     " ON CONFLICT(device_id, template_id, problem_id) DO UPDATE SET"
     " trial_id = excluded.trial_id, config = excluded.config, median_us = excluded.median_us,"
     " default_median_us = excluded.default_median_us, updated_at = excluded.updated_at,"
     " spread = excluded.spread, tuner_version = excluded.tuner_version,"
     " timing_method = excluded.timing_method, origin = 'import',"
     " origin_file = excluded.origin_file, origin_at = excluded.origin_at"
     " WHERE best.origin = 'import' AND excluded.median_us < best.median_us"},
    {"cubins",
     "SELECT key, arch, nvrtc_version, template_hash, size, data, resources, created_at,"
     " last_used FROM cubins ORDER BY id",
     "INSERT INTO cubins(key, arch, nvrtc_version, template_hash, size, data, resources,"
     " created_at, last_used) VALUES(:key, :arch, :nvrtc_version, :template_hash, :size, :data,"
     " :resources, :created_at, :last_used) ON CONFLICT(key) DO NOTHING"},
};
#define N_TABLES (sizeof TABLES / sizeof TABLES[0])

/* ------------------------------------------------------------ base64 */

static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

static void write_base64(FILE *out, const unsigned char *p, size_t n)
{
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)p[i] << 16;
        if (i + 1 < n)
            v |= (uint32_t)p[i + 1] << 8;
        if (i + 2 < n)
            v |= p[i + 2];
        char q[4] = {B64[v >> 18], B64[(v >> 12) & 63], i + 1 < n ? B64[(v >> 6) & 63] : '=',
                     i + 2 < n ? B64[v & 63] : '='};
        fwrite(q, 1, 4, out);
    }
}

/* Decodes in place; returns the byte count or -1 on malformed input. */
static long decode_base64(char *s)
{
    size_t n = strlen(s), o = 0;
    if (n % 4)
        return -1;
    for (size_t i = 0; i < n; i += 4) {
        uint32_t v = 0;
        int pad = 0;
        for (int k = 0; k < 4; k++) {
            const char *c = s[i + k] == '=' ? NULL : strchr(B64, s[i + k]);
            if (s[i + k] == '=' && i + 4 == n && k >= 2)
                pad++;
            else if (!c || !s[i + k] || pad)
                return -1;
            v = v << 6 | (uint32_t)(c ? c - B64 : 0);
        }
        s[o++] = (char)(v >> 16);
        if (pad < 2)
            s[o++] = (char)(v >> 8);
        if (pad < 1)
            s[o++] = (char)v;
    }
    return (long)o;
}

/* ------------------------------------------------------------ export */

static void write_json_string(FILE *out, const unsigned char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        if (*s == '"' || *s == '\\')
            fprintf(out, "\\%c", *s);
        else if (*s < 0x20)
            fprintf(out, "\\u%04x", *s);
        else
            fputc(*s, out);
    }
    fputc('"', out);
}

static void write_value(FILE *out, sqlite3_stmt *st, int c)
{
    switch (sqlite3_column_type(st, c)) {
    case SQLITE_INTEGER:
        fprintf(out, "%lld", (long long)sqlite3_column_int64(st, c));
        break;
    case SQLITE_FLOAT: {
        double v = sqlite3_column_double(st, c);
        if (isfinite(v))
            fprintf(out, "%.17g", v);
        else
            fputs("null", out); /* JSON has no infinities */
        break;
    }
    case SQLITE_TEXT:
        write_json_string(out, sqlite3_column_text(st, c));
        break;
    case SQLITE_BLOB:
        fputc('"', out);
        write_base64(out, sqlite3_column_blob(st, c), (size_t)sqlite3_column_bytes(st, c));
        fputc('"', out);
        break;
    default:
        fputs("null", out);
    }
}

static fmqa_status export_table(db_t *db, const table_io *t, FILE *out, fmqa_err *err)
{
    sqlite3_stmt *st;
    fmqa_status s = db_prepare(db, t->export_sql, &st, "export", err);
    if (s)
        return s;
    int rc;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fprintf(out, "{\"table\":\"%s\"", t->name);
        for (int c = 0; c < sqlite3_column_count(st); c++) {
            fprintf(out, ",\"%s\":", sqlite3_column_name(st, c));
            write_value(out, st, c);
        }
        fputs("}\n", out);
    }
    if (rc != SQLITE_DONE)
        s = db_fail(db, rc, err, "export");
    sqlite3_finalize(st);
    return s;
}

fmqa_status db_export(db_t *db, FILE *out, fmqa_err *err)
{
    if (!db || !out)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_export: NULL argument");
    db_lock(db);
    /* One read transaction: the export is a consistent snapshot. */
    fmqa_status s = db_exec(db, "BEGIN", "export", err);
    for (size_t i = 0; !s && i < N_TABLES; i++)
        s = export_table(db, &TABLES[i], out, err);
    if (!sqlite3_get_autocommit(db->conn))
        sqlite3_exec(db->conn, "COMMIT", NULL, NULL, NULL);
    db_unlock(db);
    if (!s && (fflush(out) != 0 || ferror(out)))
        s = fmqa_err_set(err, FMQA_ERR_IO, "export: write failed");
    return s;
}

/* ------------------------------------------------------------ JSON reader */

enum { J_NULL, J_STR, J_NUM, J_BOOL };

typedef struct jfield {
    char *name;
    char *text; /* decoded string, number text, "1"/"0" for booleans */
    int kind;
} jfield;

typedef struct jobject {
    jfield *f;
    size_t n, cap;
} jobject;

static void jobject_clear(jobject *o)
{
    for (size_t i = 0; i < o->n; i++) {
        free(o->f[i].name);
        free(o->f[i].text);
    }
    o->n = 0;
}

static const char *skip_ws(const char *p)
{
    while (*p == ' ' || *p == '\t' || *p == '\r' || *p == '\n')
        p++;
    return p;
}

/* Appends code point cp as UTF-8. */
static char *put_utf8(char *o, unsigned cp)
{
    if (cp < 0x80) {
        *o++ = (char)cp;
    } else if (cp < 0x800) {
        *o++ = (char)(0xC0 | cp >> 6);
        *o++ = (char)(0x80 | (cp & 63));
    } else if (cp < 0x10000) {
        *o++ = (char)(0xE0 | cp >> 12);
        *o++ = (char)(0x80 | ((cp >> 6) & 63));
        *o++ = (char)(0x80 | (cp & 63));
    } else {
        *o++ = (char)(0xF0 | cp >> 18);
        *o++ = (char)(0x80 | ((cp >> 12) & 63));
        *o++ = (char)(0x80 | ((cp >> 6) & 63));
        *o++ = (char)(0x80 | (cp & 63));
    }
    return o;
}

static bool read_hex4(const char *p, unsigned *v)
{
    *v = 0;
    for (int i = 0; i < 4; i++) {
        if (!isxdigit((unsigned char)p[i]))
            return false;
        *v = *v * 16 + (unsigned)(isdigit((unsigned char)p[i]) ? p[i] - '0'
                                                              : (tolower((unsigned char)p[i]) - 'a' + 10));
    }
    return true;
}

/* Parses a JSON string at *pp (on its opening quote) into a malloc'ed copy. */
static const char *parse_string(const char **pp, char **out)
{
    const char *p = *pp + 1;
    const char *end = p;
    while (*end && *end != '"')
        end += (*end == '\\' && end[1]) ? 2 : 1;
    if (*end != '"')
        return "unterminated string";
    char *o = malloc((size_t)(end - p) + 1), *w = o;
    if (!o)
        return "out of memory";
    while (p < end) {
        if (*p != '\\') {
            *w++ = *p++;
            continue;
        }
        p++;
        const char *simple = strchr("\"\\/bfnrt", *p);
        if (simple && *p) {
            *w++ = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            p++;
            continue;
        }
        unsigned cp, lo;
        if (*p != 'u' || !read_hex4(p + 1, &cp)) {
            free(o);
            return "bad escape in string";
        }
        p += 5;
        if (cp >= 0xD800 && cp < 0xDC00 && p[0] == '\\' && p[1] == 'u' && read_hex4(p + 2, &lo) &&
            lo >= 0xDC00 && lo < 0xE000) {
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        }
        w = put_utf8(w, cp);
    }
    *w = '\0';
    *out = o;
    *pp = end + 1;
    return NULL;
}

/* Parses a scalar value; returns NULL or a reason. */
static const char *parse_value(const char **pp, jfield *f)
{
    const char *p = *pp;
    if (*p == '"') {
        f->kind = J_STR;
        return parse_string(pp, &f->text);
    }
    static const char *const words[] = {"null", "true", "false"};
    for (int i = 0; i < 3; i++)
        if (strncmp(p, words[i], strlen(words[i])) == 0) {
            f->kind = i == 0 ? J_NULL : J_BOOL;
            f->text = fmqa_strdup(i == 0 ? "" : i == 1 ? "1" : "0");
            *pp = p + strlen(words[i]);
            return f->text ? NULL : "out of memory";
        }
    char *end;
    strtod(p, &end);
    if (end == p || (*p != '-' && !isdigit((unsigned char)*p)))
        return *p == '{' || *p == '[' ? "nested values are not supported" : "expected a value";
    f->kind = J_NUM;
    f->text = strndup(p, (size_t)(end - p));
    *pp = end;
    return f->text ? NULL : "out of memory";
}

/* Parses one flat object; on error returns the reason and sets *col. */
static const char *parse_object(const char *line, jobject *o, size_t *col)
{
    const char *p = skip_ws(line), *why = NULL;
    if (*p++ != '{')
        why = "expected '{'";
    for (p = skip_ws(p); !why && *p != '}';) {
        if (o->n == o->cap) {
            jfield *nf = realloc(o->f, (o->cap = o->cap ? 2 * o->cap : 32) * sizeof *nf);
            if (!nf)
                return "out of memory";
            o->f = nf;
        }
        jfield *f = &o->f[o->n];
        memset(f, 0, sizeof *f);
        if (*p != '"') {
            why = "expected a field name";
            break;
        }
        if ((why = parse_string(&p, &f->name)))
            break;
        o->n++; /* owns name from here */
        p = skip_ws(p);
        if (*p++ != ':') {
            why = "expected ':'";
            break;
        }
        p = skip_ws(p);
        if ((why = parse_value(&p, f)))
            break;
        p = skip_ws(p);
        if (*p == ',')
            p = skip_ws(p + 1);
        else if (*p != '}')
            why = "expected ',' or '}'";
    }
    if (!why && *skip_ws(p + 1))
        why = "text after the object";
    *col = (size_t)(p - line) + 1;
    return why;
}

static const jfield *field(const jobject *o, const char *name)
{
    for (size_t i = 0; i < o->n; i++)
        if (strcmp(o->f[i].name, name) == 0)
            return &o->f[i];
    return NULL;
}

/* ------------------------------------------------------------ import */

/* Binds each :name parameter of st from the object's field of that name;
 * missing fields bind NULL (the schema's constraints then decide). */
static const char *bind_object(sqlite3_stmt *st, jobject *o)
{
    sqlite3_reset(st);
    sqlite3_clear_bindings(st);
    for (int i = 1; i <= sqlite3_bind_parameter_count(st); i++) {
        const char *pname = sqlite3_bind_parameter_name(st, i) + 1;
        jfield *f = (jfield *)field(o, pname);
        if (!f || f->kind == J_NULL)
            continue;
        if (strcmp(pname, "data") == 0) {
            long n = f->kind == J_STR ? decode_base64(f->text) : -1;
            if (n < 0)
                return "data: not base64";
            sqlite3_bind_blob(st, i, f->text, (int)n, SQLITE_TRANSIENT);
        } else if (f->kind == J_NUM && strpbrk(f->text, ".eE")) {
            sqlite3_bind_double(st, i, strtod(f->text, NULL));
        } else if (f->kind != J_STR) {
            sqlite3_bind_int64(st, i, strtoll(f->text, NULL, 10));
        } else {
            sqlite3_bind_text(st, i, f->text, -1, SQLITE_TRANSIENT);
        }
    }
    return NULL;
}

typedef struct importer {
    db_t *db;
    const char *name;
    sqlite3_stmt *st[N_TABLES];
    sqlite3_stmt *trial_of_best; /* check_best_row's query                    */
    int64_t now;
    jobject obj;
    db_import_stats stats;
} importer;

/* The text of a field ("" when absent or null). */
static const char *text_of(const jobject *o, const char *name)
{
    const jfield *f = field(o, name);
    return f && f->kind != J_NULL ? f->text : "";
}

/* NULL when the best row in im->obj is proven by its trial, else why not
 * (a static or im-owned text).  The trial must already be in the file (the
 * export writes trials before best rows). */
static const char *check_best_row(importer *im, char *why, size_t cap)
{
    sqlite3_stmt *st = im->trial_of_best;
    sqlite3_reset(st);
    sqlite3_bind_text(st, 1, text_of(&im->obj, "trial_uid"), -1, SQLITE_TRANSIENT);
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW)
        return rc == SQLITE_DONE ? "its trial is not in the import nor in the file"
                                 : "its trial could not be read";
    const char *status = (const char *)sqlite3_column_text(st, 0);
    double median = sqlite3_column_double(st, 1);
    bool has_err = sqlite3_column_type(st, 2) != SQLITE_NULL;
    double rel_err = sqlite3_column_double(st, 2);
    bool append = strcmp((const char *)sqlite3_column_text(st, 7), "append") == 0;
    const char *checked = (const char *)sqlite3_column_text(st, append ? 9 : 10);
    fmqa_dtype d = strcmp(checked, fmqa_dtype_name(FMQA_DTYPE_BF16)) == 0 ? FMQA_DTYPE_BF16
                                                                        : FMQA_DTYPE_F16;
    double tol = db_verify_tol(append ? FMQA_OP_APPEND : FMQA_OP_DECODE, d, d);
    static const char *const keys[] = {"config", "device_key", "template_name",
                                       "template_hash", "problem_key"};
    if (strcmp(status, "ok") != 0) {
        snprintf(why, cap, "its trial has status %s", status);
        return why;
    }
    if (!(median > 0))
        return "its trial has no time";
    if (!has_err || !(rel_err <= tol)) {
        snprintf(why, cap, "its trial's error %g exceeds the tolerance %g", rel_err, tol);
        return why;
    }
    for (int k = 0; k < 5; k++)
        if (strcmp(text_of(&im->obj, keys[k]), (const char *)sqlite3_column_text(st, 3 + k)) != 0) {
            snprintf(why, cap, "its %s differs from its trial's", keys[k]);
            return why;
        }
    const jfield *m = field(&im->obj, "median_us");
    if (!m || m->kind != J_NUM || strtod(m->text, NULL) != median) {
        snprintf(why, cap, "its median differs from its trial's (%.17g us)", median);
        return why;
    }
    return NULL;
}

/* Counts a refused best row and keeps the first reason. */
static void reject_best(importer *im, long lineno, const char *why)
{
    if (!im->stats.best_rejected++)
        snprintf(im->stats.rejected, sizeof im->stats.rejected,
                 "%s:%ld: best entry for trial %s refused: %s", im->name, lineno,
                 text_of(&im->obj, "trial_uid"), why);
}

static fmqa_status import_line(importer *im, const char *line, long lineno, fmqa_err *err)
{
    size_t col = 0;
    jobject_clear(&im->obj);
    const char *why = parse_object(line, &im->obj, &col);
    if (why)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s:%ld:%zu: %s", im->name, lineno,
                            col, why);
    const jfield *t = field(&im->obj, "table");
    size_t i = 0;
    while (t && t->kind == J_STR && i < N_TABLES && strcmp(TABLES[i].name, t->text) != 0)
        i++;
    if (!t || t->kind != J_STR || i == N_TABLES)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s:%ld: field \"table\": %s",
                            im->name, lineno, t ? "unknown table" : "missing");
    if (!im->st[i]) {
        fmqa_status s = db_prepare(im->db, TABLES[i].import_sql, &im->st[i], "import", err);
        if (s)
            return s;
    }
    im->stats.rows_read++;
    char reason[256];
    if (strcmp(TABLES[i].name, "best") == 0 && (why = check_best_row(im, reason, sizeof reason))) {
        reject_best(im, lineno, why);
        return FMQA_OK;
    }
    if ((why = bind_object(im->st[i], &im->obj)))
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "%s:%ld: %s", im->name, lineno, why);
    sqlite3_stmt *st = im->st[i];
    int pi = sqlite3_bind_parameter_index(st, ":import_file");
    if (pi > 0) {
        sqlite3_bind_text(st, pi, im->name, -1, SQLITE_TRANSIENT);
        sqlite3_bind_int64(st, sqlite3_bind_parameter_index(st, ":import_at"), im->now);
    }
    fmqa_status s = db_step_done(im->db, im->st[i], "import", err);
    if (s)
        return fmqa_err_prefix(err, "%s:%ld: %s row", im->name, lineno, TABLES[i].name);
    im->stats.rows_added += sqlite3_changes(im->db->conn);
    return FMQA_OK;
}

fmqa_status db_import(db_t *db, FILE *in, const char *name, db_import_stats *stats,
                      fmqa_err *err)
{
    if (!db || !in)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_import: NULL argument");
    importer im = {.db = db, .name = name ? name : "import", .now = db_now()};
    char *line = NULL;
    size_t cap = 0;
    long lineno = 0;
    db_lock(db);
    fmqa_status s = db_begin_write(db, err);
    if (!s)
        s = db_prepare(db,
            "SELECT t.status, t.median_us, t.rel_l2_err, t.config, d.key, tp.name, tp.hash,"
            " p.key, p.op, p.q_dtype, p.out_dtype FROM trials t" JOIN_KEYS("t")
            " WHERE t.uid = ?1", &im.trial_of_best, "check an imported best entry", err);
    while (!s && getline(&line, &cap, in) >= 0) {
        lineno++;
        if (*skip_ws(line))
            s = import_line(&im, line, lineno, err);
    }
    if (!s && ferror(in))
        s = fmqa_err_set(err, FMQA_ERR_IO, "%s: read error", im.name);
    for (size_t i = 0; i < N_TABLES; i++)
        sqlite3_finalize(im.st[i]);
    sqlite3_finalize(im.trial_of_best);
    s = db_end(db, s, err);
    db_unlock(db);
    jobject_clear(&im.obj);
    free(im.obj.f);
    free(line);
    if (!s && stats)
        *stats = im.stats;
    return s;
}

fmqa_status db_merge(db_t *db, const char *other_path, db_import_stats *stats, fmqa_err *err)
{
    if (!db || !other_path)
        return fmqa_err_set(err, FMQA_ERR_INVALID_ARGUMENT, "db_merge: NULL argument");
    db_t *other = NULL;
    fmqa_status s = db_open(other_path, DB_READ_ONLY, 0, &other, err);
    if (s)
        return s;
    FILE *tmp = tmpfile();
    if (!tmp)
        s = fmqa_err_set(err, FMQA_ERR_IO, "merge: cannot create a temporary file");
    if (!s)
        s = db_export(other, tmp, err);
    db_close(other);
    if (!s) {
        rewind(tmp);
        s = db_import(db, tmp, other_path, stats, err);
    }
    if (tmp)
        fclose(tmp);
    return s;
}

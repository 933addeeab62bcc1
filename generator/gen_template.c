/*
 * gen_template.c -- template libraries: reading a template set (a directory or
 * the files embedded at build time; NAME.lua, sources, headers, and the Lua
 * libraries lib/NAME.lua), loading each NAME.lua into the sandbox,
 * checking its table field by field, and its identity hash.
 *
 * Invariants: a lib's files are sorted by name and immutable after open; its
 * templates are sorted by file name.  A template that fails to load keeps
 * status != FMQA_OK and a message, and never reaches Lua again.  Template
 * records own their strings (malloc'ed) and release them in gen_lib_close.
 */
#include <dirent.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lauxlib.h>

#include "fmqa_params.h"
#include "gen_internal.h"

const char *const gen_fn_names[GEN_FN_COUNT] = {"specialize", "valid", "launch", "default",
                                                "arch_specific"};

/* ------------------------------------------------------------ the file set */

static int cmp_file(const void *a, const void *b)
{
    return strcmp(((const gen_file *)a)->name, ((const gen_file *)b)->name);
}

static int has_ext(const char *name, const char *ext)
{
    size_t n = strlen(name), e = strlen(ext);
    return n > e && strcmp(name + n - e, ext) == 0;
}

static int is_set_file(const char *name)
{
    return has_ext(name, ".lua") || has_ext(name, ".cuh") || has_ext(name, ".h");
}

static fmqa_status add_file(gen_lib *lib, const char *name, const void *data, size_t size,
                            fmqa_err *err)
{
    gen_file *f = &lib->files[lib->n_files];
    f->name = fmqa_strdup(name);
    f->text = malloc(size + 1);
    if (!f->name || !f->text) {
        free(f->name);
        free(f->text);
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory reading %s", name);
    }
    memcpy(f->text, data, size);
    f->text[size] = '\0';
    f->size = size;
    lib->n_files++;
    return FMQA_OK;
}

static fmqa_status read_whole(const char *path, char **data /* OUT */, size_t *size /* OUT */,
                              fmqa_err *err)
{
    FILE *fp = fopen(path, "rb");
    if (!fp)
        return fmqa_err_set(err, FMQA_ERR_IO, "%s: %s", path, strerror(errno));
    char *buf = NULL;
    size_t len = 0, cap = 0, got;
    do {
        if (len == cap) {
            char *nb = realloc(buf, cap = cap ? 2 * cap : 16384);
            if (!nb) {
                free(buf);
                fclose(fp);
                return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory reading %s", path);
            }
            buf = nb;
        }
        got = fread(buf + len, 1, cap - len, fp);
        len += got;
    } while (got > 0);
    int bad = ferror(fp);
    fclose(fp);
    if (bad) {
        free(buf);
        return fmqa_err_set(err, FMQA_ERR_IO, "%s: read error", path);
    }
    *data = buf;
    *size = len;
    return FMQA_OK;
}

/* Reads the set files of dir/sub ("" or "lib/": then the Lua libraries only),
 * named sub + file name; *cap is the capacity of lib->files.  A missing lib/
 * is an empty one. */
static fmqa_status read_dir(gen_lib *lib, const char *dir, const char *sub, int *cap,
                            fmqa_err *err)
{
    char path[4096];
    snprintf(path, sizeof path, "%s%s%s", dir, *sub ? "/" : "", sub);
    DIR *dp = opendir(path);
    if (!dp && *sub && errno == ENOENT)
        return FMQA_OK;
    if (!dp)
        return fmqa_err_set(err, FMQA_ERR_IO, "template directory %s: %s", path, strerror(errno));
    fmqa_status st = FMQA_OK;
    struct dirent *de;
    while (st == FMQA_OK && (de = readdir(dp)) != NULL) {
        if (de->d_name[0] == '.' || !(*sub ? has_ext(de->d_name, ".lua") : is_set_file(de->d_name)))
            continue;
        if (lib->n_files == *cap) {
            gen_file *nf = realloc(lib->files, (size_t)(*cap = *cap ? 2 * *cap : 16) * sizeof *nf);
            if (!nf) {
                st = fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
                break;
            }
            lib->files = nf;
        }
        char name[512];
        char *data = NULL;
        size_t size = 0;
        snprintf(name, sizeof name, "%s%s", sub, de->d_name);
        snprintf(path, sizeof path, "%s/%s", dir, name);
        st = read_whole(path, &data, &size, err);
        if (st == FMQA_OK)
            st = add_file(lib, name, data, size, err);
        free(data);
    }
    closedir(dp);
    return st;
}

/* The set in dir: its files, and the Lua libraries of dir/lib/. */
static fmqa_status read_set(gen_lib *lib, const char *dir, fmqa_err *err)
{
    int cap = 0;
    fmqa_status st = read_dir(lib, dir, "", &cap, err);
    return st == FMQA_OK ? read_dir(lib, dir, "lib/", &cap, err) : st;
}

static fmqa_status read_embedded(gen_lib *lib, fmqa_err *err)
{
    lib->files = calloc((size_t)gen_embedded_count + 1, sizeof *lib->files);
    if (!lib->files)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < gen_embedded_count; i++) {
        const gen_embedded_file *e = &gen_embedded_files[i];
        fmqa_status st = add_file(lib, e->name, e->data, e->size, err);
        if (st != FMQA_OK)
            return st;
    }
    return FMQA_OK;
}

/* "templates" for ".../templates/" */
static char *dir_prefix(const char *dir)
{
    size_t n = strlen(dir);
    while (n > 1 && dir[n - 1] == '/')
        n--;
    size_t s = n;
    while (s > 0 && dir[s - 1] != '/')
        s--;
    char *out = malloc(n - s + 1);
    if (out) {
        memcpy(out, dir + s, n - s);
        out[n - s] = '\0';
    }
    return out;
}

const gen_file *gen_lib_file(const gen_lib *lib, const char *name)
{
    gen_file key = {(char *)name, NULL, 0};
    return bsearch(&key, lib->files, (size_t)lib->n_files, sizeof key, cmp_file);
}

/* ------------------------------------------------------------ table reading */

static int is_ident(const char *s)
{
    if (!s || !(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z')))
        return 0;
    for (; *s; s++)
        if (!(*s == '_' || (*s >= 'A' && *s <= 'Z') || (*s >= 'a' && *s <= 'z') ||
              (*s >= '0' && *s <= '9')))
            return 0;
    return 1;
}

static const char *check_string(lua_State *L, gen_reader *r, int idx)
{
    if (lua_type(L, idx) != LUA_TSTRING)
        gen_lua_field_error(L, r, "expected string, got %s", luaL_typename(L, idx));
    return lua_tostring(L, idx);
}

static const char *check_name(lua_State *L, gen_reader *r, int idx)
{
    const char *s = check_string(L, r, idx);
    if (!is_ident(s) || strlen(s) >= GEN_NAME_CAP)
        gen_lua_field_error(L, r, "'%s' is not a C identifier of at most %d characters", s,
                            GEN_NAME_CAP - 1);
    return s;
}

static char *dup_or_raise(lua_State *L, const char *s)
{
    char *d = fmqa_strdup(s);
    if (!d)
        luaL_error(L, "out of memory");
    return d;
}

/* Pushes field key of the table at index 1 and extends the path. */
static int push_field(lua_State *L, gen_reader *r, const char *key, size_t *old)
{
    *old = gen_path_push(r, key, 0);
    lua_pushstring(L, key);
    return lua_rawget(L, 1);
}

static void pop_field(lua_State *L, gen_reader *r, size_t old)
{
    lua_pop(L, 1);
    r->path[old] = '\0';
}

/* A non-empty array of names: sources or entries. */
static void read_names(lua_State *L, gen_reader *r, const char *key, char ***out, int *n_out)
{
    size_t old;
    if (push_field(L, r, key, &old) != LUA_TTABLE)
        gen_lua_field_error(L, r, "expected a list of names, got %s", luaL_typename(L, -1));
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n == 0 || n > GEN_MAX_KERNELS * 4)
        gen_lua_field_error(L, r, "expected 1 to %d names, got %d", GEN_MAX_KERNELS * 4, (int)n);
    *out = calloc((size_t)n, sizeof **out);
    if (!*out)
        luaL_error(L, "out of memory");
    for (lua_Integer i = 1; i <= n; i++) {
        size_t o2 = gen_path_push(r, NULL, i);
        lua_rawgeti(L, -1, i);
        const char *s = strcmp(key, "entries") == 0 ? check_name(L, r, -1) : check_string(L, r, -1);
        if (strcmp(key, "sources") == 0 && !gen_lib_file(r->t->lib, s))
            gen_lua_field_error(L, r, "no file '%s' in %s", s, r->t->lib->origin);
        (*out)[i - 1] = dup_or_raise(L, s);
        *n_out = (int)i;
        lua_pop(L, 1);
        r->path[o2] = '\0';
    }
    pop_field(L, r, old);
}

static int cmp_param(const void *a, const void *b)
{
    return strcmp(((const gen_param *)a)->name, ((const gen_param *)b)->name);
}

static void read_values(lua_State *L, gen_reader *r, gen_param *prm)
{
    if (!lua_istable(L, -1))
        gen_lua_field_error(L, r, "expected a list of integers, got %s", luaL_typename(L, -1));
    lua_Integer n = (lua_Integer)lua_rawlen(L, -1);
    if (n == 0 || n > GEN_MAX_VALUES)
        gen_lua_field_error(L, r, "expected 1 to %d candidate values, got %d", GEN_MAX_VALUES,
                            (int)n);
    for (lua_Integer i = 1; i <= n; i++) {
        size_t old = gen_path_push(r, NULL, i);
        lua_rawgeti(L, -1, i);
        int64_t v = gen_lua_check_int(L, r, -1, 0);
        for (int j = 0; j < prm->n; j++)
            if (prm->values[j] == v)
                gen_lua_field_error(L, r, "duplicate value %lld", (long long)v);
        prm->values[prm->n++] = v;
        lua_pop(L, 1);
        r->path[old] = '\0';
    }
}

static void read_space(lua_State *L, gen_reader *r)
{
    gen_template *t = r->t;
    size_t old;
    int type = push_field(L, r, "space", &old);
    if (type != LUA_TNIL) {
        if (type != LUA_TTABLE)
            gen_lua_field_error(L, r, "expected a table of parameter = {values}, got %s",
                                luaL_typename(L, -1));
        lua_pushnil(L);
        while (lua_next(L, -2)) {
            if (lua_type(L, -2) != LUA_TSTRING)
                gen_lua_field_error(L, r, "keys must be parameter names, got %s",
                                    luaL_typename(L, -2));
            size_t o2 = gen_path_push(r, lua_tostring(L, -2), 0);
            lua_pushvalue(L, -2);
            const char *name = check_name(L, r, -1);
            lua_pop(L, 1);
            if (t->n_params == GEN_MAX_PARAMS)
                gen_lua_field_error(L, r, "more than %d parameters", GEN_MAX_PARAMS);
            gen_param *prm = &t->params[t->n_params++];
            memset(prm, 0, sizeof *prm);
            snprintf(prm->name, sizeof prm->name, "%s", name);
            read_values(L, r, prm);
            lua_pop(L, 1);
            r->path[o2] = '\0';
        }
    }
    qsort(t->params, (size_t)t->n_params, sizeof t->params[0], cmp_param);
    pop_field(L, r, old);
}

static const char *const known_fields[] = {"name", "op", "sources", "entries", "arch_min",
                                           "accuracy", "space", "specialize", "valid", "launch",
                                           "default", "arch_specific"};

static void check_known_fields(lua_State *L, gen_reader *r)
{
    lua_pushnil(L);
    while (lua_next(L, 1)) {
        lua_pop(L, 1);
        int known = 0;
        if (lua_type(L, -1) == LUA_TSTRING)
            for (size_t i = 0; i < sizeof known_fields / sizeof known_fields[0]; i++)
                known |= strcmp(lua_tostring(L, -1), known_fields[i]) == 0;
        if (!known) {
            lua_pushvalue(L, -1);
            const char *k = luaL_tolstring(L, -1, NULL);
            gen_path_push(r, k, 0);
            gen_lua_field_error(L, r, "unknown field");
        }
    }
}

static void read_functions(lua_State *L, gen_reader *r)
{
    for (int i = 0; i < GEN_FN_COUNT; i++) {
        size_t old;
        int type = push_field(L, r, gen_fn_names[i], &old);
        if (type == LUA_TFUNCTION) {
            lua_Debug d;
            lua_pushvalue(L, -1);
            lua_getinfo(L, ">S", &d);
            r->t->fn_line[i] = d.linedefined > 0 ? d.linedefined : 1;
        } else if (i == GEN_FN_ARCH_SPECIFIC && type == LUA_TBOOLEAN) {
            r->t->arch_specific = lua_toboolean(L, -1);
        } else if (i == GEN_FN_LAUNCH || type != LUA_TNIL) {
            gen_lua_field_error(L, r, "expected function%s, got %s",
                                i == GEN_FN_ARCH_SPECIFIC ? " or boolean" : "",
                                luaL_typename(L, -1));
        }
        pop_field(L, r, old);
    }
}

static fmqa_op op_from_name(const char *s)
{
    for (int op = FMQA_OP_DECODE; op <= FMQA_OP_COMPRESS; op++)
        if (strcmp(s, fmqa_op_name((fmqa_op)op)) == 0)
            return (fmqa_op)op;
    return (fmqa_op)0;
}

static void read_template(lua_State *L, gen_reader *r)
{
    gen_template *t = r->t;
    if (!lua_istable(L, 1))
        luaL_error(L, "%s: the file must return a table, got %s", t->chunk, luaL_typename(L, 1));
    check_known_fields(L, r);
    size_t old;
    push_field(L, r, "name", &old);
    snprintf(t->name, sizeof t->name, "%s", check_name(L, r, -1));
    pop_field(L, r, old);
    push_field(L, r, "op", &old);
    t->op = op_from_name(check_string(L, r, -1));
    if (!t->op)
        gen_lua_field_error(L, r, "'%s' is not one of decode, prefill, mla_decode, append",
                            lua_tostring(L, -1));
    pop_field(L, r, old);
    read_names(L, r, "sources", &t->sources, &t->n_sources);
    read_names(L, r, "entries", &t->entries, &t->n_entries);
    if (push_field(L, r, "arch_min", &old) != LUA_TNIL)
        t->arch_min = (int)gen_lua_check_int(L, r, -1, 0);
    pop_field(L, r, old);
    if (push_field(L, r, "accuracy", &old) != LUA_TNIL)
        t->accuracy = dup_or_raise(L, check_string(L, r, -1));
    pop_field(L, r, old);
    read_space(L, r);
    read_functions(L, r);
    lua_pushvalue(L, 1);
    t->ref = luaL_ref(L, LUA_REGISTRYINDEX);
}

/* ------------------------------------------------------------ identity hash */

/*
 * The identity hash covers every file of the set the compiler may read for a
 * template: its sources and, transitively, every set file they #include.  The
 * scan follows the preprocessor's own reading (translation phases 1-3 and
 * directive syntax): lines spliced at backslash-newlines, each comment one
 * space (so a comment may stand before '#' or span lines), string and
 * character literals opaque, `#include` / `# include` / `#include_next` with
 * "name" or <name>, at any depth.  It over-approximates where a compiler would
 * decide: an #include under a false #if still counts, and an include whose
 * operand is a macro counts as including every file of the set.  Include
 * guards change what is compiled, never which files are read, so they need no
 * handling.
 */

/* Copy of text after line splicing, with comments replaced by a space and
 * literals kept verbatim; NULL when out of memory. */
static char *preprocess_text(const char *text)
{
    char *out = malloc(strlen(text) + 1), *o = out;
    if (!out)
        return NULL;
    char quote = 0; /* inside a "..." or '...' literal */
    for (const char *p = text; *p;) {
        if (p[0] == '\\' && (p[1] == '\n' || (p[1] == '\r' && p[2] == '\n'))) {
            p += p[1] == '\n' ? 2 : 3; /* phase 2: splice */
        } else if (quote) {
            if (*p == '\\' && p[1] && p[1] != '\n')
                *o++ = *p++;
            else if (*p == quote || *p == '\n')
                quote = 0;
            *o++ = *p++;
        } else if (p[0] == '/' && p[1] == '*') {
            const char *end = strstr(p + 2, "*/");
            p = end ? end + 2 : p + strlen(p);
            *o++ = ' ';
        } else if (p[0] == '/' && p[1] == '/') {
            while (*p && *p != '\n') /* a spliced newline was removed above */
                p += p[0] == '\\' && p[1] == '\n' ? 2 : 1;
            *o++ = ' ';
        } else {
            if (*p == '"' || *p == '\'')
                quote = *p;
            *o++ = *p++;
        }
    }
    *o = '\0';
    return out;
}

static const char *skip_blanks(const char *s)
{
    while (*s == ' ' || *s == '\t' || *s == '\v' || *s == '\f' || *s == '\r')
        s++;
    return s;
}

/* Adds f to list unless it is there; f may be NULL (not a set file). */
static void list_add(const gen_file **list, int *n, const gen_file *f)
{
    for (int i = 0; f && i < *n; i++)
        if (list[i] == f)
            return;
    if (f)
        list[(*n)++] = f;
}

/* The operand of an include directive at s (just after "include"): adds the
 * set file it names, or every set file when it is not a literal name. */
static void include_operand(const gen_lib *lib, const char *s, const gen_file **list, int *n)
{
    s = skip_blanks(s);
    char close = *s == '"' ? '"' : *s == '<' ? '>' : 0;
    size_t len = close ? strcspn(s + 1, close == '"' ? "\"\n" : ">\n") : 0;
    if (!close || s[1 + len] != close) {
        for (int i = 0; i < lib->n_files; i++) /* a computed include */
            list_add(list, n, &lib->files[i]);
        return;
    }
    char name[256];
    if (len >= sizeof name)
        return; /* no set file has such a name */
    memcpy(name, s + 1, len);
    name[len] = '\0';
    list_add(list, n, gen_lib_file(lib, name));
}

/* Adds the set files that f includes to list (false when out of memory). */
static bool scan_includes(const gen_lib *lib, const gen_file *f, const gen_file **list, int *n)
{
    char *text = preprocess_text(f->text);
    if (!text)
        return false;
    for (const char *line = text; line; line = strchr(line, '\n'), line = line ? line + 1 : NULL) {
        const char *s = skip_blanks(line);
        if (*s != '#')
            continue;
        s = skip_blanks(s + 1);
        size_t word = strspn(s, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_");
        if ((word == 7 && strncmp(s, "include", 7) == 0) ||
            (word == 12 && strncmp(s, "include_next", 12) == 0))
            include_operand(lib, s + word, list, n);
    }
    free(text);
    return true;
}

static void compute_hash(gen_template *t)
{
    const gen_lib *lib = t->lib;
    const gen_file **list = calloc((size_t)lib->n_files + 1, sizeof *list);
    if (!list)
        return; /* hash stays "": the caller reports the template as unusable */
    int n = 0;
    bool ok = true;
    for (int i = 0; i < t->n_sources; i++)
        list_add(list, &n, gen_lib_file(lib, t->sources[i]));
    for (int i = 0; i < n && ok; i++) /* n grows as includes are found */
        ok = scan_includes(lib, list[i], list, &n);
    if (!ok) {
        free(list);
        return;
    }
    fmqa_hasher h;
    fmqa_hash_init(&h);
    char versions[64];
    snprintf(versions, sizeof versions, "gen=%d params=%d", GEN_VERSION, FMQA_PARAMS_VERSION);
    fmqa_hash_str(&h, versions);
    fmqa_hash_str(&h, t->lua->name);
    fmqa_hash_str(&h, t->lua->text);
    for (int i = 0; i < t->n_libs; i++) {
        fmqa_hash_str(&h, t->libs[i]->name);
        fmqa_hash_str(&h, t->libs[i]->text);
    }
    for (int i = 0; i < n; i++) {
        fmqa_hash_str(&h, list[i]->name);
        fmqa_hash_str(&h, list[i]->text);
    }
    fmqa_hash_final(&h, t->hash);
    free(list);
}

/* ------------------------------------------------------------ loading */

static void load_template(gen_template *t)
{
    fmqa_err err = {0};
    lua_State *L = t->lib->L;
    t->ref = LUA_NOREF;
    t->status = gen_lua_run_chunk(t, &err);
    if (t->status == FMQA_OK) {
        gen_reader r = {.t = t};
        t->status = gen_lua_read(&r, read_template, &err);
    }
    if (t->status == FMQA_OK) {
        compute_hash(t);
        if (!t->hash[0])
            t->status = fmqa_err_set(&err, FMQA_ERR_OUT_OF_MEMORY, "%s: out of memory", t->chunk);
    }
    if (t->status != FMQA_OK && t->ref != LUA_NOREF) {
        luaL_unref(L, LUA_REGISTRYINDEX, t->ref);
        t->ref = LUA_NOREF;
    }
    t->message = fmqa_strdup(t->status == FMQA_OK ? "" : err.msg);
}

static fmqa_status init_templates(gen_lib *lib, fmqa_err *err)
{
    lib->templates = calloc((size_t)lib->n_files + 1, sizeof *lib->templates);
    if (!lib->templates)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    for (int i = 0; i < lib->n_files; i++) {
        const gen_file *f = &lib->files[i];
        size_t len = strlen(f->name);
        if (!has_ext(f->name, ".lua") || strchr(f->name, '/'))
            continue; /* not a template: a header, a source or a library */
        gen_template *t = &lib->templates[lib->n_templates++];
        t->lib = lib;
        t->lua = f;
        snprintf(t->file, sizeof t->file, "%s", f->name);
        snprintf(t->name, sizeof t->name, "%.*s", (int)(len - 4), f->name);
        size_t clen = strlen(lib->prefix) + len + 2;
        t->chunk = malloc(clen);
        if (!t->chunk)
            return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
        snprintf(t->chunk, clen, "%s/%s", lib->prefix, f->name);
        load_template(t);
    }
    return FMQA_OK;
}

fmqa_status gen_lib_open(const char *dir, gen_lib **out, fmqa_err *err)
{
    *out = NULL;
    gen_lib *lib = calloc(1, sizeof *lib);
    if (!lib)
        return fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    pthread_mutex_init(&lib->mu, NULL);
    lib->origin = fmqa_strdup(dir ? dir : "embedded");
    lib->prefix = dir ? dir_prefix(dir) : fmqa_strdup("templates");
    fmqa_status st = lib->origin && lib->prefix
                         ? FMQA_OK
                         : fmqa_err_set(err, FMQA_ERR_OUT_OF_MEMORY, "out of memory");
    if (st == FMQA_OK)
        st = dir ? read_set(lib, dir, err) : read_embedded(lib, err);
    if (st == FMQA_OK) {
        qsort(lib->files, (size_t)lib->n_files, sizeof *lib->files, cmp_file);
        st = gen_lua_open(lib, err);
    }
    if (st == FMQA_OK)
        st = init_templates(lib, err);
    if (st != FMQA_OK) {
        gen_lib_close(lib);
        return st;
    }
    *out = lib;
    return FMQA_OK;
}

static void free_names(char **names, int n)
{
    for (int i = 0; i < n; i++)
        free(names[i]);
    free(names);
}

void gen_lib_close(gen_lib *lib)
{
    if (!lib)
        return;
    for (int i = 0; i < lib->n_templates; i++) {
        gen_template *t = &lib->templates[i];
        free(t->chunk);
        free(t->message);
        free(t->accuracy);
        free_names(t->sources, t->n_sources);
        free_names(t->entries, t->n_entries);
    }
    free(lib->templates);
    for (int i = 0; i < lib->n_files; i++) {
        free(lib->files[i].name);
        free(lib->files[i].text);
    }
    free(lib->files);
    if (lib->L)
        lua_close(lib->L);
    pthread_mutex_destroy(&lib->mu);
    free(lib->origin);
    free(lib->prefix);
    free(lib);
}

/* ------------------------------------------------------------ accessors */

const char *gen_lib_origin(const gen_lib *lib) { return lib->origin; }
int gen_lib_count(const gen_lib *lib) { return lib->n_templates; }

const gen_template *gen_lib_at(const gen_lib *lib, int i)
{
    return i >= 0 && i < lib->n_templates ? &lib->templates[i] : NULL;
}

const gen_template *gen_lib_find(const gen_lib *lib, const char *name)
{
    for (int i = 0; name && i < lib->n_templates; i++)
        if (lib->templates[i].status == FMQA_OK && strcmp(lib->templates[i].name, name) == 0)
            return &lib->templates[i];
    return NULL;
}

const gen_template *gen_lib_next(const gen_lib *lib, fmqa_op op, const gen_template *prev)
{
    int i = prev ? (int)(prev - lib->templates) + 1 : 0;
    for (; i < lib->n_templates; i++)
        if (lib->templates[i].status == FMQA_OK && lib->templates[i].op == op)
            return &lib->templates[i];
    return NULL;
}

fmqa_status gen_template_status(const gen_template *t) { return t->status; }
const char *gen_template_message(const gen_template *t) { return t->message ? t->message : ""; }
const char *gen_template_file(const gen_template *t) { return t->file; }
const char *gen_template_name(const gen_template *t) { return t->name; }
fmqa_op gen_template_op(const gen_template *t) { return t->status == FMQA_OK ? t->op : (fmqa_op)0; }
int gen_template_arch_min(const gen_template *t) { return t->arch_min; }
const char *gen_template_accuracy(const gen_template *t) { return t->accuracy; }
const char *gen_template_hash(const gen_template *t) { return t->status == FMQA_OK ? t->hash : ""; }
int gen_template_param_count(const gen_template *t) { return t->n_params; }

const char *gen_template_param_name(const gen_template *t, int i)
{
    return i >= 0 && i < t->n_params ? t->params[i].name : NULL;
}

int gen_template_param_values(const gen_template *t, int i, const int64_t **values)
{
    if (i < 0 || i >= t->n_params)
        return 0;
    *values = t->params[i].values;
    return t->params[i].n;
}

void gen_lock(const gen_template *t) { pthread_mutex_lock(&t->lib->mu); }
void gen_unlock(const gen_template *t) { pthread_mutex_unlock(&t->lib->mu); }

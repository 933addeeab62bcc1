/*
 * rt_version.c -- the library's version (fmqa_version, fmqa_version_string)
 * and the versions report every tool prints for --version.
 *
 * The header's FMQA_VERSION_* macros are the one source of the version; the
 * build passes CMake's project version in FMQA_PROJECT_VERSION_* and the
 * static assertions below stop a build where the two differ.
 */
#include "rt.h"

#include <stdio.h>
#include <string.h>

#include <lua.h>
#include <sqlite3.h>

#include "db.h"

_Static_assert(FMQA_VERSION_MAJOR == FMQA_PROJECT_VERSION_MAJOR &&
                   FMQA_VERSION_MINOR == FMQA_PROJECT_VERSION_MINOR &&
                   FMQA_VERSION_PATCH == FMQA_PROJECT_VERSION_PATCH,
               "include/fastmqa.h FMQA_VERSION_* differ from project(VERSION) in CMakeLists.txt");

int fmqa_version(void) { return FMQA_VERSION; }

const char *fmqa_version_string(void) { return FMQA_VERSION_STRING; }

static void report(FILE *f, const char *tool)
{
    int maj = 0, min = 0;
    const rt_cuda *cu = NULL;
    fmqa_err err = {0};
    fprintf(f, "%s %s\n", tool, fmqa_version_string());
    fprintf(f, "  libfastmqa       %s\n", fmqa_version_string());
    if (fmqa_nvrtc_version(&maj, &min) == FMQA_OK)
        fprintf(f, "  NVRTC            %d.%d\n", maj, min);
    else
        fprintf(f, "  NVRTC            unknown (nvrtcVersion failed)\n");
    if (rt_cuda_get(&cu, &err) == FMQA_OK)
        fprintf(f, "  CUDA driver      %d.%d\n", cu->driver_version / 1000,
                cu->driver_version % 1000 / 10);
    else
        fprintf(f, "  CUDA driver      none (%s)\n", err.msg);
    fprintf(f, "  database schema  %d\n", DB_SCHEMA_VERSION);
    fprintf(f, "  SQLite           %s\n", sqlite3_libversion());
    fprintf(f, "  Lua              %s\n", LUA_VERSION_MAJOR "." LUA_VERSION_MINOR);
}

int rt_version_option(int argc, char **argv, const char *tool)
{
    for (int i = 1; i < argc; i++)
        if (!strcmp(argv[i], "--version")) {
            report(stdout, tool);
            return 1;
        }
    return 0;
}

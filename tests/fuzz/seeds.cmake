# Writes fuzz_template's seed corpus into OUT: every Lua file of templates/
# (the templates and their lib/) and of tests/fixtures/ (the sandbox, hostile
# and broken templates), each named by its path with / as _
# (templates_lib_common.lua), so the seeds are always today's files, never
# stale copies.  Run at build time by tests/fuzz/CMakeLists.txt.
file(GLOB_RECURSE seeds RELATIVE ${SRC} ${SRC}/templates/*.lua ${SRC}/tests/fixtures/*.lua)
file(REMOVE_RECURSE ${OUT})
file(MAKE_DIRECTORY ${OUT})
foreach(f ${seeds})
  string(REPLACE "/" "_" name "${f}")
  file(COPY_FILE ${SRC}/${f} ${OUT}/${name})
endforeach()

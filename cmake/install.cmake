# What `cmake --install` puts under the prefix: the shared and static
# libraries, the header, the tools (installed beside their targets), the docs
# and each tool's --help text, a CMake package (find_package(fastmqa CONFIG):
# fastmqa::fastmqa and fastmqa::fastmqa_static) and pkg-config files
# (fastmqa.pc; fastmqa_static.pc names the archive).  Tested by
# tests/package/consume.sh.
include(CMakePackageConfigHelpers)
set(FASTMQA_DOCDIR ${CMAKE_INSTALL_DATAROOTDIR}/doc/fastmqa)

install(TARGETS fastmqa fastmqa_static EXPORT fastmqaTargets
  LIBRARY DESTINATION ${CMAKE_INSTALL_LIBDIR}
  ARCHIVE DESTINATION ${CMAKE_INSTALL_LIBDIR}
  INCLUDES DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})
install(FILES ${PROJECT_SOURCE_DIR}/include/fastmqa.h DESTINATION ${CMAKE_INSTALL_INCLUDEDIR})

set(FASTMQA_CMAKE_DIR ${CMAKE_INSTALL_LIBDIR}/cmake/fastmqa)
install(EXPORT fastmqaTargets NAMESPACE fastmqa:: DESTINATION ${FASTMQA_CMAKE_DIR})
configure_package_config_file(${CMAKE_CURRENT_LIST_DIR}/fastmqaConfig.cmake.in
  ${PROJECT_BINARY_DIR}/fastmqaConfig.cmake INSTALL_DESTINATION ${FASTMQA_CMAKE_DIR})
# 0.x: a minor release may change the ABI.
write_basic_package_version_file(${PROJECT_BINARY_DIR}/fastmqaConfigVersion.cmake
  COMPATIBILITY SameMinorVersion)
install(FILES ${PROJECT_BINARY_DIR}/fastmqaConfig.cmake
  ${PROJECT_BINARY_DIR}/fastmqaConfigVersion.cmake DESTINATION ${FASTMQA_CMAKE_DIR})

# pkg-config: each dependency as -L/-l flags from the library file CMake found.
set(pc_dirs "")
set(pc_libs "")
foreach(dep ${LUA_LIBRARIES} ${SQLite3_LIBRARIES} ${CUDA_nvrtc_LIBRARY} pthread ${CMAKE_DL_LIBS} m)
  if(dep MATCHES "^(/.*)/lib([^/]+)\\.(so|a)$")
    list(APPEND pc_dirs "-L${CMAKE_MATCH_1}")
    list(APPEND pc_libs "-l${CMAKE_MATCH_2}")
  else()
    list(APPEND pc_libs "-l${dep}")
  endif()
endforeach()
list(REMOVE_DUPLICATES pc_dirs)
list(REMOVE_DUPLICATES pc_libs)
list(JOIN pc_dirs " " pc_dirs)
list(JOIN pc_libs " " pc_libs)
set(FASTMQA_PC_DEPS " ${pc_dirs} ${pc_libs}")
# prefix relative to the .pc file, so that an install moved elsewhere (or made
# with cmake --install --prefix) still points at itself.
file(RELATIVE_PATH FASTMQA_PC_TO_PREFIX /p/${CMAKE_INSTALL_LIBDIR}/pkgconfig /p)
string(REGEX REPLACE "/$" "" FASTMQA_PC_TO_PREFIX "${FASTMQA_PC_TO_PREFIX}")
foreach(pc fastmqa fastmqa_static)
  configure_file(${CMAKE_CURRENT_LIST_DIR}/${pc}.pc.in ${PROJECT_BINARY_DIR}/${pc}.pc @ONLY)
  install(FILES ${PROJECT_BINARY_DIR}/${pc}.pc DESTINATION ${CMAKE_INSTALL_LIBDIR}/pkgconfig)
endforeach()

# Docs, and each tool's --help as text (share/doc/fastmqa/help/TOOL.txt), and
# each command's (TOOL-COMMAND.txt: their options are only there).
install(FILES ${PROJECT_SOURCE_DIR}/README.md DESTINATION ${FASTMQA_DOCDIR})
file(GLOB FASTMQA_DOCS CONFIGURE_DEPENDS ${PROJECT_SOURCE_DIR}/docs/*.md)
install(FILES ${FASTMQA_DOCS} DESTINATION ${FASTMQA_DOCDIR})
set(FASTMQA_COMMANDS_fastmqa-tune "")
set(FASTMQA_COMMANDS_fastmqa-db devices problems trials best show export import merge prune
    compiles stats plot check vacuum)
set(FASTMQA_COMMANDS_fastmqa-gen list space source compile)
set(FASTMQA_COMMANDS_fastmqa-bench levels decode prefill static bw mla)
set(FASTMQA_HELP "")
foreach(tool fastmqa-tune fastmqa-db fastmqa-gen fastmqa-bench)
  foreach(cmd "" ${FASTMQA_COMMANDS_${tool}})
    if(cmd STREQUAL "")
      set(out ${PROJECT_BINARY_DIR}/help/${tool}.txt)
    else()
      set(out ${PROJECT_BINARY_DIR}/help/${tool}-${cmd}.txt)
    endif()
    add_custom_command(OUTPUT ${out}
      COMMAND ${CMAKE_COMMAND} -E make_directory ${PROJECT_BINARY_DIR}/help
      COMMAND $<TARGET_FILE:${tool}> ${cmd} --help > ${out}
      DEPENDS ${tool} VERBATIM)
    list(APPEND FASTMQA_HELP ${out})
  endforeach()
endforeach()
add_custom_target(fastmqa_help ALL DEPENDS ${FASTMQA_HELP})
install(FILES ${FASTMQA_HELP} DESTINATION ${FASTMQA_DOCDIR}/help)

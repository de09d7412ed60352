# Sanitizer builds (scripts/sanitize.sh):
#
#   -DFUSE_HEALER_SANITIZE=address,undefined   ASan + UBSan (+ LeakSanitizer),
#                                               every target, the whole ctest
#   -DFUSE_HEALER_SANITIZE=thread              TSan, every target; run the
#                                               threaded tests (see the script)
#
# Every target is built with the flags, the tools too (fh_testfs, the FUSE
# daemon of the integration tests, and fh_test_container), so that the
# fuse-healerd and fuse-healerctl that the integration tests run are the
# sanitized ones. Every report is fatal to its process (-fno-sanitize-recover,
# halt_on_error), and cmake/sanitizer_support.c, linked into every executable,
# sets the runtimes' defaults and leaves a marker file per report in
# FH_SANITIZER_REPORT_DIR (default <build>/sanitizer-reports), which
# scripts/sanitize.sh checks after ctest: a report in a child process whose
# test did not notice it still fails the run. See docs/ANALYSIS.md.
set(FUSE_HEALER_SANITIZE "" CACHE STRING
  "Build with sanitizers: empty (none), 'address,undefined' or 'thread'")
set_property(CACHE FUSE_HEALER_SANITIZE PROPERTY STRINGS "" "address,undefined" "thread")

if(FUSE_HEALER_SANITIZE STREQUAL "")
  return()
elseif(FUSE_HEALER_FUZZ)
  message(FATAL_ERROR "FUSE_HEALER_SANITIZE and FUSE_HEALER_FUZZ (which has its own sanitizers) exclude each other")
elseif(FUSE_HEALER_SANITIZE STREQUAL "address,undefined")
  # float-cast-overflow is not part of gcc's "undefined" (a double of 1e30
  # converted to int64_t, e.g. a duration from the config, is UB).
  # _GLIBCXX_ASSERTIONS: bounds checks in std::vector::operator[] and
  # friends (no ABI change, unlike _GLIBCXX_DEBUG).
  set(FH_SANITIZE_FLAGS -fsanitize=address,undefined,float-cast-overflow -fno-sanitize-recover=all
    -fno-omit-frame-pointer)
  add_compile_definitions(_GLIBCXX_ASSERTIONS)
elseif(FUSE_HEALER_SANITIZE STREQUAL "thread")
  set(FH_SANITIZE_FLAGS -fsanitize=thread -fno-omit-frame-pointer)
else()
  message(FATAL_ERROR "FUSE_HEALER_SANITIZE must be empty, 'address,undefined' or 'thread', not '${FUSE_HEALER_SANITIZE}'")
endif()
message(STATUS "sanitizers: ${FUSE_HEALER_SANITIZE}")
# -O1 (after the build type's -O2): the usual level for sanitizer builds,
# quicker to compile, with exact stacks. gcc's -Wmaybe-uninitialized gives
# false positives under -fsanitize (in libstdc++'s <regex>, here).
add_compile_options(${FH_SANITIZE_FLAGS} -O1 -Wno-maybe-uninitialized)
add_link_options(${FH_SANITIZE_FLAGS})

set(FH_SANITIZER_REPORT_DIR "${CMAKE_BINARY_DIR}/sanitizer-reports" CACHE PATH
  "Where sanitized processes leave a marker file per sanitizer report (FH_SANITIZER_REPORT_DIR overrides it)")
configure_file("${CMAKE_CURRENT_LIST_DIR}/sanitizer_support.c.in" "${CMAKE_BINARY_DIR}/fh_sanitizer_support.c" @ONLY)
set(FH_SANITIZER_SUPPORT_SOURCE "${CMAKE_BINARY_DIR}/fh_sanitizer_support.c")

# Called at the end of the top-level CMakeLists.txt: adds
# sanitizer_support.c to every executable of the project.
function(fh_add_sanitizer_support dir)
  get_property(targets DIRECTORY "${dir}" PROPERTY BUILDSYSTEM_TARGETS)
  foreach(t IN LISTS targets)
    get_target_property(type ${t} TYPE)
    if(type STREQUAL "EXECUTABLE")
      target_sources(${t} PRIVATE "${FH_SANITIZER_SUPPORT_SOURCE}")
      target_link_libraries(${t} PRIVATE ${CMAKE_DL_LIBS})
    endif()
  endforeach()
  get_property(subdirs DIRECTORY "${dir}" PROPERTY SUBDIRECTORIES)
  foreach(d IN LISTS subdirs)
    fh_add_sanitizer_support("${d}")
  endforeach()
endfunction()

# Every third-party library comes from Debian 12 packages through pkg-config
# (scripts/install-deps.sh installs them).
find_package(PkgConfig REQUIRED)
find_package(Threads REQUIRED)

pkg_check_modules(PROTOBUF_C REQUIRED IMPORTED_TARGET libprotobuf-c)
pkg_check_modules(LIBUV REQUIRED IMPORTED_TARGET libuv)
pkg_check_modules(SQLITE3 REQUIRED IMPORTED_TARGET sqlite3)
pkg_check_modules(CMOCKA REQUIRED IMPORTED_TARGET cmocka)
pkg_check_modules(YAML REQUIRED IMPORTED_TARGET yaml-0.1)
pkg_check_modules(JANSSON REQUIRED IMPORTED_TARGET jansson)
pkg_check_modules(OPENSSL REQUIRED IMPORTED_TARGET openssl)

find_program(PROTOC_C protoc-c REQUIRED)

# drover_protoc_c(<var> <src_dir> <gen_dir> <name>...): runs protoc-c on each
# <src_dir>/<name>.proto into <gen_dir>/<name>.pb-c.{c,h} and appends the .c
# files to <var>.
function(drover_protoc_c var src gen)
  set(out ${${var}})
  foreach(p ${ARGN})
    add_custom_command(
      OUTPUT ${gen}/${p}.pb-c.c ${gen}/${p}.pb-c.h
      COMMAND ${CMAKE_COMMAND} -E make_directory ${gen}
      COMMAND ${PROTOC_C} -I${src} --c_out=${gen} ${src}/${p}.proto
      DEPENDS ${src}/${p}.proto
      COMMENT "protoc-c ${p}.proto")
    list(APPEND out ${gen}/${p}.pb-c.c)
  endforeach()
  set(${var} ${out} PARENT_SCOPE)
endfunction()

# protobuf-c and jansson are small and every driver loads them at start: from
# their static archives (position-independent on Debian, so fine in PIE
# programs too) a driver maps two shared libraries fewer, ~0.4 ms of CPU less
# from exec to main (perf stat task-clock of `drover-driver-sim --version`:
# 1.76 -> 1.35 ms with -static-libgcc below). libuv likewise, for programs
# that host drivers (drover-bench re-executes itself as its echo baseline,
# which gets the same linking as the sim). Same switch as static gRPC below.
if(DROVER_STATIC_GRPC AND NOT DROVER_SANITIZE)
  foreach(_dep PROTOBUF_C:protobuf-c JANSSON:jansson LIBUV:uv_a)
    string(REPLACE ":" ";" _dep "${_dep}")
    list(GET _dep 0 _var)
    list(GET _dep 1 _lib)
    find_library(${_var}_STATIC_ARCHIVE NAMES lib${_lib}.a)
    if(${_var}_STATIC_ARCHIVE)
      set_property(TARGET PkgConfig::${_var} PROPERTY INTERFACE_LINK_LIBRARIES ${${_var}_STATIC_ARCHIVE})
    endif()
  endforeach()
endif()

# gRPC C core. `pkg-config --libs grpc` drags in ~70 absl flags; the C API
# needs only -lgrpc -lgpr when linked dynamically.
find_path(GRPC_INCLUDE_DIR grpc/grpc.h REQUIRED)
find_library(GRPC_LIBRARY grpc REQUIRED)
find_library(GPR_LIBRARY gpr REQUIRED)
add_library(drover_grpc_shared INTERFACE)
target_include_directories(drover_grpc_shared INTERFACE ${GRPC_INCLUDE_DIR})
target_link_libraries(drover_grpc_shared INTERFACE ${GRPC_LIBRARY} ${GPR_LIBRARY})

# Static gRPC for driver programs: the dynamic loader dominates spawn time
# (~55 shared libraries with libgrpc.so; ~50 still with only libgrpc.a static,
# since abseil, OpenSSL and zlib stay shared). So the whole closure of gRPC is
# linked from static archives, in one group because abseil's archives depend
# on each other in cycles. It is one -Wl item so that CMake cannot
# de-duplicate or reorder its -l flags against other targets' copies.
# Position-dependent executables (-no-pie) skip ~30,000 start-up relocations
# of a 14 MB binary (idle RSS ~8.9 -> ~7.6 MB, ~0.6 ms less from exec to
# main), and --as-needed drops shared libraries nothing uses. gRPC core is C++
# inside, hence the C++ runtime, static too: loading and relocating
# libstdc++.so costs ~0.8 ms and ~2 MB of RSS per driver start. (No part of
# drover loads another C++ library, so one private copy is safe.)
add_library(drover_grpc_static INTERFACE)
if(DROVER_STATIC_GRPC AND NOT DROVER_SANITIZE)
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --static --libs-only-l grpc
                  OUTPUT_VARIABLE _grpc_l OUTPUT_STRIP_TRAILING_WHITESPACE)
  separate_arguments(_grpc_l UNIX_COMMAND "${_grpc_l}")
  set(_grpc_absl)
  foreach(l ${_grpc_l})
    if(l MATCHES "^-labsl_")
      list(APPEND _grpc_absl ${l})
    endif()
  endforeach()
  list(REMOVE_DUPLICATES _grpc_absl)
  set(_grpc_group -Bstatic --start-group -lgrpc -lgpr -lupb -laddress_sorting -lre2 -lcares ${_grpc_absl}
                  -lssl -lcrypto -lz -lstdc++ --end-group -Bdynamic)
  string(REPLACE ";" "," _grpc_group "${_grpc_group}")
  target_include_directories(drover_grpc_static INTERFACE ${GRPC_INCLUDE_DIR})
  # -static-libgcc: libgcc_s.so is one more library for the loader to map and
  # relocate at every driver start, for an unwinder the static C++ runtime
  # can take from libgcc_eh.a instead.
  target_link_options(drover_grpc_static INTERFACE -Wl,--as-needed -no-pie -static-libgcc)
  # A program marked DROVER_FULLY_STATIC (drover_fully_static below) stays in static mode after the group.
  string(REGEX REPLACE ",-Bdynamic$" "$<$<NOT:$<BOOL:$<TARGET_PROPERTY:DROVER_FULLY_STATIC>>>:,-Bdynamic>"
                       _grpc_group "${_grpc_group}")
  target_link_libraries(drover_grpc_static INTERFACE "-Wl,${_grpc_group}" stdc++ m dl Threads::Threads)
else()
  target_link_libraries(drover_grpc_static INTERFACE drover_grpc_shared)
endif()

# Links a program fully static (glibc too), when gRPC is static: no dynamic
# loader work at all at exec, ~0.4 ms less from spawn to a driver's first
# answer (perf stat task-clock of `drover-driver-sim --version`: 1.14 ms ->
# 0.66 ms). For drivers and the benchmark, which re-executes itself as its
# echo baseline, so both sides of that comparison start the same way. glibc's
# name-service functions would still load shared modules, but a driver
# resolves nothing through them: spawned it talks over a unix socket, and
# gRPC's own DNS resolver is c-ares.
function(drover_fully_static target)
  if(DROVER_STATIC_GRPC AND NOT DROVER_SANITIZE)
    set_target_properties(${target} PROPERTIES DROVER_FULLY_STATIC ON)
    target_link_options(${target} PRIVATE -static)
  endif()
endfunction()

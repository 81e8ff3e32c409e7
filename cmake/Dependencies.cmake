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

# gRPC C core. `pkg-config --libs grpc` drags in ~70 absl flags; the C API
# needs only -lgrpc -lgpr when linked dynamically.
find_path(GRPC_INCLUDE_DIR grpc/grpc.h REQUIRED)
find_library(GRPC_LIBRARY grpc REQUIRED)
find_library(GPR_LIBRARY gpr REQUIRED)
add_library(drover_grpc_shared INTERFACE)
target_include_directories(drover_grpc_shared INTERFACE ${GRPC_INCLUDE_DIR})
target_link_libraries(drover_grpc_shared INTERFACE ${GRPC_LIBRARY} ${GPR_LIBRARY})

# Static gRPC for driver programs: the dynamic loader dominates spawn time
# (~55 shared libraries). The --static pkg-config output misses a few
# libraries, which are added by hand.
add_library(drover_grpc_static INTERFACE)
if(DROVER_STATIC_GRPC AND NOT DROVER_SANITIZE)
  execute_process(COMMAND ${PKG_CONFIG_EXECUTABLE} --static --libs grpc
                  OUTPUT_VARIABLE GRPC_STATIC_LIBS OUTPUT_STRIP_TRAILING_WHITESPACE)
  separate_arguments(GRPC_STATIC_LIBS UNIX_COMMAND "${GRPC_STATIC_LIBS}")
  list(REMOVE_ITEM GRPC_STATIC_LIBS -lgrpc -lgpr)
  target_include_directories(drover_grpc_static INTERFACE ${GRPC_INCLUDE_DIR})
  target_link_libraries(drover_grpc_static INTERFACE
    -Wl,-Bstatic -lgrpc -lgpr -lupb -laddress_sorting -lre2 -lcares -Wl,-Bdynamic
    ${GRPC_STATIC_LIBS})
else()
  target_link_libraries(drover_grpc_static INTERFACE drover_grpc_shared)
endif()

# The warning set of STYLE.md, applied to every target of ours through
# drover_warnings; -Werror under CI (DROVER_WERROR=ON).
add_library(drover_warnings INTERFACE)
target_compile_options(drover_warnings INTERFACE
  -Wall -Wextra -Wpedantic -Wshadow -Wstrict-prototypes -Wno-unused-parameter)
target_compile_definitions(drover_warnings INTERFACE _GNU_SOURCE)
if(DROVER_WERROR)
  target_compile_options(drover_warnings INTERFACE -Werror)
endif()
if(DROVER_SANITIZE)
  target_compile_options(drover_warnings INTERFACE -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined)
  target_link_options(drover_warnings INTERFACE -fsanitize=address,undefined)
endif()

# Turns catalog.tsv into a C source, so the driver binary carries its own
# catalog. Usage: cmake -DIN=<tsv> -DOUT=<c file> -P embed.cmake
file(READ ${IN} hex HEX)
if(hex MATCHES "^(..)*[89a-f][0-9a-f]")
  message(FATAL_ERROR "${IN}: only ASCII is allowed in the catalog")
endif()
string(LENGTH "${hex}" n)
math(EXPR len "${n} / 2")
string(REGEX REPLACE "([0-9a-f][0-9a-f])" "0x\\1," body "${hex}")
string(REGEX REPLACE "((0x..,){32})" "\\1\n" body "${body}")
file(WRITE ${OUT}.tmp "/* Generated from catalog.tsv by embed.cmake; do not edit. */\n#include <stddef.h>\n\nconst char sim_catalog_tsv[] = {\n${body}0x00};\nconst size_t sim_catalog_tsv_len = ${len};\n")
file(RENAME ${OUT}.tmp ${OUT})

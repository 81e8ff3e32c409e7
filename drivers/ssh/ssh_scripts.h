/*
 * The shell programs the ssh driver runs on a host. Each is fixed text:
 * no value from a config or a request is ever pasted into one. Their input
 * (a claim line, an instance id, public keys, the operator's setup or
 * cleanup script) comes over the command's stdin, read with `read -r` into
 * variables that are only ever expanded inside double quotes.
 *
 * Every program answers key=value lines on stdout ("result=claimed"), and
 * exits non-zero only when the host itself failed (no home, a full disk).
 * They ignore SIGHUP and SIGPIPE: a driver that dies mid-call (its droverd
 * killed) leaves a claim finished, not half made, and the caller's retry
 * with the same key finds it.
 */
#ifndef SSH_SCRIPTS_H
#define SSH_SCRIPTS_H

/*
 * Shared functions. install_keys FILE replaces the driver's marked block of
 * ~/.ssh/authorized_keys with the keys in FILE (none: the block goes), and
 * leaves every other line as it was; the new file replaces the old by
 * rename, so a reader never sees half of it.
 */
#define SSH_SCRIPT_PRELUDE                                                                                   \
	"umask 077\n"                                                                                        \
	"trap '' HUP PIPE\n"                                                                                 \
	"d=\"$HOME/.drover\"\n"                                                                              \
	"b='# drover-driver-ssh: keys of the instance that holds this host (begin)'\n"                       \
	"e='# drover-driver-ssh: keys of the instance that holds this host (end)'\n"                         \
	"install_keys() {\n"                                                                                 \
	"  mkdir -p \"$HOME/.ssh\" || return 1\n"                                                            \
	"  ak=\"$HOME/.ssh/authorized_keys\"\n"                                                              \
	"  [ -f \"$ak\" ] || : > \"$ak\" || return 1\n"                                                      \
	"  new=\"$ak.drover.$$\"\n"                                                                          \
	"  awk -v b=\"$b\" -v e=\"$e\" '$0 == b { s = 1; next } $0 == e { s = 0; next } !s' \"$ak\" > "      \
	"\"$new\" || return 1\n"                                                                             \
	"  if [ -n \"$1\" ] && [ -s \"$1\" ]; then { echo \"$b\"; cat \"$1\"; echo \"$e\"; } >> \"$new\" "   \
	"|| "                                                                                                \
	"return 1; fi\n"                                                                                     \
	"  chmod 600 \"$new\" && mv -f \"$new\" \"$ak\"\n"                                                   \
	"}\n"                                                                                                \
	"read_keys() {\n"                                                                                    \
	"  IFS= read -r n || return 1\n"                                                                     \
	"  case \"$n\" in ''|*[!0-9]*) return 1 ;; esac\n"                                                   \
	"  : > \"$1\" || return 1\n"                                                                         \
	"  i=0\n"                                                                                            \
	"  while [ \"$i\" -lt \"$n\" ]; do IFS= read -r k || return 1; printf '%s\\n' \"$k\" >> \"$1\"; "    \
	"i=$((i + 1)); done\n"                                                                               \
	"}\n"                                                                                                \
	"where() {\n"                                                                                        \
	"  echo \"host=$(hostname)\"\n"                                                                      \
	"  set -- $SSH_CONNECTION\n"                                                                         \
	"  echo \"ip=$3\"\n"                                                                                 \
	"}\n"

/*
 * Claims the host. stdin: the claim line; the number of keys and the keys;
 * "1" and the setup script, or "0". The claim file appears whole or not at
 * all: it is written aside and hard-linked into place, and link(2) fails
 * when the name exists, as an O_EXCL create would; so of two drivers racing
 * for one host exactly one gets it. A host held already answers
 * result=held and the holder's claim line. A failed setup script undoes the
 * claim (keys removed, claim released) and answers setup_failed=CODE.
 */
#define SSH_SCRIPT_CREATE                                                                                    \
	SSH_SCRIPT_PRELUDE                                                                                   \
	"mkdir -p \"$d\" || exit 20\n"                                                                       \
	"IFS= read -r claim || exit 21\n"                                                                    \
	"keys=\"$d/keys.$$\"\n"                                                                              \
	"read_keys \"$keys\" || { rm -f \"$keys\"; exit 21; }\n"                                             \
	"IFS= read -r setup || setup=0\n"                                                                    \
	"t=\"$d/claim.$$\"\n"                                                                                \
	"printf '%s\\n' \"$claim\" > \"$t\" || { rm -f \"$t\" \"$keys\"; exit 22; }\n"                       \
	"if ! ln \"$t\" \"$d/claim\" 2>/dev/null; then\n"                                                    \
	"  rm -f \"$t\" \"$keys\"\n"                                                                         \
	"  echo result=held\n"                                                                               \
	"  printf 'claim='; head -n 1 \"$d/claim\" 2>/dev/null; echo\n"                                      \
	"  exit 0\n"                                                                                         \
	"fi\n"                                                                                               \
	"rm -f \"$t\"\n"                                                                                     \
	"install_keys \"$keys\" || { rm -f \"$keys\" \"$d/claim\"; exit 23; }\n"                             \
	"rm -f \"$keys\"\n"                                                                                  \
	"if [ \"$setup\" = 1 ]; then\n"                                                                      \
	"  sh -s >&2\n"                                                                                      \
	"  rc=$?\n"                                                                                          \
	"  if [ \"$rc\" != 0 ]; then install_keys ''; rm -f \"$d/claim\"; echo \"setup_failed=$rc\"; exit "  \
	"0; "                                                                                                \
	"fi\n"                                                                                               \
	"fi\n"                                                                                               \
	"echo result=claimed\n"                                                                              \
	"where\n"

/*
 * The same key again, for a host this key already holds: the keys are put
 * in place again (a create that died between claim and keys), setup is not
 * run again. stdin: the instance id; the number of keys and the keys.
 */
#define SSH_SCRIPT_REKEY                                                                                     \
	SSH_SCRIPT_PRELUDE                                                                                   \
	"IFS= read -r id || exit 21\n"                                                                       \
	"keys=\"$d/keys.$$\"\n"                                                                              \
	"read_keys \"$keys\" || { rm -f \"$keys\"; exit 21; }\n"                                             \
	"if ! grep -qF \"\\\"instance_id\\\":\\\"$id\\\"\" \"$d/claim\" 2>/dev/null; then rm -f \"$keys\"; " \
	"echo result=lost; exit 0; fi\n"                                                                     \
	"install_keys \"$keys\" || { rm -f \"$keys\"; exit 23; }\n"                                          \
	"rm -f \"$keys\"\n"                                                                                  \
	"echo result=claimed\n"                                                                              \
	"where\n"

/*
 * Releases the host if instance `id` holds it: keys removed, then the
 * cleanup script, then the claim. stdin: the id; "1" and the cleanup script,
 * or "0". Another instance's claim, or none, is result=none (idempotent).
 */
#define SSH_SCRIPT_TERMINATE                                                                                 \
	SSH_SCRIPT_PRELUDE                                                                                   \
	"IFS= read -r id || exit 21\n"                                                                       \
	"IFS= read -r cleanup || cleanup=0\n"                                                                \
	"if ! grep -qF \"\\\"instance_id\\\":\\\"$id\\\"\" \"$d/claim\" 2>/dev/null; then echo "             \
	"result=none; exit 0; fi\n"                                                                          \
	"install_keys '' || exit 23\n"                                                                       \
	"if [ \"$cleanup\" = 1 ]; then sh -s >&2; echo \"cleanup_rc=$?\"; fi\n"                              \
	"rm -f \"$d/claim\" || exit 24\n"                                                                    \
	"echo result=released\n"

/* The claim, and where the host is. No stdin. */
#define SSH_SCRIPT_READ                                                                                      \
	SSH_SCRIPT_PRELUDE                                                                                   \
	"where\n"                                                                                            \
	"if [ -f \"$d/claim\" ]; then printf 'claim='; head -n 1 \"$d/claim\"; echo; fi\n"

#endif

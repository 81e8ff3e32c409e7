# Test hosts for the ssh driver: real OpenSSH servers (Debian's sshd), one per
# host, each on its own loopback address (127.X.Y.Z: all of 127/8 is loopback
# on Linux), with its own host key, its own sshd_config and its own throwaway
# login user with its own home. Sourced by the ssh tests and the bench.
#
#   sshd_hosts_require              exits 77 (CTest's skip) with one line when
#                                   not root or sshd/ssh-keygen are missing
#   sshd_hosts_start N [SPEC...]    starts N hosts; SPEC i (may be empty) is a
#                                   comma list for host i: gpu (the fixture
#                                   nvidia-smi on PATH), slow=SECONDS, drop,
#                                   sudo (passwordless sudo for the user, by
#                                   a file in /etc/sudoers.d removed at stop),
#                                   jump (sshd logs at DEBUG3, so that the
#                                   direct-tcpip channels it opens, logins and
#                                   SSH_MSG_IGNOREs it gets are logged)
#   sshd_hosts_stop                 stops every sshd, kills the users'
#                                   processes by pid, deletes the users
#   sshd_hosts_json [I...]          the config's "hosts" array (all hosts, or I...)
#   sshd_hosts_rekey I              host I gets a new host key: its sshd and
#                                   sessions are killed and it starts again on
#                                   the same address and port (a reinstalled
#                                   host, or a man in the middle)
#
# After start: SSHH_DIR (the hosts' temp dir), SSHH_KEY (a client private key
# every host accepts), and per host i (0-based) SSHH_ADDR[i], SSHH_PORT[i],
# SSHH_USER[i], SSHH_HOME[i], SSHH_HOSTKEY[i] (the public host key line),
# SSHH_PID[i].
SSHH_DIR=
SSHH_KEY=
SSHH_ADDR=()
SSHH_PORT=()
SSHH_USER=()
SSHH_HOME=()
SSHH_HOSTKEY=()
SSHH_PID=()
SSHH_SUDOERS=()
SSHD=${SSHD:-/usr/sbin/sshd}
SSHH_FIXTURES=$(cd "$(dirname "${BASH_SOURCE[0]}")/../../fixtures/ssh" && pwd)

sshh_log() { echo "[sshd_hosts] $*" >&2; }

sshd_hosts_require() {
	if [[ $(id -u) != 0 ]]; then
		echo "SKIP: the ssh tests need root (they add throwaway login users for their sshd test hosts)"
		exit 77
	fi
	local t
	for t in "$SSHD" ssh-keygen ssh useradd userdel python3; do
		if ! command -v "$t" >/dev/null; then
			echo "SKIP: the ssh tests need $t (scripts/install-deps.sh installs openssh-server and openssh-client)"
			exit 77
		fi
	done
	sshh_reap_stale
}

# Test hosts of an earlier run that was killed before its cleanup (SIGKILL,
# a CTest timeout): sshd listeners whose sshd_config is gone, and the
# throwaway users whose home is gone, with their processes, by pid.
sshh_reap_stale() {
	local pid cfg user home p
	for pid in $(pgrep -x sshd 2>/dev/null); do
		cfg=$(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | sed -n 's|.* -f \(/[^ ]*/drover-sshd\.[^ ]*/sshd_config\).*|\1|p')
		if [[ -n $cfg && ! -e $cfg ]]; then
			kill "$pid" 2>/dev/null || true
		fi
	done
	while IFS=: read -r user _ _ _ _ home _; do
		[[ $user =~ ^dt[0-9]+h[0-9]+$ && $home == */drover-sshd.*/home && ! -d $home ]] || continue
		for p in $(ps -o pid= -u "$user" 2>/dev/null); do
			kill -9 "$p" 2>/dev/null || true
		done
		userdel "$user" >/dev/null 2>&1 || true
		rm -f "/etc/sudoers.d/drover-test-$user"
	done </etc/passwd
}

# A free TCP port on address $1, from the kernel (bind to port 0). Another
# process could take it before sshd binds; start retries on that.
sshh_free_port() {
	python3 -c 'import socket,sys
s=socket.socket(); s.bind((sys.argv[1],0)); print(s.getsockname()[1]); s.close()' "$1"
}

# Waits up to 10 s for sshd at $1:$2 to accept connections, or for pid $3 to die.
sshh_wait_listening() {
	local i
	for ((i = 0; i < 200; i++)); do
		kill -0 "$3" 2>/dev/null || return 1
		if python3 -c 'import socket,sys
s=socket.create_connection((sys.argv[1],int(sys.argv[2])),0.5); s.close()' "$1" "$2" 2>/dev/null; then
			return 0
		fi
		sleep 0.05
	done
	return 1
}

sshd_hosts_start() {
	local n=$1
	shift
	local specs=("$@")
	SSHH_DIR=$(mktemp -d "${TMPDIR:-/tmp}/drover-sshd.XXXXXX")
	# The users' homes live below: they must be able to reach them.
	chmod 755 "$SSHH_DIR"
	mkdir -p /run/sshd
	chmod 755 /run/sshd
	ssh-keygen -q -t ed25519 -N '' -C drover-test-client -f "$SSHH_DIR/client_key"
	SSHH_KEY=$SSHH_DIR/client_key
	# A second octet from our pid keeps concurrent tests on distinct addresses.
	local net=$((($$ % 200) + 20)) sub=$((($$ / 200) % 250 + 1))
	local i
	for ((i = 0; i < n; i++)); do
		local spec=${specs[i]:-}
		local addr=127.$net.$sub.$((i + 2))
		local user=dt$$h$i
		local dir=$SSHH_DIR/host$i
		local home=$dir/home
		mkdir -p "$dir" "$home/.ssh" "$home/bin"
		ssh-keygen -q -t ed25519 -N '' -C "drover-test-host$i" -f "$dir/host_key"
		userdel "$user" >/dev/null 2>&1 || true
		if ! useradd -M -N -g nogroup -d "$home" -s /bin/sh "$user"; then
			sshh_log "useradd $user failed"
			return 1
		fi
		# A '!' password (useradd's) is a locked account, which sshd refuses
		# without PAM; '*' has no password and is not locked.
		usermod -p '*' "$user"
		cp "$SSHH_KEY.pub" "$home/.ssh/authorized_keys"
		local setenv="PATH=$home/bin:/usr/local/bin:/usr/bin:/bin"
		if [[ ,$spec, == *,gpu,* ]]; then
			cp "$SSHH_FIXTURES/nvidia-smi" "$home/bin/nvidia-smi"
		fi
		if [[ ,$spec, =~ ,slow=([0-9.]+), ]]; then
			cp "$SSHH_FIXTURES/nvidia-smi" "$home/bin/nvidia-smi"
			setenv="$setenv DROVER_FIXTURE_MODE=slow DROVER_FIXTURE_DELAY=${BASH_REMATCH[1]}"
		fi
		if [[ ,$spec, == *,drop,* ]]; then
			cp "$SSHH_FIXTURES/nvidia-smi" "$home/bin/nvidia-smi"
			setenv="$setenv DROVER_FIXTURE_MODE=drop"
		fi
		if [[ ,$spec, == *,sudo,* ]]; then
			if [[ -d /etc/sudoers.d ]]; then
				echo "$user ALL=(ALL) NOPASSWD: ALL" >"/etc/sudoers.d/drover-test-$user"
				chmod 440 "/etc/sudoers.d/drover-test-$user"
				SSHH_SUDOERS+=("/etc/sudoers.d/drover-test-$user")
			fi
		fi
		chown -R "$user":nogroup "$home"
		local loglevel=ERROR
		if [[ ,$spec, == *,jump,* ]]; then
			loglevel=DEBUG3
		fi
		local try port pid
		for try in 1 2 3; do
			port=$(sshh_free_port "$addr")
			cat >"$dir/sshd_config" <<-EOF
				ListenAddress $addr
				Port $port
				HostKey $dir/host_key
				PidFile $dir/sshd.pid
				UsePAM no
				StrictModes no
				PasswordAuthentication no
				KbdInteractiveAuthentication no
				PubkeyAuthentication yes
				AuthorizedKeysFile .ssh/authorized_keys
				AllowUsers $user
				PermitRootLogin no
				MaxStartups 200:30:400
				MaxSessions 50
				PrintMotd no
				LogLevel $loglevel
				SetEnv $setenv
			EOF
			"$SSHD" -D -e -f "$dir/sshd_config" </dev/null >/dev/null 2>>"$dir/sshd.log" &
			pid=$!
			if sshh_wait_listening "$addr" "$port" "$pid"; then
				break
			fi
			kill "$pid" 2>/dev/null || true
			wait "$pid" 2>/dev/null || true
			pid=
		done
		if [[ -z $pid ]]; then
			sshh_log "sshd for host $i ($addr) did not start; its log:"
			cat "$dir/sshd.log" >&2
			return 1
		fi
		SSHH_ADDR[i]=$addr
		SSHH_PORT[i]=$port
		SSHH_USER[i]=$user
		SSHH_HOME[i]=$home
		SSHH_HOSTKEY[i]=$(cut -d' ' -f1-2 "$dir/host_key.pub")
		SSHH_PID[i]=$pid
	done
}

sshd_hosts_stop() {
	local i p
	for i in "${!SSHH_PID[@]}"; do
		kill "${SSHH_PID[i]}" 2>/dev/null || true
	done
	for i in "${!SSHH_PID[@]}"; do
		wait "${SSHH_PID[i]}" 2>/dev/null || true
	done
	for i in "${!SSHH_USER[@]}"; do
		# Whatever still runs as the throwaway user (a session's shell), by pid.
		for p in $(ps -o pid= -u "${SSHH_USER[i]}" 2>/dev/null); do
			kill -9 "$p" 2>/dev/null || true
		done
		userdel "${SSHH_USER[i]}" >/dev/null 2>&1 || userdel -f "${SSHH_USER[i]}" >/dev/null 2>&1 || true
	done
	if ((${#SSHH_SUDOERS[@]})); then
		rm -f "${SSHH_SUDOERS[@]}"
	fi
	SSHH_SUDOERS=()
	SSHH_PID=()
	SSHH_USER=()
	if [[ -n $SSHH_DIR && -z ${KEEP_TMP:-} ]]; then
		rm -rf "$SSHH_DIR"
	fi
}

sshd_hosts_rekey() {
	local i=$1 dir=$SSHH_DIR/host$1 p pid try
	kill "${SSHH_PID[i]}" 2>/dev/null || true
	wait "${SSHH_PID[i]}" 2>/dev/null || true
	for p in $(ps -o pid= -u "${SSHH_USER[i]}" 2>/dev/null); do
		kill -9 "$p" 2>/dev/null || true
	done
	rm -f "$dir/host_key" "$dir/host_key.pub"
	ssh-keygen -q -t ed25519 -N '' -C "drover-test-host$i-rekeyed" -f "$dir/host_key"
	for try in 1 2 3 4 5; do
		"$SSHD" -D -e -f "$dir/sshd_config" </dev/null >/dev/null 2>>"$dir/sshd.log" &
		pid=$!
		if sshh_wait_listening "${SSHH_ADDR[i]}" "${SSHH_PORT[i]}" "$pid"; then
			SSHH_PID[i]=$pid
			return 0
		fi
		wait "$pid" 2>/dev/null || true
		sleep 0.2
	done
	sshh_log "sshd for host $i did not start again on ${SSHH_ADDR[i]}:${SSHH_PORT[i]}"
	return 1
}

sshd_hosts_json() {
	local idx=("$@") i sep=
	if ((${#idx[@]} == 0)); then
		idx=("${!SSHH_ADDR[@]}")
	fi
	printf '['
	for i in "${idx[@]}"; do
		printf '%s{"address": "%s", "port": %s, "user": "%s", "host_key": "%s"}' "$sep" \
			"${SSHH_ADDR[i]}" "${SSHH_PORT[i]}" "${SSHH_USER[i]}" "${SSHH_HOSTKEY[i]}"
		sep=', '
	done
	printf ']'
}

# bench/lib.sh: shell helpers the benchmark scripts share (source it; it defines functions only).

# log prints a time-stamped line on stderr.
log() { printf '%s  %s\n' "$(date -u +%H:%M:%S)" "$*" >&2; }

# free_port prints a loopback port nobody listens on (below 32000, under the ephemeral range).
free_port() {
	local p
	while :; do
		p=$((20000 + RANDOM % 12000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
}

# wait_port waits until 127.0.0.1:$1 accepts connections (at most $2 seconds).
wait_port() {
	local i
	for ((i = 0; i < $2 * 10; i++)); do
		if (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; then
			return 0
		fi
		sleep 0.1
	done
	return 1
}

# cpu_seconds prints the user+system CPU seconds process $1 has used.
cpu_seconds() {
	awk -v hz="$(getconf CLK_TCK)" '{ printf "%.2f", ($14 + $15) / hz }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# sluice_binary DIR REV prints the path of sluice built from git revision REV ("tree": the working
# tree) into DIR, building it on first use.
sluice_binary() {
	local dir=$1 rev=$2 out="$1/sluice-$2"
	if [ ! -x "$out" ]; then
		if [ "$rev" = tree ]; then
			go build -o "$out" ./cmd/sluice
		else
			mkdir -p "$dir/src-$rev"
			git archive "$rev" | tar -x -C "$dir/src-$rev"
			(cd "$dir/src-$rev" && go build -o "$out" ./cmd/sluice)
			rm -rf "$dir/src-$rev"
		fi
	fi
	echo "$out"
}

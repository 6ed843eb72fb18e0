package broker

import (
	"os"
	"syscall"
)

// fileUsage reports the open files limit and how many descriptors are open.
func fileUsage() (limit, open int, ok bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == ^uint64(0) {
		return 0, 0, false
	}
	fds, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		return 0, 0, false
	}
	return int(rl.Cur), len(fds), true
}

//go:build unix

package fdcache

import "syscall"

// openFilesLimit is RLIMIT_NOFILE's soft limit; false when unknown or unlimited.
func openFilesLimit() (int, bool) {
	var rl syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &rl); err != nil || rl.Cur == ^uint64(0) {
		return 0, false
	}
	return int(rl.Cur), true
}

//go:build linux

package diskio

import (
	"syscall"
	_ "unsafe" // go:linkname

	"golang.org/x/sys/unix"
)

// fdatasync is unix.Fdatasync announced to Go's scheduler as a blocking call: the P is handed to
// another thread at once (entersyscallblock, as the runtime does for its own blocking waits)
// instead of being taken back by sysmon once the call has lasted 20 µs. Each such retake set
// sysmon polling every 20 µs again for the next 50 rounds; with an fdatasync of ~1 ms per shard per
// save, sysmon's sleeps were 14% of the three brokers' cycles at rf=3. Measured (rf=3, 1 KiB, three
// rounds, results/2026-12-08-2core-vm-gcpace-hold-s11/syncblock/): 0.81x context switches per GB,
// 0.95x CPU per GB, 1.07x records/s; sysmon's nanosleeps 0.74x on one broker.
//
// The two runtime functions are linknamed, as gVisor does (they are kept for it: go.dev/issue/67401);
// between them the goroutine holds no P, so this function may call only nosplit code (as
// syscall.Syscall, which it mirrors).
//
//go:nosplit
//go:norace
func fdatasync(fd uintptr) error {
	entersyscallblock()
	_, _, e := syscall.RawSyscall6(unix.SYS_FDATASYNC, fd, 0, 0, 0, 0, 0)
	exitsyscall()
	if e != 0 {
		return e
	}
	return nil
}

//go:linkname entersyscallblock runtime.entersyscallblock
func entersyscallblock()

//go:linkname exitsyscall runtime.exitsyscall
func exitsyscall()

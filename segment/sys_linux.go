//go:build linux

package segment

import (
	"math/bits"
	"os"
	"runtime"
	"unsafe"

	"golang.org/x/sys/unix"
)

// writeAt2 writes a then b at off in one pwritev. The call is raw: a write into the page cache
// does not wait for the disk but copies for long (a batch of a megabyte: hundreds of µs), and a Go
// system call that long has its P retaken by sysmon and another thread started on the CPU this
// one is still using (the save's fdatasync, which does wait, goes through diskio's ring).
func writeAt2(f *os.File, a, b []byte, off int64) error {
	want := len(a) + len(b)
	var iov [2]unix.Iovec
	iovs := iov[:0]
	for _, p := range [][]byte{a, b} {
		if len(p) > 0 {
			v := unix.Iovec{Base: &p[0]}
			v.SetLen(len(p))
			iovs = append(iovs, v)
		}
	}
	if len(iovs) == 0 {
		return nil
	}
	fd := f.Fd()
	for {
		r, _, errno := unix.RawSyscall6(unix.SYS_PWRITEV, fd, uintptr(unsafe.Pointer(&iovs[0])), uintptr(len(iovs)),
			uintptr(off), uintptr(uint64(off)>>(bits.UintSize-1)>>1), 0)
		runtime.KeepAlive(a)
		runtime.KeepAlive(b)
		if errno == unix.EINTR {
			continue
		}
		if errno != 0 {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: errno}
		}
		n := int(r)
		if n == want {
			return nil
		}
		// A short write (rare on regular files): finish with plain writes.
		rest := append(append(make([]byte, 0, want), a...), b...)[n:]
		_, err := f.WriteAt(rest, off+int64(n))
		return err
	}
}

//go:build linux

package segment

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// writeAt2 writes a then b at off in one pwritev.
func writeAt2(f *os.File, a, b []byte, off int64) error {
	want := len(a) + len(b)
	iov := [][]byte{a, b}
	for {
		n, err := unix.Pwritev(int(f.Fd()), iov, off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "pwritev", Path: f.Name(), Err: err}
		}
		if n == want {
			return nil
		}
		// A short write (rare on regular files): finish with plain writes.
		rest := append(append(make([]byte, 0, want), a...), b...)[n:]
		_, err = f.WriteAt(rest, off+int64(n))
		return err
	}
}

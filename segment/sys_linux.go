//go:build linux

package segment

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// preallocate reserves size bytes for f so appends below size change no file metadata.
// File systems without fallocate fall back to plain growth.
func preallocate(f *os.File, size int64) error {
	for {
		err := unix.Fallocate(int(f.Fd()), 0, 0, size)
		switch {
		case err == nil:
			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case errors.Is(err, unix.EOPNOTSUPP), errors.Is(err, unix.ENOSYS):
			return nil
		default:
			return &os.PathError{Op: "fallocate", Path: f.Name(), Err: err}
		}
	}
}

// datasync flushes f's data and the metadata needed to read it back.
func datasync(f *os.File) error {
	for {
		err := unix.Fdatasync(int(f.Fd()))
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
		}
		return nil
	}
}

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

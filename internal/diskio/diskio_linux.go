//go:build linux

package diskio

import (
	"errors"
	"os"

	"golang.org/x/sys/unix"
)

// Preallocate reserves size bytes for f (the file's size becomes at least size, reading zeros), so
// writes below size change no file size. File systems without fallocate fall back to plain growth.
func Preallocate(f *os.File, size int64) error {
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

// Datasync flushes f's data and the metadata needed to read it back. The descriptor is held
// (SyscallConn().Control) for the call: a concurrent Close (raftlog syncs a metadata file without its
// shard's lock while a rotation may replace it) is deferred until the fdatasync returns, so the call
// never reaches a closed or reused descriptor number.
func Datasync(f *os.File) error {
	rc, err := f.SyscallConn()
	if err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	var serr error
	if err := rc.Control(func(fd uintptr) {
		for {
			serr = unix.Fdatasync(int(fd))
			if !errors.Is(serr, unix.EINTR) {
				return
			}
		}
	}); err != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: err}
	}
	if serr != nil {
		return &os.PathError{Op: "fdatasync", Path: f.Name(), Err: serr}
	}
	return nil
}

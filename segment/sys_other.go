//go:build !linux

package segment

import "os"

// preallocate is a no-op where fallocate is missing: files grow as they are written.
func preallocate(*os.File, int64) error { return nil }

func datasync(f *os.File) error { return f.Sync() }

// writeAt2 writes a then b at off.
func writeAt2(f *os.File, a, b []byte, off int64) error {
	if _, err := f.WriteAt(a, off); err != nil {
		return err
	}
	_, err := f.WriteAt(b, off+int64(len(a)))
	return err
}

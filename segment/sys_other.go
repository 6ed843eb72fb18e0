//go:build !linux

package segment

import "os"

// writeAt2 writes a then b at off.
func writeAt2(f *os.File, a, b []byte, off int64) error {
	if _, err := f.WriteAt(a, off); err != nil {
		return err
	}
	_, err := f.WriteAt(b, off+int64(len(a)))
	return err
}

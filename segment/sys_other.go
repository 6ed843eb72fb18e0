//go:build !linux

package segment

import "os"

// preallocate is a no-op where fallocate is missing: files grow as they are written.
func preallocate(*os.File, int64) error { return nil }

func datasync(f *os.File) error { return f.Sync() }

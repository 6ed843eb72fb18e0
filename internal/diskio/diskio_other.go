//go:build !linux

package diskio

import "os"

// Preallocate is a no-op where fallocate is missing: files grow as they are written.
func Preallocate(*os.File, int64) error { return nil }

// Datasync flushes f's data (and metadata: the portable call has no data-only form).
func Datasync(f *os.File) error { return f.Sync() }

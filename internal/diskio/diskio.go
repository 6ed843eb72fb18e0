// Package diskio holds the few file system calls the logs share: preallocation, fdatasync (one file,
// or several side by side: DatasyncAll) and a directory fsync, each retried on EINTR
// and falling back where the platform lacks it.
package diskio

import "os"

// SyncDir fsyncs a directory, making the files created, renamed or removed in it durable.
func SyncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	return d.Sync()
}

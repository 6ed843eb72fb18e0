//go:build unix

package broker

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// statDisk reports the bytes available to unprivileged writers and the size of dir's file system.
func statDisk(dir string) (free, total int64, err error) {
	var st unix.Statfs_t
	for {
		err = unix.Statfs(dir, &st)
		if err != unix.EINTR {
			break
		}
	}
	if err != nil {
		return 0, 0, fmt.Errorf("statfs %s: %w", dir, err)
	}
	return int64(st.Bavail) * int64(st.Bsize), int64(st.Blocks) * int64(st.Bsize), nil
}

//go:build !unix

package broker

// statDisk cannot read free space here: the disk always looks empty (no checks in effect).
func statDisk(string) (free, total int64, err error) { return 1 << 62, 1 << 62, nil }

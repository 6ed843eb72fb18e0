package segment

import (
	"errors"

	"golang.org/x/sys/unix"
)

// sendRanges sends r's ranges to fd with sendfile(2), as the broker's zero-copy path does.
func sendRanges(fd int, r *ReadResult) error {
	for _, rg := range r.Ranges {
		pos, left := rg.Pos, rg.Len
		for left > 0 {
			n, err := unix.Sendfile(fd, int(rg.File.Fd()), &pos, int(left))
			if err != nil && !errors.Is(err, unix.EINTR) {
				return err
			}
			if n == 0 && err == nil {
				return errors.New("sendfile: no progress")
			}
			left -= int64(n)
		}
	}
	return nil
}

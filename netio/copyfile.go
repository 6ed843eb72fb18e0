package netio

import (
	"io"
	"os"
)

// copyFileRange sends f[off, off+n) through w by reading it into a pooled buffer: the portable path,
// one copy. ReadAt is pread: it never moves the file's shared offset.
func copyFileRange(w io.Writer, f *os.File, off, n int64) (int64, error) {
	const chunk = 256 << 10
	buf := getFrame(int(min(n, chunk)))
	defer putFrame(buf)
	var sent int64
	for sent < n {
		want := min(n-sent, int64(len(*buf)))
		k, err := f.ReadAt((*buf)[:want], off+sent)
		if k > 0 {
			m, werr := w.Write((*buf)[:k])
			sent += int64(m)
			if werr != nil {
				return sent, werr
			}
		}
		if int64(k) < want {
			if err == nil || err == io.EOF {
				err = io.ErrUnexpectedEOF
			}
			return sent, err
		}
	}
	return sent, nil
}

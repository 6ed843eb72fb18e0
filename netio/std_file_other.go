//go:build !linux

package netio

import (
	"net"
	"os"
)

// stdFileSender copies file ranges once through a pooled buffer where sendfile is not used.
type stdFileSender struct{}

func (stdFileSender) send(tc *net.TCPConn, f *os.File, off, n int64) (int64, error) {
	return copyFileRange(tc, f, off, n)
}

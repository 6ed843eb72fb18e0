package netio

import (
	"io"
	"net"
	"os"
	"syscall"

	"golang.org/x/sys/unix"
)

// stdFileSender sends file ranges with sendfile(2) through the runtime's poller: on EAGAIN the
// goroutine parks until the socket is writable. The explicit offset leaves the file's own offset alone.
type stdFileSender struct {
	rc    syscall.RawConn
	step  func(fd uintptr) bool // bound once, so a send allocates nothing
	inFd  int
	off   int64
	end   int64
	err   error
	bound bool
}

func (s *stdFileSender) send(tc *net.TCPConn, f *os.File, off, n int64) (int64, error) {
	if !s.bound {
		rc, err := tc.SyscallConn()
		if err != nil {
			return 0, err
		}
		s.rc, s.step, s.bound = rc, s.sendStep, true
	}
	s.inFd, s.off, s.end, s.err = int(f.Fd()), off, off+n, nil
	err := s.rc.Write(s.step)
	sent := s.off - off
	if err == nil {
		err = s.err
	}
	return sent, err
}

// sendStep runs with the socket's descriptor; false asks the poller to wait for writability.
func (s *stdFileSender) sendStep(fd uintptr) bool {
	for s.off < s.end {
		m, err := unix.Sendfile(int(fd), s.inFd, &s.off, int(min(s.end-s.off, 1<<30)))
		switch {
		case err == unix.EAGAIN:
			return false
		case err == unix.EINTR:
			continue
		case err != nil:
			s.err = err
			return true
		case m == 0:
			s.err = io.ErrUnexpectedEOF // the file is shorter than the range
			return true
		}
	}
	return true
}

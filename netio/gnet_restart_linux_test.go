package netio

import (
	"bufio"
	"net"
	"os"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Out of descriptors, gnet stops its whole engine; netio starts it again on the same port, and the
// server serves once descriptors are free. The test process is client and server: sockets are made,
// the open files limit lowered to the highest descriptor and the free ones below it filled, then the
// sockets connect, so gnet's accept fails with EMFILE every time; then all is released and raised back.
func TestGnetRestartsAfterEMFILE(t *testing.T) {
	h := newTestHandler(t)
	go func() { // ConnClosed runs on the loops: keep h.closed from filling up
		for range h.closed {
		}
	}()
	s, logs := startServer(t, BackendGnet, h, Options{})
	addr := s.Addr().String()
	c := dial(t, s)
	c.send(frame(1, opEcho, []byte("before")))
	c.expect(1, []byte("before"))

	// Sockets made first, connected once no descriptor is left: the kernel completes the handshakes,
	// and gnet's accept of them fails with EMFILE.
	ta := s.Addr().(*net.TCPAddr)
	sa := &syscall.SockaddrInet4{Port: ta.Port}
	copy(sa.Addr[:], ta.IP.To4())
	var socks []int
	for range 5 {
		fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM|syscall.SOCK_CLOEXEC, 0)
		if err != nil {
			t.Fatal(err)
		}
		socks = append(socks, fd)
	}
	defer func() {
		for _, fd := range socks {
			_ = syscall.Close(fd)
		}
	}()
	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	// No descriptor left: the limit at the highest one open.
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	highest := 0
	for _, e := range ents {
		if n, err := strconv.Atoi(e.Name()); err == nil && n > highest {
			highest = n
		}
	}
	low := saved
	low.Cur = uint64(highest + 1)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved) }() // also when the test fails early
	// Fill the free descriptors below the limit (the kernel hands out the lowest free one).
	var fillers []int
	defer func() {
		for _, fd := range fillers {
			_ = syscall.Close(fd)
		}
	}()
	for {
		fd, err := syscall.Open("/dev/null", syscall.O_RDONLY|syscall.O_CLOEXEC, 0)
		if err != nil {
			break
		}
		fillers = append(fillers, fd)
	}
	for i, fd := range socks {
		// Once gnet stopped (on the first one), its listener is gone: later ones are refused.
		if err := syscall.Connect(fd, sa); err != nil && i == 0 {
			t.Fatalf("connect: %v", err)
		}
	}
	// gnet's accept fails with EMFILE.
	for deadline := time.Now().Add(5 * time.Second); !strings.Contains(logs.String(), "starting it again") && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	for _, fd := range append(socks, fillers...) {
		_ = syscall.Close(fd)
	}
	socks, fillers = nil, nil
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		nc, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			cl := &client{t: t, c: nc.(*net.TCPConn), br: bufio.NewReader(nc)}
			_ = nc.SetDeadline(time.Now().Add(5 * time.Second))
			cl.send(frame(2, opEcho, []byte("after")))
			cl.expect(2, []byte("after"))
			nc.Close()
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("not served 10 s after descriptors were free: %v\n%s", err, logs.String())
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !strings.Contains(logs.String(), "starting it again") {
		t.Fatalf("gnet's engine did not stop (accepts did not hit EMFILE): the test tested nothing\n%s", logs.String())
	}
}

package netio

import (
	"bufio"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// Out of descriptors, gnet stops its whole engine; netio starts it again on the same port, and the
// server serves once descriptors are free. (The test process is client and server: the limit is
// lowered for both, then raised back.)
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

	var saved syscall.Rlimit
	if err := syscall.Getrlimit(syscall.RLIMIT_NOFILE, &saved); err != nil {
		t.Fatal(err)
	}
	ents, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Skip(err)
	}
	low := saved
	low.Cur = uint64(len(ents) + 20)
	if err := syscall.Setrlimit(syscall.RLIMIT_NOFILE, &low); err != nil {
		t.Skip(err)
	}
	defer func() { _ = syscall.Setrlimit(syscall.RLIMIT_NOFILE, &saved) }() // also when the test fails early
	var held []net.Conn
	for range 40 { // the clients' sockets and the accepted ones share the 20 descriptors left
		hc, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			break
		}
		held = append(held, hc)
	}
	time.Sleep(200 * time.Millisecond) // gnet accepts what it can, then fails with EMFILE
	for _, hc := range held {
		hc.Close()
	}
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

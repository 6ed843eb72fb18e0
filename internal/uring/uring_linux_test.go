package uring

import (
	"testing"

	"golang.org/x/sys/unix"
)

func newRing(t *testing.T) *Ring {
	t.Helper()
	r, err := New(8, 0)
	if err != nil {
		t.Skipf("io_uring unavailable: %v", err)
	}
	t.Cleanup(r.Close)
	return r
}

// wait submits and returns the next completion.
func wait(t *testing.T, r *Ring) CQE {
	t.Helper()
	for {
		if c := r.PeekCQE(); c != nil {
			v := *c
			r.Seen()
			return v
		}
		if _, err := r.Submit(1); err != nil {
			t.Fatal(err)
		}
	}
}

func socketPair(t *testing.T) (int, int) {
	t.Helper()
	fds, err := unix.Socketpair(unix.AF_UNIX, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { unix.Close(fds[0]); unix.Close(fds[1]) })
	return fds[0], fds[1]
}

func TestNop(t *testing.T) {
	r := newRing(t)
	for i := uint64(1); i <= 20; i++ { // more than the ring holds: entries are reused
		r.GetSQE().PrepNop(i)
		if c := wait(t, r); c.UserData != i || c.Res != 0 {
			t.Fatalf("nop %d: %+v", i, c)
		}
	}
	for i := 0; i < 8; i++ {
		if r.GetSQE() == nil {
			t.Fatalf("queue full after %d entries", i)
		}
	}
	if r.GetSQE() != nil {
		t.Fatal("a 9th entry in an 8-entry queue")
	}
}

// A RECV on a non-blocking socket with nothing to read waits (the kernel polls) instead of failing
// with EAGAIN; a WRITEV then feeds it.
func TestRecvWaitsAndWritev(t *testing.T) {
	r := newRing(t)
	a, b := socketPair(t)
	buf := make([]byte, 64)
	r.GetSQE().PrepRecv(a, buf, 1)
	if _, err := r.Submit(0); err != nil {
		t.Fatal(err)
	}
	if c := r.PeekCQE(); c != nil {
		t.Fatalf("recv completed early: %+v", *c)
	}
	p1, p2 := []byte("hello, "), []byte("ring")
	vecs := []unix.Iovec{{Base: &p1[0]}, {Base: &p2[0]}}
	vecs[0].SetLen(len(p1))
	vecs[1].SetLen(len(p2))
	r.GetSQE().PrepWritev(b, vecs, 2)
	got := map[uint64]int32{}
	for len(got) < 2 {
		c := wait(t, r)
		got[c.UserData] = c.Res
	}
	if got[2] != 11 || got[1] != 11 || string(buf[:11]) != "hello, ring" {
		t.Fatalf("results %v, read %q", got, buf[:max(got[1], 0)])
	}
}

// shutdown(2) ends a waiting RECV (with 0) and a POLL_ADD; ASYNC_CANCEL ends a waiting ACCEPT.
func TestShutdownAndCancel(t *testing.T) {
	r := newRing(t)
	a, _ := socketPair(t)
	buf := make([]byte, 64)
	r.GetSQE().PrepRecv(a, buf, 1)
	if _, err := r.Submit(0); err != nil {
		t.Fatal(err)
	}
	if err := unix.Shutdown(a, unix.SHUT_RDWR); err != nil {
		t.Fatal(err)
	}
	if c := wait(t, r); c.UserData != 1 || c.Res != 0 {
		t.Fatalf("recv after shutdown: %+v", c)
	}

	ln, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(ln)
	if err := unix.Bind(ln, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(ln, 16); err != nil {
		t.Fatal(err)
	}
	var sa unix.RawSockaddrAny
	salen := uint32(unix.SizeofSockaddrAny)
	r.GetSQE().PrepAccept(ln, &sa, &salen, unix.SOCK_NONBLOCK|unix.SOCK_CLOEXEC, 3)
	if _, err := r.Submit(0); err != nil {
		t.Fatal(err)
	}
	if c := r.PeekCQE(); c != nil {
		t.Fatalf("accept completed early: %+v", *c)
	}
	// A connection arrives: accept completes with its descriptor.
	lsa, _ := unix.Getsockname(ln)
	cl, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(cl)
	if err := unix.Connect(cl, lsa); err != nil {
		t.Fatal(err)
	}
	c := wait(t, r)
	if c.UserData != 3 || c.Res < 0 {
		t.Fatalf("accept: %+v", c)
	}
	unix.Close(int(c.Res))
	if sa.Addr.Family != unix.AF_INET {
		t.Fatalf("peer family %d", sa.Addr.Family)
	}

	r.GetSQE().PrepAccept(ln, &sa, &salen, 0, 4)
	r.GetSQE().PrepCancel(4, 5)
	got := map[uint64]int32{}
	for len(got) < 2 {
		c := wait(t, r)
		got[c.UserData] = c.Res
	}
	if got[4] != -int32(unix.ECANCELED) || got[5] != 0 {
		t.Fatalf("cancel: %v", got)
	}

	var ts = unix.NsecToTimespec(1e6)
	r.GetSQE().PrepTimeout(&ts, 6)
	if c := wait(t, r); c.UserData != 6 || c.Res != -int32(unix.ETIME) {
		t.Fatalf("timeout: %+v", c)
	}
}

func TestSupports(t *testing.T) {
	r := newRing(t)
	if err := r.Supports(OpNop, OpAccept, OpRecv, OpSendmsg, OpPollAdd, OpRead, OpAsyncCancel, OpTimeout); err != nil {
		t.Fatal(err)
	}
	if err := r.Supports(250); err == nil {
		t.Fatal("opcode 250 reported supported")
	}
}

// A provided buffer ring: receives take buffers from it, a returned buffer is used again, and an
// empty ring fails the receive with ENOBUFS.
func TestBufRing(t *testing.T) {
	r := newRing(t)
	br, err := r.RegisterBufRing(2, 64, 7)
	if err != nil {
		t.Skipf("no provided buffer rings: %v", err)
	}
	defer br.Close()
	a, b := socketPair(t)
	seen := map[uint16]bool{}
	for i := range 3 {
		msg := []byte{'m', byte('0' + i)}
		if _, err := unix.Write(b, msg); err != nil {
			t.Fatal(err)
		}
		r.GetSQE().PrepRecvSelect(a, br.Group(), 1)
		c := wait(t, r)
		if c.Res != 2 || c.Flags&CQEBuffer == 0 {
			t.Fatalf("recv %d: %+v", i, c)
		}
		id := uint16(c.Flags >> 16)
		if got := br.Buf(id)[:c.Res]; string(got) != string(msg) {
			t.Fatalf("recv %d: buffer %d holds %q", i, id, got)
		}
		seen[id] = true
		if i == 0 {
			continue // keep buffer 0 out: the next receive must take the other one
		}
		br.Return(id)
		br.Publish()
	}
	if len(seen) != 2 {
		t.Fatalf("buffers used: %v", seen)
	}
	// Take the last free buffer and keep it: the ring is empty, the next receive fails.
	for _, want := range []int32{1, -int32(unix.ENOBUFS)} {
		if _, err := unix.Write(b, []byte("x")); err != nil {
			t.Fatal(err)
		}
		r.GetSQE().PrepRecvSelect(a, br.Group(), 2)
		if c := wait(t, r); c.Res != want {
			t.Fatalf("recv: %+v, want res %d", c, want)
		}
	}
}

// A multishot accept completes once per connection and stays armed.
func TestAcceptMultishot(t *testing.T) {
	r := newRing(t)
	lfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		t.Fatal(err)
	}
	defer unix.Close(lfd)
	if err := unix.Bind(lfd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	if err := unix.Listen(lfd, 8); err != nil {
		t.Fatal(err)
	}
	sa, _ := unix.Getsockname(lfd)
	r.GetSQE().PrepAcceptMultishot(lfd, unix.SOCK_CLOEXEC, 9)
	for i := range 3 {
		cfd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM, 0)
		if err != nil {
			t.Fatal(err)
		}
		defer unix.Close(cfd)
		if err := unix.Connect(cfd, sa); err != nil {
			t.Fatal(err)
		}
		c := wait(t, r)
		if c.UserData != 9 || c.Res < 0 || c.Flags&CQEMore == 0 {
			t.Fatalf("accept %d: %+v", i, c)
		}
		unix.Close(int(c.Res))
	}
}

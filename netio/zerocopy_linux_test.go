package netio

import (
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"

	"github.com/sluicebroker/sluice/internal/uring"
	"golang.org/x/sys/unix"
)

// BenchmarkFileToSocket compares ways of sending a file range (segment data, in the page cache) to a
// TCP socket on loopback, side by side: sendfile(2), which the backends use; io_uring SPLICE
// file→pipe→socket (two linked ops); io_uring SEND_ZC from an mmap of the file and from a pread
// buffer; and pread+write (one copy) as the baseline. A goroutine drains the other end. bench/micro.sh
// runs it in interleaved rounds and reports medians.
func BenchmarkFileToSocket(b *testing.B) {
	const fileLen = 32 << 20
	path := filepath.Join(b.TempDir(), "segment")
	data := make([]byte, fileLen)
	for i := range data {
		data[i] = byte(i * 31)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		b.Fatal(err)
	}
	f, err := os.Open(path)
	if err != nil {
		b.Fatal(err)
	}
	defer f.Close()
	mm, err := unix.Mmap(int(f.Fd()), 0, fileLen, unix.PROT_READ, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		b.Fatal(err)
	}
	defer unix.Munmap(mm)

	ways := []struct {
		name string
		send func(r *zcRig, b *testing.B, off int64, n int)
	}{
		{"sendfile", (*zcRig).sendfile},
		{"uring-splice", (*zcRig).splice},
		{"uring-sendzc-mmap", func(r *zcRig, b *testing.B, off int64, n int) { r.sendZC(b, mm[off:off+int64(n)]) }},
		{"uring-sendzc-pread", (*zcRig).sendZCPread},
		{"pread-write", (*zcRig).preadWrite},
	}
	for _, size := range []int{64 << 10, 1 << 20} {
		for _, w := range ways {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, w.name), func(b *testing.B) {
				r := newZCRig(b, f, size)
				b.SetBytes(int64(size))
				b.ReportAllocs()
				b.ResetTimer()
				cpu0 := processCPU(b)
				off := int64(0)
				for range b.N {
					w.send(r, b, off, size)
					if off += int64(size); off+int64(size) > fileLen {
						off = 0
					}
				}
				b.StopTimer()
				// The process's CPU (this goroutine, the reader draining the socket, io_uring's kernel
				// workers), which on a loaded 2-core machine says more than the wall time.
				b.ReportMetric(float64(processCPU(b)-cpu0)/float64(b.N), "cpu-ns/op")
				r.close(b)
			})
		}
	}
}

type zcRig struct {
	file   *os.File
	fd     int // blocking socket we send on
	ring   *uring.Ring
	pr, pw int
	buf    []byte
	done   chan int64
}

func newZCRig(b *testing.B, f *os.File, size int) *zcRig {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer l.Close()
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_STREAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		b.Fatal(err)
	}
	if err := unix.Connect(fd, &unix.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}, Port: l.Addr().(*net.TCPAddr).Port}); err != nil {
		b.Fatal(err)
	}
	c, err := l.Accept()
	if err != nil {
		b.Fatal(err)
	}
	r := &zcRig{file: f, fd: fd, buf: make([]byte, size), done: make(chan int64, 1)}
	sink := make([]byte, 1<<20)
	go func() {
		n, _ := io.CopyBuffer(io.Discard, c, sink)
		c.Close()
		r.done <- n
	}()
	if r.ring, err = uring.New(64, 0); err != nil {
		b.Skipf("io_uring unavailable: %v", err)
	}
	p := make([]int, 2)
	if err := unix.Pipe2(p, unix.O_CLOEXEC); err != nil {
		b.Fatal(err)
	}
	r.pr, r.pw = p[0], p[1]
	if _, err := unix.FcntlInt(uintptr(r.pw), unix.F_SETPIPE_SZ, 1<<20); err != nil {
		b.Fatal(err)
	}
	return r
}

func (r *zcRig) close(b *testing.B) {
	_ = unix.Close(r.fd)
	<-r.done
	r.ring.Close()
	_ = unix.Close(r.pr)
	_ = unix.Close(r.pw)
}

func (r *zcRig) wait(b *testing.B) uring.CQE {
	for {
		if c := r.ring.PeekCQE(); c != nil {
			v := *c
			r.ring.Seen()
			return v
		}
		if _, err := r.ring.Submit(1); err != nil {
			b.Fatal(err)
		}
	}
}

func (r *zcRig) sendfile(b *testing.B, off int64, n int) {
	for n > 0 {
		m, err := unix.Sendfile(r.fd, int(r.file.Fd()), &off, n)
		if err != nil && err != unix.EINTR {
			b.Fatal(err)
		}
		n -= m
	}
}

// splice moves the range through the pipe: SPLICE file→pipe linked to SPLICE pipe→socket, a chunk of
// at most the pipe's size at a time; what the second op left in the pipe is flushed before the next.
func (r *zcRig) splice(b *testing.B, off int64, n int) {
	for n > 0 {
		chunk := min(n, 1<<20)
		e := r.ring.GetSQE()
		e.PrepSplice(int(r.file.Fd()), off, r.pw, -1, uint32(chunk), 0, 1)
		e.Flags |= uring.SQELink // the second starts when the first completed
		r.ring.GetSQE().PrepSplice(r.pr, -1, r.fd, -1, uint32(chunk), 0, 2)
		in, out := r.wait(b), r.wait(b)
		if in.UserData == 2 {
			in, out = out, in
		}
		if in.Res <= 0 {
			b.Fatalf("splice file→pipe: %d", in.Res)
		}
		piped, sent := int(in.Res), int(max(out.Res, 0))
		for sent < piped { // a short link: drain the pipe
			r.ring.GetSQE().PrepSplice(r.pr, -1, r.fd, -1, uint32(piped-sent), 0, 3)
			c := r.wait(b)
			if c.Res <= 0 {
				b.Fatalf("splice pipe→socket: %d", c.Res)
			}
			sent += int(c.Res)
		}
		off += int64(piped)
		n -= piped
	}
}

// sendZC sends p with SEND_ZC and waits for both completions (the result, then the notification that
// p may be reused).
func (r *zcRig) sendZC(b *testing.B, p []byte) {
	for len(p) > 0 {
		r.ring.GetSQE().PrepSendZC(r.fd, p, 0, 4)
		res := r.wait(b)
		if res.Res <= 0 {
			b.Fatalf("send_zc: %d", res.Res)
		}
		if res.Flags&uring.CQEMore != 0 {
			if n := r.wait(b); n.Flags&uring.CQENotif == 0 {
				b.Fatalf("send_zc: want the notification, got %+v", n)
			}
		}
		p = p[res.Res:]
	}
}

func (r *zcRig) sendZCPread(b *testing.B, off int64, n int) {
	if _, err := r.file.ReadAt(r.buf[:n], off); err != nil {
		b.Fatal(err)
	}
	r.sendZC(b, r.buf[:n])
}

func (r *zcRig) preadWrite(b *testing.B, off int64, n int) {
	if _, err := r.file.ReadAt(r.buf[:n], off); err != nil {
		b.Fatal(err)
	}
	for p := r.buf[:n]; len(p) > 0; {
		m, err := unix.Write(r.fd, p)
		if err != nil && err != unix.EINTR {
			b.Fatal(err)
		}
		p = p[max(m, 0):]
	}
}

// processCPU returns the user+system CPU time of the process (its threads, io_uring workers included).
func processCPU(b *testing.B) int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		b.Fatal(err)
	}
	return ru.Utime.Nano() + ru.Stime.Nano()
}

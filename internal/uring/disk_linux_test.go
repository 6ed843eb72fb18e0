package uring

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
)

// BenchmarkAppendDatasync compares the segment's durable append, a write at the end of a preallocated
// file followed by fdatasync, made with two system calls and with io_uring (WRITE linked to
// FSYNC(DATASYNC), one io_uring_enter for both). The file lives in SLUICE_BENCH_DIR (default the
// temporary directory: it must be a real disk for fdatasync to mean anything, not tmpfs).
// bench/micro.sh runs it in interleaved rounds and reports medians.
func BenchmarkAppendDatasync(b *testing.B) {
	dir := os.Getenv("SLUICE_BENCH_DIR")
	if dir == "" {
		dir = b.TempDir()
	}
	const fileLen = 256 << 20
	for _, size := range []int{4 << 10, 64 << 10, 1 << 20} {
		for _, way := range []string{"syscalls", "uring-linked"} {
			b.Run(fmt.Sprintf("%dKiB/%s", size>>10, way), func(b *testing.B) {
				path := filepath.Join(dir, fmt.Sprintf("append-%d", os.Getpid()))
				f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR|os.O_TRUNC, 0o644)
				if err != nil {
					b.Fatal(err)
				}
				defer os.Remove(path)
				defer f.Close()
				fd := int(f.Fd())
				if err := unix.Fallocate(fd, 0, 0, fileLen); err != nil {
					b.Fatal(err)
				}
				if err := unix.Fsync(fd); err != nil {
					b.Fatal(err)
				}
				var r *Ring
				if way != "syscalls" {
					if r, err = New(8, 0); err != nil {
						b.Skipf("io_uring unavailable: %v", err)
					}
					defer r.Close()
				}
				buf := make([]byte, size)
				for i := range buf {
					buf[i] = byte(i)
				}
				b.SetBytes(int64(size))
				b.ResetTimer()
				var ru0, ru1 unix.Rusage
				_ = unix.Getrusage(unix.RUSAGE_SELF, &ru0)
				off := int64(0)
				for range b.N {
					if r == nil {
						if _, err := unix.Pwrite(fd, buf, off); err != nil {
							b.Fatal(err)
						}
						if err := unix.Fdatasync(fd); err != nil {
							b.Fatal(err)
						}
					} else {
						e := r.GetSQE()
						e.PrepWrite(fd, buf, off, 1)
						e.Flags |= SQELink
						r.GetSQE().PrepFdatasync(fd, 2)
						for done := 0; done < 2; {
							if c := r.PeekCQE(); c != nil {
								if c.Res < 0 || c.UserData == 1 && int(c.Res) != size {
									b.Fatalf("op %d: %d", c.UserData, c.Res)
								}
								r.Seen()
								done++
								continue
							}
							if _, err := r.Submit(uint32(2 - done)); err != nil {
								b.Fatal(err)
							}
						}
					}
					if off += int64(size); off+int64(size) > fileLen {
						off = 0
					}
				}
				b.StopTimer()
				_ = unix.Getrusage(unix.RUSAGE_SELF, &ru1)
				cpu := ru1.Utime.Nano() + ru1.Stime.Nano() - ru0.Utime.Nano() - ru0.Stime.Nano()
				b.ReportMetric(float64(cpu)/float64(b.N), "cpu-ns/op")
			})
		}
	}
}

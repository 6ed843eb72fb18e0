//go:build linux

package diskio

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"golang.org/x/sys/unix"

	"github.com/sluicebroker/sluice/internal/uring"
)

// DatasyncAll fdatasyncs files together and returns their errors joined; errs, when not nil (of
// len(files)), receives each file's own. Where io_uring runs, all of them go into one submission,
// issued by the kernel's io-wq workers side by side, and the caller sleeps in one io_uring_enter
// until all have completed: one blocking system call per call, not one per file (a blocking
// fdatasync per file, each in its own goroutine, kept Go's sysmon retaking Ps and starting threads:
// a tenth of a busy broker's CPU, results/2026-12-07-2core-vm-cpu12/). The wait is not done in Go's
// netpoller (an eventfd), as it was for a while: a goroutine woken there runs only once some P polls
// the network, which a busy P does not do before its run queue is empty, or sysmon after 10 ms, and
// that added 1.5-2 ms to the per-second p99 of acknowledgements (results/2026-12-07-2core-vm-latency-s8/).
// Elsewhere (no io_uring, or it fails), each file is synced in its own goroutine.
func DatasyncAll(files []*os.File, errs []error) error {
	if len(files) == 0 {
		return nil
	}
	if errs == nil {
		errs = make([]error, len(files))
	}
	r := syncRings.get()
	if r == nil {
		datasyncEach(files, errs)
	} else {
		r.datasync(files, errs)
		syncRings.put(r)
	}
	return errors.Join(errs...)
}

// syncRingEntries is a ring's submission slots: a save syncs a few files per partition it touched.
const syncRingEntries = 32

// syncRingPool holds idle rings: each caller takes one (rings are single-owner) and gives it back.
// There are at most as many as callers syncing at once (dragonboat's step workers).
type syncRingPool struct {
	mu          sync.Mutex
	idle        []*syncRing
	unavailable bool // io_uring cannot be set up here: every call takes the fallback
}

var syncRings syncRingPool

func (p *syncRingPool) get() *syncRing {
	p.mu.Lock()
	if p.unavailable {
		p.mu.Unlock()
		return nil
	}
	if n := len(p.idle); n > 0 {
		r := p.idle[n-1]
		p.idle = p.idle[:n-1]
		p.mu.Unlock()
		return r
	}
	p.mu.Unlock()
	r, err := newSyncRing()
	if err != nil {
		p.mu.Lock()
		p.unavailable = true
		p.mu.Unlock()
		return nil
	}
	return r
}

func (p *syncRingPool) put(r *syncRing) {
	if r.broken {
		r.close()
		return
	}
	p.mu.Lock()
	p.idle = append(p.idle, r)
	p.mu.Unlock()
}

// syncRing is an io_uring for fdatasyncs, owned by one caller at a time.
type syncRing struct {
	ring *uring.Ring
	fds  []int
	errs []error // the caller's, one per file
	// broken: the ring failed with entries possibly in flight and must not be used again.
	broken bool
}

func newSyncRing() (*syncRing, error) {
	ring, err := uring.New(syncRingEntries, 0)
	if err != nil {
		return nil, err
	}
	if err := ring.Supports(uring.OpFsync); err != nil {
		ring.Close()
		return nil, err
	}
	return &syncRing{ring: ring}, nil
}

func (r *syncRing) close() { r.ring.Close() }

// datasync syncs files through the ring, each one's error into errs.
func (r *syncRing) datasync(files []*os.File, errs []error) {
	r.fds, r.errs = r.fds[:0], errs
	r.hold(files)
	r.errs = nil
}

// hold keeps each file's descriptor from being closed (and its number reused) while the ring
// syncs it: the nested Control calls hold a reference on every descriptor until run returns. A
// file that is already closed gets its error and no entry (-1).
func (r *syncRing) hold(files []*os.File) {
	i := len(r.fds)
	if i == len(files) {
		r.run(files)
		return
	}
	rc, err := files[i].SyscallConn()
	if err == nil {
		err = rc.Control(func(fd uintptr) {
			r.fds = append(r.fds, int(fd))
			r.hold(files)
		})
	}
	if err != nil {
		r.errs[i] = &os.PathError{Op: "fdatasync", Path: files[i].Name(), Err: err}
		r.fds = append(r.fds, -1)
		r.hold(files)
	}
}

// run submits the fdatasyncs of r.fds (files' descriptors) in chunks of the ring's size and waits
// for each chunk's completions; errors go to r.errs (a failed ring's to every file not done).
func (r *syncRing) run(files []*os.File) {
	for start := 0; start < len(r.fds); start += syncRingEntries {
		end := min(start+syncRingEntries, len(r.fds))
		n := 0
		for i := start; i < end; i++ {
			if r.fds[i] < 0 {
				continue
			}
			sqe := r.ring.GetSQE() // never nil: every earlier entry has completed
			sqe.PrepFdatasync(r.fds[i], uint64(i))
			sqe.Flags |= uring.SQEAsync
			n++
		}
		for submitted := 0; submitted < n; {
			k, err := r.ring.Submit(0)
			if err != nil {
				r.fail(start, err)
				return
			}
			submitted += k
		}
		for done := 0; done < n; {
			for cqe := r.ring.PeekCQE(); cqe != nil; cqe = r.ring.PeekCQE() {
				i, res := int(cqe.UserData), cqe.Res
				r.ring.Seen()
				done++
				r.fds[i] = -1 // done
				switch errno := syscall.Errno(-res); {
				case res >= 0:
				case errno == unix.EINTR || errno == unix.EAGAIN || errno == unix.ECANCELED:
					// Not a verdict on the file's data: sync it the plain way.
					r.errs[i] = Datasync(files[i])
				default:
					r.errs[i] = &os.PathError{Op: "fdatasync", Path: files[i].Name(), Err: errno}
				}
			}
			if done < n {
				// Everything is submitted: this sleeps in the kernel until the rest completed.
				if _, err := r.ring.Submit(uint32(n - done)); err != nil {
					r.fail(start, err)
					return
				}
			}
		}
	}
}

// fail gives err to every file from start on not synced yet and retires the ring.
func (r *syncRing) fail(start int, err error) {
	r.broken = true
	for i := start; i < len(r.fds); i++ {
		if r.fds[i] >= 0 && r.errs[i] == nil {
			r.errs[i] = fmt.Errorf("fdatasync through io_uring: %w", err)
		}
	}
}

// Package uring is a minimal io_uring binding on golang.org/x/sys/unix: setup, the mmapped submission
// and completion rings, SQEs and CQEs, and the few opcodes netio uses. A Ring is not safe for concurrent
// use: one goroutine owns it (netio's event loop).
package uring

import (
	"errors"
	"fmt"
	"os"
	"sync/atomic"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Opcodes (include/uapi/linux/io_uring.h).
const (
	OpNop         uint8 = 0
	OpWritev      uint8 = 2
	OpPollAdd     uint8 = 6
	OpSendmsg     uint8 = 9
	OpTimeout     uint8 = 11
	OpAccept      uint8 = 13
	OpAsyncCancel uint8 = 14
	OpClose       uint8 = 19
	OpRead        uint8 = 22
	OpSend        uint8 = 26
	OpRecv        uint8 = 27
	OpSplice      uint8 = 30
)

const (
	setupCQSize   = 1 << 3
	setupClamp    = 1 << 4
	featSingleMap = 1 << 0
	enterGetEvent = 1 << 0

	offSQRing = 0
	offCQRing = 0x8000000
	offSQEs   = 0x10000000
)

type sqOffsets struct {
	head, tail, ringMask, ringEntries, flags, dropped, array, resv1 uint32
	userAddr                                                        uint64
}

type cqOffsets struct {
	head, tail, ringMask, ringEntries, overflow, cqes, flags, resv1 uint32
	userAddr                                                        uint64
}

type params struct {
	sqEntries, cqEntries, flags, sqThreadCPU, sqThreadIdle, features, wqFd uint32
	resv                                                                   [3]uint32
	sqOff                                                                  sqOffsets
	cqOff                                                                  cqOffsets
}

// SQE is a submission queue entry (64 bytes).
type SQE struct {
	Opcode      uint8
	Flags       uint8
	IOPrio      uint16
	Fd          int32
	Off         uint64 // also addr2
	Addr        uint64
	Len         uint32
	OpFlags     uint32 // rw_flags, msg_flags, accept_flags, poll32_events, cancel_flags, ...
	UserData    uint64
	BufIndex    uint16
	Personality uint16
	SpliceFdIn  int32
	Addr3       uint64
	pad         uint64
}

// CQE is a completion queue entry.
type CQE struct {
	UserData uint64
	Res      int32
	Flags    uint32
}

// Ring is one io_uring instance.
type Ring struct {
	fd             int
	sqMem, cqMem   []byte
	sqeMem         []byte
	sqHead, sqTail *uint32
	sqMask         uint32
	sqArray        unsafe.Pointer
	sqes           unsafe.Pointer
	sqEntries      uint32
	sqLocalTail    uint32 // entries handed out by GetSQE
	cqHead, cqTail *uint32
	cqMask         uint32
	cqes           unsafe.Pointer
}

// ErrUnsupported wraps the reason io_uring cannot be used here.
var ErrUnsupported = errors.New("io_uring unavailable")

// Setup flags for NewFlags.
const (
	// SetupCoopTaskrun: completions are not signalled with an interrupt to the submitting task; they
	// are processed when it next enters the kernel (5.19).
	SetupCoopTaskrun = 1 << 8
)

// New sets up a ring with at least entries submission slots and cqEntries completion slots
// (0: twice entries).
func New(entries, cqEntries uint32) (*Ring, error) { return NewFlags(entries, cqEntries, 0) }

// NewFlags is New with setup flags (Setup*).
func NewFlags(entries, cqEntries, flags uint32) (*Ring, error) {
	var p params
	p.flags = setupClamp | flags
	if cqEntries > 0 {
		p.flags |= setupCQSize
		p.cqEntries = cqEntries
	}
	fd, _, errno := unix.Syscall(unix.SYS_IO_URING_SETUP, uintptr(entries), uintptr(unsafe.Pointer(&p)), 0)
	if errno != 0 {
		return nil, fmt.Errorf("%w: io_uring_setup: %v", ErrUnsupported, errno)
	}
	r := &Ring{fd: int(fd)}
	if err := r.mmap(&p); err != nil {
		r.Close()
		return nil, err
	}
	return r, nil
}

func (r *Ring) mmap(p *params) error {
	sqSize := int(p.sqOff.array + p.sqEntries*4)
	cqSize := int(p.cqOff.cqes + p.cqEntries*uint32(unsafe.Sizeof(CQE{})))
	single := p.features&featSingleMap != 0
	if single {
		sqSize = max(sqSize, cqSize)
	}
	var err error
	r.sqMem, err = unix.Mmap(r.fd, offSQRing, sqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	if single {
		r.cqMem = r.sqMem
	} else {
		r.cqMem, err = unix.Mmap(r.fd, offCQRing, cqSize, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
		if err != nil {
			return os.NewSyscallError("mmap", err)
		}
	}
	r.sqeMem, err = unix.Mmap(r.fd, offSQEs, int(p.sqEntries)*int(unsafe.Sizeof(SQE{})), unix.PROT_READ|unix.PROT_WRITE, unix.MAP_SHARED|unix.MAP_POPULATE)
	if err != nil {
		return os.NewSyscallError("mmap", err)
	}
	sq := unsafe.Pointer(&r.sqMem[0])
	cq := unsafe.Pointer(&r.cqMem[0])
	r.sqHead = (*uint32)(unsafe.Add(sq, p.sqOff.head))
	r.sqTail = (*uint32)(unsafe.Add(sq, p.sqOff.tail))
	r.sqMask = *(*uint32)(unsafe.Add(sq, p.sqOff.ringMask))
	r.sqArray = unsafe.Add(sq, p.sqOff.array)
	r.sqEntries = p.sqEntries
	r.sqes = unsafe.Pointer(&r.sqeMem[0])
	r.cqHead = (*uint32)(unsafe.Add(cq, p.cqOff.head))
	r.cqTail = (*uint32)(unsafe.Add(cq, p.cqOff.tail))
	r.cqMask = *(*uint32)(unsafe.Add(cq, p.cqOff.ringMask))
	r.cqes = unsafe.Add(cq, p.cqOff.cqes)
	r.sqLocalTail = atomic.LoadUint32(r.sqTail)
	return nil
}

// Close unmaps the rings and closes the ring's descriptor (the kernel cancels what is in flight).
func (r *Ring) Close() {
	if r.sqeMem != nil {
		_ = unix.Munmap(r.sqeMem)
	}
	if len(r.cqMem) > 0 && (len(r.sqMem) == 0 || &r.cqMem[0] != &r.sqMem[0]) {
		_ = unix.Munmap(r.cqMem)
	}
	if r.sqMem != nil {
		_ = unix.Munmap(r.sqMem)
	}
	r.sqMem, r.cqMem, r.sqeMem = nil, nil, nil
	if r.fd >= 0 {
		_ = unix.Close(r.fd)
		r.fd = -1
	}
}

// GetSQE returns a zeroed submission entry to fill, or nil when the submission queue is full (Submit,
// then try again).
func (r *Ring) GetSQE() *SQE {
	head := atomic.LoadUint32(r.sqHead)
	if r.sqLocalTail-head >= r.sqEntries {
		return nil
	}
	idx := r.sqLocalTail & r.sqMask
	sqe := (*SQE)(unsafe.Add(r.sqes, uintptr(idx)*unsafe.Sizeof(SQE{})))
	*sqe = SQE{}
	*(*uint32)(unsafe.Add(r.sqArray, uintptr(idx)*4)) = idx
	r.sqLocalTail++
	return sqe
}

// Submit publishes the filled entries and enters the kernel, waiting for at least wait completions.
// Entries the kernel did not take (completion queue pressure) are offered again on the next call.
func (r *Ring) Submit(wait uint32) (int, error) {
	atomic.StoreUint32(r.sqTail, r.sqLocalTail)
	var flags uintptr
	if wait > 0 {
		flags = enterGetEvent
	}
	for {
		// Without SQPOLL the kernel takes entries inside the call: what it has not taken is tail-head.
		toSubmit := r.sqLocalTail - atomic.LoadUint32(r.sqHead)
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(wait), flags, 0, 0)
		switch errno {
		case 0:
			return int(n), nil
		case unix.EINTR:
			if wait == 0 {
				return 0, nil
			}
		case unix.EAGAIN, unix.EBUSY:
			// Completion queue pressure: the caller reaps and comes back.
			return 0, nil
		default:
			return int(n), os.NewSyscallError("io_uring_enter", errno)
		}
	}
}

// PeekCQE returns the oldest unseen completion or nil. Call Seen after using it.
func (r *Ring) PeekCQE() *CQE {
	head := atomic.LoadUint32(r.cqHead)
	if head == atomic.LoadUint32(r.cqTail) {
		return nil
	}
	return (*CQE)(unsafe.Add(r.cqes, uintptr(head&r.cqMask)*unsafe.Sizeof(CQE{})))
}

// Seen releases the completion PeekCQE returned.
func (r *Ring) Seen() { atomic.AddUint32(r.cqHead, 1) }

// Probe reports whether io_uring can be set up here and supports the given opcodes (a small ring is
// created and closed). Kernels before 5.6 cannot say which opcodes they have: they count as unsupported.
func Probe(ops ...uint8) error {
	r, err := New(4, 0)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Supports(ops...)
}

// Supports reports whether the kernel has every one of ops (IORING_REGISTER_PROBE).
func (r *Ring) Supports(ops ...uint8) error {
	const registerProbe, opSupported, maxOps = 8, 1, 256
	// struct io_uring_probe: last_op, ops_len, resv, resv2[3], then ops[] of {op, resv, flags u16, resv2 u32}.
	var buf [16 + maxOps*8]byte
	_, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerProbe, uintptr(unsafe.Pointer(&buf[0])), maxOps, 0, 0)
	if errno != 0 {
		return fmt.Errorf("%w: io_uring_register(PROBE): %v (kernel before 5.6?)", ErrUnsupported, errno)
	}
	lastOp := buf[0]
	for _, op := range ops {
		flags := uint16(buf[16+int(op)*8+2]) | uint16(buf[16+int(op)*8+3])<<8
		if op > lastOp || flags&opSupported == 0 {
			return fmt.Errorf("%w: the kernel lacks io_uring opcode %d", ErrUnsupported, op)
		}
	}
	return nil
}

// Helpers filling common entries.

// PrepNop fills a NOP.
func (s *SQE) PrepNop(ud uint64) { s.Opcode, s.Fd, s.UserData = OpNop, -1, ud }

// PrepRecv fills a RECV into b.
func (s *SQE) PrepRecv(fd int, b []byte, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.UserData = OpRecv, int32(fd), uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)), ud
}

// PrepRead fills a READ into b at offset off (-1: the file's offset).
func (s *SQE) PrepRead(fd int, b []byte, off int64, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.Off, s.UserData = OpRead, int32(fd), uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)), uint64(off), ud
}

// PrepWritev fills a WRITEV of vecs (which must stay untouched until the completion).
func (s *SQE) PrepWritev(fd int, vecs []unix.Iovec, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.UserData = OpWritev, int32(fd), uint64(uintptr(unsafe.Pointer(&vecs[0]))), uint32(len(vecs)), ud
	s.Off = ^uint64(0) // -1: no offset (a socket)
}

// PrepSendmsg fills a SENDMSG of msg (which, with its iovecs, must stay untouched until the completion).
func (s *SQE) PrepSendmsg(fd int, msg *unix.Msghdr, flags uint32, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.OpFlags, s.UserData = OpSendmsg, int32(fd), uint64(uintptr(unsafe.Pointer(msg))), 1, flags, ud
}

// PrepPollAdd fills a one-shot POLL_ADD for events (unix.POLLIN, unix.POLLOUT).
func (s *SQE) PrepPollAdd(fd int, events uint32, ud uint64) {
	s.Opcode, s.Fd, s.OpFlags, s.UserData = OpPollAdd, int32(fd), events, ud
}

// PrepAccept fills an ACCEPT; sa and salen receive the peer's address and must stay alive until the
// completion.
func (s *SQE) PrepAccept(fd int, sa *unix.RawSockaddrAny, salen *uint32, flags uint32, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Off, s.OpFlags, s.UserData = OpAccept, int32(fd), uint64(uintptr(unsafe.Pointer(sa))), uint64(uintptr(unsafe.Pointer(salen))), flags, ud
}

// PrepCancel fills an ASYNC_CANCEL of the request with user data target.
func (s *SQE) PrepCancel(target, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.UserData = OpAsyncCancel, -1, target, ud
}

// PrepTimeout fills a TIMEOUT that completes (with -ETIME) after ts.
func (s *SQE) PrepTimeout(ts *unix.Timespec, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.UserData = OpTimeout, -1, uint64(uintptr(unsafe.Pointer(ts))), 1, ud
}

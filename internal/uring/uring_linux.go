// Package uring is a minimal io_uring binding on golang.org/x/sys/unix: setup, the mmapped submission
// and completion rings, SQEs and CQEs, and the few opcodes netio (connections) and diskio (batched
// fdatasync) use. A Ring is not safe for concurrent use: one goroutine owns it (netio's event loop).
package uring

import (
	"encoding/binary"
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
	OpFsync       uint8 = 3
	OpPollAdd     uint8 = 6
	OpSendmsg     uint8 = 9
	OpTimeout     uint8 = 11
	OpAccept      uint8 = 13
	OpAsyncCancel uint8 = 14
	OpClose       uint8 = 19
	OpRead        uint8 = 22
	OpWrite       uint8 = 23
	OpSend        uint8 = 26
	OpRecv        uint8 = 27
	OpSplice      uint8 = 30
	OpSendZC      uint8 = 47
)

// SQE flags (IOSQE_*).
const (
	// SQELink: the next entry starts only when this one completed in full (a short result breaks
	// the chain: the rest complete with -ECANCELED).
	SQELink = 1 << 2
	// SQEAsync: issue the entry from the kernel's io-wq workers at once, never inline in
	// io_uring_enter (an FSYNC would otherwise hold the submitting thread).
	SQEAsync = 1 << 4
	// SQEBufferSelect: the kernel picks the buffer from the group in BufIndex (a provided buffer ring).
	SQEBufferSelect = 1 << 5
)

// CQE flags (IORING_CQE_F_*).
const (
	// CQEBuffer: the upper 16 bits of Flags are the id of the provided buffer that holds the data.
	CQEBuffer = 1 << 0
	// CQEMore: a multishot request stays armed; more completions follow.
	CQEMore = 1 << 1
	// CQENotif: SEND_ZC's second completion: the kernel no longer needs the buffer.
	CQENotif = 1 << 3
)

// Operation flags.
const (
	acceptMultishot = 1 << 0 // IORING_ACCEPT_MULTISHOT, in ioprio (5.19)
	fsyncDatasync   = 1 << 0 // IORING_FSYNC_DATASYNC
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
//
// The entries are issued in a raw system call that does not wait: the kernel issues them without
// sleeping (an entry that would block is armed or punted to io-wq) but may copy for long (receives,
// sends). A raw call keeps this thread's P, where a Go system call over 20 µs has it retaken by
// sysmon and another thread woken to run on the CPU this one is still using (which, on a busy
// broker, kept sysmon waking every 20 µs and the CPUs switching threads). Only when fewer than wait
// completions are ready does a second, ordinary call sleep for them.
func (r *Ring) Submit(wait uint32) (int, error) {
	atomic.StoreUint32(r.sqTail, r.sqLocalTail)
	submitted := 0
	// Without SQPOLL the kernel takes entries inside the call: what it has not taken is tail-head.
	if toSubmit := r.sqLocalTail - atomic.LoadUint32(r.sqHead); toSubmit > 0 {
		n, _, errno := unix.RawSyscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), 0, 0, 0, 0)
		switch errno {
		case 0:
			submitted = int(n)
		case unix.EINTR:
		case unix.EAGAIN, unix.EBUSY:
			// Completion queue pressure: the caller reaps and comes back.
			return 0, nil
		default:
			return int(n), os.NewSyscallError("io_uring_enter", errno)
		}
	}
	if wait == 0 || atomic.LoadUint32(r.cqTail)-atomic.LoadUint32(r.cqHead) >= wait {
		return submitted, nil
	}
	for {
		toSubmit := r.sqLocalTail - atomic.LoadUint32(r.sqHead)
		n, _, errno := unix.Syscall6(unix.SYS_IO_URING_ENTER, uintptr(r.fd), uintptr(toSubmit), uintptr(wait), enterGetEvent, 0, 0)
		switch errno {
		case 0:
			return submitted + int(n), nil
		case unix.EINTR:
		case unix.EAGAIN, unix.EBUSY:
			return submitted, nil
		default:
			return submitted + int(n), os.NewSyscallError("io_uring_enter", errno)
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

// PrepAcceptMultishot fills an ACCEPT that stays armed (CQEMore) and completes once per connection;
// the peer's address is not stored.
func (s *SQE) PrepAcceptMultishot(fd int, flags uint32, ud uint64) {
	s.Opcode, s.Fd, s.OpFlags, s.IOPrio, s.UserData = OpAccept, int32(fd), flags, acceptMultishot, ud
}

// PrepRecvSelect fills a RECV into a buffer the kernel takes from provided buffer group bgid.
func (s *SQE) PrepRecvSelect(fd int, bgid uint16, ud uint64) {
	s.Opcode, s.Fd, s.Flags, s.BufIndex, s.UserData = OpRecv, int32(fd), SQEBufferSelect, bgid, ud
}

// PrepSend fills a SEND of b.
func (s *SQE) PrepSend(fd int, b []byte, flags uint32, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.OpFlags, s.UserData = OpSend, int32(fd), uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)), flags, ud
}

// PrepSendZC fills a zero-copy SEND of b: a first completion with the result (CQEMore set), then a
// CQENotif one once b may be reused.
func (s *SQE) PrepSendZC(fd int, b []byte, flags uint32, ud uint64) {
	s.PrepSend(fd, b, flags, ud)
	s.Opcode = OpSendZC
}

// PrepSplice fills a SPLICE of n bytes from fdIn at offIn to fdOut at offOut (-1: a pipe or socket,
// no offset).
func (s *SQE) PrepSplice(fdIn int, offIn int64, fdOut int, offOut int64, n uint32, flags uint32, ud uint64) {
	s.Opcode, s.Fd, s.Off, s.Addr, s.Len, s.OpFlags, s.SpliceFdIn, s.UserData = OpSplice, int32(fdOut), uint64(offOut), uint64(offIn), n, flags, int32(fdIn), ud
}

// PrepWrite fills a WRITE of b at offset off.
func (s *SQE) PrepWrite(fd int, b []byte, off int64, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.Off, s.UserData = OpWrite, int32(fd), uint64(uintptr(unsafe.Pointer(&b[0]))), uint32(len(b)), uint64(off), ud
}

// PrepFdatasync fills an FSYNC with IORING_FSYNC_DATASYNC.
func (s *SQE) PrepFdatasync(fd int, ud uint64) {
	s.Opcode, s.Fd, s.OpFlags, s.UserData = OpFsync, int32(fd), fsyncDatasync, ud
}

// PrepCancel fills an ASYNC_CANCEL of the request with user data target.
func (s *SQE) PrepCancel(target, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.UserData = OpAsyncCancel, -1, target, ud
}

// PrepTimeout fills a TIMEOUT that completes (with -ETIME) after ts.
func (s *SQE) PrepTimeout(ts *unix.Timespec, ud uint64) {
	s.Opcode, s.Fd, s.Addr, s.Len, s.UserData = OpTimeout, -1, uint64(uintptr(unsafe.Pointer(ts))), 1, ud
}

// BufRing is a provided buffer ring (IORING_REGISTER_PBUF_RING, 5.19): Count buffers of Size bytes
// the kernel picks from for receives with SQEBufferSelect, so an idle connection holds no buffer.
// Ring and buffers are mmapped outside Go's heap. Only the ring's owner uses it.
type BufRing struct {
	Size  int
	ring  []byte // Count entries of struct io_uring_buf; the tail is the first entry's last 2 bytes
	bufs  []byte
	mask  uint16
	tail  uint16
	bgid  uint16
	count int
}

// RegisterBufRing registers count (a power of two, at most 32768) buffers of size bytes as group bgid,
// all handed to the kernel. It fails on kernels before 5.19.
func (r *Ring) RegisterBufRing(count, size int, bgid uint16) (*BufRing, error) {
	const registerPbufRing = 22
	if count <= 0 || count > 1<<15 || count&(count-1) != 0 {
		return nil, fmt.Errorf("uring: buffer ring of %d entries: not a power of two up to 32768", count)
	}
	ringMem, err := unix.Mmap(-1, 0, count*16, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	if err != nil {
		return nil, os.NewSyscallError("mmap", err)
	}
	bufs, err := unix.Mmap(-1, 0, count*size, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_ANONYMOUS|unix.MAP_PRIVATE)
	if err != nil {
		_ = unix.Munmap(ringMem)
		return nil, os.NewSyscallError("mmap", err)
	}
	// struct io_uring_buf_reg: ring_addr, ring_entries, bgid, flags, resv[3].
	var reg struct {
		addr    uint64
		entries uint32
		bgid    uint16
		flags   uint16
		resv    [3]uint64
	}
	reg.addr, reg.entries, reg.bgid = uint64(uintptr(unsafe.Pointer(&ringMem[0]))), uint32(count), bgid
	if _, _, errno := unix.Syscall6(unix.SYS_IO_URING_REGISTER, uintptr(r.fd), registerPbufRing, uintptr(unsafe.Pointer(&reg)), 1, 0, 0); errno != 0 {
		_ = unix.Munmap(ringMem)
		_ = unix.Munmap(bufs)
		return nil, fmt.Errorf("%w: io_uring_register(PBUF_RING): %v", ErrUnsupported, errno)
	}
	b := &BufRing{Size: size, ring: ringMem, bufs: bufs, mask: uint16(count - 1), bgid: bgid, count: count}
	for i := range count {
		b.put(uint16(i))
	}
	b.Publish()
	return b, nil
}

// Buf returns buffer id's memory.
func (b *BufRing) Buf(id uint16) []byte {
	off := int(id) * b.Size
	return b.bufs[off : off+b.Size : off+b.Size]
}

// Return gives buffer id back to the kernel (visible after Publish).
func (b *BufRing) Return(id uint16) { b.put(id) }

func (b *BufRing) put(id uint16) {
	e := unsafe.Pointer(&b.ring[int(b.tail&b.mask)*16])
	*(*uint64)(e) = uint64(uintptr(unsafe.Pointer(&b.bufs[int(id)*b.Size])))
	*(*uint32)(unsafe.Add(e, 8)) = uint32(b.Size)
	*(*uint16)(unsafe.Add(e, 12)) = id
	b.tail++
}

// Publish makes the buffers returned so far visible to the kernel: a release store of the tail. The
// tail shares a 32-bit word with the first entry's buffer id, which only we write.
func (b *BufRing) Publish() {
	w := (*uint32)(unsafe.Pointer(&b.ring[12]))
	var word [4]byte
	binary.NativeEndian.PutUint32(word[:], atomic.LoadUint32(w))
	binary.NativeEndian.PutUint16(word[2:], b.tail)
	atomic.StoreUint32(w, binary.NativeEndian.Uint32(word[:]))
}

// Close unmaps the ring and its buffers; call it after the ring (Ring.Close) is gone.
func (b *BufRing) Close() {
	_ = unix.Munmap(b.ring)
	_ = unix.Munmap(b.bufs)
}

// Group is the buffer group id for PrepRecvSelect.
func (b *BufRing) Group() uint16 { return b.bgid }

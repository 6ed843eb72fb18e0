package netio

import (
	"math/bits"
	"sync"
)

// Frame buffers come from power-of-two size classes, so a steady stream of requests allocates nothing.
// Pools hold *[]byte: putting a pointer into an interface does not allocate.
const (
	minClassBits = 9  // 512 B
	maxClassBits = 27 // 128 MiB, above DefaultMaxFrameBytes
)

var framePools [maxClassBits - minClassBits + 1]sync.Pool

func classOf(n int) int {
	c := bits.Len(uint(n - 1))
	if c < minClassBits {
		c = minClassBits
	}
	return c
}

// getFrame returns a buffer of length n.
func getFrame(n int) *[]byte {
	c := classOf(n)
	if c > maxClassBits {
		b := make([]byte, n)
		return &b
	}
	if v := framePools[c-minClassBits].Get(); v != nil {
		b := v.(*[]byte)
		*b = (*b)[:n]
		return b
	}
	b := make([]byte, n, 1<<c)
	return &b
}

// putFrame returns a buffer from getFrame.
func putFrame(b *[]byte) {
	c := cap(*b)
	if c < 1<<minClassBits || c > 1<<maxClassBits || c&(c-1) != 0 {
		return
	}
	framePools[bits.Len(uint(c))-1-minClassBits].Put(b)
}

// frameEagerBytes is how much of a frame's buffer is allocated on its size alone. Larger frames grow
// as their bytes arrive, so a client cannot make the broker allocate 100 MiB by sending 4 bytes.
const frameEagerBytes = 1 << 20

// startFrame returns the buffer to read a frame of size bytes into: all of it, or its first
// frameEagerBytes.
func startFrame(size int) *[]byte { return getFrame(min(size, frameEagerBytes)) }

// growFrame continues a frame of size bytes whose buffer b is full: it returns a buffer that starts
// with b's bytes, and releases b. Once the client has sent frameEagerBytes of the frame the rest is
// taken at once (Kafka allocates every request whole on its size): one copy of the first MiB instead
// of doubling, which copied up to the whole frame again (7% of the broker's CPU producing 1 KiB
// records, where franz-go's requests are several MiB).
func growFrame(b *[]byte, size int) *[]byte {
	n := size
	if len(*b) < frameEagerBytes {
		n = min(2*len(*b), size)
	}
	nb := getFrame(n)
	copy(*nb, *b)
	putFrame(b)
	return nb
}

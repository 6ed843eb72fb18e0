package wire

import (
	"encoding/binary"
	"errors"
)

// ProduceVersion is the produce request version the native client speaks: the newest
// non-flexible one (idempotence needs >= 3; every broker loadgen measures serves 3..7).
const ProduceVersion = 7

// ProduceRequest builds one produce request around sealed batches without copying them:
// the framing pieces go into one buffer, the batches are referenced, and Parts interleaves them.
type ProduceRequest struct {
	meta  []byte
	cuts  []int    // meta offsets where a batch goes
	parts [][]byte // built by Finish
	bats  [][]byte
	count int // partitions in the current topic
	cntAt int // where the current topic's partition count goes
	tcnt  int
	tAt   int
}

// Begin starts a request: header, no transactional ID, acks, timeout.
func (r *ProduceRequest) Begin(corr int32, acks int16, timeoutMs int32) {
	r.meta = BeginRequest(r.meta[:0], 0, ProduceVersion, corr)
	r.meta = binary.BigEndian.AppendUint16(r.meta, 0xffff) // null transactional ID
	r.meta = binary.BigEndian.AppendUint16(r.meta, uint16(acks))
	r.meta = binary.BigEndian.AppendUint32(r.meta, uint32(timeoutMs))
	r.tAt = len(r.meta)
	r.meta = append(r.meta, 0, 0, 0, 0)
	r.tcnt, r.count = 0, 0
	r.cuts, r.bats = r.cuts[:0], r.bats[:0]
}

// Topic starts a topic; its partitions follow.
func (r *ProduceRequest) Topic(name string) {
	r.endTopic()
	r.tcnt++
	r.meta = binary.BigEndian.AppendUint16(r.meta, uint16(len(name)))
	r.meta = append(r.meta, name...)
	r.cntAt = len(r.meta)
	r.meta = append(r.meta, 0, 0, 0, 0)
	r.count = 0
}

func (r *ProduceRequest) endTopic() {
	if r.tcnt > 0 {
		binary.BigEndian.PutUint32(r.meta[r.cntAt:], uint32(r.count))
	}
}

// Partition adds one partition's batch to the current topic.
func (r *ProduceRequest) Partition(p int32, batch []byte) {
	r.count++
	r.meta = binary.BigEndian.AppendUint32(r.meta, uint32(p))
	r.meta = binary.BigEndian.AppendUint32(r.meta, uint32(len(batch)))
	r.cuts = append(r.cuts, len(r.meta))
	r.bats = append(r.bats, batch)
}

// Finish returns the head (the first piece, with the size placeholder) and the pieces after it,
// for Conn.WriteVec.
func (r *ProduceRequest) Finish() (head []byte, parts [][]byte) {
	r.endTopic()
	binary.BigEndian.PutUint32(r.meta[r.tAt:], uint32(r.tcnt))
	r.parts = r.parts[:0]
	prev := r.cuts[0]
	head = r.meta[:prev]
	for i, b := range r.bats {
		r.parts = append(r.parts, b)
		next := len(r.meta)
		if i+1 < len(r.cuts) {
			next = r.cuts[i+1]
		}
		if next > prev {
			r.parts = append(r.parts, r.meta[prev:next])
		}
		prev = next
	}
	return head, r.parts
}

var errShort = errors.New("wire: short response")

// ProduceResult is one partition's answer.
type ProduceResult struct {
	Topic      []byte // valid until the response buffer is reused
	Partition  int32
	ErrorCode  int16
	BaseOffset int64
}

// ParseProduceResponse calls fn for each partition of a v7 produce response body.
func ParseProduceResponse(b []byte, fn func(ProduceResult)) error {
	rd := reader{b: b}
	nt := rd.i32()
	for range max(nt, 0) {
		name := rd.str()
		np := rd.i32()
		for range max(np, 0) {
			var pr ProduceResult
			pr.Topic = name
			pr.Partition = rd.i32()
			pr.ErrorCode = rd.i16()
			pr.BaseOffset = rd.i64()
			rd.i64() // log append time
			rd.i64() // log start offset
			if rd.bad {
				return errShort
			}
			fn(pr)
		}
	}
	if rd.bad {
		return errShort
	}
	return nil
}

type reader struct {
	b   []byte
	bad bool
}

func (r *reader) take(n int) []byte {
	if n < 0 || len(r.b) < n {
		r.bad = true
		r.b = nil
		return nil
	}
	v := r.b[:n]
	r.b = r.b[n:]
	return v
}
func (r *reader) i16() int16 {
	v := r.take(2)
	if v == nil {
		return 0
	}
	return int16(binary.BigEndian.Uint16(v))
}
func (r *reader) i32() int32 {
	v := r.take(4)
	if v == nil {
		return 0
	}
	return int32(binary.BigEndian.Uint32(v))
}
func (r *reader) i64() int64 {
	v := r.take(8)
	if v == nil {
		return 0
	}
	return int64(binary.BigEndian.Uint64(v))
}
func (r *reader) str() []byte { return r.take(int(r.i16())) }

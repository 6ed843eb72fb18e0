package raftnet

import (
	"fmt"
	"hash/crc32"
	"io"
	"testing"

	pb "github.com/lni/dragonboat/v4/raftpb"
)

// The receive and send sides against dragonboat's TCP transport's, per batch of 64 entries: the
// allocations and copies per entry are what issue 12 measured on followers.
//
//	go test ./quorum/raftnet/ -run X -bench . -benchmem

func benchBatch(cmdSize int) pb.MessageBatch {
	sizes := make([]int, 64)
	for i := range sizes {
		sizes[i] = cmdSize
	}
	return pb.MessageBatch{DeploymentId: 1, BinVer: 210, SourceAddress: "127.0.0.1:9093",
		Requests: []pb.Message{fullMessage(pb.Replicate, entries(sizes...)), fullMessage(pb.Heartbeat, nil)}}
}

var sizes = []int{100, 1024, 16 << 10}

// BenchmarkReceive: a frame's payload, read into a buffer of its own (as the transport does), decoded.
func BenchmarkReceive(b *testing.B) {
	for _, n := range sizes {
		batch := benchBatch(n)
		b.Run(fmt.Sprintf("raftnet/cmd=%d", n), func(b *testing.B) {
			e := encoder{copyBelow: defaultCopyBelow}
			bufs, _ := e.Encode(&batch)
			var frame []byte
			for _, x := range bufs {
				frame = append(frame, x...)
			}
			wire := frame[headerLen:]
			h, _ := parseHeader(frame)
			var d decoder
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				p := make([]byte, len(wire))
				copy(p, wire) // stands for the socket read
				if err := checkCRC(frame, h, p); err != nil {
					b.Fatal(err)
				}
				if _, err := d.Decode(p); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("dragonboat/cmd=%d", n), func(b *testing.B) {
			wire, _ := batch.Marshal()
			reuse := make([]byte, len(wire)) // dragonboat reuses its read buffer, then copies each command
			b.SetBytes(int64(len(wire)))
			b.ReportAllocs()
			for b.Loop() {
				copy(reuse, wire)
				if crc32.ChecksumIEEE(reuse) == 0 { // its transport checks the payload's CRC too
					b.Fatal("crc")
				}
				var mb pb.MessageBatch
				if err := mb.Unmarshal(reuse); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSend: a batch to the bytes handed to the socket (io.Discard stands for it).
func BenchmarkSend(b *testing.B) {
	for _, n := range sizes {
		batch := benchBatch(n)
		b.Run(fmt.Sprintf("raftnet/cmd=%d", n), func(b *testing.B) {
			e := encoder{copyBelow: defaultCopyBelow}
			b.ReportAllocs()
			for b.Loop() {
				bufs, err := e.Encode(&batch)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := bufs.WriteTo(io.Discard); err != nil {
					b.Fatal(err)
				}
				e.clear()
			}
		})
		b.Run(fmt.Sprintf("dragonboat/cmd=%d", n), func(b *testing.B) {
			buf := make([]byte, batch.SizeUpperLimit())
			b.ReportAllocs()
			for b.Loop() {
				out := pb.MustMarshalTo(&batch, buf)
				_ = crc32.ChecksumIEEE(out)
				if _, err := io.Discard.Write(out); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

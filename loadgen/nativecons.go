package loadgen

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/loadgen/wire"
)

// nativeConsumer reads its assigned partitions (no group coordinator: a native "group" is its
// consumers splitting the partitions, each group reading everything) with one fetch loop per
// leader. A fetch loop sends the next fetch as soon as it has read the next offsets off the batch
// headers, and hands the response to a checker goroutine, so fetching and checking overlap. The
// checker reads only each record's offset and the value's stamp.
type nativeConsumer struct {
	dialTurn atomic.Uint32 // leaders' starting broker, turning
	c        *consumer
	w        *Workload
	assign   map[string][]int32
	offsets  map[string][]int64 // next offset per assigned partition, by topic and partition
}

func newNativeConsumer(c *consumer, w *Workload, assign map[string][]int32) *nativeConsumer {
	nc := &nativeConsumer{c: c, w: w, assign: assign, offsets: map[string][]int64{}}
	for t := range assign {
		nc.offsets[t] = make([]int64, w.Partitions)
	}
	return nc
}

// fetchWork is one fetch response handed to the checker.
type fetchWork struct {
	resp *kmsg.FetchResponse
	buf  []byte
	at   int64
}

// run fetches until ctx ends, refreshing leaders when a fetch loop reports that they moved.
func (nc *nativeConsumer) run(ctx context.Context) {
	for ctx.Err() == nil {
		leaders, addrs, err := nc.leaders()
		if err != nil {
			nc.c.errs.add(err)
			if !sleep(ctx, 200*time.Millisecond) {
				return
			}
			continue
		}
		lctx, cancel := context.WithCancel(ctx)
		var wg sync.WaitGroup
		for id, parts := range leaders {
			wg.Go(func() {
				if err := nc.fetchLoop(lctx, addrs[id], parts); err != nil && lctx.Err() == nil {
					nc.c.errs.add(err)
				}
				cancel() // any loop ending means leaders moved or a connection broke: start over
			})
		}
		wg.Wait()
		cancel()
		if !sleep(ctx, 100*time.Millisecond) {
			return
		}
	}
}

// leaders groups the assigned partitions by leader.
func (nc *nativeConsumer) leaders() (map[int32]map[string][]int32, map[int32]string, error) {
	var conn *wire.Conn
	var err error
	start := int(nc.dialTurn.Add(1)) // a different first broker each time (nativeProducer.anyConn)
	for i := range nc.w.Brokers {
		if conn, err = wire.Dial(nc.w.Brokers[(start+i)%len(nc.w.Brokers)], dialTimeout); err == nil {
			break
		}
	}
	if conn == nil {
		return nil, nil, err
	}
	defer conn.Close()
	out := map[int32]map[string][]int32{}
	addrs := map[int32]string{}
	for topic, parts := range nc.assign {
		md, err := nativeMetadata(conn, topic)
		if err != nil {
			return nil, nil, err
		}
		for _, b := range md.Brokers {
			addrs[b.NodeID] = fmt.Sprintf("%s:%d", b.Host, b.Port)
		}
		lead := map[int32]int32{}
		for _, t := range md.Topics {
			for _, p := range t.Partitions {
				lead[p.Partition] = p.Leader
			}
		}
		for _, p := range parts {
			l, ok := lead[p]
			if !ok || l < 0 {
				return nil, nil, fmt.Errorf("%s/%d: no leader", topic, p)
			}
			if out[l] == nil {
				out[l] = map[string][]int32{}
			}
			out[l][topic] = append(out[l][topic], p)
		}
	}
	return out, addrs, nil
}

// fetchLoop fetches parts from one broker until ctx ends or a partition's leadership moves.
func (nc *nativeConsumer) fetchLoop(ctx context.Context, addr string, parts map[string][]int32) error {
	conn, err := wire.Dial(addr, dialTimeout)
	if err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()
	defer conn.Close()
	work := make(chan fetchWork, 1)
	bufs := make(chan []byte, 3)
	for range 3 {
		bufs <- nil
	}
	checkDone := make(chan struct{})
	go func() {
		defer close(checkDone)
		var d wire.Decompressor
		for fw := range work {
			nc.check(fw, &d)
			bufs <- fw.buf
		}
	}()
	defer func() { close(work); <-checkDone }()
	for {
		req := kmsg.NewPtrFetchRequest()
		req.SetVersion(11)
		req.ReplicaID = -1
		req.MaxWaitMillis = 500
		req.MinBytes = 1
		req.MaxBytes = max(50<<20, nc.w.FetchMaxPartitionBytes)
		req.SessionEpoch = -1
		for topic, ps := range parts {
			t := kmsg.NewFetchRequestTopic()
			t.Topic = topic
			for _, p := range ps {
				fp := kmsg.NewFetchRequestTopicPartition()
				fp.Partition = p
				fp.FetchOffset = nc.offsets[topic][p]
				fp.LogStartOffset = -1
				fp.PartitionMaxBytes = nc.w.FetchMaxPartitionBytes
				fp.CurrentLeaderEpoch = -1
				t.Partitions = append(t.Partitions, fp)
			}
			req.Topics = append(req.Topics, t)
		}
		if err := conn.WriteRequest(req); err != nil {
			return err
		}
		var buf []byte
		select {
		case buf = <-bufs:
		case <-ctx.Done():
			return nil
		}
		body, grown, err := conn.ReadResponse(buf)
		if err != nil {
			bufs <- grown
			return err
		}
		at := time.Now().UnixNano()
		resp := req.ResponseKind().(*kmsg.FetchResponse)
		resp.SetVersion(11)
		if err := resp.ReadFrom(body); err != nil {
			bufs <- grown
			return fmt.Errorf("fetch response: %w", err)
		}
		if err := kerr.ErrorForCode(resp.ErrorCode); err != nil {
			bufs <- grown
			return err
		}
		var moved error
		for _, t := range resp.Topics {
			offs := nc.offsets[t.Topic]
			if offs == nil {
				continue
			}
			for _, p := range t.Partitions {
				if p.Partition < 0 || int(p.Partition) >= len(offs) {
					continue
				}
				if err := kerr.ErrorForCode(p.ErrorCode); err != nil {
					if errors.Is(err, kerr.OffsetOutOfRange) {
						nc.c.errs.add(err)
						offs[p.Partition] = max(p.LogStartOffset, 0)
						continue
					}
					moved = err
					continue
				}
				// The next offset: past the last whole batch (a fetch may end with a partial one).
				data := p.RecordBatches
				for {
					h, _, rest, ok, _ := wire.NextBatch(data)
					if !ok {
						break
					}
					if next := h.BaseOffset + int64(h.LastOffsetDelta) + 1; next > offs[p.Partition] {
						offs[p.Partition] = next
					}
					data = rest
				}
			}
		}
		work <- fetchWork{resp: resp, buf: grown, at: at}
		if moved != nil {
			return moved
		}
	}
}

// check verifies and times one fetch response's records (the checker goroutine).
func (nc *nativeConsumer) check(fw fetchWork, d *wire.Decompressor) {
	c, g := nc.c, nc.c.group
	c.e2e.Lock()
	defer c.e2e.Unlock()
	for _, t := range fw.resp.Topics {
		ti, ok := g.topicIndex[t.Topic]
		if !ok {
			continue
		}
		for _, p := range t.Partitions {
			if p.ErrorCode != 0 || int(p.Partition) >= g.partitions || len(p.RecordBatches) == 0 {
				continue
			}
			pt := c.beginPartition(ti*g.partitions + int(p.Partition))
			data := p.RecordBatches
			for {
				h, recs, rest, ok, _ := wire.NextBatch(data)
				if !ok {
					break
				}
				data = rest
				if recs == nil || h.Control() {
					continue
				}
				if pt.seen(h.BaseOffset + int64(h.LastOffsetDelta)) {
					continue // already seen (a fetch from inside a batch returns it whole)
				}
				if codec := h.Codec(); codec != wire.CodecNone {
					var err error
					if recs, err = d.Decompress(codec, recs); err != nil {
						c.errs.add(err)
						continue
					}
				}
				it := wire.Records(recs, h.Count)
				for {
					delta, v, ok := it.Next()
					if !ok {
						break
					}
					if off := h.BaseOffset + int64(delta); !pt.seen(off) {
						pt.record(off, v, fw.at)
					}
				}
				if it.Err != nil {
					c.errs.add(it.Err)
				}
			}
			pt.end()
		}
	}
}

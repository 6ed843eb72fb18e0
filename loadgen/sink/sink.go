// Package sink is a fake Kafka broker that answers produce requests without storing anything:
// `loadgen sink` runs it so loadgen's own ceiling (records per loadgen CPU-second) can be measured
// with nothing else in the way. It serves what a produce-only loadgen run needs: ApiVersions,
// Metadata, CreateTopics, DeleteTopics, InitProducerID and Produce (Fetch answers empty).
package sink

import (
	"bufio"
	"context"
	"encoding/binary"
	"io"
	"net"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// versions are the non-flexible ranges served (so every header is the classic one).
var versions = map[int16][2]int16{
	int16(kmsg.Produce):        {3, 7},
	int16(kmsg.Fetch):          {4, 11},
	int16(kmsg.Metadata):       {0, 8},
	int16(kmsg.ApiVersions):    {0, 2},
	int16(kmsg.CreateTopics):   {0, 4},
	int16(kmsg.DeleteTopics):   {0, 3},
	int16(kmsg.InitProducerID): {0, 1},
}

// Sink is one fake broker.
type Sink struct {
	ln     net.Listener
	host   string
	port   int32
	mu     sync.RWMutex
	topics map[string]int32 // partitions
	offs   map[string][]atomic.Int64
	nextID atomic.Int64

	Records atomic.Int64 // records acknowledged
	Bytes   atomic.Int64 // batch bytes received
}

// Listen starts a sink on addr.
func Listen(addr string) (*Sink, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, err
	}
	host, port, _ := net.SplitHostPort(ln.Addr().String())
	p, _ := strconv.Atoi(port)
	return &Sink{ln: ln, host: host, port: int32(p), topics: map[string]int32{}, offs: map[string][]atomic.Int64{}}, nil
}

// Addr is the listening address.
func (s *Sink) Addr() string { return s.ln.Addr().String() }

// Serve answers connections until ctx ends.
func (s *Sink) Serve(ctx context.Context) error {
	stop := context.AfterFunc(ctx, func() { s.ln.Close() })
	defer stop()
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := s.ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return err
		}
		wg.Go(func() {
			stopc := context.AfterFunc(ctx, func() { c.Close() })
			defer stopc()
			defer c.Close()
			s.serveConn(c)
		})
	}
}

func (s *Sink) serveConn(c net.Conn) {
	br := bufio.NewReaderSize(c, 1<<20)
	bw := bufio.NewWriterSize(c, 64<<10)
	var buf, out []byte
	for {
		var sz [4]byte
		if _, err := io.ReadFull(br, sz[:]); err != nil {
			return
		}
		n := int(binary.BigEndian.Uint32(sz[:]))
		if n < 10 || n > 256<<20 {
			return
		}
		if cap(buf) < n {
			buf = make([]byte, n)
		}
		buf = buf[:n]
		if _, err := io.ReadFull(br, buf); err != nil {
			return
		}
		key, ver := int16(binary.BigEndian.Uint16(buf)), int16(binary.BigEndian.Uint16(buf[2:]))
		corr := binary.BigEndian.Uint32(buf[4:])
		cl := int(int16(binary.BigEndian.Uint16(buf[8:])))
		body := buf[10+max(cl, 0):]
		resp, noReply := s.handle(key, ver, body)
		if noReply {
			continue
		}
		out = binary.BigEndian.AppendUint32(out[:0], 0)
		out = binary.BigEndian.AppendUint32(out, corr)
		out = resp.AppendTo(out)
		binary.BigEndian.PutUint32(out, uint32(len(out)-4))
		if _, err := bw.Write(out); err != nil {
			return
		}
		if br.Buffered() == 0 {
			if err := bw.Flush(); err != nil {
				return
			}
		}
	}
}

func (s *Sink) handle(key, ver int16, body []byte) (kmsg.Response, bool) {
	r, ok := versions[key]
	if key == int16(kmsg.ApiVersions) && (!ok || ver > r[1]) {
		// Kafka's answer to a newer ApiVersions: a v0 error listing what is served.
		resp := kmsg.NewPtrApiVersionsResponse()
		resp.ErrorCode = kerr.UnsupportedVersion.Code
		s.fillVersions(resp)
		return resp, false
	}
	req := kmsg.RequestForKey(key)
	if !ok || ver < r[0] || ver > r[1] || req == nil {
		return nil, true // unsupported: the client times out, as it would with a real broker's close
	}
	req.SetVersion(ver)
	if err := req.ReadFrom(body); err != nil {
		return nil, true
	}
	resp := req.ResponseKind()
	resp.SetVersion(ver)
	switch q := req.(type) {
	case *kmsg.ApiVersionsRequest:
		s.fillVersions(resp.(*kmsg.ApiVersionsResponse))
	case *kmsg.MetadataRequest:
		s.metadata(q, resp.(*kmsg.MetadataResponse))
	case *kmsg.CreateTopicsRequest:
		r := resp.(*kmsg.CreateTopicsResponse)
		s.mu.Lock()
		for _, t := range q.Topics {
			rt := kmsg.NewCreateTopicsResponseTopic()
			rt.Topic = t.Topic
			if _, ok := s.topics[t.Topic]; ok {
				rt.ErrorCode = kerr.TopicAlreadyExists.Code
			} else {
				n := max(t.NumPartitions, 1)
				s.topics[t.Topic] = n
				s.offs[t.Topic] = make([]atomic.Int64, n)
			}
			r.Topics = append(r.Topics, rt)
		}
		s.mu.Unlock()
	case *kmsg.DeleteTopicsRequest:
		r := resp.(*kmsg.DeleteTopicsResponse)
		s.mu.Lock()
		for _, t := range q.TopicNames {
			delete(s.topics, t)
			delete(s.offs, t)
			rt := kmsg.NewDeleteTopicsResponseTopic()
			rt.Topic = kmsg.StringPtr(t)
			r.Topics = append(r.Topics, rt)
		}
		s.mu.Unlock()
	case *kmsg.InitProducerIDRequest:
		r := resp.(*kmsg.InitProducerIDResponse)
		r.ProducerID = s.nextID.Add(1)
	case *kmsg.ProduceRequest:
		r := resp.(*kmsg.ProduceResponse)
		s.mu.RLock()
		for _, t := range q.Topics {
			offs := s.offs[t.Topic]
			rt := kmsg.NewProduceResponseTopic()
			rt.Topic = t.Topic
			for _, p := range t.Partitions {
				rp := kmsg.NewProduceResponseTopicPartition()
				rp.Partition = p.Partition
				if int(p.Partition) >= len(offs) || p.Partition < 0 {
					rp.ErrorCode = kerr.UnknownTopicOrPartition.Code
				} else {
					n := batchRecords(p.Records)
					rp.BaseOffset = offs[p.Partition].Add(n) - n
					s.Records.Add(n)
					s.Bytes.Add(int64(len(p.Records)))
				}
				rt.Partitions = append(rt.Partitions, rp)
			}
			r.Topics = append(r.Topics, rt)
		}
		s.mu.RUnlock()
		if q.Acks == 0 {
			return nil, true
		}
	case *kmsg.FetchRequest:
		time.Sleep(time.Duration(min(q.MaxWaitMillis, 500)) * time.Millisecond)
	}
	return resp, false
}

func (s *Sink) fillVersions(r *kmsg.ApiVersionsResponse) {
	for k, v := range versions {
		ak := kmsg.NewApiVersionsResponseApiKey()
		ak.ApiKey, ak.MinVersion, ak.MaxVersion = k, v[0], v[1]
		r.ApiKeys = append(r.ApiKeys, ak)
	}
}

func (s *Sink) metadata(q *kmsg.MetadataRequest, r *kmsg.MetadataResponse) {
	b := kmsg.NewMetadataResponseBroker()
	b.NodeID, b.Host, b.Port = 0, s.host, s.port
	r.Brokers = append(r.Brokers, b)
	r.ControllerID = 0
	s.mu.Lock()
	defer s.mu.Unlock()
	var names []string
	if q.Topics == nil {
		for t := range s.topics {
			names = append(names, t)
		}
	}
	for _, t := range q.Topics {
		if t.Topic != nil {
			names = append(names, *t.Topic)
		}
	}
	for _, name := range names {
		rt := kmsg.NewMetadataResponseTopic()
		rt.Topic = kmsg.StringPtr(name)
		n, ok := s.topics[name]
		if !ok {
			rt.ErrorCode = kerr.UnknownTopicOrPartition.Code
		}
		for p := range n {
			rp := kmsg.NewMetadataResponseTopicPartition()
			rp.Partition, rp.Leader = p, 0
			rp.Replicas, rp.ISR = []int32{0}, []int32{0}
			rt.Partitions = append(rt.Partitions, rp)
		}
		r.Topics = append(r.Topics, rt)
	}
}

// batchRecords sums the record counts of the v2 batches in b.
func batchRecords(b []byte) int64 {
	var n int64
	for len(b) >= 61 {
		l := int(int32(binary.BigEndian.Uint32(b[8:])))
		if l < 49 || len(b) < 12+l {
			break
		}
		n += int64(int32(binary.BigEndian.Uint32(b[57:])))
		b = b[12+l:]
	}
	return n
}

package broker

import (
	"encoding/binary"
	"reflect"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/segment"
)

func init() {
	// Fetch from v4: record batch v2 only; v13+ name topics by id (KIP-516); up to 17 (Kafka 4.0's;
	// the fields v15-v17 add are a follower's, unused here). The range must include 10 (kafka-go picks
	// Fetch only from {2, 5, 10}). The handler answers itself, after a long poll when there is nothing
	// to send.
	register(kmsg.Fetch, 4, 17, func(b *Broker, c *call) kmsg.Response {
		b.handleFetch(c, c.req.(*kmsg.FetchRequest))
		return nil
	})
}

// defaultFetchMaxBytes applies to Fetch versions before MaxBytes existed, and to nonsense values.
const defaultFetchMaxBytes = 50 << 20

// fetchPartition is one partition of a fetch: where it reads from and what it found.
type fetchPartition struct {
	partition   int32
	offset      int64
	maxBytes    int32
	leaderEpoch int32              // the client's current leader epoch (-1: unknown, or before v9)
	part        *replica.Partition // nil when not hosted here

	errCode                int16
	highWatermark, lso, ls int64
	data                   *segment.ReadResult  // nil when there is nothing to send
	aborted                []replica.AbortedTxn // read_committed: aborted transactions in the data
	session                *sessionPart         // the fetch session's entry, if any
}

type fetchTopic struct {
	name  string
	id    [16]byte // Fetch v13+: the id the client named the topic by
	parts []fetchPartition
}

// handleFetch reads committed batches as file ranges and answers with them, sent by netio with sendfile.
// When fewer than MinBytes are available it parks on the partitions' append signals until enough data
// arrives or MaxWaitMillis passes.
func (b *Broker) handleFetch(c *call, req *kmsg.FetchRequest) {
	md := b.ctl.Metadata()
	if req.Version >= 13 {
		b.nameTopicIDs(md, req)
	}
	var sf sessionFetch
	if req.Version >= 7 {
		sf = b.sessions.resolve(req, time.Now())
		if sf.errCode != 0 {
			b.respondFetch(c, req, fetchHeader{errCode: sf.errCode}, nil)
			return
		}
	}
	var topics []fetchTopic
	if sf.incremental {
		topics = sf.sess.fetchTopics()
	} else {
		topics = requestedTopics(req, sf.sess)
	}
	for i := range topics {
		ft := &topics[i]
		for j := range ft.parts {
			fp := &ft.parts[j]
			if req.Version >= 13 {
				if t, ok := md.Topics[ft.name]; !ok || t.ID != ft.id {
					// An id never known, or of a topic deleted (and maybe recreated) since.
					fp.errCode = kerr.UnknownTopicID.Code
					fp.highWatermark, fp.lso, fp.ls = -1, -1, -1
					continue
				}
			}
			if !b.authorize(c, resTopic, aclRead, ft.name) {
				fp.errCode, fp.highWatermark, fp.lso, fp.ls = kerr.TopicAuthorizationFailed.Code, -1, -1, -1
			} else if part, ok := b.replicas.Partition(ft.name, fp.partition); ok {
				fp.part = part
			} else {
				fp.errCode = errorCode(b.missingPartitionError(ft.name, fp.partition))
				fp.highWatermark, fp.lso, fp.ls = -1, -1, -1
			}
		}
	}
	hdr := fetchHeader{}
	if sf.sess != nil {
		hdr.sessionID = sf.sess.id
	}
	respond := func() {
		if sf.sess != nil {
			topics = sf.sess.respond(topics, sf.incremental)
		}
		b.respondFetch(c, req, hdr, topics)
	}
	maxBytes := int64(req.MaxBytes)
	if req.Version < 3 || maxBytes <= 0 {
		maxBytes = defaultFetchMaxBytes
	}
	deadline := time.Now().Add(time.Duration(req.MaxWaitMillis) * time.Millisecond)
	var timer *time.Timer
	committed := req.Version >= 4 && req.IsolationLevel == readCommitted
	for {
		total, failed := b.readFetch(topics, maxBytes, committed)
		if failed || total >= int64(req.MinBytes) && (total > 0 || req.MinBytes <= 0) || !time.Now().Before(deadline) {
			respond()
			return
		}
		releaseFetch(topics)
		if timer == nil {
			timer = time.NewTimer(time.Until(deadline))
			defer timer.Stop()
		}
		if !b.waitForData(topics, timer.C, committed) {
			respond()
			return
		}
	}
}

// requestedTopics is a full fetch's partitions as the request lists them, tied to the session's
// entries when the fetch opened one.
func requestedTopics(req *kmsg.FetchRequest, sess *fetchSession) []fetchTopic {
	topics := make([]fetchTopic, len(req.Topics))
	for i := range req.Topics {
		rt := &req.Topics[i]
		ft := &topics[i]
		ft.name, ft.id = rt.Topic, rt.TopicID
		ft.parts = make([]fetchPartition, len(rt.Partitions))
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			fp := &ft.parts[j]
			fp.partition, fp.offset, fp.maxBytes, fp.leaderEpoch = rp.Partition, rp.FetchOffset, rp.PartitionMaxBytes, -1
			if req.Version >= 9 {
				fp.leaderEpoch = rp.CurrentLeaderEpoch
			}
			if sess != nil {
				fp.session = sess.index[sessionKey{rt.Topic, rp.Partition}] // not yet shared: no lock needed
			}
		}
	}
	return topics
}

// nameTopicIDs fills in the topic names of a Fetch v13+ request, which names topics by id (an
// unknown id: unknownTopicName, answered UNKNOWN_TOPIC_ID).
func (b *Broker) nameTopicIDs(md *quorum.Metadata, req *kmsg.FetchRequest) {
	name := func(id [16]byte) string {
		if n, ok := b.topicIDs.name(md, id); ok {
			return n
		}
		return unknownTopicName(id)
	}
	for i := range req.Topics {
		req.Topics[i].Topic = name(req.Topics[i].TopicID)
	}
	for i := range req.ForgottenTopics {
		req.ForgottenTopics[i].Topic = name(req.ForgottenTopics[i].TopicID)
	}
}

// fetchHeader is the response's top-level error and session id.
type fetchHeader struct {
	errCode   int16
	sessionID int32
}

// readFetch fills each partition's data, within maxBytes for the whole response; the first batch found is
// always sent whole even when larger (KIP-74), so a consumer never gets stuck behind a big batch.
// read_committed fetches stop at the last stable offset and carry the aborted transactions that may
// have data in what they return.
func (b *Broker) readFetch(topics []fetchTopic, maxBytes int64, committed bool) (total int64, failed bool) {
	for i := range topics {
		for j := range topics[i].parts {
			fp := &topics[i].parts[j]
			if fp.part == nil {
				failed = true
				continue
			}
			fp.errCode, fp.aborted = 0, fp.aborted[:0]
			fp.highWatermark = fp.part.HighWatermark()
			fp.lso = fp.part.LastStableOffset()
			fp.ls = fp.part.LogStartOffset()
			if code := leaderCheck(fp.part, fp.leaderEpoch); code != 0 {
				fp.errCode = code
				fp.highWatermark, fp.lso, fp.ls = -1, -1, -1
				failed = true
				continue
			}
			if fp.offset > fp.highWatermark && !fp.part.ConfirmLeadership(confirmTimeout) {
				// A leader just back from a pause may not know it was deposed and lag the new
				// leader's data: it must not tell a consumer its offset is out of range.
				fp.errCode = kerr.NotLeaderForPartition.Code
				fp.highWatermark, fp.lso, fp.ls = -1, -1, -1
				failed = true
				continue
			}
			if err := fp.part.ReadOffsetError(fp.offset, fp.ls); err != nil {
				fp.errCode = errorCode(err)
				failed = true
				continue
			}
			remaining := maxBytes - total
			end := fp.highWatermark
			if committed {
				end = fp.lso
			}
			if fp.offset >= end || remaining <= 0 || fp.maxBytes <= 0 && total > 0 {
				continue
			}
			limit := min(int64(max(fp.maxBytes, 1)), remaining)
			var rr *segment.ReadResult
			var err error
			if committed {
				rr, err = fp.part.ReadCommitted(fp.offset, int(limit))
			} else {
				rr, err = fp.part.Read(fp.offset, int(limit))
			}
			if err != nil {
				fp.errCode = errorCode(err)
				failed = true
				continue
			}
			if rr.Size == 0 || total > 0 && rr.Size > remaining {
				rr.Release()
				continue
			}
			fp.data = rr
			total += rr.Size
			if committed {
				fp.aborted = fp.part.AbortedTxns(fp.aborted[:0], fp.offset, end)
			}
		}
	}
	return total, failed
}

// confirmTimeout bounds the Raft round that confirms leadership before an out-of-range answer.
const confirmTimeout = 2 * time.Second

// leaderCheck is Kafka's fencing of a partition request (KIP-320): this node must lead the partition,
// at the client's epoch when it sent one. 0 or the error code to answer.
func leaderCheck(part *replica.Partition, clientEpoch int32) int16 {
	isLeader, _, epoch := part.Leader()
	switch {
	case !isLeader:
		return kerr.NotLeaderForPartition.Code
	case clientEpoch < 0 || clientEpoch == epoch:
		return 0
	case clientEpoch > epoch:
		return kerr.UnknownLeaderEpoch.Code // the client knows a newer leader than this one does
	default:
		return kerr.FencedLeaderEpoch.Code // the client's metadata is stale
	}
}

func releaseFetch(topics []fetchTopic) {
	for i := range topics {
		for j := range topics[i].parts {
			if fp := &topics[i].parts[j]; fp.data != nil {
				fp.data.Release()
				fp.data = nil
			}
		}
	}
}

// waitForData parks until any fetched partition gets data past its fetch offset, the deadline passes
// (false) or the broker closes (false).
func (b *Broker) waitForData(topics []fetchTopic, deadline <-chan time.Time, committed bool) bool {
	cases := []reflect.SelectCase{
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(deadline)},
		{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(b.ctx.Done())},
	}
	var single <-chan struct{}
	for i := range topics {
		for j := range topics[i].parts {
			fp := &topics[i].parts[j]
			if fp.part == nil {
				continue
			}
			ch := fp.part.Wait(fp.offset)
			if committed {
				ch = fp.part.WaitStable(fp.offset)
			}
			single = ch
			cases = append(cases, reflect.SelectCase{Dir: reflect.SelectRecv, Chan: reflect.ValueOf(ch)})
		}
	}
	if len(cases) == 3 { // the common case: one partition, no reflection
		select {
		case <-deadline:
			return false
		case <-b.ctx.Done():
			return false
		case <-single:
			return true
		}
	}
	chosen, _, _ := reflect.Select(cases)
	return chosen >= 2
}

// respondFetch queues the encoded response; the file ranges are released once netio has sent them.
func (b *Broker) respondFetch(c *call, req *kmsg.FetchRequest, fh fetchHeader, topics []fetchTopic) {
	bp := bufPool.Get().(*[]byte)
	parts, buf := encodeFetchResponse((*bp)[:0], c.hdr.correlationID, req.Version, fh, topics)
	*bp = buf
	metrics.Request(c.hdr.key, c.hdr.arrived)
	metrics.BytesOut(int64(binary.BigEndian.Uint32(buf)) + 4)
	countFetched(topics)
	c.nr.Respond(&netio.Response{
		Parts: parts,
		OnDone: func() {
			releaseFetch(topics)
			if cap(*bp) <= 1<<20 {
				bufPool.Put(bp)
			}
		},
	})
}

// encodeFetchResponse encodes the FetchResponse by hand so the record bytes can stay in the segment
// files: the response is a list of netio parts, byte runs of our encoding (all in buf, which it returns)
// interleaved with file ranges. The layout is FetchResponse v4..v17 exactly as kmsg encodes it, which the
// tests check by decoding it with kmsg.
func encodeFetchResponse(buf []byte, correlationID int32, v int16, fh fetchHeader, topics []fetchTopic) ([]netio.Part, []byte) {
	flexible := v >= 12
	buf = appendResponseHeader(buf, correlationID, flexible)
	buf = kbin.AppendInt32(buf, 0) // throttle
	if v >= 7 {
		buf = kbin.AppendInt16(buf, fh.errCode)
		buf = kbin.AppendInt32(buf, fh.sessionID) // 0: no session
	}
	type cut struct {
		at   int // position in buf where the file ranges go
		data *segment.ReadResult
	}
	var cuts []cut
	buf = appendArrayLen(buf, len(topics), flexible)
	for i := range topics {
		ft := &topics[i]
		switch {
		case v >= 13:
			buf = append(buf, ft.id[:]...)
		case flexible:
			buf = kbin.AppendCompactString(buf, ft.name)
		default:
			buf = kbin.AppendString(buf, ft.name)
		}
		buf = appendArrayLen(buf, len(ft.parts), flexible)
		for j := range ft.parts {
			fp := &ft.parts[j]
			buf = kbin.AppendInt32(buf, fp.partition)
			buf = kbin.AppendInt16(buf, fp.errCode)
			buf = kbin.AppendInt64(buf, fp.highWatermark)
			buf = kbin.AppendInt64(buf, fp.lso) // v4+
			if v >= 5 {
				buf = kbin.AppendInt64(buf, fp.ls)
			}
			// Aborted transactions: null unless a read_committed fetch found some.
			switch {
			case len(fp.aborted) > 0:
				buf = appendArrayLen(buf, len(fp.aborted), flexible)
				for _, a := range fp.aborted {
					buf = kbin.AppendInt64(buf, a.ProducerID)
					buf = kbin.AppendInt64(buf, a.FirstOffset)
					if flexible {
						buf = append(buf, 0)
					}
				}
			case flexible:
				buf = kbin.AppendUvarint(buf, 0)
			default:
				buf = kbin.AppendInt32(buf, -1)
			}
			if v >= 11 {
				buf = kbin.AppendInt32(buf, -1) // preferred read replica
			}
			var size int64
			if fp.data != nil {
				size = fp.data.Size
			}
			if flexible {
				buf = kbin.AppendUvarint(buf, uint32(size+1))
			} else {
				buf = kbin.AppendInt32(buf, int32(size))
			}
			if fp.data != nil {
				cuts = append(cuts, cut{at: len(buf), data: fp.data})
			}
			if flexible {
				buf = append(buf, 0) // partition tags
			}
		}
		if flexible {
			buf = append(buf, 0) // topic tags
		}
	}
	if flexible {
		buf = append(buf, 0) // top-level tags
	}

	var fileBytes int64
	parts := make([]netio.Part, 0, 2*len(cuts)+1)
	last := 0
	for _, ct := range cuts {
		parts = append(parts, netio.Part{Bytes: buf[last:ct.at]})
		for _, r := range ct.data.Ranges {
			parts = append(parts, netio.Part{File: r.File, Off: r.Pos, Len: r.Len})
			fileBytes += r.Len
		}
		last = ct.at
	}
	parts = append(parts, netio.Part{Bytes: buf[last:]})
	binary.BigEndian.PutUint32(buf, uint32(int64(len(buf))-4+fileBytes))
	return parts, buf
}

func appendArrayLen(buf []byte, n int, flexible bool) []byte {
	if flexible {
		return kbin.AppendCompactArrayLen(buf, n)
	}
	return kbin.AppendArrayLen(buf, n)
}

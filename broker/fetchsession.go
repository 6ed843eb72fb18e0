package broker

import (
	"math"
	"math/rand/v2"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// Fetch sessions (KIP-227, Fetch v7+). A consumer's first fetch (session id 0, epoch 0) lists every
// partition and opens a session that remembers them, with their fetch offsets and what the last
// response told about each (high watermark, last stable offset, log start offset). Its next fetches
// are incremental: they list only the partitions whose fetch position changed, plus those to forget,
// and the response carries only the partitions with something new (records, an error, or a changed
// watermark). With 1,000 partitions that turns a ~33 KB request and ~37 KB response into ~100 bytes
// each when little is produced (results/2026-12-04-fetch-sessions.md).
//
// Epoch -1 fetches without a session (and closes the one named); a wrong epoch is answered
// INVALID_FETCH_SESSION_EPOCH and an unknown session FETCH_SESSION_ID_NOT_FOUND, after which the
// client starts over with a full fetch.
//
// The cache is bounded (Kafka's max.incremental.fetch.session.cache.slots, 1,000 by default). When it
// is full a new session takes the slot of a session unused for two minutes (Kafka's
// min.incremental.fetch.session.eviction.ms) or of the smallest session when it is smaller than the
// new one; otherwise it fetches without a session. So a client that opens a new session on every poll
// cannot push out the sessions of consumers that use theirs.

// DefaultFetchSessionSlots is Kafka's max.incremental.fetch.session.cache.slots.
const DefaultFetchSessionSlots = 1000

// fetchSessionStaleAfter is Kafka's min.incremental.fetch.session.eviction.ms.
const fetchSessionStaleAfter = 2 * time.Minute

// sessionPart is one partition of a session: the client's fetch position and what was last sent.
type sessionPart struct {
	topic       string
	id          [16]byte // the topic id the client named it by (Fetch v13+)
	partition   int32
	offset      int64
	maxBytes    int32
	leaderEpoch int32
	// The values the last response carried for this partition (-2: never sent).
	hw, lso, ls int64
}

type sessionKey struct {
	topic     string
	partition int32
}

// fetchSession is one client's session.
type fetchSession struct {
	id int32

	mu    sync.Mutex
	epoch int32          // the epoch the next incremental fetch must carry
	parts []*sessionPart // in fetch order: partitions sent records move to the end (fairness)
	index map[sessionKey]*sessionPart

	// Guarded by the cache's mutex.
	lastUsed time.Time
	size     int // partitions when last used, for eviction
}

// fetchSessions is a broker's session cache.
type fetchSessions struct {
	mu    sync.Mutex
	slots int // 0: sessions disabled
	byID  map[int32]*fetchSession
}

func newFetchSessions(slots int) *fetchSessions {
	return &fetchSessions{slots: slots, byID: map[int32]*fetchSession{}}
}

// nextEpoch is Kafka's FetchMetadata.nextEpoch: epochs run 1..MaxInt32, then wrap to 1.
func nextEpoch(e int32) int32 {
	if e == math.MaxInt32 {
		return 1
	}
	return e + 1
}

// sessionFetch is what a fetch request resolves to.
type sessionFetch struct {
	sess        *fetchSession // nil: a fetch without a session
	incremental bool
	errCode     int16 // a top-level error to answer instead of fetching
}

// resolve applies a Fetch v7+ request's session fields: closes, opens or advances a session.
func (c *fetchSessions) resolve(req *kmsg.FetchRequest, now time.Time) sessionFetch {
	full := req.SessionEpoch == 0 || req.SessionEpoch == -1
	if full {
		if req.SessionID != 0 {
			c.remove(req.SessionID) // the client replaces or closes its session
		}
		if req.SessionEpoch == -1 {
			return sessionFetch{} // sessionless
		}
		return sessionFetch{sess: c.open(req, now)}
	}
	c.mu.Lock()
	s := c.byID[req.SessionID]
	if s != nil {
		s.lastUsed = now
	}
	c.mu.Unlock()
	if s == nil {
		return sessionFetch{errCode: kerr.FetchSessionIDNotFound.Code}
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if req.SessionEpoch != s.epoch {
		return sessionFetch{errCode: kerr.InvalidFetchSessionEpoch.Code}
	}
	s.epoch = nextEpoch(s.epoch)
	for i := range req.Topics {
		rt := &req.Topics[i]
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			k := sessionKey{rt.Topic, rp.Partition}
			sp := s.index[k]
			if sp == nil {
				sp = &sessionPart{topic: rt.Topic, id: rt.TopicID, partition: rp.Partition, hw: -2, lso: -2, ls: -2}
				s.index[k] = sp
				s.parts = append(s.parts, sp)
			}
			sp.offset, sp.maxBytes, sp.leaderEpoch = rp.FetchOffset, rp.PartitionMaxBytes, -1
			if req.Version >= 9 {
				sp.leaderEpoch = rp.CurrentLeaderEpoch
			}
		}
	}
	if len(req.ForgottenTopics) > 0 {
		for _, ft := range req.ForgottenTopics {
			for _, p := range ft.Partitions {
				delete(s.index, sessionKey{ft.Topic, p})
			}
		}
		kept := s.parts[:0]
		for _, sp := range s.parts {
			if s.index[sessionKey{sp.topic, sp.partition}] == sp {
				kept = append(kept, sp)
			}
		}
		clear(s.parts[len(kept):])
		s.parts = kept
	}
	c.mu.Lock()
	s.size = len(s.parts)
	c.mu.Unlock()
	return sessionFetch{sess: s, incremental: true}
}

// open starts a session over a full fetch's partitions, or returns nil (a fetch without a session)
// when the cache is disabled or full of sessions it may not evict.
func (c *fetchSessions) open(req *kmsg.FetchRequest, now time.Time) *fetchSession {
	s := &fetchSession{epoch: 1, index: map[sessionKey]*sessionPart{}, lastUsed: now}
	for i := range req.Topics {
		rt := &req.Topics[i]
		for j := range rt.Partitions {
			rp := &rt.Partitions[j]
			sp := &sessionPart{topic: rt.Topic, id: rt.TopicID, partition: rp.Partition, offset: rp.FetchOffset,
				maxBytes: rp.PartitionMaxBytes, leaderEpoch: -1, hw: -2, lso: -2, ls: -2}
			if req.Version >= 9 {
				sp.leaderEpoch = rp.CurrentLeaderEpoch
			}
			k := sessionKey{rt.Topic, rp.Partition}
			if s.index[k] == nil {
				s.index[k] = sp
				s.parts = append(s.parts, sp)
			}
		}
	}
	s.size = len(s.parts)
	if s.size == 0 {
		return nil // nothing to remember: Kafka gives no session to an empty full fetch either
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.slots <= 0 {
		return nil
	}
	if len(c.byID) >= c.slots && !c.evictFor(s.size, now) {
		return nil
	}
	for {
		id := rand.Int32N(math.MaxInt32) + 1
		if c.byID[id] == nil {
			s.id = id
			break
		}
	}
	c.byID[s.id] = s
	return s
}

// evictFor frees a slot for a new session of size partitions: the least recently used session if it
// has been unused for fetchSessionStaleAfter, else the smallest session if it is smaller. Callers
// hold c.mu.
func (c *fetchSessions) evictFor(size int, now time.Time) bool {
	var lru, smallest *fetchSession
	for _, s := range c.byID {
		if lru == nil || s.lastUsed.Before(lru.lastUsed) {
			lru = s
		}
		if smallest == nil || s.size < smallest.size {
			smallest = s
		}
	}
	switch {
	case lru != nil && now.Sub(lru.lastUsed) >= fetchSessionStaleAfter:
		delete(c.byID, lru.id)
	case smallest != nil && smallest.size < size:
		delete(c.byID, smallest.id)
	default:
		return false
	}
	return true
}

func (c *fetchSessions) remove(id int32) {
	c.mu.Lock()
	delete(c.byID, id)
	c.mu.Unlock()
}

// fetchTopics lays a session's partitions out as a fetch: consecutive partitions of one topic form
// one topic entry (after rotation a topic may appear more than once, as in Kafka's responses).
func (s *fetchSession) fetchTopics() []fetchTopic {
	s.mu.Lock()
	defer s.mu.Unlock()
	var topics []fetchTopic
	for _, sp := range s.parts {
		if n := len(topics); n == 0 || topics[n-1].name != sp.topic {
			topics = append(topics, fetchTopic{name: sp.topic, id: sp.id})
		}
		ft := &topics[len(topics)-1]
		ft.parts = append(ft.parts, fetchPartition{partition: sp.partition, offset: sp.offset, maxBytes: sp.maxBytes,
			leaderEpoch: sp.leaderEpoch, session: sp})
	}
	return topics
}

// respond records what a response sends and, for an incremental fetch, keeps only the partitions
// with something new: records, an error, or a watermark that changed since the last response.
// Partitions that got records move to the end of the session, so the next fetch serves the others
// first when the response size limit cuts it short.
func (s *fetchSession) respond(topics []fetchTopic, incremental bool) []fetchTopic {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := topics[:0]
	var moved []*sessionPart
	for _, ft := range topics {
		kept := ft.parts[:0]
		for _, fp := range ft.parts {
			sp := fp.session
			changed := fp.errCode != 0 || fp.data != nil || sp == nil ||
				fp.highWatermark != sp.hw || fp.lso != sp.lso || fp.ls != sp.ls
			if sp != nil {
				sp.hw, sp.lso, sp.ls = fp.highWatermark, fp.lso, fp.ls
				if fp.data != nil {
					moved = append(moved, sp)
				}
			}
			if changed || !incremental {
				kept = append(kept, fp)
			}
		}
		if len(kept) > 0 {
			ft.parts = kept
			out = append(out, ft)
		}
	}
	if len(moved) > 0 && len(moved) < len(s.parts) {
		isMoved := make(map[*sessionPart]bool, len(moved))
		for _, sp := range moved {
			isMoved[sp] = true
		}
		kept := make([]*sessionPart, 0, len(s.parts))
		for _, sp := range s.parts {
			if !isMoved[sp] {
				kept = append(kept, sp)
			}
		}
		s.parts = append(kept, moved...)
	}
	return out
}

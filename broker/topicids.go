package broker

import (
	"sync/atomic"

	"github.com/sluicebroker/sluice/quorum"
)

// Topic ids (KIP-516) are the controller's random UUIDs, one per topic for its lifetime; Fetch v13+
// names topics by them. The index from id to name is built once per metadata version, so a fetch of
// many topics costs a map lookup per topic, not a scan of every topic.

type topicIndex struct {
	md   *quorum.Metadata
	byID map[[16]byte]string
}

type topicIDs struct{ cur atomic.Pointer[topicIndex] }

// name returns the name of the topic with id in md.
func (t *topicIDs) name(md *quorum.Metadata, id [16]byte) (string, bool) {
	idx := t.cur.Load()
	if idx == nil || idx.md != md {
		idx = &topicIndex{md: md, byID: make(map[[16]byte]string, len(md.Topics))}
		for name, tm := range md.Topics {
			idx.byID[tm.ID] = name
		}
		t.cur.Store(idx)
	}
	n, ok := idx.byID[id]
	return n, ok
}

// unknownTopicName stands in for the name of a topic id no topic has: no topic can be named so, and
// each unknown id keeps its own (a fetch session keeps its place; it is answered UNKNOWN_TOPIC_ID).
func unknownTopicName(id [16]byte) string { return "\x00unknown topic id " + string(id[:]) }

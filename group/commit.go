package group

import (
	"time"

	"github.com/twmb/franz-go/pkg/kerr"
)

// What OffsetCommit and TxnOffsetCommit share: the check of a committer that names a member, and
// turning the request's offsets into records to write and values to apply once written.

// offsetMetadataMax is Kafka's offset.metadata.max.bytes: an offset with more metadata is not
// written and its partition answers OFFSET_METADATA_TOO_LARGE.
const offsetMetadataMax = 4096

func metadataTooLarge(md *string) bool { return md != nil && len(*md) > offsetMetadataMax }

// committerError checks a committer that gives its member id and generation against g (which
// exists): 0, or the error code to answer. Callers hold c.mu.
func (g *group) committerError(instanceID *string, memberID string, generation int32) int16 {
	switch {
	case g.fenced(instanceID, memberID):
		return kerr.FencedInstanceID.Code
	case g.members[memberID] == nil:
		return kerr.UnknownMemberID.Code
	case generation != g.generation:
		return kerr.IllegalGeneration.Code
	case g.state == stateCompleting:
		return kerr.RebalanceInProgress.Code
	}
	return 0
}

// topicPartition names one partition whose offset a group commits.
type topicPartition struct {
	topic     string
	partition int32
}

// offsetCommits gathers one request's offsets of a group: the records to write and the values to
// apply once they are written.
type offsetCommits struct {
	group string
	now   time.Time
	recs  []Record
	vals  map[topicPartition]Offset
}

func newOffsetCommits(group string) *offsetCommits {
	return &offsetCommits{group: group, now: time.Now(), vals: map[topicPartition]Offset{}}
}

// add takes one partition's offset, unless its metadata is too large.
func (oc *offsetCommits) add(topic string, partition int32, offset int64, leaderEpoch int32, metadata *string) {
	if metadataTooLarge(metadata) {
		return
	}
	md := ""
	if metadata != nil {
		md = *metadata
	}
	o := Offset{Offset: offset, LeaderEpoch: leaderEpoch, Metadata: md, CommitTime: oc.now}
	oc.vals[topicPartition{topic, partition}] = o
	oc.recs = append(oc.recs, Record{Key: offsetKey(oc.group, topic, partition), Value: offsetValue(o)})
}

package broker

import (
	"context"
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/segment"
)

func TestErrorCode(t *testing.T) {
	for _, tc := range []struct {
		err  error
		want *kerr.Error
	}{
		{kerr.InvalidProducerEpoch, kerr.InvalidProducerEpoch},
		{segment.ErrOffsetOutOfRange, kerr.OffsetOutOfRange},
		{segment.ErrBadMagic, kerr.InvalidRecord},
		{segment.ErrCorrupt, kerr.CorruptMessage},
		{segment.ErrTruncated, kerr.CorruptMessage},
		{segment.ErrClosed, kerr.NotLeaderForPartition},
		{quorum.ErrNotLeader, kerr.NotLeaderForPartition},
		{quorum.ErrLeadershipLost, kerr.NotLeaderForPartition},
		{quorum.ErrShardNotFound, kerr.NotLeaderForPartition},
		{quorum.ErrShardClosed, kerr.NotLeaderForPartition},
		{quorum.ErrTimeout, kerr.RequestTimedOut},
		{quorum.ErrBusy, kerr.RequestTimedOut},
		{context.DeadlineExceeded, kerr.RequestTimedOut},
		{quorum.ErrPayloadTooBig, kerr.MessageTooLarge},
		{quorum.ErrTopicExists, kerr.TopicAlreadyExists},
		{quorum.ErrUnknownTopic, kerr.UnknownTopicOrPartition},
		{quorum.ErrInvalidPartitions, kerr.InvalidPartitions},
		{quorum.ErrInvalidReplicationFactor, kerr.InvalidReplicationFactor},
		{quorum.ErrUnknownPartition, kerr.UnknownTopicOrPartition},
		{quorum.ErrInvalidReplicas, kerr.InvalidReplicaAssignment},
		{quorum.ErrNoReassignment, kerr.NoReassignmentInProgress},
		{quorum.ErrNoController, kerr.NotController},
		{context.Canceled, kerr.NotController},
		{errors.New("anything else"), kerr.UnknownServerError},
	} {
		for _, err := range []error{tc.err, fmt.Errorf("wrapped: %w", tc.err)} {
			if got := errorCode(err); got != tc.want.Code {
				t.Errorf("errorCode(%v) = %d, want %d (%s)", err, got, tc.want.Code, tc.want.Message)
			}
		}
	}
	if errorCode(nil) != 0 {
		t.Error("errorCode(nil) != 0")
	}
}

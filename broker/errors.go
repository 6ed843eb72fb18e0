package broker

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/segment"
)

var (
	errInvalidRequest     = kerr.InvalidRequest.Code
	errUnsupportedVersion = kerr.UnsupportedVersion.Code
)

// errorCode maps an error from the layers below to the Kafka error code a client expects.
func errorCode(err error) int16 {
	if err == nil {
		return 0
	}
	var ke *kerr.Error
	switch {
	case errors.As(err, &ke):
		return ke.Code
	case errors.Is(err, segment.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange.Code
	case errors.Is(err, segment.ErrBadMagic):
		return kerr.InvalidRecord.Code
	case errors.Is(err, segment.ErrCorrupt), errors.Is(err, segment.ErrTruncated):
		return kerr.CorruptMessage.Code
	case errors.Is(err, quorum.ErrNotLeader), errors.Is(err, quorum.ErrLeadershipLost):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, quorum.ErrShardNotFound), errors.Is(err, quorum.ErrShardClosed):
		return kerr.NotLeaderForPartition.Code
	case errors.Is(err, quorum.ErrTimeout), errors.Is(err, context.DeadlineExceeded):
		return kerr.RequestTimedOut.Code
	case errors.Is(err, quorum.ErrTopicExists):
		return kerr.TopicAlreadyExists.Code
	case errors.Is(err, quorum.ErrUnknownTopic):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, quorum.ErrInvalidPartitions):
		return kerr.InvalidPartitions.Code
	case errors.Is(err, quorum.ErrInvalidReplicationFactor):
		return kerr.InvalidReplicationFactor.Code
	case errors.Is(err, quorum.ErrUnknownPartition):
		return kerr.UnknownTopicOrPartition.Code
	case errors.Is(err, quorum.ErrInvalidReplicas):
		return kerr.InvalidReplicaAssignment.Code
	case errors.Is(err, quorum.ErrNoReassignment):
		return kerr.NoReassignmentInProgress.Code
	case errors.Is(err, quorum.ErrNoController), errors.Is(err, context.Canceled):
		return kerr.NotController.Code
	}
	return kerr.UnknownServerError.Code
}

// errorMessage is the message to put beside a code in responses that carry one.
func errorMessage(err error) *string {
	if err == nil {
		return nil
	}
	s := err.Error()
	return &s
}

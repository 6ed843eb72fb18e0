package broker

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
)

var (
	errInvalidRequest     = kerr.InvalidRequest.Code
	errUnsupportedVersion = kerr.UnsupportedVersion.Code
)

// errorCode maps an error from the layers below to the Kafka error code a client expects: the
// partition's layers through replica.KafkaError (the one map of segment and quorum errors), then the
// controller's.
func errorCode(err error) int16 {
	if err == nil {
		return 0
	}
	var ke *kerr.Error
	if errors.As(replica.KafkaError(err), &ke) {
		return ke.Code
	}
	switch {
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

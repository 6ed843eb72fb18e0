package replica

import (
	"context"
	"errors"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/segment"
)

// KafkaError maps an error of the layers under the Kafka API (segment, quorum, a context's deadline)
// to the Kafka error a client acts on. A *kerr.Error anywhere in the chain is returned as is; an
// error it does not know is returned unchanged (so callers choose their default). It is the one map
// of these errors: the broker's error codes start here and add the controller's own.
func KafkaError(err error) error {
	var ke *kerr.Error
	switch {
	case err == nil:
		return nil
	case errors.As(err, &ke):
		return ke
	case errors.Is(err, segment.ErrOffsetOutOfRange):
		return kerr.OffsetOutOfRange
	case errors.Is(err, segment.ErrBadMagic):
		return kerr.InvalidRecord
	case errors.Is(err, segment.ErrCorrupt), errors.Is(err, segment.ErrTruncated):
		return kerr.CorruptMessage
	case errors.Is(err, segment.ErrClosed),
		errors.Is(err, quorum.ErrNotLeader), errors.Is(err, quorum.ErrLeadershipLost),
		errors.Is(err, quorum.ErrShardNotFound), errors.Is(err, quorum.ErrShardClosed):
		return kerr.NotLeaderForPartition
	case errors.Is(err, quorum.ErrTimeout), errors.Is(err, quorum.ErrBusy), errors.Is(err, context.DeadlineExceeded):
		return kerr.RequestTimedOut
	case errors.Is(err, quorum.ErrPayloadTooBig):
		return kerr.MessageTooLarge
	}
	return err
}

// proposeError is KafkaError for a proposal's outcome: an error it does not know is the server's.
func proposeError(err error) error {
	var ke *kerr.Error
	if errors.As(KafkaError(err), &ke) {
		return ke
	}
	return kerr.UnknownServerError
}

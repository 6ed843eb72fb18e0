package replica

import (
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/segment"
)

// proposeError answers as KafkaError does for every error it knows, bare or wrapped, and
// UNKNOWN_SERVER_ERROR for the rest.
func TestProposeErrorIsKafkaError(t *testing.T) {
	unknown := errors.New("something else")
	for _, err := range []error{quorum.ErrTimeout, quorum.ErrBusy, quorum.ErrPayloadTooBig, quorum.ErrNotLeader,
		quorum.ErrLeadershipLost, quorum.ErrShardNotFound, quorum.ErrShardClosed, kerr.InvalidProducerEpoch} {
		for _, e := range []error{err, fmt.Errorf("proposing: %w", err)} {
			if got, want := proposeError(e), KafkaError(e); got != want {
				t.Errorf("proposeError(%v) = %v, KafkaError %v", e, got, want)
			}
		}
	}
	if got := proposeError(unknown); got != kerr.UnknownServerError || KafkaError(unknown) != unknown {
		t.Errorf("unknown error: proposeError %v, KafkaError %v", got, KafkaError(unknown))
	}
	for err, want := range map[error]error{segment.ErrOffsetOutOfRange: kerr.OffsetOutOfRange, segment.ErrClosed: kerr.NotLeaderForPartition} {
		if got := KafkaError(fmt.Errorf("reading: %w", err)); got != want {
			t.Errorf("KafkaError(%v) = %v, want %v", err, got, want)
		}
	}
}

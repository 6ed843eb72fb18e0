package replica

import (
	"errors"
	"fmt"
	"testing"

	"github.com/twmb/franz-go/pkg/kerr"

	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/segment"
)

// proposeError and readError (partition.go) must answer as KafkaError does for every error they
// know, bare or wrapped.
func TestPartitionErrorMapsAgree(t *testing.T) {
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
	for _, err := range []error{segment.ErrOffsetOutOfRange, segment.ErrClosed, unknown} {
		for _, e := range []error{err, fmt.Errorf("reading: %w", err)} {
			if got, want := readError(e), KafkaError(e); got != want {
				t.Errorf("readError(%v) = %v, KafkaError %v", e, got, want)
			}
		}
	}
}

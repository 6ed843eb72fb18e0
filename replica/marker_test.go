package replica

import (
	"bytes"
	"testing"

	"github.com/sluicebroker/sluice/batch"
	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/segment"
)

// The partition writes markers with its own ControlBatch and reads their coordinator epoch with
// coordinatorEpoch; the coordinators and tests use package batch. They must agree byte for byte.
func TestControlBatchAgreesWithBatchMarker(t *testing.T) {
	for _, tc := range []struct {
		pid              int64
		epoch            int16
		coordinatorEpoch int32
		commit           bool
	}{{7, 0, 1, true}, {1 << 40, 32767, 1<<31 - 1, false}, {3, 5, -1, true}} {
		ours := ControlBatch(tc.pid, tc.epoch, tc.coordinatorEpoch, tc.commit, 1700000000000)
		theirs := batch.Marker(tc.pid, tc.epoch, tc.coordinatorEpoch, tc.commit, 1700000000000)
		if !bytes.Equal(ours, theirs) {
			t.Fatalf("%+v: ControlBatch\n%x\nbatch.Marker\n%x", tc, ours, theirs)
		}
		h, err := segment.Validate(ours)
		if err != nil {
			t.Fatal(err)
		}
		if got, want := coordinatorEpoch(ours, h), batch.MarkerCoordinatorEpoch(ours); got != want || got != tc.coordinatorEpoch {
			t.Fatalf("%+v: coordinatorEpoch %d, batch.MarkerCoordinatorEpoch %d", tc, got, want)
		}
	}
	plain := kafkatest.Batch([]byte("not a marker"))
	h, _ := segment.Validate(plain)
	if coordinatorEpoch(plain, h) != -1 || batch.MarkerCoordinatorEpoch(plain) != -1 {
		t.Fatal("a plain batch has a coordinator epoch")
	}
}

package loadgen

import (
	"context"
	"testing"
	"time"

	"github.com/sluicebroker/sluice/loadgen/sink"
)

// Both clients produce into the sink (kgo negotiating its API versions down to the sink's), and the
// sink acknowledges exactly what they count as acknowledged.
func TestSinkAcknowledgesBothClients(t *testing.T) {
	s, err := sink.Listen("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); _ = s.Serve(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	for _, client := range []string{"kgo", "native"} {
		before := s.Records.Load()
		w := Defaults()
		w.Client = client
		w.Brokers = []string{s.Addr()}
		w.Consumers = 0
		w.RecordSize = SizeDist{Kind: "fixed", Mean: 100}
		w.Warmup, w.Duration = Duration(200*time.Millisecond), Duration(time.Second)
		res, err := Run(context.Background(), w, Options{})
		if err != nil {
			t.Fatalf("%s: %v", client, err)
		}
		if got := s.Records.Load() - before; res.Produce.Records == 0 || got != res.Produce.Records || len(res.ProduceErrors) != 0 {
			t.Errorf("%s: sink acknowledged %d, loadgen counted %d acknowledged, errors %v", client, got, res.Produce.Records, res.ProduceErrors)
		}
	}
}

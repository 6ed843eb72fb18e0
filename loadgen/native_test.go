package loadgen

import (
	"context"
	"testing"
	"time"
)

// The native client keeps the same schedule and checks as kgo's: every record read once, in order.
func TestNativeFixedRateAgainstKfake(t *testing.T) {
	w := Defaults()
	w.Name = "native-fixed"
	w.Client = "native"
	w.Brokers = startKfake(t)
	w.Partitions = 4
	w.Producers = 2
	w.Rate = 2000
	w.RecordSize = SizeDist{Kind: "uniform", Min: 50, Max: 300}
	w.Keys = KeyDist{Kind: "roundrobin", Count: 10}
	w.Compression = "lz4"
	w.Payload = "text"
	w.Warmup = Duration(time.Second)
	w.Duration = Duration(2 * time.Second)
	res, err := Run(context.Background(), w, Options{})
	if err != nil {
		t.Fatal(err)
	}
	checkSane(t, res)
	if res.Produce.Records != 2*1000*3 {
		t.Errorf("produced %d records, schedule holds %d", res.Produce.Records, 2*1000*3)
	}
	if want := int64(2 * 1000 * 2); res.Publish.Count != want || res.EndToEnd.Count != want {
		t.Errorf("measured publish %d e2e %d, want %d each", res.Publish.Count, res.EndToEnd.Count, want)
	}
	if res.Workload.Client != "native" {
		t.Errorf("client mode not recorded: %q", res.Workload.Client)
	}
}

func TestNativeMaxRateCodecsAgainstKfake(t *testing.T) {
	for _, codec := range []string{"none", "gzip", "snappy", "zstd"} {
		t.Run(codec, func(t *testing.T) {
			w := Defaults()
			w.Name = "native-max-" + codec
			w.Client = "native"
			w.Brokers = startKfake(t)
			w.Partitions = 3
			w.RecordSize = SizeDist{Kind: "fixed", Mean: 100}
			w.Compression = codec
			w.MaxBufferedRecords = 5000
			w.ConsumerGroups = 2
			w.Linger = 0
			w.Warmup = Duration(300 * time.Millisecond)
			w.Duration = Duration(time.Second)
			res, err := Run(context.Background(), w, Options{})
			if err != nil {
				t.Fatal(err)
			}
			if res.Consume.Records != 2*res.Produce.Records {
				t.Errorf("2 groups consumed %d of %d produced", res.Consume.Records, res.Produce.Records)
			}
			res.Consume.Records /= 2
			checkSane(t, res)
		})
	}
}

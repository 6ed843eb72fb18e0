package loadgen

import (
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"
)

func TestParseWorkloadYAML(t *testing.T) {
	doc := `
name: omb-classic
brokers: [127.0.0.1:9092, 127.0.0.1:9093]
topics: 2
partitions: 100
record_size: uniform:100..2000
payload: text
keys: random:1000
producers: 4
rate: 50000
acks: "1"
idempotent: false
linger: 5ms
batch_max_bytes: 131072
max_in_flight: 3
compression: zstd
consumer_groups: 2
consumers: 3
warmup: 30s
duration: 2m
`
	w := Defaults()
	if err := ParseWorkload([]byte(doc), &w); err != nil {
		t.Fatal(err)
	}
	want := Defaults()
	want.Name, want.Brokers, want.Topics, want.Partitions = "omb-classic", []string{"127.0.0.1:9092", "127.0.0.1:9093"}, 2, 100
	want.RecordSize = SizeDist{Kind: "uniform", Min: 100, Max: 2000}
	want.Payload, want.Keys, want.Producers, want.Rate = "text", KeyDist{Kind: "random", Count: 1000}, 4, 50000
	want.Acks, want.Idempotent, want.Linger, want.BatchMaxBytes, want.MaxInFlight = "1", false, Duration(5*time.Millisecond), 131072, 3
	want.Compression, want.ConsumerGroups, want.Consumers = "zstd", 2, 3
	want.Warmup, want.Duration = Duration(30*time.Second), Duration(2*time.Minute)
	if !reflect.DeepEqual(w, want) {
		t.Errorf("parsed\n%+v\nwant\n%+v", w, want)
	}
}

func TestParseWorkloadSizesAndErrors(t *testing.T) {
	for _, c := range []struct {
		doc  string
		want SizeDist
	}{
		{"record_size: 100", SizeDist{Kind: "fixed", Mean: 100}},
		{"record_size: 1MiB", SizeDist{Kind: "fixed", Mean: 1 << 20}},
		{"record_size: normal:1024:128", SizeDist{Kind: "normal", Mean: 1024, StdDev: 128}},
	} {
		w := Defaults()
		if err := ParseWorkload([]byte(c.doc), &w); err != nil {
			t.Errorf("%s: %v", c.doc, err)
		} else if w.RecordSize != c.want {
			t.Errorf("%s: got %+v", c.doc, w.RecordSize)
		}
	}
	for _, bad := range []string{
		"record_sise: 100",                 // unknown key
		"acks: 2",                          // not an ack level
		"acks: \"1\"",                      // idempotence (default on) needs acks=all
		"compression: brotli",              // unknown codec
		"keys: sometimes",                  // unknown key distribution
		"record_size: uniform:10..5",       // min > max
		"duration: 0s",                     // nothing to measure
		"producers: 1\ntopics: 2",          // a producer per topic
		"partitions: 0",                    // no partitions
		"linger: soon",                     // not a duration
		"consumers: 9\nconsumer_groups: 0", // direct consumers need a partition each
		"client: native\ntls: true",        // the native client has no TLS
		"client: fast",                     // unknown client
	} {
		w := Defaults()
		if err := ParseWorkload([]byte(bad), &w); err == nil {
			t.Errorf("%q parsed without error", bad)
		}
	}
}

// The bench workloads are valid and flags override a file.
func TestBenchWorkloadFilesAndFlags(t *testing.T) {
	files, _ := filepath.Glob("../bench/workloads/*.yaml")
	if len(files) < 3 {
		t.Fatalf("want at least 3 bench workloads, found %v", files)
	}
	for _, f := range files {
		if _, err := LoadWorkload(f); err != nil {
			t.Error(err)
		}
	}
	path := filepath.Join(t.TempDir(), "w.yaml")
	if err := os.WriteFile(path, []byte("rate: 100\npartitions: 3\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	w, err := LoadWorkload(path)
	if err != nil {
		t.Fatal(err)
	}
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	w.BindFlags(fs)
	if err := fs.Parse([]string{"-rate", "200", "-record-size", "uniform:20..30", "-keys", "roundrobin:5", "-duration", "3s"}); err != nil {
		t.Fatal(err)
	}
	if w.Rate != 200 || w.Partitions != 3 || w.RecordSize.Max != 30 || w.Keys.Count != 5 || w.Duration.D() != 3*time.Second {
		t.Errorf("flags over file gave %+v", w)
	}
}

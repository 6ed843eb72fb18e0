package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// TestStallTrace: with --debug-stall-trace, a Produce slower than the threshold (here any) leaves an
// execution trace of the seconds before it in the directory.
func TestStallTrace(t *testing.T) {
	dir := t.TempDir()
	b := startBroker(t, "--debug-stall-trace", dir, "--debug-stall-threshold", "1ns")
	b.createTopic("stalls", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := b.client().ProduceSync(ctx, &kgo.Record{Topic: "stalls", Value: []byte("v")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		files, _ := filepath.Glob(filepath.Join(dir, "stall-*.trace"))
		if len(files) > 0 {
			data, err := os.ReadFile(files[0])
			if err == nil && bytes.HasPrefix(data, []byte("go 1.")) && bytes.Contains(data[:16], []byte(" trace")) {
				return
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("no execution trace in %s: %v", dir, files)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

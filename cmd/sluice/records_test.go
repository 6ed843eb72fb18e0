package main

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// `sluice produce` writes one record per input line (keys split off, headers added), which a
// franz-go consumer reads back; `sluice consume` prints what a franz-go producer wrote, stops at the
// end with -e and after -n records, and refuses a bad -offset.
func TestProduceConsumeCLI(t *testing.T) {
	b := startBroker(t)
	const topic = "cli-records"
	b.createTopic(topic, 2, nil)

	var out bytes.Buffer
	in := strings.NewReader("k1:v1\nk2:v2\nno-key-here\n")
	if err := produceCmd([]string{"--bootstrap", b.Addr, topic, "-key-separator", ":", "-H", "source=cli"}, in, &out); err != nil {
		t.Fatalf("produce: %v\n%s", err, out.String())
	}
	if !strings.Contains(out.String(), "produced 3 records") {
		t.Fatalf("produce said %q", out.String())
	}
	got := consumeAll(t, b, topic)
	if len(got) != 3 {
		t.Fatalf("consumed %d records, want 3", len(got))
	}
	byValue := map[string]*kgo.Record{}
	for _, r := range got {
		byValue[string(r.Value)] = r
	}
	for v, k := range map[string]string{"v1": "k1", "v2": "k2"} {
		r := byValue[v]
		if r == nil || string(r.Key) != k || len(r.Headers) != 1 || r.Headers[0].Key != "source" || string(r.Headers[0].Value) != "cli" {
			t.Fatalf("record %s: %+v", v, r)
		}
	}
	if r := byValue["no-key-here"]; r == nil || r.Key != nil {
		t.Fatalf("a line without the separator: %+v", r)
	}

	// What a client wrote, printed by consume: -e stops at the end, -n after n records.
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := b.client().ProduceSync(ctx, &kgo.Record{Topic: topic, Key: []byte("k4"), Value: []byte("from franz-go")}).FirstErr(); err != nil {
		t.Fatal(err)
	}
	out.Reset()
	if err := consumeCmd([]string{"--bootstrap", b.Addr, "--json", "-e", topic}, &out); err != nil {
		t.Fatalf("consume -e: %v", err)
	}
	var recs []consumedRecord
	dec := json.NewDecoder(&out)
	for dec.More() {
		var r consumedRecord
		if err := dec.Decode(&r); err != nil {
			t.Fatal(err)
		}
		recs = append(recs, r)
	}
	found := false
	for _, r := range recs {
		if r.Value != nil && *r.Value == "from franz-go" && r.Key != nil && *r.Key == "k4" {
			found = true
		}
	}
	if len(recs) != 4 || !found {
		t.Fatalf("consume -e printed %d records (%v)", len(recs), found)
	}
	out.Reset()
	if err := consumeCmd([]string{"--bootstrap", b.Addr, topic, "-n", "2"}, &out); err != nil {
		t.Fatalf("consume -n: %v", err)
	}
	if lines := strings.Count(out.String(), "\n"); lines != 2 {
		t.Fatalf("consume -n 2 printed %d lines:\n%s", lines, out.String())
	}
	if err := consumeCmd([]string{"--bootstrap", b.Addr, topic, "-offset", "soon"}, &out); err == nil {
		t.Fatal("a bad -offset was accepted")
	}
	// A topic that does not exist yet is created, as the broker's auto-creation allows.
	out.Reset()
	if err := produceCmd([]string{"--bootstrap", b.Addr, "cli-auto"}, strings.NewReader("first\n"), &out); err != nil {
		t.Fatalf("produce to a new topic: %v\n%s", err, out.String())
	}
	if got := consumeAll(t, b, "cli-auto"); len(got) != 1 || string(got[0].Value) != "first" {
		t.Fatalf("the new topic holds %v", got)
	}
	if err := produceCmd([]string{"--bootstrap", b.Addr}, strings.NewReader("x\n"), &out); err == nil {
		t.Fatal("produce without a topic was accepted")
	}
}

package loadgen

import (
	"bytes"
	"encoding/json"
	"image/png"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"
)

// Recorders written by several goroutines and ticked concurrently lose no value, and the
// merged percentiles are those of all values together.
func TestLatencySetMergesRecorders(t *testing.T) {
	set := NewLatencySet()
	ref := NewHistogram()
	const goroutines, perG = 4, 20000
	recs := make([]*Recorder, goroutines)
	vals := make([][]int64, goroutines)
	for g := range recs {
		recs[g] = NewRecorder()
		set.Add(recs[g])
		rng := rand.New(rand.NewPCG(uint64(g), 1))
		for range perG {
			v := int64(time.Microsecond) + rng.Int64N(int64(100*time.Millisecond))
			vals[g] = append(vals[g], v)
			_ = ref.RecordValue(v)
		}
	}
	var wg sync.WaitGroup
	for g := range recs {
		wg.Go(func() {
			for _, v := range vals[g] {
				recs[g].Record(v)
			}
		})
	}
	stop := make(chan struct{})
	ticked := make(chan struct{})
	go func() { // tick while recording goes on
		defer close(ticked)
		for {
			select {
			case <-stop:
				return
			default:
				set.Tick(time.Now(), time.Now())
			}
		}
	}()
	wg.Wait()
	close(stop)
	<-ticked
	set.Tick(time.Now(), time.Now())
	if set.Total.TotalCount() != goroutines*perG {
		t.Fatalf("merged %d values, recorded %d", set.Total.TotalCount(), goroutines*perG)
	}
	for _, q := range []float64{50, 90, 99, 99.9, 100} {
		if a, b := set.Total.ValueAtQuantile(q), ref.ValueAtQuantile(q); a != b {
			t.Errorf("p%v: merged %d, reference %d", q, a, b)
		}
	}
	// Out-of-range values are clamped and counted, not lost.
	r := NewRecorder()
	set2 := NewLatencySet()
	set2.Add(r)
	r.Record(0)
	r.Record(int64(2 * time.Minute))
	set2.Tick(time.Now(), time.Now())
	if set2.Total.TotalCount() != 2 || set2.Over != 1 || set2.Total.Max() < int64(59*time.Second) {
		t.Errorf("clamping: count %d over %d max %d", set2.Total.TotalCount(), set2.Over, set2.Total.Max())
	}
}

func sampleResult() *Result {
	h := NewHistogram()
	for i := int64(1); i <= 10000; i++ {
		_ = h.RecordValue(i * int64(time.Microsecond))
	}
	w := Defaults()
	r := &Result{Loadgen: Version, Label: "sample", Workload: w, Machine: ThisMachine(),
		Produce: Throughput{Records: 10000, Bytes: 1 << 20, RecordsPerSec: 5000, MBPerSec: 0.5},
		Publish: summarize(h, 0), EndToEnd: summarize(h, 0), ProduceErrors: map[string]int64{"NOT_LEADER_FOR_PARTITION(6)": 2}}
	l := newHlog(time.Now(), "e2e")
	l.add(h)
	r.E2ELog = l.bytes()
	return r
}

func TestSummarizeAndResultFormat(t *testing.T) {
	r := sampleResult()
	l := r.Publish
	// 1..10000 µs uniformly: percentiles within HdrHistogram's 3 significant digits
	// (below 1 ms its resolution is the lowest discernible value, 512 ns).
	if l.Min <= 0 || l.Min > 1 {
		t.Errorf("min %v µs, want (0, 1]", l.Min)
	}
	for _, c := range []struct{ got, want float64 }{{l.P50, 5000}, {l.P99, 9900}, {l.P999, 9990}, {l.Max, 10000}} {
		if c.got < c.want*0.999 || c.got > c.want*1.001 {
			t.Errorf("summary %+v: got %v want %v", l, c.got, c.want)
		}
	}
	dir := t.TempDir()
	if err := r.Write(dir); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(dir, ResultFile))
	if err != nil {
		t.Fatal(err)
	}
	// The JSON names its units and holds every promised figure.
	var m map[string]any
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"loadgen_version", "workload", "broker", "machine", "produce", "consume", "publish_latency", "end_to_end_latency", "produce_errors", "consumer_lag", "schedule"} {
		if _, ok := m[key]; !ok {
			t.Errorf("result.json lacks %q", key)
		}
	}
	lat := m["publish_latency"].(map[string]any)
	for _, key := range []string{"p50_us", "p75_us", "p90_us", "p95_us", "p99_us", "p99_9_us", "p99_99_us", "max_us", "percentile_curve"} {
		if _, ok := lat[key]; !ok {
			t.Errorf("publish_latency lacks %q", key)
		}
	}
	if w := m["workload"].(map[string]any); w["linger"] != "1ms" || w["record_size"] != "1024" {
		t.Errorf("workload durations and sizes should read as text: %v %v", w["linger"], w["record_size"])
	}
	back, err := ReadResult(dir)
	if err != nil {
		t.Fatal(err)
	}
	if back.Publish.P99 != r.Publish.P99 || back.ProduceErrors["NOT_LEADER_FOR_PARTITION(6)"] != 2 || !reflect.DeepEqual(back.Workload, r.Workload) {
		t.Errorf("round trip lost figures: %+v", back)
	}
	h, err := ReadHlog(filepath.Join(dir, E2EHlog))
	if err != nil || h.TotalCount() != 10000 || float64(h.ValueAtQuantile(99))/1e3 != r.EndToEnd.P99 {
		t.Errorf("hlog read back: %v count %d", err, h.TotalCount())
	}
	summary, _ := os.ReadFile(filepath.Join(dir, SummaryFile))
	if !strings.Contains(string(summary), "end-to-end") || !strings.Contains(string(summary), "NOT_LEADER_FOR_PARTITION(6): 2") {
		t.Errorf("summary:\n%s", summary)
	}
}

func TestCompareTableAndCharts(t *testing.T) {
	a, b := sampleResult(), sampleResult()
	b.Label = "slower"
	for i := range b.EndToEnd.Curve {
		b.EndToEnd.Curve[i].Us *= 10
	}
	var out bytes.Buffer
	CompareTable(&out, []*Result{a, b})
	if !strings.Contains(out.String(), "sample") || !strings.Contains(out.String(), "slower") {
		t.Errorf("table:\n%s", out.String())
	}
	dir := t.TempDir()
	files, err := WriteCharts(dir, "test", []*RunData{RunDataOf(a), RunDataOf(b)}, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{E2EChart, PublishChart, "e2e-p99-over-time"} {
		for _, ext := range []string{".svg", ".png"} {
			if !slices.Contains(files, filepath.Join(dir, name+ext)) {
				t.Errorf("%s%s not written: %v", name, ext, files)
			}
		}
	}
	f, err := os.Open(filepath.Join(dir, E2EChart+".png"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatal(err)
	}
	// Both series' colours are on the image.
	found := map[int]bool{}
	bnd := img.Bounds()
	for y := bnd.Min.Y; y < bnd.Max.Y; y++ {
		for x := bnd.Min.X; x < bnd.Max.X; x++ {
			r, g, bl, _ := img.At(x, y).RGBA()
			for i := range 2 {
				p := palette[i]
				if uint8(r>>8) == p.R && uint8(g>>8) == p.G && uint8(bl>>8) == p.B {
					found[i] = true
				}
			}
		}
	}
	if len(found) != 2 {
		t.Errorf("series colours found on the PNG: %v", found)
	}
	svg, _ := os.ReadFile(filepath.Join(dir, E2EChart+".svg"))
	for _, want := range []string{"99.9%", "sample", "slower", "percentile"} {
		if !strings.Contains(string(svg), want) {
			t.Errorf("svg lacks %q", want)
		}
	}
}

package loadgen

import (
	"bytes"
	"encoding/xml"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// svgTexts parses one SVG document and returns its text elements' contents.
func svgTexts(t *testing.T, svg string) []string {
	t.Helper()
	dec := xml.NewDecoder(strings.NewReader(svg))
	var texts []string
	inText := false
	for {
		tok, err := dec.Token()
		if err == io.EOF {
			return texts
		}
		if err != nil {
			t.Fatalf("SVG does not parse: %v", err)
		}
		switch tk := tok.(type) {
		case xml.StartElement:
			inText = tk.Name.Local == "text"
		case xml.EndElement:
			inText = false
		case xml.CharData:
			if inText {
				texts = append(texts, strings.TrimSpace(string(tk)))
			}
		}
	}
}

var inlineSVGs = regexp.MustCompile(`(?s)<svg .*?</svg>`)

// The report of a small committed comparison (testdata/report: the kgo and native clients on
// kfake) holds the settings side by side, the summary, and every chart as parseable inline SVG
// with both runs' lines, and fetches nothing.
func TestReportFromCommittedResults(t *testing.T) {
	runs, sweeps, err := LoadReportInputs([]string{"testdata/report"})
	if err != nil {
		t.Fatal(err)
	}
	if len(runs) != 2 {
		t.Fatalf("%d runs loaded", len(runs))
	}
	var out bytes.Buffer
	if err := WriteReport(&out, "kgo vs native", runs, sweeps); err != nil {
		t.Fatal(err)
	}
	page := out.String()
	for _, want := range []string{"<h2>Settings</h2>", `<tr class="differ"><td>client</td><td>kgo</td><td>native</td>`, "prod rec/s", "<h2>Machines</h2>", "cpu"} {
		if !strings.Contains(page, want) {
			t.Errorf("report lacks %q", want)
		}
	}
	for _, bad := range []string{"<script", "<link", "<img", "@import", "url("} {
		if strings.Contains(page, bad) {
			t.Errorf("report loads or runs something: %q", bad)
		}
	}
	if m := regexp.MustCompile(`(src|href)="https?:`).FindString(page); m != "" {
		t.Errorf("report fetches from the network: %s", m)
	}
	svgs := inlineSVGs.FindAllString(page, -1)
	titles := map[string]bool{}
	for _, svg := range svgs {
		texts := svgTexts(t, svg)
		joined := strings.Join(texts, "|")
		titles[texts[0]] = true
		if !strings.Contains(svg, "<path") {
			t.Errorf("chart %q draws nothing", texts[0])
		}
		if strings.Contains(texts[0], "per second") && !strings.Contains(texts[0], "latency") {
			continue
		}
		for _, label := range []string{"kgo", "native"} {
			if !strings.Contains(joined, label) {
				t.Errorf("chart %q lacks the %s line's legend: %v", texts[0], label, texts)
			}
		}
	}
	for _, want := range []string{"end-to-end latency by percentile", "publish latency by percentile", "produce throughput over time",
		"consume throughput over time", "end-to-end latency p99 per second", "publish latency max per second", "consumer lag over time", "failed records over time"} {
		if !titles[want] {
			t.Errorf("no chart %q among %v", want, titles)
		}
	}
}

// bench/report-screenshot.sh renders the report in headless Chromium (skipped without it).
func TestReportScreenshot(t *testing.T) {
	if _, err := exec.LookPath("chromium"); err != nil {
		t.Skip("chromium not installed (apt-get install -y chromium): no screenshot check")
	}
	if testing.Short() {
		t.Skip("short")
	}
	runs, sweeps, err := LoadReportInputs([]string{"testdata/report"})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	f, err := os.Create(filepath.Join(dir, "report.html"))
	if err != nil {
		t.Fatal(err)
	}
	if err := WriteReport(f, "", runs, sweeps); err != nil {
		t.Fatal(err)
	}
	f.Close()
	png := filepath.Join(dir, "report.png")
	cmd := exec.Command("../bench/report-screenshot.sh", filepath.Join(dir, "report.html"), png)
	cmd.Env = append(os.Environ(), "SCREENSHOT_HEIGHT=3000")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("screenshot: %v\n%s", err, out)
	}
	if st, err := os.Stat(png); err != nil || st.Size() < 20000 {
		t.Fatalf("screenshot missing or blank: %v %v", st, err)
	}
}

// A sweep's report holds the latency-against-throughput curve: one point per step, p50 below p99
// below p99.9, and the bound.
func TestReportSweepCurve(t *testing.T) {
	s := &SweepData{Sweep: SweepResult{Workload: Defaults(), P99MaxMs: 20, MaxSustainable: 4000}}
	for i, rate := range []float64{1000, 2000, 4000, 8000} {
		r := sampleResult()
		r.Label = fmt.Sprintf("%.0f rec/s", rate)
		r.Workload.Rate = rate
		r.Produce.RecordsPerSec = rate * 0.99
		r.EndToEnd.P50, r.EndToEnd.P99, r.EndToEnd.P999 = 1000*float64(i+1), 5000*float64(i+1), 9000*float64(i+1)
		s.Steps = append(s.Steps, RunDataOf(r))
		s.Sweep.Steps = append(s.Sweep.Steps, Judge(r, 20*time.Millisecond))
	}
	var out bytes.Buffer
	if err := WriteReport(&out, "sweep", nil, []*SweepData{s}); err != nil {
		t.Fatal(err)
	}
	svgs := inlineSVGs.FindAllString(out.String(), -1)
	if len(svgs) != 1 {
		t.Fatalf("%d charts in a sweep report, want the curve", len(svgs))
	}
	texts := strings.Join(svgTexts(t, svgs[0]), "|")
	for _, want := range []string{"latency at each offered load", "achieved throughput", "p50", "p99", "p99.9", "p99 bound", "4k"} {
		if !strings.Contains(texts, want) {
			t.Errorf("sweep curve lacks %q: %s", want, texts)
		}
	}
	if !strings.Contains(out.String(), "maximum sustainable throughput: 4000 rec/s") {
		t.Errorf("sweep verdict missing")
	}
}

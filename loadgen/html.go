package loadgen

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
)

// The HTML report: one self-contained file (charts inline as SVG, no script, no fetches) with the
// summary table, each run's settings side by side, every chart and the machines.

// LoadReportInputs reads what `loadgen report` is given: result directories, sweep directories,
// and directories whose subdirectories are results (a comparison's runs).
func LoadReportInputs(dirs []string) ([]*RunData, []*SweepData, error) {
	var runs []*RunData
	var sweeps []*SweepData
	for _, dir := range dirs {
		switch {
		case exists(filepath.Join(dir, "sweep.json")):
			s, err := LoadSweep(dir)
			if err != nil {
				return nil, nil, err
			}
			sweeps = append(sweeps, s)
		case exists(filepath.Join(dir, ResultFile)) || strings.HasSuffix(dir, ".json"):
			r, err := LoadRun(dir)
			if err != nil {
				return nil, nil, err
			}
			runs = append(runs, r)
		default:
			subs, _ := filepath.Glob(filepath.Join(dir, "*", ResultFile))
			if len(subs) == 0 {
				return nil, nil, fmt.Errorf("%s: neither a result (%s), a sweep (sweep.json) nor a directory of results", dir, ResultFile)
			}
			slices.Sort(subs)
			for _, f := range subs {
				r, err := LoadRun(filepath.Dir(f))
				if err != nil {
					return nil, nil, err
				}
				runs = append(runs, r)
			}
		}
	}
	return runs, sweeps, nil
}

func exists(path string) bool {
	_, err := os.Stat(path)
	return err == nil
}

// svgProlog is what an SVG file has before its <svg> element (XML declaration, doctype).
var svgProlog = regexp.MustCompile(`(?s)^.*?(<svg)`)

// inlineSVG turns a chart into an <svg> element for an HTML page: prolog dropped, scaled to the
// page width.
func inlineSVG(c Chart) (template.HTML, error) {
	b, err := c.SVG()
	if err != nil {
		return "", err
	}
	s := svgProlog.ReplaceAllString(string(b), "$1")
	s = strings.Replace(s, "<svg", `<svg class="chart" role="img" aria-label="`+template.HTMLEscapeString(c.Title)+`"`, 1)
	return template.HTML(s), nil // gonum's SVG output: text is escaped by its writer
}

// settingRow is one workload field across the runs.
type settingRow struct {
	Name   string
	Values []string
	Differ bool
}

// workloadRows lists every workload field (JSON names) with each run's value.
func workloadRows(runs []*Result) []settingRow {
	t := reflect.TypeOf(Workload{})
	var rows []settingRow
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if name == "" || name == "-" {
			continue
		}
		row := settingRow{Name: name}
		for _, r := range runs {
			v := reflect.ValueOf(r.Workload).Field(i).Interface()
			b, _ := json.Marshal(v)
			s := strings.Trim(string(b), `"`)
			if name == "rate" && s == "0" {
				s = "max (closed loop)"
			}
			if name == "client" && s == "" {
				s = "kgo"
			}
			row.Values = append(row.Values, s)
		}
		for _, v := range row.Values {
			if v != row.Values[0] {
				row.Differ = true
			}
		}
		rows = append(rows, row)
	}
	return rows
}

// machineRows lists where each run ran.
func machineRows(runs []*Result) []settingRow {
	get := []struct {
		name string
		f    func(*Result) string
	}{
		{"hostname", func(r *Result) string { return r.Machine.Hostname }},
		{"cpu", func(r *Result) string { return r.Machine.CPUModel }},
		{"cores", func(r *Result) string { return fmt.Sprint(r.Machine.Cores) }},
		{"memory", func(r *Result) string { return fmt.Sprintf("%d MB", r.Machine.MemoryMB) }},
		{"kernel", func(r *Result) string { return r.Machine.Kernel }},
		{"os", func(r *Result) string { return r.Machine.OS }},
		{"go", func(r *Result) string { return r.Machine.Go }},
		{"loadgen", func(r *Result) string { return r.Loadgen }},
		{"broker", func(r *Result) string {
			return strings.Join(r.Broker.Bootstrap, ",") + " (" + r.Broker.VersionHint + ")"
		}},
		{"agents", func(r *Result) string {
			var a []string
			for _, ag := range r.Agents {
				a = append(a, ag.Addr+" "+ag.Machine.Hostname)
			}
			return strings.Join(a, ", ")
		}},
		{"started", func(r *Result) string { return r.Start.UTC().Format(time.RFC3339) }},
		{"loadgen CPU s", func(r *Result) string { return fmt.Sprintf("%.1f", r.Schedule.CPUSeconds) }},
	}
	var rows []settingRow
	for _, g := range get {
		row := settingRow{Name: g.name}
		empty := true
		for _, r := range runs {
			v := g.f(r)
			empty = empty && v == ""
			row.Values = append(row.Values, v)
		}
		if !empty {
			rows = append(rows, row)
		}
	}
	return rows
}

type reportChart struct {
	Title string
	SVG   template.HTML
}

type reportSweep struct {
	Name  string
	Text  string
	Chart reportChart
}

type reportPage struct {
	Title     string
	Generated string
	Labels    []string
	Summary   string // the compare table
	Settings  []settingRow
	Machines  []settingRow
	Charts    []reportChart
	Sweeps    []reportSweep
	Warnings  []string
}

// WriteReport writes the HTML report of runs and sweeps.
func WriteReport(out io.Writer, title string, runs []*RunData, sweeps []*SweepData) error {
	if title == "" {
		title = "loadgen report"
	}
	page := reportPage{Title: title, Generated: time.Now().UTC().Format(time.RFC3339)}
	var all []*Result
	for _, r := range runs {
		all = append(all, r.Result)
	}
	for _, s := range sweeps {
		for _, st := range s.Steps {
			all = append(all, st.Result)
		}
	}
	for _, r := range all {
		page.Labels = append(page.Labels, r.Label)
		for _, w := range r.Warnings {
			page.Warnings = append(page.Warnings, r.Label+": "+w)
		}
	}
	var tb bytes.Buffer
	CompareTable(&tb, all)
	page.Summary = tb.String()
	page.Settings = workloadRows(all)
	page.Machines = machineRows(all)
	charts, err := BuildCharts("", runs, nil)
	if err != nil {
		return err
	}
	for _, c := range charts {
		svg, err := inlineSVG(c)
		if err != nil {
			return err
		}
		page.Charts = append(page.Charts, reportChart{Title: c.Title, SVG: svg})
	}
	for i, s := range sweeps {
		c, err := SweepChart(fmt.Sprintf("sweep-%d", i+1), "latency at each offered load: "+s.Sweep.Workload.Name, s)
		if err != nil {
			return err
		}
		var sb strings.Builder
		s.Sweep.Print(&sb)
		rs := reportSweep{Name: s.Sweep.Workload.Name, Text: sb.String()}
		if c.Plot != nil {
			svg, err := inlineSVG(c)
			if err != nil {
				return err
			}
			rs.Chart = reportChart{Title: c.Title, SVG: svg}
		}
		page.Sweeps = append(page.Sweeps, rs)
	}
	return reportTemplate.Execute(out, page)
}

var reportTemplate = template.Must(template.New("report").Parse(`<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
<style>
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; }
h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
h3 { font-size: 1.05em; }
.meta { color: #666; font-size: 0.9em; }
pre { background: #f6f8fa; padding: 0.8em; overflow-x: auto; font-size: 12px; line-height: 1.35; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ddd; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #f6f8fa; }
tr.differ td { background: #fff6d5; font-weight: bold; }
svg.chart { width: 100%; height: auto; display: block; margin: 0.5em 0 1.5em; }
.warn { color: #a33; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p class="meta">{{len .Labels}} run(s): {{range $i, $l := .Labels}}{{if $i}}, {{end}}<b>{{$l}}</b>{{end}}. Generated {{.Generated}} by loadgen. Latencies count from each record's intended send time (open loop).</p>

<h2>Summary</h2>
<pre>{{.Summary}}</pre>

<h2>Settings</h2>
<p class="meta">Highlighted rows differ between runs.</p>
<table>
<tr><th>setting</th>{{range .Labels}}<th>{{.}}</th>{{end}}</tr>
{{range .Settings}}<tr{{if .Differ}} class="differ"{{end}}><td>{{.Name}}</td>{{range .Values}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>

<h2>Charts</h2>
{{range .Charts}}{{.SVG}}
{{end}}
{{range .Sweeps}}<h2>Sweep: {{.Name}}</h2>
{{if .Chart.SVG}}{{.Chart.SVG}}{{end}}
<pre>{{.Text}}</pre>
{{end}}
{{if .Warnings}}<h2>Warnings</h2>
<ul>{{range .Warnings}}<li class="warn">{{.}}</li>{{end}}</ul>{{end}}

<h2>Machines</h2>
<table>
<tr><th></th>{{range .Labels}}<th>{{.}}</th>{{end}}</tr>
{{range .Machines}}<tr><td>{{.Name}}</td>{{range .Values}}<td>{{.}}</td>{{end}}</tr>
{{end}}</table>
</body>
</html>
`))

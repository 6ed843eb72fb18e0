package loadgen

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"
	"strings"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Charts are drawn with gonum.org/v1/plot (real fonts, SVG and PNG). A Chart is one plot with a
// file name; WriteCharts saves each as SVG and PNG, and the HTML report inlines the SVGs.

// Chart is one drawn chart.
type Chart struct {
	Name  string // file name without extension
	Title string
	Plot  *plot.Plot
}

// Series is one line: a run's label and its points.
type Series struct {
	Label  string
	Points plotter.XYs
	Dashed bool
}

const (
	chartWidth  = 9 * vg.Inch
	chartHeight = 4.5 * vg.Inch
)

// palette is Tableau's ten colours, distinguishable on screen and in print.
var palette = []color.RGBA{
	{31, 119, 180, 255}, {255, 127, 14, 255}, {44, 160, 44, 255}, {214, 39, 40, 255}, {148, 103, 189, 255},
	{140, 86, 75, 255}, {227, 119, 194, 255}, {127, 127, 127, 255}, {188, 189, 34, 255}, {23, 190, 207, 255},
}

func init() {
	// Sans-serif text (gonum's default is a serif face); Liberation Sans is embedded in gonum's
	// font set, so PNGs need no system fonts, and browsers showing the SVGs substitute Arial's metrics.
	plot.DefaultFont = font.Font{Typeface: "Liberation", Variant: "Sans"}
}

func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text = title
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Label.Text = xlabel
	p.Y.Label.Text = ylabel
	p.Legend.Top = true
	p.Legend.Left = true
	p.Legend.TextStyle.Font.Size = vg.Points(10)
	p.Add(plotter.NewGrid())
	return p
}

// addLines adds one line per series, coloured in order.
func addLines(p *plot.Plot, series []Series) error {
	for i, s := range series {
		if len(s.Points) == 0 {
			continue
		}
		l, err := plotter.NewLine(s.Points)
		if err != nil {
			return fmt.Errorf("%s: %w", s.Label, err)
		}
		l.Color = palette[i%len(palette)]
		l.Width = vg.Points(1.6)
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		p.Add(l)
		p.Legend.Add(s.Label, l)
	}
	return nil
}

// nines are the percentile axis's ticks: x = log10(1/(1-p)), as HdrHistogram's plotter draws it.
type nines struct{}

func (nines) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	for d := math.Floor(lo); d <= math.Ceil(hi)+1e-9; d++ {
		label := "0%"
		switch {
		case d == 1:
			label = "90%"
		case d >= 2:
			label = "99" + strings.TrimSuffix("."+strings.Repeat("9", int(d)-2), ".") + "%"
		}
		ts = append(ts, plot.Tick{Value: d, Label: label})
		for _, m := range []float64{0.5} { // one minor tick between
			if v := d + m; v <= hi {
				ts = append(ts, plot.Tick{Value: v})
			}
		}
	}
	return ts
}

// logTicks labels a log axis at 1, 2 and 5 of each decade, in plain numbers.
type logTicks struct{}

func (logTicks) Ticks(lo, hi float64) []plot.Tick {
	var ts []plot.Tick
	if lo <= 0 {
		lo = 1e-3
	}
	for e := math.Floor(math.Log10(lo)); e <= math.Ceil(math.Log10(hi)); e++ {
		for _, m := range []float64{1, 2, 5} {
			v := m * math.Pow(10, e)
			if v < lo*0.999 || v > hi*1.001 {
				continue
			}
			ts = append(ts, plot.Tick{Value: v, Label: plainNumber(v)})
		}
		for _, m := range []float64{3, 4, 6, 7, 8, 9} {
			if v := m * math.Pow(10, e); v >= lo && v <= hi {
				ts = append(ts, plot.Tick{Value: v})
			}
		}
	}
	return ts
}

// siTicks are the default ticks labelled 1.5k, 2M...
type siTicks struct{}

func (siTicks) Ticks(lo, hi float64) []plot.Tick {
	ts := plot.DefaultTicks{}.Ticks(lo, hi)
	for i := range ts {
		if ts[i].Label != "" {
			ts[i].Label = siNumber(ts[i].Value)
		}
	}
	return ts
}

func plainNumber(v float64) string {
	if v >= 1 {
		return strconv.FormatFloat(v, 'f', -1, 64)
	}
	return strconv.FormatFloat(v, 'g', 3, 64)
}

func siNumber(v float64) string {
	a := math.Abs(v)
	switch {
	case a >= 1e9:
		return strconv.FormatFloat(v/1e9, 'f', -1, 64) + "G"
	case a >= 1e6:
		return strconv.FormatFloat(v/1e6, 'f', -1, 64) + "M"
	case a >= 1e3:
		return strconv.FormatFloat(v/1e3, 'f', -1, 64) + "k"
	}
	return strconv.FormatFloat(v, 'f', -1, 64)
}

// logY makes the y axis logarithmic in ms, clamping the points to a positive floor.
func logY(p *plot.Plot, series []Series) {
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for i := range s.Points {
			s.Points[i].Y = max(s.Points[i].Y, 0.001)
			lo, hi = min(lo, s.Points[i].Y), max(hi, s.Points[i].Y)
		}
	}
	p.Y.Scale = plot.LogScale{}
	p.Y.Tick.Marker = logTicks{}
	if !math.IsInf(lo, 1) {
		p.Y.Min = math.Pow(10, math.Floor(math.Log10(lo)))
		p.Y.Max = math.Pow(10, math.Ceil(math.Log10(hi*1.05)))
	}
}

// PercentileChart draws latency by percentile, one line per series (points: x = percentile, y = ms).
func PercentileChart(name, title string, series []Series) (Chart, error) {
	p := newPlot(title, "percentile", "latency (ms, log scale)")
	xmax := 2.0
	for si := range series {
		var pts plotter.XYs
		for _, pt := range series[si].Points {
			if pt.X >= 100 {
				continue
			}
			x := math.Log10(1 / (1 - pt.X/100))
			xmax = max(xmax, math.Ceil(x-1e-9))
			pts = append(pts, plotter.XY{X: x, Y: pt.Y})
		}
		series[si].Points = pts
	}
	logY(p, series)
	p.X.Min, p.X.Max = 0, min(xmax, 7)
	p.X.Tick.Marker = nines{}
	if err := addLines(p, series); err != nil {
		return Chart{}, err
	}
	return Chart{Name: name, Title: title, Plot: p}, nil
}

// TimeChart draws values over time (x: seconds since the run started).
func TimeChart(name, title, ylabel string, series []Series, log bool) (Chart, error) {
	p := newPlot(title, "time since start (s)", ylabel)
	p.Legend.Left = false
	if log {
		logY(p, series)
	} else {
		p.Y.Min = 0
		p.Y.Tick.Marker = siTicks{}
	}
	if err := addLines(p, series); err != nil {
		return Chart{}, err
	}
	return Chart{Name: name, Title: title, Plot: p}, nil
}

// SVG renders the chart as an SVG document.
func (c Chart) SVG() ([]byte, error) { return c.render("svg") }

// PNG renders the chart as a PNG image.
func (c Chart) PNG() ([]byte, error) { return c.render("png") }

func (c Chart) render(format string) ([]byte, error) {
	cv, err := draw.NewFormattedCanvas(chartWidth, chartHeight, format)
	if err != nil {
		return nil, err
	}
	c.Plot.Draw(draw.New(cv))
	var b bytes.Buffer
	if _, err := cv.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

package loadgen

import (
	"fmt"
	"image"
	"image/color"
	"image/png"
	"io"
	"math"
	"strings"
)

// Series is one line of a latency-percentile chart.
type Series struct {
	Label  string
	Points []Point
}

// Chart is a latency-by-percentile plot as HdrHistogram's plotter draws it: the x axis is
// the percentile on the log scale 1/(1-p) (0%, 90%, 99%, 99.9%...), one line per run.
// The y axis (milliseconds) is logarithmic so millisecond medians and second-long tails both read.
type Chart struct {
	Title  string
	Series []Series
}

const (
	chartW, chartH = 1200, 600
	marginL        = 80
	marginR        = 330 // the legend's column
	marginT        = 60
	marginB        = 70
	fontScale      = 2 // PNG glyphs are 10x14 pixels
)

var palette = []color.RGBA{
	{31, 119, 180, 255}, {214, 39, 40, 255}, {44, 160, 44, 255}, {255, 127, 14, 255},
	{148, 103, 189, 255}, {140, 86, 75, 255}, {227, 119, 194, 255}, {23, 190, 207, 255},
}

var (
	black = color.RGBA{0, 0, 0, 255}
	grey  = color.RGBA{215, 215, 215, 255}
)

// canvas is what the chart draws on: SVG text or a raster image.
type canvas interface {
	line(x1, y1, x2, y2 float64, c color.RGBA, width float64)
	polyline(pts [][2]float64, c color.RGBA, width float64)
	// text draws s with its vertical centre at y; anchor is 0 left, 1 centre, 2 right.
	text(x, y float64, s string, c color.RGBA, anchor int)
}

// layout maps data to pixels.
type layout struct {
	xmax       float64 // decades of 1/(1-p) shown
	ylo, yhi   float64 // log10 of ms
	x0, x1     float64 // plot area in pixels
	y0, y1     float64
	yTickMinor bool
}

func pctX(p float64) float64 { return math.Log10(1 / (1 - p/100)) }

func (c *Chart) layout() layout {
	l := layout{x0: marginL, x1: chartW - marginR, y0: chartH - marginB, y1: marginT, xmax: 2}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range c.Series {
		for _, p := range s.Points {
			if p.Percentile >= 100 || p.Us <= 0 {
				continue
			}
			l.xmax = max(l.xmax, math.Ceil(pctX(p.Percentile)-1e-9))
			lo, hi = min(lo, p.Us/1e3), max(hi, p.Us/1e3)
		}
	}
	l.xmax = min(l.xmax, 6)
	if math.IsInf(lo, 1) {
		lo, hi = 0.1, 10
	}
	l.ylo, l.yhi = math.Floor(math.Log10(lo)), math.Ceil(math.Log10(hi)+1e-9)
	if l.yhi-l.ylo < 1 {
		l.yhi = l.ylo + 1
	}
	l.yTickMinor = l.yhi-l.ylo <= 3
	return l
}

func (l *layout) px(p float64) float64 {
	return l.x0 + (l.x1-l.x0)*min(pctX(p), l.xmax)/l.xmax
}

func (l *layout) py(ms float64) float64 {
	return l.y0 - (l.y0-l.y1)*(math.Log10(ms)-l.ylo)/(l.yhi-l.ylo)
}

func (c *Chart) draw(cv canvas) {
	l := c.layout()
	// Grid and ticks.
	for d := 0.0; d <= l.xmax; d++ {
		x := l.x0 + (l.x1-l.x0)*d/l.xmax
		cv.line(x, l.y0, x, l.y1, grey, 1)
		cv.text(x, l.y0+16, pctLabel(d), black, 1)
	}
	for e := l.ylo; e <= l.yhi; e++ {
		for _, m := range []float64{1, 2, 5} {
			v := math.Pow(10, e) * m
			if (m != 1 && !l.yTickMinor) || math.Log10(v) > l.yhi+1e-9 {
				continue
			}
			y := l.py(v)
			cv.line(l.x0, y, l.x1, y, grey, 1)
			cv.text(l.x0-8, y, msLabel(v), black, 2)
		}
	}
	cv.line(l.x0, l.y0, l.x1, l.y0, black, 1.5)
	cv.line(l.x0, l.y0, l.x0, l.y1, black, 1.5)
	cv.text((l.x0+l.x1)/2, float64(chartH)-22, "percentile", black, 1)
	cv.text(l.x0, l.y1-16, "latency (ms, log scale)", black, 0)
	cv.text(chartW/2, 20, c.Title, black, 1)
	// One line per series.
	for i, s := range c.Series {
		col := palette[i%len(palette)]
		var pts [][2]float64
		for _, p := range s.Points {
			if p.Percentile >= 100 || p.Us <= 0 || pctX(p.Percentile) > l.xmax+1e-9 {
				continue
			}
			pts = append(pts, [2]float64{l.px(p.Percentile), l.py(p.Us / 1e3)})
		}
		cv.polyline(pts, col, 2.5)
		// Legend, in its own column right of the plot.
		ly := l.y1 + 8 + float64(i)*24
		cv.line(l.x1+40, ly, l.x1+70, ly, col, 3)
		cv.text(l.x1+78, ly, legendLabel(s.Label), black, 0)
	}
}

// pctLabel names decade d of the x axis: 0%, 90%, 99%, 99.9%...
func pctLabel(d float64) string {
	return fmt.Sprintf("%.*f%%", max(int(d)-2, 0), 100*(1-math.Pow(10, -d)))
}

// legendLabel keeps a label within the legend column (about 20 characters).
func legendLabel(s string) string {
	if r := []rune(s); len(r) > 20 {
		return string(r[:19]) + "~"
	}
	return s
}

func msLabel(v float64) string {
	if v >= 1 {
		return fmt.Sprintf("%.0f", v)
	}
	return strings.TrimRight(fmt.Sprintf("%.4f", v), "0")
}

// WriteSVG writes the chart as SVG.
func (c *Chart) WriteSVG(w io.Writer) error {
	s := &svgCanvas{}
	fmt.Fprintf(&s.b, `<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" viewBox="0 0 %d %d" font-family="sans-serif" font-size="14">`+"\n", chartW, chartH, chartW, chartH)
	fmt.Fprintf(&s.b, `<rect width="100%%" height="100%%" fill="white"/>`+"\n")
	c.draw(s)
	s.b.WriteString("</svg>\n")
	_, err := io.WriteString(w, s.b.String())
	return err
}

// WritePNG writes the chart as PNG, drawn with our own rasterizer and bitmap font.
func (c *Chart) WritePNG(w io.Writer) error {
	img := image.NewRGBA(image.Rect(0, 0, chartW, chartH))
	for i := range img.Pix {
		img.Pix[i] = 255
	}
	c.draw(&rasterCanvas{img: img})
	return png.Encode(w, img)
}

type svgCanvas struct{ b strings.Builder }

func rgb(c color.RGBA) string { return fmt.Sprintf("#%02x%02x%02x", c.R, c.G, c.B) }

func (s *svgCanvas) line(x1, y1, x2, y2 float64, c color.RGBA, width float64) {
	fmt.Fprintf(&s.b, `<line x1="%.1f" y1="%.1f" x2="%.1f" y2="%.1f" stroke="%s" stroke-width="%.1f"/>`+"\n", x1, y1, x2, y2, rgb(c), width)
}

func (s *svgCanvas) polyline(pts [][2]float64, c color.RGBA, width float64) {
	s.b.WriteString(`<polyline fill="none" stroke-linejoin="round" points="`)
	for _, p := range pts {
		fmt.Fprintf(&s.b, "%.1f,%.1f ", p[0], p[1])
	}
	fmt.Fprintf(&s.b, `" stroke="%s" stroke-width="%.1f"/>`+"\n", rgb(c), width)
}

func (s *svgCanvas) text(x, y float64, str string, c color.RGBA, anchor int) {
	a := [...]string{"start", "middle", "end"}[anchor]
	var esc strings.Builder
	for _, r := range str {
		switch r {
		case '<':
			esc.WriteString("&lt;")
		case '>':
			esc.WriteString("&gt;")
		case '&':
			esc.WriteString("&amp;")
		default:
			esc.WriteRune(r)
		}
	}
	fmt.Fprintf(&s.b, `<text x="%.1f" y="%.1f" fill="%s" text-anchor="%s" dominant-baseline="middle">%s</text>`+"\n", x, y, rgb(c), a, esc.String())
}

type rasterCanvas struct{ img *image.RGBA }

// blend paints colour c over pixel (x, y) with coverage a in [0, 1].
func (r *rasterCanvas) blend(x, y int, c color.RGBA, a float64) {
	if !(image.Point{x, y}.In(r.img.Rect)) || a <= 0 {
		return
	}
	a = min(a, 1)
	i := r.img.PixOffset(x, y)
	p := r.img.Pix[i : i+3 : i+3]
	p[0] = uint8(float64(p[0])*(1-a) + float64(c.R)*a)
	p[1] = uint8(float64(p[1])*(1-a) + float64(c.G)*a)
	p[2] = uint8(float64(p[2])*(1-a) + float64(c.B)*a)
}

// line draws a segment of the given width with soft edges.
func (r *rasterCanvas) line(x1, y1, x2, y2 float64, c color.RGBA, width float64) {
	r.polyline([][2]float64{{x1, y1}, {x2, y2}}, c, width)
}

// polyline paints each pixel once with the strongest coverage any segment gives it (from
// its distance to the segment), so joints do not darken.
func (r *rasterCanvas) polyline(pts [][2]float64, c color.RGBA, width float64) {
	b := r.img.Rect
	cov := make([]float64, b.Dx()*b.Dy())
	h := width / 2
	for i := 1; i < len(pts); i++ {
		x1, y1, x2, y2 := pts[i-1][0], pts[i-1][1], pts[i][0], pts[i][1]
		minX, maxX := max(int(math.Floor(min(x1, x2)-h-1)), b.Min.X), min(int(math.Ceil(max(x1, x2)+h+1)), b.Max.X-1)
		minY, maxY := max(int(math.Floor(min(y1, y2)-h-1)), b.Min.Y), min(int(math.Ceil(max(y1, y2)+h+1)), b.Max.Y-1)
		dx, dy := x2-x1, y2-y1
		ll := dx*dx + dy*dy
		for y := minY; y <= maxY; y++ {
			for x := minX; x <= maxX; x++ {
				px, py := float64(x)+0.5, float64(y)+0.5
				t := 0.0
				if ll > 0 {
					t = min(max(((px-x1)*dx+(py-y1)*dy)/ll, 0), 1)
				}
				a := h + 0.5 - math.Hypot(px-(x1+t*dx), py-(y1+t*dy))
				k := (y-b.Min.Y)*b.Dx() + x - b.Min.X
				cov[k] = max(cov[k], a)
			}
		}
	}
	for k, a := range cov {
		if a > 0 {
			r.blend(b.Min.X+k%b.Dx(), b.Min.Y+k/b.Dx(), c, a)
		}
	}
}

func (r *rasterCanvas) text(x, y float64, s string, c color.RGBA, anchor int) {
	n := len([]rune(s))
	w := float64(n*(glyphW+1)*fontScale - fontScale)
	left := x - w*float64(anchor)/2
	top := int(y) - glyphH*fontScale/2
	for i, ch := range []rune(s) {
		g := glyph(ch)
		gx := int(left) + i*(glyphW+1)*fontScale
		for row := range glyphH {
			for col := range glyphW {
				if g[row][col] != '#' {
					continue
				}
				for sy := range fontScale {
					for sx := range fontScale {
						r.blend(gx+col*fontScale+sx, top+row*fontScale+sy, c, 1)
					}
				}
			}
		}
	}
}

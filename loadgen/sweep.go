package loadgen

import (
	"context"
	"fmt"
	"io"
	"time"
)

// SweepOptions say how a sweep raises the rate and what it calls sustainable.
type SweepOptions struct {
	Start   float64       // first rate, records/s
	Factor  float64       // each step multiplies the rate by this (> 1)
	MaxRate float64       // stop before exceeding it; 0 = no limit
	P99Max  time.Duration // the bound on p99 end-to-end latency (publish latency without consumers)
	Refine  int           // bisection steps between the last good and the first bad rate
	Options               // progress and label for each step's run
	// Step is called with each step's result as soon as it is known (may be nil).
	Step func(i int, r *Result, s SweepStep)
}

// SweepStep is one rate tried.
type SweepStep struct {
	Rate     float64 `json:"rate"`
	Achieved float64 `json:"achieved_rate"`
	P99Ms    float64 `json:"p99_ms"`
	OK       bool    `json:"sustainable"`
	Reason   string  `json:"reason,omitempty"` // why it is not sustainable
}

// SweepResult is the outcome of a sweep: the maximum sustainable throughput.
type SweepResult struct {
	Workload       Workload    `json:"workload"`
	P99MaxMs       float64     `json:"p99_bound_ms"`
	MaxSustainable float64     `json:"max_sustainable_rate"` // 0 if even the first step failed
	Steps          []SweepStep `json:"steps"`
}

// Judge says whether a run sustained its rate: target reached, no errors, consumers
// caught up, p99 latency within the bound.
func Judge(r *Result, p99Max time.Duration) SweepStep {
	s := SweepStep{Rate: r.Workload.Rate, Achieved: r.Produce.RecordsPerSec}
	l := r.EndToEnd
	if l.Count == 0 {
		l = r.Publish
	}
	s.P99Ms = l.P99 / 1e3
	var errs int64
	for _, v := range r.ProduceErrors {
		errs += v
	}
	for _, v := range r.ConsumeErrors {
		errs += v
	}
	switch {
	case s.Achieved < 0.95*s.Rate:
		s.Reason = fmt.Sprintf("achieved %.0f of %.0f rec/s", s.Achieved, s.Rate)
	case errs > 0:
		s.Reason = fmt.Sprintf("%d errors", errs)
	case r.ConsumerLag > 0:
		s.Reason = fmt.Sprintf("consumers %d records behind at the end", r.ConsumerLag)
	case l.Count == 0:
		s.Reason = "no latency measured"
	case s.P99Ms > float64(p99Max)/1e6:
		s.Reason = fmt.Sprintf("p99 %.1f ms > %.1f ms", s.P99Ms, float64(p99Max)/1e6)
	default:
		s.OK = true
	}
	return s
}

// Sweep runs w at rising rates and returns the highest rate that stayed sustainable.
// Each step is a full Run (warm-up, duration, drain) on its own fresh topic unless w.Topic is set.
func Sweep(ctx context.Context, w Workload, opt SweepOptions) (*SweepResult, error) {
	if opt.Start <= 0 || opt.Factor <= 1 || opt.P99Max <= 0 {
		return nil, fmt.Errorf("sweep needs start > 0, factor > 1 and a p99 bound > 0")
	}
	out := &SweepResult{Workload: w, P99MaxMs: float64(opt.P99Max) / 1e6}
	step := func(rate float64) (SweepStep, error) {
		w.Rate = rate
		o := opt.Options
		o.Label = fmt.Sprintf("%.0f rec/s", rate)
		r, err := Run(ctx, w, o)
		if err != nil {
			return SweepStep{}, err
		}
		s := Judge(r, opt.P99Max)
		out.Steps = append(out.Steps, s)
		if opt.Step != nil {
			opt.Step(len(out.Steps)-1, r, s)
		}
		return s, nil
	}
	good, bad := 0.0, 0.0
	for rate := opt.Start; opt.MaxRate == 0 || rate <= opt.MaxRate; rate *= opt.Factor {
		s, err := step(rate)
		if err != nil {
			return out, err
		}
		if !s.OK {
			bad = rate
			break
		}
		good = rate
	}
	for i := 0; i < opt.Refine && bad > 0 && good > 0; i++ {
		mid := (good + bad) / 2
		s, err := step(mid)
		if err != nil {
			return out, err
		}
		if s.OK {
			good = mid
		} else {
			bad = mid
		}
	}
	out.MaxSustainable = good
	return out, nil
}

// Print writes the sweep's steps and verdict.
func (s *SweepResult) Print(out io.Writer) {
	for _, st := range s.Steps {
		verdict := "ok"
		if !st.OK {
			verdict = "NOT sustainable: " + st.Reason
		}
		fmt.Fprintf(out, "rate %10.0f rec/s  achieved %10.0f  p99 %8.2f ms  %s\n", st.Rate, st.Achieved, st.P99Ms, verdict)
	}
	if s.MaxSustainable > 0 {
		fmt.Fprintf(out, "maximum sustainable throughput: %.0f rec/s (p99 <= %.1f ms)\n", s.MaxSustainable, s.P99MaxMs)
	} else {
		fmt.Fprintf(out, "no rate tried was sustainable (p99 <= %.1f ms)\n", s.P99MaxMs)
	}
}

package acceptretry

import (
	"bytes"
	"errors"
	"log/slog"
	"strings"
	"testing"
)

// A burst of failures writes one line; the next line, once due, carries the count left out.
func TestFailedLogsOncePerInterval(t *testing.T) {
	var out bytes.Buffer
	log := slog.New(slog.NewTextHandler(&out, nil))
	var a Failures
	for range 100 {
		a.Failed(log, "accept failed", errors.New("too many open files"))
	}
	if n := strings.Count(out.String(), "accept failed"); n != 1 {
		t.Fatalf("%d lines for 100 failures within %v, want 1:\n%s", n, LogEvery, out.String())
	}
	a.mu.Lock()
	a.last = a.last.Add(-LogEvery) // the interval has passed
	a.mu.Unlock()
	a.Failed(log, "accept failed", errors.New("too many open files"))
	if !strings.Contains(out.String(), "failures_since_last_line=99") {
		t.Fatalf("the second line does not count the 99 left out:\n%s", out.String())
	}
}

package quorum

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/lni/dragonboat/v4/logger"
)

// dragonboat's logger factory is process-wide and may be set only once, so every Host shares
// one adapter that writes to the most recently configured slog.Logger.
var (
	dbLoggerOnce sync.Once
	dbLogger     atomic.Pointer[slog.Logger]
	// dbLogLevel is the least severe dragonboat level passed on; dragonboat is chatty at
	// INFO (every election, snapshot and connection), so the default is WARNING.
	dbLogLevel atomic.Int32
)

func init() { dbLogLevel.Store(int32(logger.WARNING)) }

// SetDragonboatLogLevel changes which dragonboat messages reach the slog logger
// (logger.WARNING by default; logger.INFO or logger.DEBUG when investigating Raft).
func SetDragonboatLogLevel(l logger.LogLevel) { dbLogLevel.Store(int32(l)) }

func setDragonboatLogger(l *slog.Logger) {
	dbLogger.Store(l)
	dbLoggerOnce.Do(func() {
		logger.SetLoggerFactory(func(pkg string) logger.ILogger { return slogAdapter{pkg: pkg} })
	})
}

// repeatEvery limits how often one dragonboat message (by format) is logged: the transport logs
// every failed redial to a down peer several times a second, and under load the engine warns on
// every snapshot request that overlaps a running one. Panics are never suppressed.
const repeatEvery = 30 * time.Second

var lastLogged sync.Map // format string -> *atomic.Int64 (unix nanos of the last line)

func suppressRepeat(format string) bool {
	now := time.Now().UnixNano()
	v, _ := lastLogged.LoadOrStore(format, new(atomic.Int64))
	last := v.(*atomic.Int64)
	prev := last.Load()
	if prev != 0 && now-prev < int64(repeatEvery) {
		return true
	}
	return !last.CompareAndSwap(prev, now)
}

// slogAdapter implements dragonboat's logger.ILogger on slog.
type slogAdapter struct{ pkg string }

func (a slogAdapter) SetLevel(logger.LogLevel) {} // the package-wide level applies

func (a slogAdapter) log(lvl logger.LogLevel, sl slog.Level, format string, args []any) {
	max := logger.LogLevel(dbLogLevel.Load())
	if a.pkg == "raft" && max == logger.WARNING {
		// The raft package logs every election at WARNING: thousands of lines when a broker
		// with many partitions starts. Leadership is observable through LeaderInfo.
		max = logger.ERROR
	}
	if lvl > max {
		return
	}
	l := dbLogger.Load()
	if l == nil || !l.Enabled(context.Background(), sl) {
		return
	}
	if suppressRepeat(format) {
		return
	}
	l.Log(context.Background(), sl, fmt.Sprintf(format, args...), "component", "dragonboat", "pkg", a.pkg)
}

func (a slogAdapter) Debugf(format string, args ...any) {
	a.log(logger.DEBUG, slog.LevelDebug, format, args)
}
func (a slogAdapter) Infof(format string, args ...any) {
	a.log(logger.INFO, slog.LevelInfo, format, args)
}
func (a slogAdapter) Warningf(format string, args ...any) {
	a.log(logger.WARNING, slog.LevelWarn, format, args)
}
func (a slogAdapter) Errorf(format string, args ...any) {
	a.log(logger.ERROR, slog.LevelError, format, args)
}

// Panicf logs and panics, as dragonboat expects: it calls Panicf on broken invariants.
func (a slogAdapter) Panicf(format string, args ...any) {
	msg := fmt.Sprintf(format, args...)
	if l := dbLogger.Load(); l != nil {
		l.Error(msg, "component", "dragonboat", "pkg", a.pkg)
	}
	panic(msg)
}

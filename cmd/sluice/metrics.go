package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/sluicebroker/sluice/broker"
	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/netio"
)

// serveMetrics listens on addr (--metrics-addr) for /metrics, /healthz and /readyz from the start,
// so a probe sees the process alive while Raft replays; ready turns /readyz green. The returned
// function stops the listener.
func serveMetrics(addr string, ready *atomic.Bool, logger *slog.Logger) (func(), error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return nil, fmt.Errorf("metrics listener: %v", err)
	}
	srv := &http.Server{Handler: metrics.Handler(ready), ReadHeaderTimeout: 10 * time.Second}
	go func() {
		if err := srv.Serve(ln); err != nil && err != http.ErrServerClosed {
			logger.Error("metrics listener", "addr", addr, "err", err)
		}
	}()
	logger.Info("metrics serving", "addr", ln.Addr().String())
	return func() {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		_ = srv.Shutdown(ctx)
	}, nil
}

// registerServeMetrics adds the running broker's state gauges and its open connections.
func registerServeMetrics(br *broker.Broker, listeners []*netio.Server, logger *slog.Logger) {
	var collectors []prometheus.Collector
	for _, srv := range listeners {
		listener := "plaintext"
		switch {
		case srv.TLS():
			listener = "tls"
		case srv.SecurityProtocol() == broker.ProtocolSASLPlaintext:
			listener = "sasl_plaintext"
		}
		collectors = append(collectors, prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name: "sluice_connections", Help: "Client connections open, by listener and network backend.",
			ConstLabels: prometheus.Labels{"listener": listener, "backend": string(srv.Backend())},
		}, func() float64 { return float64(srv.OpenConns()) }))
	}
	for _, c := range collectors {
		if err := metrics.Registry.Register(c); err != nil {
			logger.Warn("registering metrics", "err", err)
		}
	}
	if err := br.RegisterMetrics(metrics.Registry); err != nil {
		logger.Warn("registering metrics", "err", err)
	}
}

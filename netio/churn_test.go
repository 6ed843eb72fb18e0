package netio

import (
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// TestConnectionChurn opens and closes connections fast from many goroutines: closed at once (FIN or
// RST), after a request and its answer, in the middle of a frame, and with pipelined requests left
// unanswered. Every connection must be accepted (the answered ones answered) and reported closed,
// every response's OnDone must run, and the server must serve a new connection afterwards.
func TestConnectionChurn(t *testing.T) {
	forBackends(t, func(t *testing.T, b Backend) {
		h := newTestHandler(t)
		s, _ := startServer(t, b, h, Options{})
		var closed atomic.Int64
		stop := make(chan struct{})
		defer close(stop)
		go func() { // ConnClosed runs on the loops: never let h.closed fill up
			for {
				select {
				case <-h.closed:
					closed.Add(1)
				case <-stop:
					return
				}
			}
		}()
		const workers, each = 40, 75
		var (
			wg     sync.WaitGroup
			failed atomic.Int64
			first  sync.Once
		)
		fail := func(format string, args ...any) {
			failed.Add(1)
			first.Do(func() { t.Errorf(format, args...) })
		}
		for w := range workers {
			wg.Go(func() {
				for i := range each {
					c, err := net.DialTimeout("tcp", s.Addr().String(), 5*time.Second)
					if err != nil {
						fail("dial: %v", err)
						return
					}
					tc := c.(*net.TCPConn)
					_ = tc.SetDeadline(time.Now().Add(10 * time.Second))
					seq := uint32(w*each + i)
					switch i % 5 {
					case 0: // FIN without a byte
					case 1: // RST without a byte
						_ = tc.SetLinger(0)
					case 2: // a request and its answer
						f := frame(seq, opEcho, payloadFor(seq, 100))
						if _, err := tc.Write(f); err != nil {
							fail("write: %v", err)
							break
						}
						var hdr [4]byte
						if _, err := readFull(tc, hdr[:]); err != nil {
							fail("response: %v", err)
						}
					case 3: // cut inside a frame
						f := frame(seq, opEcho, payloadFor(seq, 100))
						_, _ = tc.Write(f[:len(f)/2])
					case 4: // pipelined requests, gone before the answers
						var fs []byte
						for k := range 20 {
							fs = append(fs, frame(seq+uint32(k), opEcho, payloadFor(seq, 50))...)
						}
						_, _ = tc.Write(fs)
						_ = tc.SetLinger(0)
					}
					_ = c.Close()
				}
			})
		}
		wg.Wait()
		if failed.Load() > 0 {
			t.Fatalf("%d connections failed", failed.Load())
		}
		deadline := time.Now().Add(20 * time.Second)
		// OpenConns counts connections made and not yet reported closed. (uring does not make one for
		// a connection reset before it is accepted: fewer than all may be reported.)
		for s.OpenConns() != 0 {
			if time.Now().After(deadline) {
				t.Fatalf("%d connections open (%d reported closed) 20 s after the clients closed", s.OpenConns(), closed.Load())
			}
			time.Sleep(5 * time.Millisecond)
		}
		h.waitDone(t)
		c := dial(t, s)
		c.send(frame(1, opEcho, []byte("after the churn")))
		c.expect(1, []byte("after the churn"))
	})
}

func readFull(c net.Conn, b []byte) (int, error) {
	n := 0
	for n < len(b) {
		m, err := c.Read(b[n:])
		n += m
		if err != nil {
			return n, err
		}
	}
	return n, nil
}

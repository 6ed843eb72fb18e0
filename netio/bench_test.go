package netio

import (
	"encoding/binary"
	"fmt"
	"io"
	"net"
	"os"
	"sync"
	"testing"
)

// benchHandler answers without allocating: responses and their buffers come from a pool, OnDone
// returns them. Frames: seq uint32 | op | pad, as in the tests; opFile answers with benchFileLen bytes
// of the file.
type benchHandler struct {
	async bool
	work  chan *Request
	file  *os.File
	pool  sync.Pool
}

const benchFileLen = 1 << 20

type benchResp struct {
	Response
	parts [2]Part
	buf   []byte
	pool  *sync.Pool
}

func (r *benchResp) done() { r.pool.Put(r) }

func newBenchHandler(async bool, file *os.File) *benchHandler {
	h := &benchHandler{async: async, file: file, work: make(chan *Request, 1024)}
	h.pool.New = func() any {
		r := &benchResp{pool: &h.pool}
		r.OnDone = r.done
		return r
	}
	if async {
		go func() {
			for r := range h.work {
				h.respond(r)
			}
		}()
	}
	return h
}

func (h *benchHandler) HandleRequest(r *Request) {
	if h.async {
		h.work <- r
		return
	}
	h.respond(r)
}

func (h *benchHandler) respond(r *Request) {
	resp := h.pool.Get().(*benchResp)
	if r.Frame[4] == opFile {
		resp.buf = binary.BigEndian.AppendUint32(resp.buf[:0], 4+benchFileLen)
		resp.buf = append(resp.buf, r.Frame[:4]...)
		resp.parts[0] = Part{Bytes: resp.buf}
		resp.parts[1] = Part{File: h.file, Off: 0, Len: benchFileLen}
		resp.Parts = resp.parts[:2]
	} else {
		resp.buf = binary.BigEndian.AppendUint32(resp.buf[:0], uint32(len(r.Frame)))
		resp.buf = append(resp.buf, r.Frame...)
		resp.parts[0] = Part{Bytes: resp.buf}
		resp.Parts = resp.parts[:1]
	}
	r.Respond(&resp.Response)
}

func (h *benchHandler) ConnClosed(*Conn) {}

func benchServer(b *testing.B, backend Backend, h Handler) *Server {
	s, err := Listen("127.0.0.1:0", h, Options{Backend: backend, Loops: 1})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { _ = s.Close() })
	return s
}

// BenchmarkEcho: one connection, 128-byte requests echoed, depth requests in flight at a time.
// Allocations count the whole process (client included).
func BenchmarkEcho(b *testing.B) {
	for _, backend := range backends {
		for _, async := range []bool{false, true} {
			for _, depth := range []int{1, 16} {
				mode := "sync"
				if async {
					mode = "async"
				}
				b.Run(fmt.Sprintf("%s/%s/depth=%d", backend, mode, depth), func(b *testing.B) {
					h := newBenchHandler(async, nil)
					defer close(h.work)
					s := benchServer(b, backend, h)
					c, err := net.Dial("tcp", s.Addr().String())
					if err != nil {
						b.Fatal(err)
					}
					defer c.Close()
					req := frame(1, opEcho, make([]byte, 128-8))
					batch := make([]byte, 0, depth*len(req))
					for i := 0; i < depth; i++ {
						batch = append(batch, req...)
					}
					resp := make([]byte, len(batch))
					b.SetBytes(int64(len(req)))
					b.ReportAllocs()
					b.ResetTimer()
					for done := 0; done < b.N; done += depth {
						if _, err := c.Write(batch); err != nil {
							b.Fatal(err)
						}
						if _, err := io.ReadFull(c, resp); err != nil {
							b.Fatal(err)
						}
					}
				})
			}
		}
	}
}

// BenchmarkEchoConns: 16 connections, each with 4 requests of 128 bytes in flight, answered from
// another goroutine (as the broker does): throughput of the whole loop and wake-up machinery.
func BenchmarkEchoConns(b *testing.B) {
	const conns, depth = 16, 4
	for _, backend := range backends {
		b.Run(string(backend), func(b *testing.B) {
			h := newBenchHandler(true, nil)
			defer close(h.work)
			s := benchServer(b, backend, h)
			cs := make([]net.Conn, conns)
			for i := range cs {
				c, err := net.Dial("tcp", s.Addr().String())
				if err != nil {
					b.Fatal(err)
				}
				defer c.Close()
				cs[i] = c
			}
			req := frame(1, opEcho, make([]byte, 128-8))
			batch := make([]byte, 0, depth*len(req))
			for i := 0; i < depth; i++ {
				batch = append(batch, req...)
			}
			b.SetBytes(int64(len(req)))
			b.ReportAllocs()
			b.ResetTimer()
			var wg sync.WaitGroup
			per := (b.N + conns*depth - 1) / (conns * depth)
			for _, c := range cs {
				wg.Add(1)
				go func() {
					defer wg.Done()
					resp := make([]byte, len(batch))
					for i := 0; i < per; i++ {
						if _, err := c.Write(batch); err != nil {
							b.Error(err)
							return
						}
						if _, err := io.ReadFull(c, resp); err != nil {
							b.Error(err)
							return
						}
					}
				}()
			}
			wg.Wait()
		})
	}
}

// BenchmarkFileRange: one connection, each request answered with an 8-byte header and a 1 MiB file
// range (sendfile on Linux), two requests in flight.
func BenchmarkFileRange(b *testing.B) {
	for _, backend := range backends {
		b.Run(string(backend), func(b *testing.B) {
			f, _ := makeTestFile(b, benchFileLen)
			h := newBenchHandler(false, f)
			defer close(h.work)
			s := benchServer(b, backend, h)
			c, err := net.Dial("tcp", s.Addr().String())
			if err != nil {
				b.Fatal(err)
			}
			defer c.Close()
			req := frame(1, opFile, nil)
			req = append(req, req...)
			resp := make([]byte, 8+benchFileLen)
			b.SetBytes(benchFileLen)
			b.ReportAllocs()
			b.ResetTimer()
			for done := 0; done < b.N; done += 2 {
				if _, err := c.Write(req); err != nil {
					b.Fatal(err)
				}
				for k := 0; k < 2; k++ {
					if _, err := io.ReadFull(c, resp); err != nil {
						b.Fatal(err)
					}
				}
			}
		})
	}
}

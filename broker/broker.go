// Package broker is the Kafka API of Sluice: it decodes request frames with franz-go's kmsg, dispatches
// them by API key (each API registers its versions and handler beside the handler, versions.go), and
// encodes responses, with errors per partition as Kafka clients expect. It also wires the coordinators
// (group, txn) to their internal topics (internal.go). Who leads and who is in sync it asks the
// node's cluster agent (package cluster), cluster metadata changes go to the controller (quorum). It
// knows nothing of how bytes reach the socket (netio); Raft itself is replica's and quorum's.
package broker

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kbin"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/cluster"
	"github.com/sluicebroker/sluice/metrics"
	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
	"github.com/sluicebroker/sluice/replica"
	"github.com/sluicebroker/sluice/segment"
)

// Config is what the broker needs to know about itself and its defaults.
type Config struct {
	NodeID int32
	// Host and Port are the advertised address clients are told to connect to.
	Host string
	Port int32
	Rack string

	DefaultPartitions        int32
	DefaultReplicationFactor int16
	AutoCreateTopics         bool
	// MaxMessageBytes is the broker-wide message.max.bytes; topics may override it.
	MaxMessageBytes int32
	// Log holds the broker-wide defaults for segment size, roll and retention (topic configs override).
	Log segment.Options
	// TopicReadyTimeout bounds how long CreateTopics and auto-creation wait for partition leaders.
	TopicReadyTimeout time.Duration
	// OffsetsRetention is offsets.retention.minutes: committed offsets of a group empty this long
	// expire (0 = the group package's default, 7 days).
	OffsetsRetention time.Duration
	// TransactionMaxTimeout is transaction.max.timeout.ms (0 = 15 minutes).
	TransactionMaxTimeout time.Duration
	// GroupMinSessionTimeout and GroupMaxSessionTimeout are group.min/max.session.timeout.ms: a
	// JoinGroup outside the range gets INVALID_SESSION_TIMEOUT (0 = Kafka's 6 s and 30 min).
	GroupMinSessionTimeout, GroupMaxSessionTimeout time.Duration
	// GroupInitialRebalanceDelay is group.initial.rebalance.delay.ms (0 = none).
	GroupInitialRebalanceDelay time.Duration
	// Disk refuses produce and new partitions when the data directory's disk runs low (nil: no checks).
	Disk *DiskGuard
	// LogDir is the directory of the partitions' logs (log.dirs, DescribeLogDirs).
	LogDir string
	// FetchSessionSlots is max.incremental.fetch.session.cache.slots (0: DefaultFetchSessionSlots;
	// negative: no fetch sessions).
	FetchSessionSlots int
	// Security turns on SASL and ACLs (security.go); nil: neither.
	Security *SecurityConfig

	Logger *slog.Logger
}

// Broker serves the Kafka protocol. It implements netio.Handler.
type Broker struct {
	cfg      Config
	ctl      *quorum.Controller
	replicas *replica.Manager
	agent    *cluster.Agent // who leads, who is in sync
	log      *slog.Logger

	ctx    context.Context // cancelled by Close: long polls and waits end
	cancel context.CancelFunc
	wg     sync.WaitGroup // request goroutines

	pids        producerIDs
	groups      groupState  // the consumer-group coordinator (broker/group.go)
	commitOrder commitOrder // OffsetCommits of a connection apply in order (broker/group.go)
	txns        txnState    // the transaction coordinator (broker/txn.go)

	sessions *fetchSessions  // fetch sessions (broker/fetchsession.go)
	topicIDs topicIDs        // topic id → name, per metadata version (broker/topicids.go)
	sec      *SecurityConfig // nil: no SASL, no ACLs (security.go, authz.go)
}

// New returns a broker over the controller (cluster metadata), the replica manager (this node's
// partitions) and the node's cluster agent.
func New(cfg Config, ctl *quorum.Controller, replicas *replica.Manager, agent *cluster.Agent) *Broker {
	if cfg.Logger == nil {
		cfg.Logger = slog.Default()
	}
	if cfg.DefaultPartitions <= 0 {
		cfg.DefaultPartitions = 1
	}
	if cfg.DefaultReplicationFactor <= 0 {
		cfg.DefaultReplicationFactor = 1
	}
	if cfg.MaxMessageBytes <= 0 {
		cfg.MaxMessageBytes = DefaultMaxMessageBytes
	}
	if cfg.TopicReadyTimeout <= 0 {
		cfg.TopicReadyTimeout = 10 * time.Second
	}
	ctx, cancel := context.WithCancel(context.Background())
	b := &Broker{cfg: cfg, ctl: ctl, replicas: replicas, agent: agent, log: cfg.Logger, ctx: ctx, cancel: cancel,
		groups: groupState{topic: internalTopic{name: offsetsTopic, partitions: offsetsPartitions}},
		txns:   txnState{topic: internalTopic{name: txnTopic, partitions: txnPartitions}}}
	b.pids.ctl = ctl
	if cfg.FetchSessionSlots == 0 {
		cfg.FetchSessionSlots = DefaultFetchSessionSlots
	}
	b.sessions = newFetchSessions(cfg.FetchSessionSlots)
	b.sec = cfg.Security
	if ctl != nil && replicas != nil {
		b.wg.Add(1)
		go b.txnLoader()
	}
	return b
}

// DefaultMaxMessageBytes is Kafka's message.max.bytes default: 1 MiB plus the batch overhead.
const DefaultMaxMessageBytes = 1048588

// Close ends long polls and waits for in-flight request goroutines to finish.
func (b *Broker) Close() {
	b.cancel()
	b.wg.Wait()
}

// requestHeader is the Kafka request header (v1, or v2 with tagged fields for flexible versions).
type requestHeader struct {
	key, version  int16
	correlationID int32
	clientID      string
	arrived       metrics.Mono // for the request latency metric
}

// call is one request in flight: its header, decoded body and the netio request to answer.
type call struct {
	hdr requestHeader
	req kmsg.Request
	nr  *netio.Request
	// turn orders this call among its connection's OffsetCommits (group.go); nil for other requests.
	turn *commitTurn
}

// HandleRequest runs on a netio event loop: it decodes the request, answers ApiVersions and starts
// produce inline (produce must reach Raft in arrival order and does not block), and hands everything
// else to a goroutine, since fetch may long-poll and admin requests wait for the controller.
func (b *Broker) HandleRequest(nr *netio.Request) {
	if b.sec != nil && b.rawSaslToken(nr) {
		return
	}
	hdr, req, err := decodeRequest(nr.Frame)
	hdr.arrived = metrics.Now()
	metrics.BytesIn(len(nr.Frame) + 4)
	switch {
	case errors.Is(err, errApiVersionTooNew):
		// KIP-511: answer with a v0 body listing our ApiVersions range, so the client retries lower.
		b.respond(nr, hdr, unsupportedApiVersions(apis[apiVersionsKey].apiRange))
		return
	case err != nil:
		nr.CloseConn(fmt.Sprintf("client %q: %v", hdr.clientID, err))
		return
	}
	c := &call{hdr: hdr, req: req, nr: nr}
	if b.sec != nil && !b.admitConn(c) {
		return
	}
	switch req := req.(type) {
	case *kmsg.ApiVersionsRequest:
		b.respond(nr, hdr, b.handleApiVersions(c))
		return
	case *kmsg.ProduceRequest:
		b.handleProduce(c, req) // on the loop: proposals keep the connection's order
		return
	case *kmsg.OffsetCommitRequest:
		c.turn = b.commitOrder.take(nr.Conn) // taken on the loop: the connection's order
	}
	b.wg.Add(1)
	go func() {
		defer b.wg.Done()
		b.serve(c)
	}()
}

// errApiVersionTooNew is an ApiVersions request above our range: answered, never a reason to close.
var errApiVersionTooNew = errors.New("ApiVersions version above the supported range")

// decodeRequest parses one request frame: the header, then the body with kmsg. Any error other than
// errApiVersionTooNew means the frame is not a request we serve and its connection should close.
func decodeRequest(frame []byte) (requestHeader, kmsg.Request, error) {
	hdr, body, err := parseHeader(frame)
	if err != nil {
		return hdr, nil, fmt.Errorf("malformed request header: %v", err)
	}
	api, ok := apis[hdr.key]
	switch {
	case !ok:
		return hdr, nil, fmt.Errorf("unsupported API key %d", hdr.key)
	case hdr.key == apiVersionsKey && hdr.version > api.max:
		return hdr, nil, errApiVersionTooNew
	case hdr.version < api.min || hdr.version > api.max:
		return hdr, nil, fmt.Errorf("unsupported version %d of %s", hdr.version, kmsg.NameForKey(hdr.key))
	}
	req := kmsg.RequestForKey(hdr.key)
	req.SetVersion(hdr.version)
	r := kbin.Reader{Src: body}
	if req.IsFlexible() {
		kmsg.SkipTags(&r)
		if !r.Ok() {
			return hdr, nil, errors.New("malformed request header tags")
		}
	}
	if err := req.ReadFrom(r.Src); err != nil {
		return hdr, nil, fmt.Errorf("malformed %s v%d request: %v", kmsg.NameForKey(hdr.key), hdr.version, err)
	}
	return hdr, req, nil
}

// ConnClosed is told when a connection is gone; the broker keeps no per-connection state yet.
func (b *Broker) ConnClosed(*netio.Conn) {}

const apiVersionsKey = 18

func init() {
	// Served on the event loop by HandleRequest, so a client learns our versions without a hop.
	register(kmsg.ApiVersions, 0, 4, nil)
}

// serve runs one request to its answer.
func (b *Broker) serve(c *call) {
	defer func() {
		if p := recover(); p != nil {
			// A bug in one handler must not take the broker down: log it and drop that connection.
			b.log.Error("request handler panicked", "api", kmsg.NameForKey(c.hdr.key), "version", c.hdr.version, "panic", p)
			c.nr.CloseConn("internal error")
		}
	}()
	a := apis[c.hdr.key]
	if a.serve == nil {
		c.nr.CloseConn(fmt.Sprintf("no handler for API key %d", c.hdr.key))
		return
	}
	var resp kmsg.Response
	if b.sec != nil {
		resp = b.serveSecure(c, a) // security.go, authz_requests.go
	} else {
		resp = a.serve(b, c)
	}
	if resp != nil {
		b.respond(c.nr, c.hdr, resp)
	}
}

// parseHeader reads the request header v1 fields (key, version, correlation id, client id); the
// flexible header's tag section is skipped by the caller once it knows the version is flexible.
func parseHeader(frame []byte) (requestHeader, []byte, error) {
	if len(frame) < 10 {
		return requestHeader{}, nil, errors.New("frame shorter than a request header")
	}
	h := requestHeader{
		key:           int16(binary.BigEndian.Uint16(frame[0:])),
		version:       int16(binary.BigEndian.Uint16(frame[2:])),
		correlationID: int32(binary.BigEndian.Uint32(frame[4:])),
	}
	n := int16(binary.BigEndian.Uint16(frame[8:]))
	rest := frame[10:]
	switch {
	case n < -1:
		return h, nil, fmt.Errorf("client id length %d", n)
	case n > 0:
		if int(n) > len(rest) {
			return h, nil, errors.New("client id longer than the frame")
		}
		h.clientID = string(rest[:n])
		rest = rest[n:]
	}
	return h, rest, nil
}

// bufPool holds response encoding buffers; a response's buffer returns once netio has written it.
var bufPool = sync.Pool{New: func() any { b := make([]byte, 0, 4096); return &b }}

// respond encodes a kmsg response behind the response header and queues it on the connection.
func (b *Broker) respond(nr *netio.Request, hdr requestHeader, resp kmsg.Response) {
	bp := bufPool.Get().(*[]byte)
	buf := appendResponseHeader((*bp)[:0], hdr.correlationID, resp.IsFlexible() && resp.Key() != apiVersionsKey)
	buf = resp.AppendTo(buf)
	binary.BigEndian.PutUint32(buf, uint32(len(buf)-4))
	*bp = buf
	metrics.Request(hdr.key, hdr.arrived)
	metrics.BytesOut(int64(len(buf)))
	nr.Respond(&netio.Response{
		Parts: []netio.Part{{Bytes: buf}},
		OnDone: func() {
			if cap(*bp) <= 1<<20 { // do not pin huge buffers in the pool
				bufPool.Put(bp)
			}
		},
	})
}

// appendResponseHeader writes a placeholder size, the correlation id and, for flexible responses other
// than ApiVersions (always header v0), the empty tag section of response header v1.
func appendResponseHeader(buf []byte, correlationID int32, flexible bool) []byte {
	buf = append(buf, 0, 0, 0, 0)
	buf = binary.BigEndian.AppendUint32(buf, uint32(correlationID))
	if flexible {
		buf = append(buf, 0)
	}
	return buf
}

func (b *Broker) handleApiVersions(c *call) kmsg.Response {
	req := c.req.(*kmsg.ApiVersionsRequest)
	resp := req.ResponseKind().(*kmsg.ApiVersionsResponse)
	if req.Version >= 3 && (!validSoftwareNameVersion(req.ClientSoftwareName) || !validSoftwareNameVersion(req.ClientSoftwareVersion)) {
		resp.ErrorCode = errInvalidRequest
		return resp
	}
	resp.ApiKeys = apiVersionsKeys()
	return resp
}

func unsupportedApiVersions(api apiRange) kmsg.Response {
	resp := kmsg.NewPtrApiVersionsResponse()
	resp.Version = 0
	resp.ErrorCode = errUnsupportedVersion
	k := kmsg.NewApiVersionsResponseApiKey()
	k.ApiKey, k.MinVersion, k.MaxVersion = api.key, api.min, api.max
	resp.ApiKeys = append(resp.ApiKeys, k)
	return resp
}

// validSoftwareNameVersion is KIP-511's rule: [a-zA-Z0-9](?:[a-zA-Z0-9\-.]*[a-zA-Z0-9])?
func validSoftwareNameVersion(s string) bool {
	if s == "" {
		return false
	}
	alnum := func(c byte) bool { return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' }
	for i := 0; i < len(s); i++ {
		c := s[i]
		if alnum(c) {
			continue
		}
		if (c == '-' || c == '.') && i > 0 && i < len(s)-1 {
			continue
		}
		return false
	}
	return true
}

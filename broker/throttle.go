package broker

import (
	"encoding/binary"
	"math"
	"sync"
	"sync/atomic"
	"time"

	"github.com/sluicebroker/sluice/netio"
	"github.com/sluicebroker/sluice/quorum"
)

// Byte-rate quotas enforced as Kafka's ClientQuotaManager does: the bytes of each Produce request
// and Fetch response are recorded in a rate sensor of the client's quota entity (user and/or
// client-id, Kafka's precedence), a window of quota.window.num samples of quota.window.size each.
// When the rate is above the quota, the response carries throttle_time_ms = (rate - quota) / quota *
// window, and the connection is muted for that long (KIP-219): its next requests are held until
// then. Clients back off by the same time on their own. The cost is per request, never per record;
// with no quota configured it is one metadata load.

type quotaKind uint8

const (
	produceQuota quotaKind = iota
	fetchQuota
)

var quotaKeys = [...]string{produceQuota: QuotaProducerByteRate, fetchQuota: QuotaConsumerByteRate}

// maxThrottle keeps throttle_time_ms within its int32 field.
const maxThrottle = time.Duration(math.MaxInt32) * time.Millisecond

// Kafka's quota.window.num and quota.window.size.seconds defaults.
const (
	DefaultQuotaWindowSamples = 11
	DefaultQuotaWindowSize    = time.Second
)

// sensorKey names a rate sensor: the quota kind and the entity the quota came from, with defaults
// replaced by the client's own user and client id (each client under a default quota has its own
// sensor) and a part the entity lacks left empty (a user's clients share their user's).
type sensorKey struct {
	kind           quotaKind
	user, clientID string
}

// rateSensor is Kafka's Rate over a SampledStat: samples of at most size each, the oldest dropped
// once the window of n samples has passed.
type rateSensor struct {
	mu     sync.Mutex
	starts []int64 // each sample's start, Unix ns
	sums   []float64
	cur    int
	last   int64 // the last record, Unix ns: idle sensors expire (sweepSensors)
}

func newRateSensor(n int, now int64) *rateSensor {
	s := &rateSensor{starts: make([]int64, n), sums: make([]float64, n)}
	s.starts[0] = now
	return s
}

// record adds v at now and returns the throttle time that brings the rate back to limit if nothing
// more is recorded meanwhile (0 when it is within): Kafka's (rate - limit) / limit * window, uncapped
// as in Kafka (a client whose one request is many windows' worth waits that long).
func (s *rateSensor) record(now int64, v, limit float64, size time.Duration) time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.last = now
	n, sz := int64(len(s.starts)), int64(size)
	if now-s.starts[s.cur] >= sz {
		s.cur = (s.cur + 1) % len(s.starts)
		s.starts[s.cur], s.sums[s.cur] = now, 0
	}
	s.sums[s.cur] += v
	total, oldest := 0.0, now
	for i, st := range s.starts {
		if st == 0 || now-st >= n*sz {
			continue // never used, or obsolete
		}
		total += s.sums[i]
		oldest = min(oldest, st)
	}
	// Kafka's Rate.windowSize: at least n-1 whole samples, so a new client's first burst is measured
	// over the full window, not over its first milliseconds.
	elapsed := now - oldest
	if full := elapsed / sz; full < n-1 {
		elapsed += (n - 1 - full) * sz
	}
	rate := total / (float64(elapsed) / 1e9)
	if rate <= limit {
		return 0
	}
	return min(time.Duration((rate-limit)/limit*float64(elapsed)), maxThrottle)
}

// connQuota caches a connection's resolved quotas for one quotas version and client id.
type connQuota struct {
	mu       sync.Mutex
	q        *quorum.Quotas
	clientID string
	sensors  [2]*rateSensor // by quotaKind; nil: no quota applies
	limits   [2]float64
}

// quotasOn reports whether any client quota is configured (the per-request cost without quotas).
func (b *Broker) quotasOn() bool { return len(b.ctl.Metadata().QuotasOf().Entries) > 0 }

// recordQuota records bytes of kind for the call's client and returns the throttle time, 0 when no
// quota applies or the client is within it.
func (b *Broker) recordQuota(c *call, kind quotaKind, bytes int) time.Duration {
	q := b.ctl.Metadata().QuotasOf()
	if len(q.Entries) == 0 {
		return 0
	}
	st, ok := c.nr.Conn.Value().(*connState) // made on the event loop by HandleRequest
	if !ok {
		return 0
	}
	cq := &st.quota
	cq.mu.Lock()
	if cq.q != q || cq.clientID != c.hdr.clientID {
		st.mu.Lock()
		user := quotaUser(st.principal)
		st.mu.Unlock()
		cq.q, cq.clientID = q, c.hdr.clientID
		for k := range quotaKeys {
			cq.sensors[k], cq.limits[k] = nil, 0
			if limit, key, ok := resolveQuota(q, quotaKind(k), user, c.hdr.clientID); ok {
				cq.sensors[k], cq.limits[k] = b.sensor(key), limit
			}
		}
	}
	sensor, limit := cq.sensors[kind], cq.limits[kind]
	cq.mu.Unlock()
	if sensor == nil {
		return 0
	}
	return sensor.record(time.Now().UnixNano(), float64(bytes), limit, b.cfg.QuotaWindowSize)
}

// sensor returns the shared sensor of key, made at first use.
func (b *Broker) sensor(key sensorKey) *rateSensor {
	if s, ok := b.quotaSensors.Load(key); ok {
		return s.(*rateSensor)
	}
	b.sweepSensors()
	s, _ := b.quotaSensors.LoadOrStore(key, newRateSensor(b.cfg.QuotaWindowSamples, time.Now().UnixNano()))
	return s.(*rateSensor)
}

// sensorIdleExpiry is how long a sensor nobody records into is kept (Kafka expires quota sensors
// after an hour too): one per client id would otherwise pile up.
const sensorIdleExpiry = time.Hour

// sweepSensors drops idle sensors, at most once a minute, when a new one is made (rare: a
// connection resolves its quotas once per client id and quotas version).
func (b *Broker) sweepSensors() {
	now := time.Now().UnixNano()
	last := b.sensorSweep.Load()
	if now-last < int64(time.Minute) || !b.sensorSweep.CompareAndSwap(last, now) {
		return
	}
	b.quotaSensors.Range(func(k, v any) bool {
		s := v.(*rateSensor)
		s.mu.Lock()
		idle := now - max(s.last, s.starts[0])
		s.mu.Unlock()
		if idle > int64(sensorIdleExpiry) {
			b.quotaSensors.Delete(k)
		}
		return true
	})
}

// resolveQuota finds the quota of kind for a user and client id in Kafka's order of precedence
// (DefaultQuotaCallback): user and client-id, user and default client-id, user, default user and
// client-id, default user and default client-id, default user, client-id, default client-id.
func resolveQuota(q *quorum.Quotas, kind quotaKind, user, clientID string) (float64, sensorKey, bool) {
	u, c := &user, &clientID
	part := func(t string, name *string) quorum.QuotaEntityPart {
		return quorum.QuotaEntityPart{Type: t, Name: name}
	}
	for _, cand := range []struct {
		e                  quorum.QuotaEntity // in type order: client-id, user
		withUser, withClnt bool
	}{
		{quorum.QuotaEntity{part(quorum.QuotaClientID, c), part(quorum.QuotaUser, u)}, true, true},
		{quorum.QuotaEntity{part(quorum.QuotaClientID, nil), part(quorum.QuotaUser, u)}, true, true},
		{quorum.QuotaEntity{part(quorum.QuotaUser, u)}, true, false},
		{quorum.QuotaEntity{part(quorum.QuotaClientID, c), part(quorum.QuotaUser, nil)}, true, true},
		{quorum.QuotaEntity{part(quorum.QuotaClientID, nil), part(quorum.QuotaUser, nil)}, true, true},
		{quorum.QuotaEntity{part(quorum.QuotaUser, nil)}, true, false},
		{quorum.QuotaEntity{part(quorum.QuotaClientID, c)}, false, true},
		{quorum.QuotaEntity{part(quorum.QuotaClientID, nil)}, false, true},
	} {
		if v, ok := q.Value(cand.e, quotaKeys[kind]); ok {
			key := sensorKey{kind: kind}
			if cand.withUser {
				key.user = user
			}
			if cand.withClnt {
				key.clientID = clientID
			}
			return v, key, true
		}
	}
	return 0, sensorKey{}, false
}

// connThrottle mutes a connection after a throttled response: requests that arrive before until are
// held, in order, and handled when it passes (Kafka stops reading a muted channel; holding is the
// same for a client, and netio's in-flight limit stops reading when too many are held).
type connThrottle struct {
	active atomic.Bool // a mute is set or requests are held: HandleRequest looks only at this
	mu     sync.Mutex
	until  time.Time
	held   []*netio.Request
	owned  bool // a timer or a release loop owns held
}

// mute holds the connection's next requests for d.
func (b *Broker) mute(st *connState, d time.Duration) {
	t := &st.throttle
	t.mu.Lock()
	if u := time.Now().Add(d); u.After(t.until) {
		t.until = u
	}
	t.active.Store(true)
	t.mu.Unlock()
}

// holdThrottled keeps nr for later when its connection is muted; false: handle it now.
func (b *Broker) holdThrottled(st *connState, nr *netio.Request) bool {
	t := &st.throttle
	t.mu.Lock()
	defer t.mu.Unlock()
	if !t.owned {
		wait := time.Until(t.until)
		if wait <= 0 {
			t.active.Store(false)
			return false
		}
		t.owned = true
		time.AfterFunc(wait, func() { b.releaseThrottled(st) })
	}
	t.held = append(t.held, nr)
	return true
}

// releaseThrottled handles the held requests in order once the mute has passed (again, if one of
// them was throttled in turn). Only one release loop runs per connection, so requests of one
// connection are still handled one at a time.
func (b *Broker) releaseThrottled(st *connState) {
	t := &st.throttle
	for {
		t.mu.Lock()
		if wait := time.Until(t.until); wait > 0 {
			time.AfterFunc(wait, func() { b.releaseThrottled(st) })
			t.mu.Unlock()
			return
		}
		if len(t.held) == 0 || b.ctx.Err() != nil {
			t.held, t.owned = nil, false
			t.active.Store(false)
			t.mu.Unlock()
			return
		}
		nr := t.held[0]
		t.held[0] = nil
		t.held = t.held[1:]
		t.mu.Unlock()
		b.handleRequest(nr)
	}
}

// throttleFetch records a fetch response's bytes; when throttled it writes throttle_time_ms into the
// encoded response (buf: header, then the throttle field) and mutes the connection.
func (b *Broker) throttleFetch(c *call, buf []byte, flexible bool) {
	d := b.recordQuota(c, fetchQuota, int(binary.BigEndian.Uint32(buf))+4)
	if d <= 0 {
		return
	}
	at := 8 // size, correlation id
	if flexible {
		at++ // the header's empty tag section
	}
	binary.BigEndian.PutUint32(buf[at:], uint32(d.Milliseconds()))
	if st, ok := c.nr.Conn.Value().(*connState); ok {
		b.mute(st, d)
	}
}

// throttleProduce records a produce request's bytes and returns the throttle time in ms for its
// response, muting the connection when it is not 0.
func (b *Broker) throttleProduce(c *call, bytes int) int32 {
	d := b.recordQuota(c, produceQuota, bytes)
	if d <= 0 {
		return 0
	}
	if st, ok := c.nr.Conn.Value().(*connState); ok {
		b.mute(st, d)
	}
	return int32(d.Milliseconds())
}

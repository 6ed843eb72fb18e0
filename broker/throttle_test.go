package broker

import (
	"testing"
	"time"

	"github.com/sluicebroker/sluice/quorum"
)

// TestRateSensor: Kafka's Rate over samples: a first burst is measured over n-1 whole samples, the
// throttle is (rate - limit) / limit * window, and samples older than the window stop counting.
func TestRateSensor(t *testing.T) {
	const size = 100 * time.Millisecond
	t0 := time.Now().UnixNano()
	s := newRateSensor(11, t0)
	if d := s.record(t0, 100_000, 100_000, size); d != 0 {
		t.Fatalf("100 kB at 100 kB/s over the 1 s minimum window: throttle %v, want 0", d)
	}
	if d := s.record(t0+int64(time.Millisecond), 100_000, 100_000, size); d < 990*time.Millisecond || d > time.Second {
		t.Fatalf("200 kB over ~1 s at 100 kB/s: throttle %v, want ~1 s", d)
	}
	// 2 s later both records are out of the 1.1 s window.
	if d := s.record(t0+int64(2*time.Second), 1000, 100_000, size); d != 0 {
		t.Fatalf("after the window passed: throttle %v, want 0", d)
	}
}

// TestResolveQuotaPrecedence: Kafka's order, and the sensor each level shares.
func TestResolveQuotaPrecedence(t *testing.T) {
	name := func(s string) *string { return &s }
	entity := func(parts ...quorum.QuotaEntityPart) quorum.QuotaEntity { return quorum.QuotaEntity(parts).Sorted() }
	user := func(n *string) quorum.QuotaEntityPart { return quorum.QuotaEntityPart{Type: quorum.QuotaUser, Name: n} }
	client := func(n *string) quorum.QuotaEntityPart {
		return quorum.QuotaEntityPart{Type: quorum.QuotaClientID, Name: n}
	}
	q := &quorum.Quotas{Entries: map[string]quorum.ClientQuota{}}
	add := func(v float64, e quorum.QuotaEntity) {
		q.Entries[e.Key()] = quorum.ClientQuota{Entity: e, Values: map[string]float64{QuotaProducerByteRate: v}}
	}
	add(8, entity(client(nil)))
	add(7, entity(client(name("app"))))
	add(6, entity(user(nil)))
	add(3, entity(user(name("alice"))))
	add(1, entity(user(name("alice")), client(name("app"))))
	for _, tc := range []struct {
		user, client string
		want         float64
		key          sensorKey
	}{
		{"alice", "app", 1, sensorKey{produceQuota, "alice", "app"}},
		{"alice", "other", 3, sensorKey{produceQuota, "alice", ""}},
		{"bob", "app", 6, sensorKey{produceQuota, "bob", ""}},
	} {
		v, key, ok := resolveQuota(q, produceQuota, tc.user, tc.client)
		if !ok || v != tc.want || key != tc.key {
			t.Errorf("%s/%s: %v %+v %v, want %v %+v", tc.user, tc.client, v, key, ok, tc.want, tc.key)
		}
	}
	delete(q.Entries, entity(user(nil)).Key())
	if v, key, _ := resolveQuota(q, produceQuota, "bob", "app"); v != 7 || key != (sensorKey{produceQuota, "", "app"}) {
		t.Errorf("bob/app without a default user quota: %v %+v, want 7 from client-id app", v, key)
	}
	if v, key, _ := resolveQuota(q, produceQuota, "bob", "x"); v != 8 || key != (sensorKey{produceQuota, "", "x"}) {
		t.Errorf("bob/x: %v %+v, want the default client-id's 8, own sensor", v, key)
	}
	if _, _, ok := resolveQuota(q, fetchQuota, "alice", "app"); ok {
		t.Error("a consumer quota resolved where only producer quotas are set")
	}
}

// BenchmarkRateSensorRecord is the per-request cost of a quota'd produce or fetch (one record into
// the shared sensor), without and with contention.
func BenchmarkRateSensorRecord(b *testing.B) {
	s := newRateSensor(DefaultQuotaWindowSamples, time.Now().UnixNano())
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			s.record(time.Now().UnixNano(), 16384, 1e6, DefaultQuotaWindowSize)
		}
	})
}

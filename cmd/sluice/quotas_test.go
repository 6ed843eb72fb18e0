package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/json"
	"errors"
	"net"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kerr"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"

	"github.com/sluicebroker/sluice/internal/kafkatest"
	"github.com/sluicebroker/sluice/internal/kafkawire"
)

func strp(s string) *string { return &s }

// quotaEntity builds a kadm entity from type, name pairs; a name "<default>" is the default.
func quotaEntity(pairs ...string) kadm.ClientQuotaEntity {
	var e kadm.ClientQuotaEntity
	for i := 0; i+1 < len(pairs); i += 2 {
		c := kadm.ClientQuotaEntityComponent{Type: pairs[i]}
		if pairs[i+1] != "<default>" {
			c.Name = strp(pairs[i+1])
		}
		e = append(e, c)
	}
	return e
}

// describedSet renders described quotas as sorted "entity: values" lines.
func describedSet(qs kadm.DescribedClientQuotas) []string {
	var out []string
	for _, q := range qs {
		slices.SortFunc(q.Entity, func(a, b kadm.ClientQuotaEntityComponent) int { return strings.Compare(a.Type, b.Type) })
		var vs []string
		for _, v := range q.Values {
			vs = append(vs, v.String())
		}
		slices.Sort(vs)
		out = append(out, q.Entity.String()+": "+strings.Join(vs, " "))
	}
	slices.Sort(out)
	return out
}

// TestClientQuotasAdmin: AlterClientQuotas and DescribeClientQuotas (KIP-546) with kadm: named and
// default entities of user, client-id and both, and ip; Kafka's filters (exact, default, any; strict);
// Kafka's validation and error codes; validate_only; removal; the quotas survive a restart.
func TestClientQuotasAdmin(t *testing.T) {
	b := startBroker(t)
	adm := b.admin()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	set := func(e kadm.ClientQuotaEntity, ops ...kadm.AlterClientQuotaOp) {
		t.Helper()
		res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: e, Ops: ops}})
		if err != nil {
			t.Fatal(err)
		}
		if res[0].Err != nil {
			t.Fatalf("alter %v: %v %s", e, res[0].Err, res[0].ErrMessage)
		}
	}
	op := func(k string, v float64) kadm.AlterClientQuotaOp { return kadm.AlterClientQuotaOp{Key: k, Value: v} }
	set(quotaEntity("user", "alice"), op("producer_byte_rate", 1024), op("consumer_byte_rate", 2048))
	set(quotaEntity("user", "alice", "client-id", "app"), op("request_percentage", 50.5))
	set(quotaEntity("client-id", "<default>"), op("producer_byte_rate", 4096))
	set(quotaEntity("user", "<default>"), op("controller_mutation_rate", 10))
	set(quotaEntity("ip", "10.1.2.3"), op("connection_creation_rate", 5))
	set(quotaEntity("ip", "<default>"), op("connection_creation_rate", 100))

	describe := func(strict bool, comps ...kadm.DescribeClientQuotaComponent) []string {
		t.Helper()
		qs, err := adm.DescribeClientQuotas(ctx, strict, comps)
		if err != nil {
			t.Fatalf("describe %v: %v", comps, err)
		}
		return describedSet(qs)
	}
	exact := func(typ, name string) kadm.DescribeClientQuotaComponent {
		return kadm.DescribeClientQuotaComponent{Type: typ, MatchName: strp(name), MatchType: 0}
	}
	def := func(typ string) kadm.DescribeClientQuotaComponent {
		return kadm.DescribeClientQuotaComponent{Type: typ, MatchType: 1}
	}
	anyName := func(typ string) kadm.DescribeClientQuotaComponent {
		return kadm.DescribeClientQuotaComponent{Type: typ, MatchType: 2}
	}
	alice := "{user=alice}: consumer_byte_rate=2048.000000 producer_byte_rate=1024.000000"
	aliceApp := "{client-id=app, user=alice}: request_percentage=50.500000"
	for _, tc := range []struct {
		name   string
		strict bool
		comps  []kadm.DescribeClientQuotaComponent
		want   []string
	}{
		{"user alice", false, []kadm.DescribeClientQuotaComponent{exact("user", "alice")}, []string{aliceApp, alice}},
		{"user alice strict", true, []kadm.DescribeClientQuotaComponent{exact("user", "alice")}, []string{alice}},
		{"default client-id", false, []kadm.DescribeClientQuotaComponent{def("client-id")}, []string{"{client-id=<default>}: producer_byte_rate=4096.000000"}},
		{"any user strict", true, []kadm.DescribeClientQuotaComponent{anyName("user")}, []string{"{user=<default>}: controller_mutation_rate=10.000000", alice}},
		{"user and client-id", true, []kadm.DescribeClientQuotaComponent{exact("user", "alice"), exact("client-id", "app")}, []string{aliceApp}},
		{"ip any", false, []kadm.DescribeClientQuotaComponent{anyName("ip")}, []string{"{ip=10.1.2.3}: connection_creation_rate=5.000000", "{ip=<default>}: connection_creation_rate=100.000000"}},
		{"nobody", false, []kadm.DescribeClientQuotaComponent{exact("user", "bob")}, nil},
	} {
		if got := describe(tc.strict, tc.comps...); !slices.Equal(got, tc.want) {
			t.Errorf("describe %s:\n got %q\nwant %q", tc.name, got, tc.want)
		}
	}
	if got := describe(false); len(got) != 6 {
		t.Errorf("describe all: %d entities, want 6: %q", len(got), got)
	}

	// Kafka's validation: each entry on its own.
	for _, tc := range []struct {
		name string
		e    kadm.ClientQuotaEntity
		op   kadm.AlterClientQuotaOp
		want error
	}{
		{"unknown key", quotaEntity("user", "alice"), op("bytes_per_fortnight", 1), kerr.InvalidRequest},
		{"fractional byte rate", quotaEntity("user", "alice"), op("producer_byte_rate", 1.5), kerr.InvalidRequest},
		{"zero", quotaEntity("user", "alice"), op("producer_byte_rate", 0), kerr.InvalidRequest},
		{"negative", quotaEntity("client-id", "x"), op("request_percentage", -1), kerr.InvalidRequest},
		{"ip with user", quotaEntity("ip", "10.0.0.1", "user", "alice"), op("connection_creation_rate", 1), kerr.InvalidRequest},
		{"bad ip", quotaEntity("ip", "not-an-ip"), op("connection_creation_rate", 1), kerr.InvalidRequest},
		{"byte rate on ip", quotaEntity("ip", "10.0.0.1"), op("producer_byte_rate", 1), kerr.InvalidRequest},
		{"empty entity", nil, op("producer_byte_rate", 1), kerr.InvalidRequest},
		{"empty name", quotaEntity("user", ""), op("producer_byte_rate", 1), kerr.InvalidRequest},
		{"unknown entity type", quotaEntity("group", "g"), op("producer_byte_rate", 1), kerr.UnsupportedVersion},
	} {
		res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: tc.e, Ops: []kadm.AlterClientQuotaOp{tc.op}}})
		if err != nil {
			t.Fatalf("%s: %v", tc.name, err)
		}
		if !errors.Is(res[0].Err, tc.want) {
			t.Errorf("%s: %v, want %v", tc.name, res[0].Err, tc.want)
		}
	}
	// Describe filters Kafka refuses.
	for _, tc := range []struct {
		name  string
		comps []kadm.DescribeClientQuotaComponent
		want  error
	}{
		{"ip with user", []kadm.DescribeClientQuotaComponent{anyName("ip"), exact("user", "alice")}, kerr.InvalidRequest},
		{"type twice", []kadm.DescribeClientQuotaComponent{exact("user", "a"), def("user")}, kerr.InvalidRequest},
		{"exact without name", []kadm.DescribeClientQuotaComponent{{Type: "user", MatchType: 0}}, kerr.InvalidRequest},
		{"unknown type", []kadm.DescribeClientQuotaComponent{anyName("group")}, kerr.UnsupportedVersion},
	} {
		if _, err := adm.DescribeClientQuotas(ctx, false, tc.comps); !errors.Is(err, tc.want) {
			t.Errorf("describe %s: %v, want %v", tc.name, err, tc.want)
		}
	}

	// validate_only stores nothing; removing the last key removes the entity.
	if res, err := adm.ValidateAlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: quotaEntity("user", "carol"), Ops: []kadm.AlterClientQuotaOp{op("producer_byte_rate", 1)}}}); err != nil || res[0].Err != nil {
		t.Fatalf("validate only: %v %v", err, res)
	}
	if got := describe(false, exact("user", "carol")); got != nil {
		t.Errorf("validate_only stored %q", got)
	}
	set(quotaEntity("user", "alice"), kadm.AlterClientQuotaOp{Key: "consumer_byte_rate", Remove: true})
	set(quotaEntity("ip", "<default>"), kadm.AlterClientQuotaOp{Key: "connection_creation_rate", Remove: true})
	want := []string{"{user=alice}: producer_byte_rate=1024.000000"}
	if got := describe(true, exact("user", "alice")); !slices.Equal(got, want) {
		t.Errorf("after removing consumer_byte_rate: %q, want %q", got, want)
	}

	b.stop()
	b.start()
	adm = b.admin()
	if got := describe(true, exact("user", "alice")); !slices.Equal(got, want) {
		t.Errorf("after a restart: %q, want %q", got, want)
	}
	if got := describe(false); len(got) != 5 {
		t.Errorf("after a restart: %d entities, want 5: %q", len(got), got)
	}
}

// throttleCounter counts the throttles a client is told of (franz-go's HookBrokerThrottle).
type throttleCounter struct{ n, ms atomic.Int64 }

func (h *throttleCounter) OnBrokerThrottle(_ kgo.BrokerMetadata, d time.Duration, _ bool) {
	if d > 0 {
		h.n.Add(1)
		h.ms.Add(d.Milliseconds())
	}
}

// TestByteRateQuotas: a franz-go producer whose client id has producer_byte_rate 100 KB/s is slowed
// to about that rate and told of throttle time; a consumer under consumer_byte_rate too; a client
// without a quota is not throttled. The window is 2 samples of 1 s (--quota-window-num,
// --quota-window-size) so the first burst allowed is about one second's worth. The rates are logged;
// the assertion is only that they stay under twice the quota, a behaviour, not a performance figure.
func TestByteRateQuotas(t *testing.T) {
	b := startBroker(t, "--quota-window-num", "11", "--quota-window-size", "100ms")
	b.createTopic("quota", 1, nil)
	const quota = 100_000
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	res, err := b.admin().AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{
		{Entity: quotaEntity("client-id", "slow-producer"), Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: quota}}},
		{Entity: quotaEntity("client-id", "slow-consumer"), Ops: []kadm.AlterClientQuotaOp{{Key: "consumer_byte_rate", Value: quota}}},
	})
	if err != nil || res[0].Err != nil || res[1].Err != nil {
		t.Fatalf("set quotas: %v %v", err, res)
	}

	const total = 500_000 // bytes of record values: about 5 s at the quota
	const valueSize = 5000
	produce := func(clientID string) (time.Duration, *throttleCounter) {
		t.Helper()
		hook := &throttleCounter{}
		cl := b.client(kgo.ClientID(clientID), kgo.WithHooks(hook), kgo.ProducerBatchMaxBytes(16_384), kgo.ProducerLinger(0),
			kgo.ProducerBatchCompression(kgo.NoCompression()))
		start := time.Now()
		for range total / valueSize {
			value := make([]byte, valueSize)
			rand.Read(value) // incompressible: quotas count the bytes on the wire, as Kafka does
			cl.Produce(ctx, &kgo.Record{Topic: "quota", Value: value}, func(_ *kgo.Record, err error) {
				if err != nil {
					t.Errorf("produce: %v", err)
				}
			})
		}
		if err := cl.Flush(ctx); err != nil {
			t.Fatal(err)
		}
		return time.Since(start), hook
	}
	took, hook := produce("slow-producer")
	rate := float64(total) / took.Seconds()
	t.Logf("producer under a %d B/s quota: %d B in %v (%.0f B/s), %d throttles, %d ms in all", quota, total, took.Round(time.Millisecond), rate, hook.n.Load(), hook.ms.Load())
	if hook.n.Load() == 0 {
		t.Error("the producer was never told of throttle time")
	}
	if rate > 2*quota {
		t.Errorf("producer ran at %.0f B/s under a %d B/s quota", rate, quota)
	}
	fastTook, fastHook := produce("unlimited")
	t.Logf("producer without a quota: %d B in %v, %d throttles", total, fastTook.Round(time.Millisecond), fastHook.n.Load())
	if fastHook.n.Load() != 0 {
		t.Errorf("a client without a quota was throttled %d times", fastHook.n.Load())
	}

	// The consumer reads the first producer's bytes in small fetches.
	hook = &throttleCounter{}
	cons := b.client(kgo.ClientID("slow-consumer"), kgo.WithHooks(hook), kgo.ConsumeTopics("quota"),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()), kgo.FetchMaxBytes(20_000), kgo.FetchMaxPartitionBytes(20_000))
	start := time.Now()
	got := 0
	for got < total {
		fs := cons.PollFetches(ctx)
		if ctx.Err() != nil {
			t.Fatalf("consumed %d of %d bytes", got, total)
		}
		fs.EachError(func(_ string, _ int32, err error) { t.Fatalf("fetch: %v", err) })
		fs.EachRecord(func(r *kgo.Record) { got += len(r.Value) })
	}
	took = time.Since(start)
	rate = float64(got) / took.Seconds()
	t.Logf("consumer under a %d B/s quota: %d B in %v (%.0f B/s), %d throttles, %d ms in all", quota, got, took.Round(time.Millisecond), rate, hook.n.Load(), hook.ms.Load())
	if hook.n.Load() == 0 {
		t.Error("the consumer was never told of throttle time")
	}
	if rate > 2*quota {
		t.Errorf("consumer ran at %.0f B/s under a %d B/s quota", rate, quota)
	}
}

// TestQuotaThrottleRaw: on a raw connection (no client backing off by itself), a Produce over the
// quota is answered with throttle_time_ms and the connection is muted for about that long: the next
// request on it is answered only after the mute, while another connection is served at once.
func TestQuotaThrottleRaw(t *testing.T) {
	b := startBroker(t, "--quota-window-num", "2", "--quota-window-size", "1s")
	b.createTopic("raw-quota", 1, nil)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	res, err := b.admin().AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{
		{Entity: quotaEntity("user", "<default>"), Ops: []kadm.AlterClientQuotaOp{{Key: "producer_byte_rate", Value: 10_000}}},
	})
	if err != nil || res[0].Err != nil {
		t.Fatalf("set quota: %v %v", err, res)
	}
	conn, err := net.DialTimeout("tcp", b.Addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	// One request of ~30 KB against 10 KB/s measured over at least 1 s: (30000 - 10000) / 10000 * 1 s ≈ 2 s.
	prod := kmsg.NewPtrProduceRequest()
	prod.Version, prod.Acks, prod.TimeoutMillis = 9, -1, 10_000
	pt := kmsg.NewProduceRequestTopic()
	pt.Topic = "raw-quota"
	pp := kmsg.NewProduceRequestTopicPartition()
	value := make([]byte, 30_000)
	rand.Read(value)
	pp.Records = kafkatest.Batch(value)
	pt.Partitions = append(pt.Partitions, pp)
	prod.Topics = append(prod.Topics, pt)
	presp := kmsg.NewPtrProduceResponse()
	if err := kafkawire.Exchange(conn, "test", 1, prod, presp); err != nil {
		t.Fatal(err)
	}
	if code := presp.Topics[0].Partitions[0].ErrorCode; code != 0 {
		t.Fatalf("produce: error %d", code)
	}
	throttle := time.Duration(presp.ThrottleMillis) * time.Millisecond
	if throttle < time.Second || throttle > 3*time.Second {
		t.Fatalf("throttle_time_ms %d, want about 2000", presp.ThrottleMillis)
	}
	// Another connection of the same client id is not muted.
	other := b.client(kgo.ClientID("other"))
	start := time.Now()
	if _, err := kmsg.NewPtrMetadataRequest().RequestWith(ctx, other); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited > throttle/2 {
		t.Logf("another connection waited %v (a slow machine?)", waited)
	}
	start = time.Now()
	req := kmsg.NewPtrApiVersionsRequest()
	req.Version = 0
	if err := kafkawire.Exchange(conn, "test", 2, req, kmsg.NewPtrApiVersionsResponse()); err != nil {
		t.Fatal(err)
	}
	if waited := time.Since(start); waited < throttle-300*time.Millisecond {
		t.Errorf("the next request on the throttled connection was answered after %v, want the %v mute", waited, throttle)
	}
}

// `sluice quotas`: set on a user and client-id entity and on the default client-id, list (all, by
// entity, JSON), delete a key; bad input is refused before anything is sent.
func TestQuotasCLI(t *testing.T) {
	b := startBroker(t)
	base := []string{"--bootstrap", b.Addr, "--timeout", "10s"}
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := quotasCmd(append(slices.Clone(base), args...), &out)
		return out.String(), err
	}
	if out, err := run("set", "--user", "alice", "--client-id", "app", "producer_byte_rate=1048576", "consumer_byte_rate=2097152"); err != nil {
		t.Fatalf("set: %v\n%s", err, out)
	}
	if out, err := run("set", "--client-id-default", "request_percentage=25.5"); err != nil {
		t.Fatalf("set default: %v\n%s", err, out)
	}
	out, err := run("list", "--json")
	if err != nil {
		t.Fatal(err)
	}
	var rows []quotaRow
	if err := json.Unmarshal([]byte(out), &rows); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	want := []quotaRow{
		{"client-id=<default>", "request_percentage", 25.5},
		{"client-id=app,user=alice", "consumer_byte_rate", 2097152},
		{"client-id=app,user=alice", "producer_byte_rate", 1048576},
	}
	if !slices.Equal(rows, want) {
		t.Fatalf("list:\n got %+v\nwant %+v", rows, want)
	}
	if out, err := run("list", "--user", "alice"); err != nil || !strings.Contains(out, "producer_byte_rate  1048576") || strings.Contains(out, "<default>") {
		t.Fatalf("list --user alice: %v\n%s", err, out)
	}
	if out, err := run("delete", "--user", "alice", "--client-id", "app", "consumer_byte_rate"); err != nil {
		t.Fatalf("delete: %v\n%s", err, out)
	}
	if out, _ := run("list"); strings.Contains(out, "consumer_byte_rate") {
		t.Fatalf("consumer_byte_rate still listed:\n%s", out)
	}
	for _, bad := range [][]string{
		{"set", "producer_byte_rate=1"},                       // no entity
		{"set", "--user", "a", "producer_byte_rate"},          // no value
		{"set", "--user", "a", "--user-default", "x=1"},       // two user entities
		{"set", "--user", "a", "producer_byte_rate=1.5"},      // Kafka: a whole number
		{"set", "--ip", "nope", "connection_creation_rate=1"}, // not an IP
	} {
		if _, err := run(bad...); err == nil {
			t.Errorf("quotas %q: no error", bad)
		}
	}
}

package main

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
)

// coopMember is one franz-go group member that commits what it processed after every poll, with
// rebalances held off between poll and commit.
type coopMember struct {
	name      string
	stop      chan struct{}
	done      chan struct{}
	committed map[int32]int64 // partition -> offset after the last successful commit
}

type coopLedger struct {
	mu        sync.Mutex
	first     map[[2]int64]string // (partition, offset) -> member that processed it first
	dups      [][2]int64
	perMember map[string]int
	distinct  atomic.Int64
	commitErr atomic.Int64
}

func (l *coopLedger) process(member string, r *kgo.Record) {
	l.mu.Lock()
	defer l.mu.Unlock()
	k := [2]int64{int64(r.Partition), r.Offset}
	if _, ok := l.first[k]; ok {
		l.dups = append(l.dups, k)
		return
	}
	l.first[k] = member
	l.perMember[member]++
	l.distinct.Add(1)
}

// startCoopMember starts a member. A crashing member is static (group.instance.id) with a short
// session: when stopped it processes one more poll without committing and closes without leaving
// (franz-go's static members do not send LeaveGroup), so its partitions move only when its session
// expires, and the records of that last poll are processed again by others.
func startCoopMember(t *testing.T, b *testBroker, name, groupID, topic string, l *coopLedger, crash bool) *coopMember {
	m := &coopMember{name: name, stop: make(chan struct{}), done: make(chan struct{}), committed: map[int32]int64{}}
	opts := []kgo.Opt{kgo.SeedBrokers(b.Addr), kgo.ClientID(name),
		kgo.ConsumerGroup(groupID), kgo.ConsumeTopics(topic),
		kgo.Balancers(kgo.CooperativeStickyBalancer()),
		kgo.ConsumeResetOffset(kgo.NewOffset().AtStart()),
		kgo.DisableAutoCommit(), kgo.BlockRebalanceOnPoll(),
		kgo.SessionTimeout(6 * time.Second), kgo.HeartbeatInterval(300 * time.Millisecond)}
	if crash {
		opts = append(opts, kgo.InstanceID(name), kgo.SessionTimeout(2*time.Second))
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(m.done)
		defer cl.Close() // leaves the group, unless static
		for {
			select {
			case <-m.stop:
				if crash {
					ctx, cancel := context.WithTimeout(context.Background(), time.Second)
					cl.PollRecords(ctx, 500).EachRecord(func(r *kgo.Record) { l.process(name, r) })
					cancel()
				}
				cl.AllowRebalance() // Close would wait for a rebalance held off by the last poll
				return
			default:
			}
			ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
			fs := cl.PollRecords(ctx, 500)
			cancel()
			var recs []*kgo.Record
			fs.EachRecord(func(r *kgo.Record) {
				l.process(name, r)
				recs = append(recs, r)
			})
			if len(recs) > 0 {
				cctx, ccancel := context.WithTimeout(context.Background(), 10*time.Second)
				if err := cl.CommitRecords(cctx, recs...); err != nil {
					l.commitErr.Add(1)
				} else {
					for _, r := range recs {
						m.committed[r.Partition] = max(m.committed[r.Partition], r.Offset+1)
					}
				}
				ccancel()
			}
			cl.AllowRebalance()
		}
	}()
	return m
}

func (m *coopMember) leave() { close(m.stop); <-m.done }

// TestGroupCooperativeSticky: three franz-go members with cooperative-sticky consume a topic while it
// is produced to; members join and leave along the way (m1 leaves cleanly, m2 is static and dies
// without committing its last poll, so its session expires). Every record is processed, and a record
// is processed twice only when the member that first processed it never committed past it.
func TestGroupCooperativeSticky(t *testing.T) {
	b := startBroker(t, "--group-min-session-timeout", "1s") // the crashing static member's 2 s session
	const topic, groupID, total = "coop", "coop-g", 30000    // total: about how many records flow
	b.createTopic(topic, 6, nil)
	l := &coopLedger{first: map[[2]int64]string{}, perMember: map[string]int{}}

	// Produce continuously until told to stop: the group churns under load.
	prod := b.client(kgo.ProducerLinger(2 * time.Millisecond))
	stopProducing := make(chan struct{})
	prodDone := make(chan error, 1)
	var produced atomic.Int64
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		for i := 0; ; i += 200 {
			select {
			case <-stopProducing:
				prodDone <- nil
				return
			default:
			}
			recs := make([]*kgo.Record, 0, 200)
			for j := i; j < i+200; j++ {
				recs = append(recs, &kgo.Record{Topic: topic, Key: []byte(strconv.Itoa(j)), Value: []byte(strconv.Itoa(j))})
			}
			if err := prod.ProduceSync(ctx, recs...).FirstErr(); err != nil {
				prodDone <- err
				return
			}
			produced.Add(200)
			time.Sleep(10 * time.Millisecond)
		}
	}()
	members := map[string]*coopMember{}
	var all []*coopMember
	active := map[string]bool{}
	add := func(name string) {
		m := startCoopMember(t, b, name, groupID, topic, l, name == "m2")
		members[name] = m
		all = append(all, m)
		active[name] = true
	}
	leave := func(name string) {
		members[name].leave()
		delete(active, name)
	}
	deadline := time.Now().Add(90 * time.Second)
	// waitProgress waits until n more records are processed and every active member has processed
	// records (so each one really owned partitions before the next change).
	waitProgress := func(n int64) {
		t.Helper()
		target := l.distinct.Load() + n
		for {
			l.mu.Lock()
			ok := l.distinct.Load() >= target
			for name := range active {
				ok = ok && l.perMember[name] > 0
			}
			l.mu.Unlock()
			if ok {
				return
			}
			if time.Now().After(deadline) {
				t.Fatalf("stuck at %d records processed (per member %v)", l.distinct.Load(), l.perMember)
			}
			time.Sleep(10 * time.Millisecond)
		}
	}
	add("m1")
	add("m2")
	add("m3")
	waitProgress(total / 5)
	leave("m1")
	waitProgress(total / 5)
	add("m4")
	waitProgress(total / 5)
	leave("m2")
	waitProgress(total / 5)
	add("m5")
	waitProgress(total / 5)
	close(stopProducing)
	if err := <-prodDone; err != nil {
		t.Fatalf("produce: %v", err)
	}
	for l.distinct.Load() < produced.Load() {
		if time.Now().After(deadline) {
			t.Fatalf("processed %d of %d records", l.distinct.Load(), produced.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	// Let the last commits land, then stop everyone still running.
	for _, name := range []string{"m3", "m4", "m5"} {
		leave(name)
	}
	committedEqualsEnd(t, b, groupID, topic)

	byName := map[string]*coopMember{}
	for _, m := range all {
		byName[m.name] = m
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	for _, k := range l.dups {
		first := byName[l.first[k]]
		if c := first.committed[int32(k[0])]; k[1] < c {
			t.Errorf("record %d/%d processed twice although %s committed up to %d", k[0], k[1], first.name, c)
		}
	}
	t.Logf("%d records, %d duplicates, %d failed commits, per member %v", produced.Load(), len(l.dups), l.commitErr.Load(), l.perMember)
	for _, m := range all {
		if l.perMember[m.name] == 0 {
			t.Errorf("member %s processed no records: it never got partitions", m.name)
		}
	}
}

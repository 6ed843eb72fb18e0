package main

import (
	"context"
	"fmt"
	"slices"
	"sort"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// The leader/ISR timeline as the brokers report it during the run.

// leaderChange is one change of a partition's leader or ISR as Metadata reported it.
type leaderChange struct {
	AtS       float64 `json:"at_s"`
	View      int32   `json:"view"` // the broker whose Metadata answer this is
	Partition int32   `json:"partition"`
	Leader    int32   `json:"leader"`
	ISR       []int32 `json:"isr"`
}

// watchLeaders records the leader/ISR timeline as each broker's Metadata answer shows it, to tell
// what an unavailability coincided with and whether brokers disagree, until the returned stop is
// called; stop returns the changes in time order and the polls in which two brokers named different
// leaders for a partition.
func watchLeaders(cl *kgo.Client, c *cluster, topic string, start time.Time) (stop func() ([]leaderChange, int64)) {
	var changes []leaderChange
	var disagree int64
	done := make(chan struct{})
	quit := make(chan struct{})
	go func() {
		defer close(done)
		prev := map[[2]int32]string{}
		for {
			select {
			case <-quit:
				return
			case <-time.After(200 * time.Millisecond):
			}
			views := brokerViews(cl, c, topic)
			at := round1(time.Since(start).Seconds())
			leaders := map[int32]int32{}
			for view, st := range views {
				for p, ps := range st {
					isr := slices.Clone(ps.isr)
					slices.Sort(isr)
					if s := fmt.Sprint(ps.leader, isr); s != prev[[2]int32{view, p}] {
						prev[[2]int32{view, p}] = s
						changes = append(changes, leaderChange{AtS: at, View: view, Partition: p, Leader: ps.leader, ISR: isr})
					}
					if l, ok := leaders[p]; ok && ps.leader >= 0 && l >= 0 && l != ps.leader {
						disagree++
					}
					if ps.leader >= 0 {
						leaders[p] = ps.leader
					}
				}
			}
		}
	}()
	return func() ([]leaderChange, int64) {
		close(quit)
		<-done
		sort.SliceStable(changes, func(i, j int) bool { return changes[i].AtS < changes[j].AtS })
		return changes, disagree
	}
}

// brokerViews asks every running broker for the topic's metadata directly (not through the
// client's choice of broker), each with a short timeout so a paused broker is just missing.
func brokerViews(cl *kgo.Client, c *cluster, topic string) map[int32]map[int32]partState {
	var mu sync.Mutex
	var wg sync.WaitGroup
	out := map[int32]map[int32]partState{}
	for _, b := range c.brokers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
			defer cancel()
			req := kmsg.NewPtrMetadataRequest()
			rt := kmsg.NewMetadataRequestTopic()
			rt.Topic = kmsg.StringPtr(topic)
			req.Topics = append(req.Topics, rt)
			resp, err := req.RequestWith(ctx, cl.Broker(int(b.ID)))
			if err != nil {
				return
			}
			st := map[int32]partState{}
			for _, t := range resp.Topics {
				for _, p := range t.Partitions {
					st[p.Partition] = partState{leader: p.Leader, replicas: p.Replicas, isr: p.ISR}
				}
			}
			mu.Lock()
			out[b.ID] = st
			mu.Unlock()
		}()
	}
	wg.Wait()
	return out
}

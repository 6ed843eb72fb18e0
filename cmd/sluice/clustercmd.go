package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
)

// clusterStatus is what `sluice cluster status` reports.
type clusterStatus struct {
	ClusterID  string         `json:"cluster_id"`
	Controller int32          `json:"controller"`
	Brokers    []brokerStatus `json:"brokers"`
	Topics     int            `json:"topics"`
	Partitions int            `json:"partitions"`
	// UnderReplicated and Offline list partitions as topic/partition.
	UnderReplicated []string `json:"under_replicated"`
	Offline         []string `json:"offline"`
}

type brokerStatus struct {
	NodeID  int32  `json:"node_id"`
	Address string `json:"address"`
	Rack    string `json:"rack,omitempty"`
	Leaders int    `json:"leaders"`
	Replica int    `json:"replicas"`
}

// clusterCmd is the `sluice cluster` admin command.
func clusterCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("cluster", flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	if ok, err := parseCommand(fs, args, "usage: sluice cluster [flags] status   brokers, controller, partition counts, under-replicated and offline partitions\n"); !ok {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "status" {
		fs.Usage()
		return errors.New("want: status")
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()
	md, err := adm.Metadata(ctx)
	if err != nil {
		return err
	}
	st := clusterStatus{ClusterID: md.Cluster, Controller: md.Controller, UnderReplicated: []string{}, Offline: []string{}}
	leaders, replicas := map[int32]int{}, map[int32]int{}
	for _, t := range md.Topics.Sorted() {
		if t.Err != nil {
			return fmt.Errorf("topic %s: %v", t.Topic, t.Err)
		}
		st.Topics++
		for _, p := range t.Partitions.Sorted() {
			st.Partitions++
			name := t.Topic + "/" + strconv.Itoa(int(p.Partition))
			if p.Leader < 0 {
				st.Offline = append(st.Offline, name)
			} else {
				leaders[p.Leader]++
			}
			if len(p.ISR) < len(p.Replicas) {
				st.UnderReplicated = append(st.UnderReplicated, name)
			}
			for _, r := range p.Replicas {
				replicas[r]++
			}
		}
	}
	for _, b := range md.Brokers {
		bs := brokerStatus{NodeID: b.NodeID, Address: net.JoinHostPort(b.Host, strconv.Itoa(int(b.Port))), Leaders: leaders[b.NodeID], Replica: replicas[b.NodeID]}
		if b.Rack != nil {
			bs.Rack = *b.Rack
		}
		st.Brokers = append(st.Brokers, bs)
	}
	slices.SortFunc(st.Brokers, func(a, b brokerStatus) int { return int(a.NodeID - b.NodeID) })
	if af.asJSON {
		return writeJSON(out, st)
	}
	fmt.Fprintf(out, "cluster %s: controller %d, %d topics, %d partitions, %d under-replicated, %d offline\n",
		st.ClusterID, st.Controller, st.Topics, st.Partitions, len(st.UnderReplicated), len(st.Offline))
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "BROKER\tADDRESS\tRACK\tLEADERS\tREPLICAS")
	for _, b := range st.Brokers {
		fmt.Fprintf(w, "%d\t%s\t%s\t%d\t%d\n", b.NodeID, b.Address, dash(b.Rack), b.Leaders, b.Replica)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	for _, p := range st.UnderReplicated {
		fmt.Fprintf(out, "under-replicated: %s\n", p)
	}
	for _, p := range st.Offline {
		fmt.Fprintf(out, "offline: %s\n", p)
	}
	return nil
}

// electRow is one partition of `sluice partitions elect`.
type electRow struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Result    string `json:"result"` // "elected", or the Kafka error
}

// partitionsCmd is the `sluice partitions` admin command: `elect` moves leadership back to the
// preferred replicas (every partition, or --topic and --partition).
func partitionsCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("partitions", flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	topic := fs.String("topic", "", "elect: only this topic; reassign: the topic")
	partition := fs.Int("partition", -1, "elect: only this partition of --topic; reassign: the partition")
	replicas := fs.String("replicas", "", "reassign: the new replicas, broker ids in preference order (1,2,3)")
	if ok, err := parseCommand(fs, args, "usage: sluice partitions [flags] elect      preferred leader election (kafka-leader-election.sh --election-type PREFERRED)\n"+
		"       sluice partitions [flags] reassign   move a partition's replicas (kafka-reassign-partitions.sh --execute)\n"); !ok {
		return err
	}
	if fs.NArg() != 1 || fs.Arg(0) != "elect" && fs.Arg(0) != "reassign" {
		fs.Usage()
		return errors.New("want: elect or reassign")
	}
	if *partition >= 0 && *topic == "" {
		return errors.New("--partition needs --topic")
	}
	if fs.Arg(0) == "reassign" {
		return reassign(af, *topic, *partition, *replicas, out)
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()
	var set kadm.TopicsSet // nil: every partition
	if *topic != "" {
		set = kadm.TopicsSet{}
		if *partition >= 0 {
			set.Add(*topic, int32(*partition))
		} else {
			td, err := adm.ListTopics(ctx, *topic)
			if err != nil {
				return err
			}
			d, ok := td[*topic]
			if !ok || d.Err != nil {
				return fmt.Errorf("topic %s: %v", *topic, d.Err)
			}
			for _, p := range d.Partitions.Numbers() {
				set.Add(*topic, p)
			}
		}
	}
	res, err := adm.ElectLeaders(ctx, kadm.ElectPreferredReplica, set)
	if err != nil {
		return err
	}
	rows := []electRow{}
	for t, ps := range res {
		for p, r := range ps {
			row := electRow{Topic: t, Partition: p, Result: "elected"}
			if r.Err != nil {
				row.Result = r.Err.Error()
			}
			rows = append(rows, row)
		}
	}
	slices.SortFunc(rows, func(a, b electRow) int {
		if a.Topic != b.Topic {
			return strings.Compare(a.Topic, b.Topic)
		}
		return int(a.Partition - b.Partition)
	})
	if af.asJSON {
		return writeJSON(out, rows)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "TOPIC\tPARTITION\tRESULT")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%d\t%s\n", r.Topic, r.Partition, r.Result)
	}
	return w.Flush()
}

// reassignRow is the outcome of `sluice partitions reassign`.
type reassignRow struct {
	Topic     string  `json:"topic"`
	Partition int32   `json:"partition"`
	Replicas  []int32 `json:"replicas"`
	Result    string  `json:"result"`
}

// reassign asks the cluster to move one partition's replicas (AlterPartitionAssignments); the move
// runs in the background (new replicas catch up, then leave the old ones): `sluice topics describe`
// shows it done.
func reassign(af adminFlags, topic string, partition int, replicaList string, out io.Writer) error {
	if topic == "" || partition < 0 || replicaList == "" {
		return errors.New("reassign needs --topic, --partition and --replicas")
	}
	var replicas []int32
	for _, f := range strings.Split(replicaList, ",") {
		id, err := strconv.ParseInt(strings.TrimSpace(f), 10, 32)
		if err != nil {
			return fmt.Errorf("--replicas %q: want broker ids like 1,2,3", replicaList)
		}
		replicas = append(replicas, int32(id))
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()
	var req kadm.AlterPartitionAssignmentsReq
	req.Assign(topic, int32(partition), replicas)
	res, err := adm.AlterPartitionAssignments(ctx, req)
	if err != nil {
		return err
	}
	row := reassignRow{Topic: topic, Partition: int32(partition), Replicas: replicas, Result: "started"}
	var failed error
	res.Each(func(r kadm.AlterPartitionAssignmentsResponse) {
		if r.Err != nil {
			failed = fmt.Errorf("%v %s", r.Err, r.ErrMessage)
			row.Result = failed.Error()
		}
	})
	if af.asJSON {
		if err := writeJSON(out, row); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(out, "%s/%d -> %v: %s\n", row.Topic, row.Partition, row.Replicas, row.Result)
	}
	return failed
}

package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"slices"
	"strconv"
	"text/tabwriter"
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
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sluice cluster [flags] status   brokers, controller, partition counts, under-replicated and offline partitions")
		fs.PrintDefaults()
	}
	if err := fs.Parse(reorderFlags(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
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

package main

import (
	"context"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
)

// listFlag collects a repeated flag's values.
type listFlag []string

func (l *listFlag) String() string     { return strings.Join(*l, ",") }
func (l *listFlag) Set(s string) error { *l = append(*l, s); return nil }

// configFlags collects repeated --config name=value flags.
type configFlags map[string]*string

func (c configFlags) String() string { return fmt.Sprint(map[string]*string(c)) }
func (c configFlags) Set(s string) error {
	k, v, ok := strings.Cut(s, "=")
	if !ok || k == "" {
		return fmt.Errorf("want name=value, got %q", s)
	}
	c[k] = &v
	return nil
}

// topics is the `sluice topics` admin command: a thin kadm client against any Kafka-compatible broker.
func topics(args []string) error {
	fs := flag.NewFlagSet("topics", flag.ContinueOnError)
	bootstrap := fs.String("bootstrap", "localhost:9092", "broker address")
	partitions := fs.Int("partitions", -1, "create: partition count (-1 = broker default)")
	rf := fs.Int("replication-factor", -1, "create: replication factor (-1 = broker default)")
	configs := configFlags{}
	fs.Var(configs, "config", "create, alter-config: topic config name=value (repeatable)")
	var removes listFlag
	fs.Var(&removes, "delete-config", "alter-config: topic config to reset to the broker default (repeatable)")
	if ok, err := parseCommand(fs, args, "usage: sluice topics [flags] list | create NAME | delete NAME | describe NAME | alter-config NAME\n"); !ok {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("missing command")
	}
	cl, err := kgo.NewClient(kgo.SeedBrokers(strings.Split(*bootstrap, ",")...))
	if err != nil {
		return err
	}
	defer cl.Close()
	adm := kadm.NewClient(cl)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	cmd, rest := fs.Arg(0), fs.Args()[1:]
	needName := func() (string, error) {
		if len(rest) != 1 {
			return "", fmt.Errorf("%s needs exactly one topic name", cmd)
		}
		return rest[0], nil
	}
	switch cmd {
	case "list":
		td, err := adm.ListTopics(ctx)
		if err != nil {
			return err
		}
		for _, name := range td.Names() {
			fmt.Println(name)
		}
	case "create":
		name, err := needName()
		if err != nil {
			return err
		}
		resp, err := adm.CreateTopic(ctx, int32(*partitions), int16(*rf), configs, name)
		if err != nil {
			return err
		}
		if resp.Err != nil {
			return fmt.Errorf("%s: %v %s", name, resp.Err, resp.ErrMessage)
		}
		fmt.Printf("created %s: %d partitions, replication factor %d\n", name, resp.NumPartitions, resp.ReplicationFactor)
	case "delete":
		name, err := needName()
		if err != nil {
			return err
		}
		resp, err := adm.DeleteTopic(ctx, name)
		if err != nil {
			return err
		}
		if resp.Err != nil {
			return fmt.Errorf("%s: %v", name, resp.Err)
		}
		fmt.Printf("deleted %s\n", name)
	case "describe":
		name, err := needName()
		if err != nil {
			return err
		}
		return describeTopic(ctx, adm, name)
	case "alter-config":
		name, err := needName()
		if err != nil {
			return err
		}
		var alter []kadm.AlterConfig
		for k, v := range configs {
			alter = append(alter, kadm.AlterConfig{Op: kadm.SetConfig, Name: k, Value: v})
		}
		for _, k := range removes {
			alter = append(alter, kadm.AlterConfig{Op: kadm.DeleteConfig, Name: k})
		}
		if len(alter) == 0 {
			return errors.New("alter-config needs --config name=value or --delete-config name")
		}
		resp, err := adm.AlterTopicConfigs(ctx, alter, name)
		if err != nil {
			return err
		}
		for _, r := range resp {
			if r.Err != nil {
				return fmt.Errorf("%s: %v %s", r.Name, r.Err, r.ErrMessage)
			}
		}
		fmt.Printf("altered %s: %d configs\n", name, len(alter))
	default:
		fs.Usage()
		return fmt.Errorf("unknown command %q", cmd)
	}
	return nil
}

func describeTopic(ctx context.Context, adm *kadm.Client, name string) error {
	td, err := adm.ListTopics(ctx, name)
	if err != nil {
		return err
	}
	t, ok := td[name]
	if !ok || t.Err != nil {
		return fmt.Errorf("%s: %v", name, t.Err)
	}
	ends, err := adm.ListEndOffsets(ctx, name)
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "topic %s (id %s)\n", name, kafkaUUID(t.ID))
	fmt.Fprintln(w, "PARTITION\tLEADER\tEPOCH\tREPLICAS\tEND OFFSET")
	for _, p := range t.Partitions.Sorted() {
		end, _ := ends.Lookup(name, p.Partition)
		fmt.Fprintf(w, "%d\t%d\t%d\t%v\t%d\n", p.Partition, p.Leader, p.LeaderEpoch, p.Replicas, end.Offset)
	}
	if err := w.Flush(); err != nil {
		return err
	}
	rcs, err := adm.DescribeTopicConfigs(ctx, name)
	if err != nil {
		return err
	}
	for _, rc := range rcs {
		sort.Slice(rc.Configs, func(i, j int) bool { return rc.Configs[i].Key < rc.Configs[j].Key })
		for _, c := range rc.Configs {
			fmt.Printf("  %s = %s (%s)\n", c.Key, c.MaybeValue(), c.Source)
		}
	}
	return nil
}

// kafkaUUID prints a topic id as Kafka does (Uuid.toString): base64url without padding, 22 characters.
func kafkaUUID(id [16]byte) string { return base64.RawURLEncoding.EncodeToString(id[:]) }

package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
)

// groupRow is one group of `groups list`.
type groupRow struct {
	Group        string `json:"group"`
	State        string `json:"state"`
	ProtocolType string `json:"protocol_type"`
	Coordinator  int32  `json:"coordinator"`
}

// lagRow is one partition of `groups describe`, as kafka-consumer-groups.sh --describe prints it.
type lagRow struct {
	Topic         string `json:"topic"`
	Partition     int32  `json:"partition"`
	CurrentOffset int64  `json:"current_offset"` // -1: nothing committed
	LogEndOffset  int64  `json:"log_end_offset"`
	Lag           int64  `json:"lag"`
	MemberID      string `json:"member_id,omitempty"`
	ClientID      string `json:"client_id,omitempty"`
	Host          string `json:"host,omitempty"`
	Error         string `json:"error,omitempty"`
}

type groupDescription struct {
	Group       string   `json:"group"`
	State       string   `json:"state"`
	Protocol    string   `json:"protocol"`
	Coordinator int32    `json:"coordinator"`
	Members     int      `json:"members"`
	TotalLag    int64    `json:"total_lag"`
	Partitions  []lagRow `json:"partitions"`
}

// offsetRow is one partition of `groups reset-offsets`.
type offsetRow struct {
	Topic     string `json:"topic"`
	Partition int32  `json:"partition"`
	Current   int64  `json:"current_offset"`
	New       int64  `json:"new_offset"`
	Error     string `json:"error,omitempty"`
}

const groupsUsage = `usage: sluice groups [flags] COMMAND
  list                          groups, their state and coordinator
  describe GROUP | lag GROUP    committed offsets, end offsets and lag per partition, with members
  reset-offsets GROUP           move an inactive group's offsets (--topic, one of --to-earliest,
                                --to-latest, --to-offset N, --shift-by N; dry run unless --execute)
  delete GROUP                  delete an inactive group and its offsets
`

// groups is the `sluice groups` admin command (kadm underneath, any Kafka-compatible broker).
func groups(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("groups", flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	topicsFlag := fs.String("topic", "", "reset-offsets: topic(s), comma-separated (default: every topic the group committed)")
	toEarliest := fs.Bool("to-earliest", false, "reset-offsets: to each partition's start offset")
	toLatest := fs.Bool("to-latest", false, "reset-offsets: to each partition's end offset")
	toOffset := fs.Int64("to-offset", -1, "reset-offsets: to this offset (clamped to the partition's range)")
	shiftBy := fs.Int64("shift-by", 0, "reset-offsets: move each committed offset by this much (clamped)")
	execute := fs.Bool("execute", false, "reset-offsets: commit the new offsets (default: only print them)")
	if ok, err := parseCommand(fs, args, groupsUsage); !ok {
		return err
	}
	if fs.NArg() == 0 {
		fs.Usage()
		return errors.New("missing command")
	}
	cmd, rest := fs.Arg(0), fs.Args()[1:]
	needGroup := func() (string, error) {
		if len(rest) != 1 {
			return "", fmt.Errorf("%s needs exactly one group name", cmd)
		}
		return rest[0], nil
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()

	switch cmd {
	case "list":
		lg, err := adm.ListGroups(ctx)
		if err != nil {
			return err
		}
		rows := []groupRow{}
		for _, g := range lg.Sorted() {
			rows = append(rows, groupRow{g.Group, g.State, g.ProtocolType, g.Coordinator})
		}
		if af.asJSON {
			return writeJSON(out, rows)
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "GROUP\tSTATE\tPROTOCOL TYPE\tCOORDINATOR")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%s\t%d\n", r.Group, r.State, r.ProtocolType, r.Coordinator)
		}
		return w.Flush()

	case "describe", "lag":
		group, err := needGroup()
		if err != nil {
			return err
		}
		d, err := describeGroupLag(ctx, adm, group)
		if err != nil {
			return err
		}
		if af.asJSON {
			return writeJSON(out, d)
		}
		fmt.Fprintf(out, "group %s: %s, protocol %q, coordinator %d, %d members, total lag %d\n",
			d.Group, d.State, d.Protocol, d.Coordinator, d.Members, d.TotalLag)
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "TOPIC\tPARTITION\tCURRENT-OFFSET\tLOG-END-OFFSET\tLAG\tMEMBER\tCLIENT-ID\tHOST")
		for _, r := range d.Partitions {
			cur := fmt.Sprint(r.CurrentOffset)
			if r.CurrentOffset < 0 {
				cur = "-"
			}
			fmt.Fprintf(w, "%s\t%d\t%s\t%d\t%d\t%s\t%s\t%s\n", r.Topic, r.Partition, cur, r.LogEndOffset, r.Lag,
				dash(r.MemberID), dash(r.ClientID), dash(r.Host))
		}
		return w.Flush()

	case "reset-offsets":
		group, err := needGroup()
		if err != nil {
			return err
		}
		modes := 0
		for _, on := range []bool{*toEarliest, *toLatest, *toOffset >= 0, *shiftBy != 0} {
			if on {
				modes++
			}
		}
		if modes != 1 {
			return errors.New("reset-offsets needs exactly one of --to-earliest, --to-latest, --to-offset, --shift-by")
		}
		rows, err := resetOffsets(ctx, adm, group, splitNonEmpty(*topicsFlag), func(cur, start, end int64) int64 {
			switch {
			case *toEarliest:
				return start
			case *toLatest:
				return end
			case *toOffset >= 0:
				return *toOffset
			}
			if cur < 0 {
				cur = start
			}
			return cur + *shiftBy
		}, *execute)
		if err != nil {
			return err
		}
		if af.asJSON {
			return writeJSON(out, rows)
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "TOPIC\tPARTITION\tCURRENT-OFFSET\tNEW-OFFSET\tERROR")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%d\t%d\t%d\t%s\n", r.Topic, r.Partition, r.Current, r.New, dash(r.Error))
		}
		if err := w.Flush(); err != nil {
			return err
		}
		if !*execute {
			fmt.Fprintln(out, "dry run: add --execute to commit these offsets")
		}
		return nil

	case "delete":
		group, err := needGroup()
		if err != nil {
			return err
		}
		resp, err := adm.DeleteGroup(ctx, group)
		if err != nil {
			return err
		}
		if resp.Err != nil {
			return fmt.Errorf("%s: %v", group, resp.Err)
		}
		fmt.Fprintf(out, "deleted group %s\n", group)
		return nil
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

// describeGroupLag is a group's state and, per partition it committed or is assigned, its lag.
func describeGroupLag(ctx context.Context, adm *kadm.Client, group string) (groupDescription, error) {
	lags, err := adm.Lag(ctx, group)
	if err != nil {
		return groupDescription{}, err
	}
	l, ok := lags[group]
	if !ok {
		return groupDescription{}, fmt.Errorf("group %s: not described", group)
	}
	if err := l.Error(); err != nil {
		return groupDescription{}, fmt.Errorf("group %s: %v", group, err)
	}
	d := groupDescription{Group: group, State: l.State, Protocol: l.Protocol, Coordinator: l.Coordinator.NodeID,
		Members: len(l.Members), TotalLag: l.Lag.Total(), Partitions: []lagRow{}}
	for _, pl := range l.Lag.Sorted() {
		r := lagRow{Topic: pl.Topic, Partition: pl.Partition, CurrentOffset: pl.Commit.At, LogEndOffset: pl.End.Offset, Lag: pl.Lag}
		if pl.Member != nil {
			r.MemberID, r.ClientID, r.Host = pl.Member.MemberID, pl.Member.ClientID, pl.Member.ClientHost
		}
		if pl.Err != nil {
			r.Error = pl.Err.Error()
		}
		d.Partitions = append(d.Partitions, r)
	}
	return d, nil
}

// resetOffsets computes each partition's new offset with to(current, start, end), clamped to
// [start, end], and commits them when execute is set. The group must be inactive (Empty or Dead),
// as kafka-consumer-groups.sh requires: a live member would overwrite them with its next commit.
func resetOffsets(ctx context.Context, adm *kadm.Client, group string, topics []string,
	to func(cur, start, end int64) int64, execute bool) ([]offsetRow, error) {
	dg, err := adm.DescribeGroups(ctx, group)
	if err != nil {
		return nil, err
	}
	if g, ok := dg[group]; ok && g.Err == nil && g.State != "Empty" && g.State != "Dead" {
		return nil, fmt.Errorf("group %s is %s: stop its consumers first (offsets can be reset only while it is inactive)", group, g.State)
	}
	committed, err := adm.FetchOffsets(ctx, group)
	if err != nil {
		return nil, err
	}
	if len(topics) == 0 {
		committed.Each(func(o kadm.OffsetResponse) {
			if !slices.Contains(topics, o.Topic) {
				topics = append(topics, o.Topic)
			}
		})
		if len(topics) == 0 {
			return nil, fmt.Errorf("group %s has no committed offsets: name the topics with --topic", group)
		}
	}
	starts, err := adm.ListStartOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	ends, err := adm.ListEndOffsets(ctx, topics...)
	if err != nil {
		return nil, err
	}
	var rows []offsetRow
	next := kadm.Offsets{}
	var errs []error
	ends.Each(func(e kadm.ListedOffset) {
		r := offsetRow{Topic: e.Topic, Partition: e.Partition, Current: -1}
		if c, ok := committed.Lookup(e.Topic, e.Partition); ok && c.Err == nil {
			r.Current = c.At
		}
		s, _ := starts.Lookup(e.Topic, e.Partition)
		switch {
		case e.Err != nil:
			r.Error = e.Err.Error()
		case s.Err != nil:
			r.Error = s.Err.Error()
		default:
			r.New = min(max(to(r.Current, s.Offset, e.Offset), s.Offset), e.Offset)
			next.Add(kadm.Offset{Topic: e.Topic, Partition: e.Partition, At: r.New, LeaderEpoch: -1})
		}
		if r.Error != "" {
			errs = append(errs, fmt.Errorf("%s/%d: %s", r.Topic, r.Partition, r.Error))
		}
		rows = append(rows, r)
	})
	slices.SortFunc(rows, func(a, b offsetRow) int {
		if c := strings.Compare(a.Topic, b.Topic); c != 0 {
			return c
		}
		return int(a.Partition - b.Partition)
	})
	if len(errs) > 0 {
		return rows, errors.Join(errs...)
	}
	if execute {
		resp, err := adm.CommitOffsets(ctx, group, next)
		if err != nil {
			return rows, err
		}
		if err := resp.Error(); err != nil {
			return rows, err
		}
	}
	return rows, nil
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func splitNonEmpty(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}

// parseCommand parses a subcommand's flags, which may also follow its words (reorderFlags), with
// usage as its help. ok is false when there is nothing to run: help was asked (err is nil) or the
// flags are wrong (err says how).
func parseCommand(fs *flag.FlagSet, args []string, usage string) (ok bool, err error) {
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(reorderFlags(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return false, nil
		}
		return false, err
	}
	return true, nil
}

// reorderFlags moves flags after the positional arguments in front of them, so that
// `sluice groups describe g --json` works like `sluice groups --json describe g`.
func reorderFlags(fs *flag.FlagSet, args []string) []string {
	var flags, pos []string
	for i := 0; i < len(args); i++ {
		a := args[i]
		if a == "--" {
			pos = append(pos, args[i+1:]...)
			break
		}
		if !strings.HasPrefix(a, "-") || a == "-" {
			pos = append(pos, a)
			continue
		}
		flags = append(flags, a)
		name := strings.TrimLeft(a, "-")
		if strings.Contains(name, "=") {
			continue
		}
		if f := fs.Lookup(name); f != nil {
			if bf, ok := f.Value.(interface{ IsBoolFlag() bool }); ok && bf.IsBoolFlag() {
				continue
			}
			if i+1 < len(args) {
				i++
				flags = append(flags, args[i])
			}
		}
	}
	return append(flags, pos...)
}

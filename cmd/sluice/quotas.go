package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
)

// quotaRow is one quota value of `sluice quotas list`.
type quotaRow struct {
	Entity string  `json:"entity"` // "user=alice,client-id=<default>"
	Key    string  `json:"key"`
	Value  float64 `json:"value"`
}

// quotaEntityFlags name a quota entity: each type by name or as its default (kafka-configs.sh
// --entity-type/--entity-name/--entity-default).
type quotaEntityFlags struct {
	user, clientID, ip                      string
	userDefault, clientIDDefault, ipDefault bool
}

func (q *quotaEntityFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&q.user, "user", "", "the user entity (a principal's name: alice, ANONYMOUS)")
	fs.BoolVar(&q.userDefault, "user-default", false, "the default user entity")
	fs.StringVar(&q.clientID, "client-id", "", "the client-id entity")
	fs.BoolVar(&q.clientIDDefault, "client-id-default", false, "the default client-id entity")
	fs.StringVar(&q.ip, "ip", "", "the ip entity (connection_creation_rate only)")
	fs.BoolVar(&q.ipDefault, "ip-default", false, "the default ip entity")
}

// entity is the named entity; empty when no flag names one.
func (q *quotaEntityFlags) entity() (kadm.ClientQuotaEntity, error) {
	var e kadm.ClientQuotaEntity
	for _, p := range []struct {
		typ, name string
		def       bool
	}{{"user", q.user, q.userDefault}, {"client-id", q.clientID, q.clientIDDefault}, {"ip", q.ip, q.ipDefault}} {
		switch {
		case p.name != "" && p.def:
			return nil, fmt.Errorf("--%s and --%s-default name two entities", p.typ, p.typ)
		case p.def:
			e = append(e, kadm.ClientQuotaEntityComponent{Type: p.typ})
		case p.name != "":
			e = append(e, kadm.ClientQuotaEntityComponent{Type: p.typ, Name: kadm.StringPtr(p.name)})
		}
	}
	return e, nil
}

// quotasCmd is `sluice quotas list | set KEY=VALUE... | delete KEY...`: client quotas
// (DescribeClientQuotas, AlterClientQuotas; kafka-configs.sh --entity-type users/clients/ips).
func quotasCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("quotas", flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	var ef quotaEntityFlags
	ef.register(fs)
	strict := fs.Bool("strict", false, "list: only entities with exactly the named types")
	fs.Usage = func() {
		fmt.Fprintln(fs.Output(), "usage: sluice quotas [flags] list | set KEY=VALUE... | delete KEY...")
		fmt.Fprintln(fs.Output(), "  keys: producer_byte_rate, consumer_byte_rate (enforced), request_percentage, controller_mutation_rate; connection_creation_rate for --ip")
		fs.PrintDefaults()
	}
	if err := fs.Parse(reorderFlags(fs, args)); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return nil
		}
		return err
	}
	cmd := fs.Arg(0)
	entity, err := ef.entity()
	if err != nil {
		return err
	}
	switch {
	case cmd == "list" && fs.NArg() == 1:
	case (cmd == "set" || cmd == "delete") && fs.NArg() > 1:
		if len(entity) == 0 {
			return fmt.Errorf("%s needs an entity: --user, --client-id, --ip or their -default", cmd)
		}
	default:
		fs.Usage()
		return errors.New("want list, set KEY=VALUE or delete KEY, with one or more keys")
	}
	var ops []kadm.AlterClientQuotaOp
	for _, a := range fs.Args()[1:] {
		if cmd == "delete" {
			ops = append(ops, kadm.AlterClientQuotaOp{Key: a, Remove: true})
			continue
		}
		k, v, ok := strings.Cut(a, "=")
		f, err := strconv.ParseFloat(v, 64)
		if !ok || err != nil {
			return fmt.Errorf("%q: want KEY=NUMBER", a)
		}
		ops = append(ops, kadm.AlterClientQuotaOp{Key: k, Value: f})
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()
	if cmd != "list" {
		res, err := adm.AlterClientQuotas(ctx, []kadm.AlterClientQuotaEntry{{Entity: entity, Ops: ops}})
		if err != nil {
			return err
		}
		for _, r := range res {
			if r.Err != nil {
				return fmt.Errorf("%v: %w %s", entity, r.Err, r.ErrMessage)
			}
		}
		fmt.Fprintf(out, "quotas %v: %s\n", entity, map[string]string{"set": "set", "delete": "deleted"}[cmd])
		return nil
	}
	var comps []kadm.DescribeClientQuotaComponent
	for _, c := range entity {
		dc := kadm.DescribeClientQuotaComponent{Type: c.Type, MatchName: c.Name, MatchType: 0}
		if c.Name == nil {
			dc.MatchType = 1
		}
		comps = append(comps, dc)
	}
	described, err := adm.DescribeClientQuotas(ctx, *strict, comps)
	if err != nil {
		return err
	}
	rows := []quotaRow{}
	for _, d := range described {
		var parts []string
		for _, c := range d.Entity {
			parts = append(parts, c.String())
		}
		slices.Sort(parts)
		for _, v := range d.Values {
			rows = append(rows, quotaRow{Entity: strings.Join(parts, ","), Key: v.Key, Value: v.Value})
		}
	}
	slices.SortFunc(rows, func(a, b quotaRow) int { return strings.Compare(a.Entity+" "+a.Key, b.Entity+" "+b.Key) })
	if af.asJSON {
		return writeJSON(out, rows)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "ENTITY\tKEY\tVALUE")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\n", r.Entity, r.Key, strconv.FormatFloat(r.Value, 'f', -1, 64))
	}
	return w.Flush()
}

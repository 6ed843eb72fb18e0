package main

import (
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"

	"github.com/twmb/franz-go/pkg/kadm"
)

// userRow is one SCRAM credential of `sluice users list`.
type userRow struct {
	User       string `json:"user"`
	Mechanism  string `json:"mechanism"`
	Iterations int32  `json:"iterations"`
}

// usersCmd is `sluice users list | set USER | delete USER`: SCRAM credentials
// (DescribeUserScramCredentials, AlterUserScramCredentials; kafka-configs.sh --entity-type users).
func usersCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("users", flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	passFile := fs.String("password-file", "", "set: file holding the new password (kept off the command line)")
	mechs := fs.String("mechanisms", "SCRAM-SHA-256,SCRAM-SHA-512", "set, delete: the SCRAM mechanisms")
	iterations := fs.Int("iterations", 8192, "set: PBKDF2 iterations (at least 4096, as Kafka requires)")
	if ok, err := parseCommand(fs, args, "usage: sluice users [flags] list | set USER | delete USER\n"); !ok {
		return err
	}
	cmd := fs.Arg(0)
	if cmd == "" || (cmd == "list") != (fs.NArg() == 1) || fs.NArg() > 2 {
		fs.Usage()
		return errors.New("want list, set USER or delete USER")
	}
	var mechanisms []kadm.ScramMechanism
	for _, m := range strings.Split(*mechs, ",") {
		switch strings.ToUpper(strings.TrimSpace(m)) {
		case "SCRAM-SHA-256":
			mechanisms = append(mechanisms, kadm.ScramSha256)
		case "SCRAM-SHA-512":
			mechanisms = append(mechanisms, kadm.ScramSha512)
		default:
			return fmt.Errorf("--mechanisms: %q is not SCRAM-SHA-256 or SCRAM-SHA-512", m)
		}
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()
	switch cmd {
	case "list":
		described, err := adm.DescribeUserSCRAMs(ctx)
		if err != nil {
			return err
		}
		rows := []userRow{}
		for user, d := range described {
			if d.Err != nil {
				return fmt.Errorf("user %s: %w", user, d.Err)
			}
			for _, c := range d.CredInfos {
				rows = append(rows, userRow{User: user, Mechanism: c.Mechanism.String(), Iterations: c.Iterations})
			}
		}
		slices.SortFunc(rows, func(a, b userRow) int {
			return strings.Compare(a.User+" "+a.Mechanism, b.User+" "+b.Mechanism)
		})
		if af.asJSON {
			return writeJSON(out, rows)
		}
		w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		fmt.Fprintln(w, "USER\tMECHANISM\tITERATIONS")
		for _, r := range rows {
			fmt.Fprintf(w, "%s\t%s\t%d\n", r.User, r.Mechanism, r.Iterations)
		}
		return w.Flush()
	case "set":
		if *passFile == "" {
			return errors.New("set needs --password-file")
		}
		pass, err := readSecret(*passFile)
		if err != nil {
			return err
		}
		var upserts []kadm.UpsertSCRAM
		for _, m := range mechanisms {
			upserts = append(upserts, kadm.UpsertSCRAM{User: fs.Arg(1), Mechanism: m, Iterations: int32(*iterations), Password: pass})
		}
		res, err := adm.AlterUserSCRAMs(ctx, nil, upserts)
		if err != nil {
			return err
		}
		if err := res.Error(); err != nil {
			return err
		}
		fmt.Fprintf(out, "user %s: %s set\n", fs.Arg(1), *mechs)
		return nil
	case "delete":
		var dels []kadm.DeleteSCRAM
		for _, m := range mechanisms {
			dels = append(dels, kadm.DeleteSCRAM{User: fs.Arg(1), Mechanism: m})
		}
		res, err := adm.AlterUserSCRAMs(ctx, dels, nil)
		if err != nil {
			return err
		}
		if err := res.Error(); err != nil {
			return err
		}
		fmt.Fprintf(out, "user %s: %s deleted\n", fs.Arg(1), *mechs)
		return nil
	}
	fs.Usage()
	return fmt.Errorf("unknown command %q", cmd)
}

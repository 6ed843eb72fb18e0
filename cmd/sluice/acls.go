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
	"github.com/twmb/franz-go/pkg/kmsg"
)

// aclRow is one ACL as `sluice acls` prints it (kafka-acls.sh's fields).
type aclRow struct {
	Principal  string `json:"principal"`
	Host       string `json:"host"`
	Permission string `json:"permission"`
	Operation  string `json:"operation"`
	Resource   string `json:"resource"`
	Name       string `json:"name"`
	Pattern    string `json:"pattern"`
}

// aclsCmd is `sluice acls list | create | delete` (DescribeAcls, CreateAcls, DeleteAcls;
// kafka-acls.sh --list/--add/--remove).
func aclsCmd(args []string, out io.Writer) error {
	fs := flag.NewFlagSet("acls", flag.ContinueOnError)
	var af adminFlags
	af.register(fs)
	var allow, deny, topicNames, groupNames, txnIDs, hosts listFlag
	fs.Var(&allow, "allow", "principal allowed, User:NAME (repeatable)")
	fs.Var(&deny, "deny", "principal denied, User:NAME (repeatable)")
	fs.Var(&topicNames, "topic", "topic name or prefix (repeatable)")
	fs.Var(&groupNames, "group", "consumer group name or prefix (repeatable)")
	fs.Var(&txnIDs, "transactional-id", "transactional id or prefix (repeatable)")
	fs.Var(&hosts, "host", "host the principal connects from (repeatable; default *)")
	cluster := fs.Bool("cluster", false, "the cluster resource")
	ops := fs.String("operation", "", "operations, comma separated: read, write, create, delete, alter, describe, cluster-action, describe-configs, alter-configs, idempotent-write, all (list, delete: empty matches any)")
	pattern := fs.String("pattern", "", "literal or prefixed (create: literal; list, delete: any)")
	if ok, err := parseCommand(fs, args, "usage: sluice acls [flags] list | create | delete\n"); !ok {
		return err
	}
	cmd := fs.Arg(0)
	if fs.NArg() != 1 || !slices.Contains([]string{"list", "create", "delete"}, cmd) {
		fs.Usage()
		return errors.New("want list, create or delete")
	}
	b, err := aclBuilder(cmd != "create", aclSelection{allow, deny, topicNames, groupNames, txnIDs, hosts, *cluster}, *ops, *pattern)
	if err != nil {
		return err
	}
	adm, ctx, done, err := af.connect()
	if err != nil {
		return err
	}
	defer done()
	rows, err := runACLs(ctx, adm, cmd, b)
	if err != nil {
		return err
	}
	rows = slices.CompactFunc(sortedACLs(rows), func(a, b aclRow) bool { return a == b })
	if af.asJSON {
		if rows == nil {
			rows = []aclRow{}
		}
		return writeJSON(out, rows)
	}
	w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(w, "PRINCIPAL\tHOST\tPERMISSION\tOPERATION\tRESOURCE\tNAME\tPATTERN")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", r.Principal, r.Host, r.Permission, r.Operation, r.Resource, r.Name, r.Pattern)
	}
	return w.Flush()
}

// aclSelection is what the acls command's flags name: principals, resources, hosts.
type aclSelection struct {
	allow, deny, topics, groups, txnIDs, hosts []string
	cluster                                    bool
}

// aclBuilder turns the flags into kadm's builder: a filter for list and delete (what is not given
// matches anything), the ACLs themselves for create.
func aclBuilder(filter bool, sel aclSelection, ops, pattern string) (*kadm.ACLBuilder, error) {
	b := kadm.NewACLs()
	if filter {
		b.MaybeAllow(sel.allow...).MaybeDeny(sel.deny...)
		if len(sel.allow) == 0 && len(sel.deny) == 0 {
			b.Allow().Deny() // any principal, either permission
		}
		b.AllowHosts(sel.hosts...).DenyHosts(sel.hosts...) // none given: any host
		if len(sel.topics)+len(sel.groups)+len(sel.txnIDs) == 0 && !sel.cluster {
			b.AnyResource()
		}
		if len(sel.topics) > 0 {
			b.Topics(sel.topics...)
		}
		if len(sel.groups) > 0 {
			b.Groups(sel.groups...)
		}
		if len(sel.txnIDs) > 0 {
			b.TransactionalIDs(sel.txnIDs...)
		}
	} else {
		b.Allow(sel.allow...).Deny(sel.deny...).Topics(sel.topics...).Groups(sel.groups...).TransactionalIDs(sel.txnIDs...)
		if len(sel.hosts) > 0 {
			b.AllowHosts(sel.hosts...).DenyHosts(sel.hosts...)
		}
	}
	if sel.cluster {
		b.Clusters()
	}
	switch {
	case ops != "":
		var parsed []kadm.ACLOperation
		for _, o := range strings.Split(ops, ",") {
			op, err := kmsg.ParseACLOperation(strings.TrimSpace(o))
			if err != nil {
				return nil, fmt.Errorf("--operation %q: %v", o, err)
			}
			parsed = append(parsed, op)
		}
		b.Operations(parsed...)
	case filter:
		b.Operations(kadm.OpAny)
	default:
		return nil, errors.New("create needs --operation")
	}
	switch pattern {
	case "":
		if filter {
			b.ResourcePatternType(kadm.ACLPatternAny)
		} else {
			b.ResourcePatternType(kadm.ACLPatternLiteral)
		}
	case "literal":
		b.ResourcePatternType(kadm.ACLPatternLiteral)
	case "prefixed":
		b.ResourcePatternType(kadm.ACLPatternPrefixed)
	default:
		return nil, fmt.Errorf("--pattern %q: want literal or prefixed", pattern)
	}
	return b, nil
}

// runACLs lists, creates or deletes the ACLs b names and returns them as rows.
func runACLs(ctx context.Context, adm *kadm.Client, cmd string, b *kadm.ACLBuilder) ([]aclRow, error) {
	var rows []aclRow
	add := func(principal, host string, typ kmsg.ACLResourceType, name string, pat kadm.ACLPattern, op kadm.ACLOperation, perm kmsg.ACLPermissionType) {
		rows = append(rows, aclRow{Principal: principal, Host: host, Permission: perm.String(), Operation: op.String(),
			Resource: typ.String(), Name: name, Pattern: pat.String()})
	}
	switch cmd {
	case "list":
		res, err := adm.DescribeACLs(ctx, b)
		if err != nil {
			return nil, err
		}
		for _, r := range res {
			if r.Err != nil {
				return nil, fmt.Errorf("%v %s", r.Err, r.ErrMessage)
			}
			for _, d := range r.Described {
				add(d.Principal, d.Host, d.Type, d.Name, d.Pattern, d.Operation, d.Permission)
			}
		}
	case "create":
		res, err := adm.CreateACLs(ctx, b)
		if err != nil {
			return nil, err
		}
		for _, r := range res {
			if r.Err != nil {
				return nil, fmt.Errorf("%v %s", r.Err, r.ErrMessage)
			}
			add(r.Principal, r.Host, r.Type, r.Name, r.Pattern, r.Operation, r.Permission)
		}
	case "delete":
		res, err := adm.DeleteACLs(ctx, b)
		if err != nil {
			return nil, err
		}
		for _, r := range res {
			if r.Err != nil {
				return nil, fmt.Errorf("%v %s", r.Err, r.ErrMessage)
			}
			for _, d := range r.Deleted {
				add(d.Principal, d.Host, d.Type, d.Name, d.Pattern, d.Operation, d.Permission)
			}
		}
	}
	return rows, nil
}

func sortedACLs(rows []aclRow) []aclRow {
	slices.SortFunc(rows, func(a, b aclRow) int {
		return strings.Compare(fmt.Sprint(a), fmt.Sprint(b))
	})
	return rows
}

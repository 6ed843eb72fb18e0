// Command sluice is the Sluice broker: `sluice serve` runs it; the other subcommands (topics, groups,
// cluster, partitions, produce, consume) work against a running broker.
package main

import (
	"fmt"
	"os"
)

const usage = `sluice: a Kafka-compatible event streaming broker

Usage:
  sluice serve  [flags]          run the broker (defaults: :9092, ./data, one node)
  sluice topics [flags] COMMAND  list | create NAME | delete NAME | describe NAME | alter-config NAME, against a running broker
  sluice groups [flags] COMMAND  list | describe GROUP | lag GROUP | reset-offsets GROUP | delete GROUP
  sluice cluster [flags] status  brokers, controller, under-replicated and offline partitions
  sluice partitions [flags] elect | reassign  preferred leaders back; move a partition's replicas
  sluice produce [flags] TOPIC   one record per line of standard input (-key-separator, -H name=value)
  sluice consume [flags] TOPIC   print records (-offset beginning|end|N, -n COUNT, -e: stop at the end)
  sluice users [flags] COMMAND   list | set USER | delete USER: SCRAM credentials
  sluice acls [flags] COMMAND    list | create | delete (--allow/--deny User:NAME, --operation, --topic/--group/--cluster/--transactional-id)
  sluice quotas [flags] COMMAND  list | set KEY=VALUE... | delete KEY... (--user/--client-id/--ip NAME or --*-default): client quotas

The commands that talk to a broker take --bootstrap, --tls, --tls-ca, --sasl-mechanism, --sasl-user and
--sasl-password-file.

Run "sluice COMMAND -h" for the flags.
`

func main() {
	if len(os.Args) < 2 {
		fmt.Fprint(os.Stderr, usage)
		os.Exit(2)
	}
	var err error
	switch os.Args[1] {
	case "serve":
		err = serve(os.Args[2:])
	case "topics":
		err = topics(os.Args[2:])
	case "groups":
		err = groups(os.Args[2:], os.Stdout)
	case "cluster":
		err = clusterCmd(os.Args[2:], os.Stdout)
	case "partitions":
		err = partitionsCmd(os.Args[2:], os.Stdout)
	case "produce":
		err = produceCmd(os.Args[2:], os.Stdin, os.Stdout)
	case "consume":
		err = consumeCmd(os.Args[2:], os.Stdout)
	case "users":
		err = usersCmd(os.Args[2:], os.Stdout)
	case "acls":
		err = aclsCmd(os.Args[2:], os.Stdout)
	case "quotas":
		err = quotasCmd(os.Args[2:], os.Stdout)
	case "-h", "--help", "help":
		fmt.Print(usage)
		return
	default:
		fmt.Fprintf(os.Stderr, "sluice: unknown command %q\n\n%s", os.Args[1], usage)
		os.Exit(2)
	}
	if err != nil {
		fmt.Fprintf(os.Stderr, "sluice %s: %v\n", os.Args[1], err)
		os.Exit(1)
	}
}

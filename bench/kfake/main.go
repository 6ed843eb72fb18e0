// Command kfake runs franz-go's in-memory fake Kafka cluster on a loopback port, as the
// reference peer for the benchmark script.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"syscall"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "port to listen on (127.0.0.1)")
	brokers := flag.Int("brokers", 1, "number of brokers in the fake cluster")
	flag.Parse()
	ports := make([]int, *brokers)
	for i := range ports {
		ports[i] = *port + i
	}
	c, err := kfake.NewCluster(
		kfake.Ports(ports...),
		kfake.NumBrokers(*brokers),
		kfake.AllowAutoTopicCreation(),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("kfake listening on", c.ListenAddrs())
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c.Close()
}

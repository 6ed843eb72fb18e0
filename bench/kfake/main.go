// Command kfake runs franz-go's in-memory fake Kafka cluster on a loopback port, as the
// reference peer for the benchmark script.
package main

import (
	"flag"
	"fmt"
	"log"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
)

func main() {
	port := flag.Int("port", 9092, "port to listen on (127.0.0.1)")
	brokers := flag.Int("brokers", 1, "number of brokers in the fake cluster")
	retention := flag.Int64("retention-bytes", 32<<20, "bytes kept per partition (kfake holds everything in memory); -1 = all")
	flag.Parse()
	ports := make([]int, *brokers)
	for i := range ports {
		ports[i] = *port + i
	}
	c, err := kfake.NewCluster(
		kfake.Ports(ports...),
		kfake.NumBrokers(*brokers),
		kfake.AllowAutoTopicCreation(),
		kfake.BrokerConfigs(map[string]string{"log.retention.bytes": strconv.FormatInt(*retention, 10)}),
	)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("kfake listening on", c.ListenAddrs())
	// kfake enforces broker-level retention only when asked: trim every second so a long
	// benchmark does not fill memory.
	if *retention >= 0 {
		go func() {
			for range time.Tick(time.Second) {
				c.ApplyRetention()
			}
		}()
	}
	sig := make(chan os.Signal, 1)
	signal.Notify(sig, syscall.SIGINT, syscall.SIGTERM)
	<-sig
	c.Close()
}

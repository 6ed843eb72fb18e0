package replica

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// The crash test re-executes the test binary as a child that produces until it
// is killed with SIGKILL, appending every acknowledged batch to a file. The
// parent then reopens the data and checks that every acknowledged batch is in
// the log exactly once, with the offset it was acknowledged at.
const (
	crashChildEnv = "REPLICA_CRASH_CHILD"
	crashDirEnv   = "REPLICA_CRASH_DIR"
	crashAddrEnv  = "REPLICA_CRASH_ADDR"
	crashRoundEnv = "REPLICA_CRASH_ROUND"

	crashProducers = 8
	crashTopic     = "crash"
)

var crashTopicSpec = testTopic{name: crashTopic, partitions: 2, firstShard: 1000}

// crashPID is the producer id of goroutine g in round r: new ids per round, so
// a round never depends on what the killed round had in flight.
func crashPID(round, g int) int64 { return int64(round*100 + g) }

func TestCrashChild(t *testing.T) {
	if os.Getenv(crashChildEnv) != "1" {
		t.Skip("only runs as the child of TestCrashRecovery")
	}
	dir, addr := os.Getenv(crashDirEnv), os.Getenv(crashAddrEnv)
	round, _ := strconv.Atoi(os.Getenv(crashRoundEnv))
	n := startNode(t, dir, addr, Config{})
	n.apply(crashTopicSpec)
	acks, err := os.OpenFile(filepath.Join(dir, fmt.Sprintf("acks-%d", round)), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for g := 0; g < crashProducers; g++ {
		wg.Add(1)
		go func(g int) {
			defer wg.Done()
			part := int32(g % crashTopicSpec.partitions)
			p := n.partition(crashTopic, part)
			pid := crashPID(round, g)
			for seq, i := int32(0), 0; ; i++ {
				records := 1 + i%3
				r, err := p.Produce(context.Background(), makeBatch(pid, 0, seq, records, 200))
				if err != nil {
					t.Errorf("produce: %v", err)
					return
				}
				// One write per line: O_APPEND keeps lines whole, and the page
				// cache survives the kill of this process.
				fmt.Fprintf(acks, "%d %d %d %d %d\n", part, pid, seq, records, r.BaseOffset)
				seq += int32(records)
			}
		}(g)
	}
	wg.Wait() // never returns normally: the parent kills this process
}

type crashAck struct {
	part         int32
	pid          int64
	seq, records int32
	base         int64
	round        int
}

func readAcks(t *testing.T, path string, round int) []crashAck {
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var out []crashAck
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 5 {
			continue // a line torn by the kill
		}
		var a crashAck
		_, err := fmt.Sscan(sc.Text(), &a.part, &a.pid, &a.seq, &a.records, &a.base)
		if err != nil {
			continue
		}
		a.round = round
		out = append(out, a)
	}
	return out
}

func countLines(path string) int {
	b, _ := os.ReadFile(path)
	return bytes.Count(b, []byte{'\n'})
}

func TestCrashRecovery(t *testing.T) {
	if os.Getenv(crashChildEnv) == "1" {
		t.Skip("child")
	}
	if testing.Short() {
		t.Skip("spawns processes")
	}
	dir, addr := t.TempDir(), freeAddr(t)
	const rounds, minAcks = 2, 2500
	var acks []crashAck
	for round := 1; round <= rounds; round++ {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCrashChild$", "-test.v")
		cmd.Env = append(os.Environ(), crashChildEnv+"=1", crashDirEnv+"="+dir, crashAddrEnv+"="+addr, crashRoundEnv+"="+strconv.Itoa(round))
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		exited := make(chan struct{})
		go func() { cmd.Wait(); close(exited) }()
		ackPath := filepath.Join(dir, fmt.Sprintf("acks-%d", round))
		deadline := time.Now().Add(2 * time.Minute)
		for countLines(ackPath) < minAcks {
			select {
			case <-exited:
				t.Fatalf("round %d: child exited after %d acknowledged batches; output:\n%s", round, countLines(ackPath), out.String())
			case <-time.After(20 * time.Millisecond):
			}
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				<-exited
				t.Fatalf("round %d: child acknowledged %d batches in 2 minutes; output:\n%s", round, countLines(ackPath), out.String())
			}
		}
		if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
			t.Fatal(err)
		}
		<-exited
		acks = append(acks, readAcks(t, ackPath, round)...)
	}

	n := startNode(t, dir, addr, Config{})
	defer n.close()
	n.apply(crashTopicSpec)
	type key struct {
		pid int64
		seq int32
	}
	for part := int32(0); part < int32(crashTopicSpec.partitions); part++ {
		p := n.partition(crashTopic, part)
		hs := readAll(t, p, 0)
		checkDense(t, hs, 0)
		inLog := map[key]int64{}
		for _, h := range hs {
			k := key{h.ProducerID, h.BaseSequence}
			if _, dup := inLog[k]; dup {
				t.Fatalf("partition %d: producer %d sequence %d appended twice", part, k.pid, k.seq)
			}
			inLog[k] = h.BaseOffset
		}
		checked := 0
		last := map[int64]crashAck{}
		for _, a := range acks {
			if a.part != part {
				continue
			}
			base, ok := inLog[key{a.pid, a.seq}]
			if !ok {
				t.Fatalf("partition %d: acknowledged batch %+v lost", part, a)
			}
			if base != a.base {
				t.Fatalf("partition %d: acknowledged batch %+v now at offset %d", part, a, base)
			}
			if a.seq >= last[a.pid].seq {
				last[a.pid] = a
			}
			checked++
		}
		// Producer state survived the kills: the last acknowledged batch of
		// every producer is still recognised as a duplicate.
		for _, a := range last {
			r := produce(t, p, makeBatch(a.pid, 0, a.seq, int(a.records), 200))
			if r.BaseOffset != a.base {
				t.Fatalf("partition %d: retry of %+v got offset %d", part, a, r.BaseOffset)
			}
		}
		if hw := p.HighWatermark(); len(readAll(t, p, 0)) != len(hs) || hw != hs[len(hs)-1].NextOffset() {
			t.Fatalf("partition %d: retries appended", part)
		}
		t.Logf("partition %d: %d acknowledged batches checked, %d in the log", part, checked, len(hs))
	}
}

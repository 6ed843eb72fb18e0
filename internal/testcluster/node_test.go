package testcluster

import (
	"context"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// A Node runs whatever its Command makes; here a shell that prints its flags and sleeps stands in
// for `sluice serve`, so the lifecycle is tested on a real process without building the broker.
func TestNodeLifecycle(t *testing.T) {
	sh, err := exec.LookPath("sh")
	if err != nil {
		t.Skip("no sh")
	}
	dir := t.TempDir()
	n := &Node{
		ID: 3, Addr: "127.0.0.1:1", RaftAddr: "127.0.0.1:2",
		DataDir: filepath.Join(dir, "data"), LogPath: filepath.Join(dir, "logs", "node.log"),
		Args: []string{"--extra", "x"},
		Command: func(args []string) *exec.Cmd {
			return exec.Command(sh, "-c", `echo "$@"; exec sleep 60`, "sh", strings.Join(args, " "))
		},
	}
	if n.Running() || n.Exited() != nil {
		t.Fatal("a node that never started runs")
	}
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	if err := n.Start(); err == nil {
		t.Fatal("a second Start while running succeeded")
	}
	if _, err := os.Stat(n.DataDir); err != nil {
		t.Fatalf("data directory: %v", err)
	}
	waitFor(t, func() bool { return strings.Contains(n.LogTail(1000), "--node-id 3 --extra x") })
	log := n.LogTail(1000)
	if !strings.Contains(log, "=== testcluster: start node 3") ||
		!strings.Contains(log, "--listen 127.0.0.1:1 --raft-addr 127.0.0.1:2 --data-dir "+n.DataDir) {
		t.Fatalf("log:\n%s", log)
	}

	// A paused process is resumed by a graceful Stop, so SIGTERM can end it.
	n.Signal(syscall.SIGSTOP)
	exited := n.Exited()
	start := time.Now()
	n.Stop(syscall.SIGTERM, 20*time.Second)
	if time.Since(start) > 10*time.Second {
		t.Fatal("Stop waited for its timeout: the paused process was not resumed")
	}
	select {
	case <-exited:
	default:
		t.Fatal("Stop returned before the process exited")
	}
	if n.Running() {
		t.Fatal("running after Stop")
	}

	// Restart, then kill -9; Stop on a stopped node does nothing.
	if err := n.Start(); err != nil {
		t.Fatal(err)
	}
	n.Stop(syscall.SIGKILL, time.Minute)
	n.Stop(syscall.SIGTERM, time.Second)
	if got := strings.Count(n.LogTail(10000), "=== testcluster: start"); got != 2 {
		t.Fatalf("%d start lines in the log, want 2 (appended across restarts)", got)
	}
}

func TestFreeAddrAndWaitListening(t *testing.T) {
	addr := MustFreeAddr(t)
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	defer cancel()
	if err := WaitListening(ctx, addr); err == nil {
		t.Fatal("nothing listens, yet WaitListening succeeded")
	}
	l, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatalf("the free address %s: %v", addr, err)
	}
	defer l.Close()
	ctx, cancel = context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := WaitListening(ctx, addr); err != nil {
		t.Fatal(err)
	}
}

func TestVoters(t *testing.T) {
	got := Voters([]*Node{{ID: 1, RaftAddr: "a:1"}, {ID: 2, RaftAddr: "b:2"}})
	if got != "1@a:1,2@b:2" {
		t.Fatal(got)
	}
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(10 * time.Second); !cond(); {
		if time.Now().After(deadline) {
			t.Fatal("timed out")
		}
		time.Sleep(10 * time.Millisecond)
	}
}

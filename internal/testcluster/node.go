// Package testcluster runs Sluice brokers as child processes on loopback, for the end-to-end tests
// (cmd/sluice) and the chaos runs (bench/chaos): free ports, a node's process with its data
// directory and log (start, signals, kill -9, graceful stop), controller voters, readiness, and the
// Kafka requests those callers build by hand (find a coordinator, produce a raw batch).
//
// It returns errors rather than taking a testing.TB, so that a command (bench/chaos) uses it as
// tests do; cmd/sluice's harness_test.go wraps it for tests.
package testcluster

import (
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// FreeAddr returns a loopback address whose port was free a moment ago.
func FreeAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", err
	}
	defer l.Close()
	return l.Addr().String(), nil
}

// Command makes the process that runs `sluice serve` with args: a built binary (Binary), or a test
// binary that re-executes itself as the broker.
type Command func(args []string) *exec.Cmd

// Binary is the Command of a built sluice binary.
func Binary(path string) Command {
	return func(args []string) *exec.Cmd { return exec.Command(path, append([]string{"serve"}, args...)...) }
}

// Node is one broker. Its data directory and addresses survive restarts (dragonboat requires a node
// to come back on the same Raft address), so a restarted node recovers from its own disk.
type Node struct {
	ID       int32  // --node-id; 0 leaves the broker's default
	Addr     string // Kafka listener, host:port
	RaftAddr string
	DataDir  string
	LogPath  string   // the process's output, appended across restarts
	Args     []string // further flags
	Command  Command
	// KillWithParent has the kernel kill the broker if this process dies (Linux), so that brokers
	// of a crashed run do not outlive it on a shared machine.
	KillWithParent bool

	mu     sync.Mutex
	cmd    *exec.Cmd
	exited chan struct{} // closed when the current process has exited
	paused bool
}

// Voters is the --controller-voters value that makes nodes the controller's voters.
func Voters(nodes []*Node) string {
	vs := make([]string, len(nodes))
	for i, n := range nodes {
		vs[i] = fmt.Sprintf("%d@%s", n.ID, n.RaftAddr)
	}
	return strings.Join(vs, ",")
}

// Start launches the broker process. A line marking the start goes to the log first, so a log can
// be matched against what the caller did.
func (n *Node) Start() error {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd != nil {
		return fmt.Errorf("node %d already running", n.ID)
	}
	if err := os.MkdirAll(n.DataDir, 0o755); err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(n.LogPath), 0o755); err != nil {
		return err
	}
	lf, err := os.OpenFile(n.LogPath, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	defer lf.Close() // the child has its own descriptor
	fmt.Fprintf(lf, "=== testcluster: start node %d at %s\n", n.ID, time.Now().UTC().Format(time.RFC3339Nano))
	args := []string{"--listen", n.Addr, "--raft-addr", n.RaftAddr, "--data-dir", n.DataDir}
	if n.ID != 0 {
		args = append(args, "--node-id", fmt.Sprint(n.ID))
	}
	cmd := n.Command(append(args, n.Args...))
	cmd.Stdout, cmd.Stderr = lf, lf
	if n.KillWithParent {
		setKillWithParent(cmd)
	}
	if err := cmd.Start(); err != nil {
		return err
	}
	exited := make(chan struct{})
	go func() { _ = cmd.Wait(); close(exited) }()
	n.cmd, n.exited, n.paused = cmd, exited, false
	return nil
}

// Exited is closed when the current process exits; nil when none was started since the last stop.
func (n *Node) Exited() <-chan struct{} {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.exited
}

// Pid is the running process's id, 0 when none runs (tests read its /proc entries).
func (n *Node) Pid() int {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil || n.cmd.Process == nil {
		return 0
	}
	return n.cmd.Process.Pid
}

// Running reports whether a process was started and not stopped since.
func (n *Node) Running() bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.cmd != nil
}

// Signal sends sig to the running process (no-op when none runs); SIGSTOP and SIGCONT are
// remembered, so that Stop resumes a paused process first.
func (n *Node) Signal(sig syscall.Signal) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if n.cmd == nil {
		return
	}
	_ = n.cmd.Process.Signal(sig)
	switch sig {
	case syscall.SIGSTOP:
		n.paused = true
	case syscall.SIGCONT:
		n.paused = false
	}
}

// Stop sends sig (SIGTERM: graceful; SIGKILL: kill -9) and waits for the process to exit, killing it
// after timeout. A paused process is resumed first unless sig is SIGKILL.
func (n *Node) Stop(sig syscall.Signal, timeout time.Duration) {
	n.mu.Lock()
	cmd, exited, paused := n.cmd, n.exited, n.paused
	n.mu.Unlock()
	if cmd == nil {
		return
	}
	if paused && sig != syscall.SIGKILL {
		_ = cmd.Process.Signal(syscall.SIGCONT)
	}
	_ = cmd.Process.Signal(sig)
	select {
	case <-exited:
	case <-time.After(timeout):
		_ = cmd.Process.Signal(syscall.SIGKILL)
		<-exited
	}
	n.Forget()
}

// Forget drops the record of a process that has exited by itself, so that Start may run it again.
func (n *Node) Forget() {
	n.mu.Lock()
	n.cmd, n.exited, n.paused = nil, nil, false
	n.mu.Unlock()
}

// LogTail returns the last limit bytes of the node's log.
func (n *Node) LogTail(limit int) string {
	out, _ := os.ReadFile(n.LogPath)
	if len(out) > limit {
		out = out[len(out)-limit:]
	}
	return string(out)
}

// MustFreeAddr is FreeAddr for tests: it fails t instead of returning an error.
func MustFreeAddr(t testing.TB) string {
	t.Helper()
	addr, err := FreeAddr()
	if err != nil {
		t.Fatal(err)
	}
	return addr
}

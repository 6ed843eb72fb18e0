package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// A workload file is read first wherever -workload stands; flags then override it.
func TestParseWorkloadFileThenFlags(t *testing.T) {
	path := filepath.Join(t.TempDir(), "w.yaml")
	if err := os.WriteFile(path, []byte("name: file\npartitions: 12\nrate: 100\nduration: 5s\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	c, err := parseWorkload("run", []string{"-rate", "250", "--workload=" + path, "-quiet", "-out", "x"}, nil)
	if err != nil {
		t.Fatal(err)
	}
	w := c.workload
	if w.Name != "file" || w.Partitions != 12 || w.Rate != 250 || w.Duration.D() != 5*time.Second || !c.quiet || c.out != "x" {
		t.Errorf("got %+v (quiet %v out %q)", w, c.quiet, c.out)
	}
	if _, err := parseWorkload("run", []string{"-acks", "2"}, nil); err == nil {
		t.Error("an invalid workload parsed")
	}
	if _, err := parseWorkload("run", []string{"stray"}, nil); err == nil {
		t.Error("a stray argument parsed")
	}
}

//go:build !linux

package testcluster

import "os/exec"

// setKillWithParent does nothing where the kernel offers no parent-death signal.
func setKillWithParent(*exec.Cmd) {}

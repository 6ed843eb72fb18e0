package testcluster

import (
	"os/exec"
	"syscall"
)

func setKillWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}

package bench

import (
	"os/exec"
	"syscall"
)

// dieWithParent makes the kernel stop cmd if the bench dies first, so a
// killed bench leaves no server or load process behind.
func dieWithParent(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM}
}

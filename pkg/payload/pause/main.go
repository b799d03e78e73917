// Command pause is kedge's stand-in for Kubernetes' pause container: it
// holds a pod's namespaces open and does nothing else.
//
// Like upstream pause.c it exits 0 on SIGINT/SIGTERM and, because it may
// be PID 1 of a pod's shared PID namespace, reaps orphaned children on
// SIGCHLD so they do not linger as zombies. Build it static
// (scripts/builtin-images) so the image needs nothing but this binary.
package main

import (
	"fmt"
	"os"
	"os/signal"
	"syscall"
)

func main() {
	if os.Getpid() != 1 {
		fmt.Fprintln(os.Stderr, "Warning: pause should be the first process")
	}

	// Registering the handlers matters even for SIGTERM: the kernel drops
	// signals with default disposition sent to PID 1, so without them the
	// container could only be stopped with SIGKILL.
	sigs := make(chan os.Signal, 8)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGCHLD)
	for sig := range sigs {
		if sig == syscall.SIGCHLD {
			reap()
			continue
		}
		fmt.Fprintf(os.Stderr, "Shutting down, got signal: %v\n", sig)
		os.Exit(0)
	}
}

// reap collects every exited child; SIGCHLDs coalesce, so one signal may
// stand for several children.
func reap() {
	for {
		var ws syscall.WaitStatus
		pid, err := syscall.Wait4(-1, &ws, syscall.WNOHANG, nil)
		if err == syscall.EINTR {
			continue
		}
		if pid <= 0 || err != nil {
			return
		}
	}
}

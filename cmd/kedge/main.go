// Command kedge is a Kubernetes distribution for the edge in one binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kedge-dev/kedge/pkg/cli"
)

func main() {
	ctx, cancel := context.WithCancel(context.Background())
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		<-sigs
		fmt.Fprintln(os.Stderr, "kedge: stopping (send the signal again to exit at once)")
		cancel()
		<-sigs
		fmt.Fprintln(os.Stderr, "kedge: second signal, exiting now")
		os.Exit(130)
	}()

	err := cli.Run(ctx, os.Args[0], os.Args[1:])
	if err == nil {
		return
	}
	if code, ok := cli.IsExit(err); ok {
		os.Exit(code)
	}
	fmt.Fprintf(os.Stderr, "kedge: error: %v\n", err)
	os.Exit(1)
}

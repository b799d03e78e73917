package cli

import (
	"fmt"
	"os"

	containerd "github.com/containerd/containerd/v2/cmd/containerd/command"
	ctr "github.com/containerd/containerd/v2/cmd/ctr/app"

	// containerd's plugins (CRI, snapshotters, runtimes) register at init.
	_ "github.com/containerd/containerd/v2/cmd/containerd/builtins"

	"github.com/kedge-dev/kedge/pkg/config"
)

// runContainerd is the entry point of kedge's containerd child process
// (kedge re-executing itself as "kedge containerd ...").
func runContainerd(args []string) error {
	app := containerd.App()
	if err := app.Run(append([]string{"containerd"}, args...)); err != nil {
		return fmt.Errorf("containerd: %w", err)
	}
	return nil
}

// runCtr runs containerd's ctr against kedge's containerd by default.
func runCtr(args []string) error {
	if os.Getenv("CONTAINERD_ADDRESS") == "" {
		socket := config.DefaultContainerdSocket
		if dir := os.Getenv(config.EnvName("run-dir")); dir != "" {
			socket = dir + "/containerd/containerd.sock"
		}
		os.Setenv("CONTAINERD_ADDRESS", socket)
	}
	if os.Getenv("CONTAINERD_NAMESPACE") == "" {
		os.Setenv("CONTAINERD_NAMESPACE", "k8s.io")
	}
	app := ctr.New()
	if err := app.Run(append([]string{"ctr"}, args...)); err != nil {
		fmt.Fprintf(os.Stderr, "ctr: %v\n", err)
		return ExitError{Code: 1}
	}
	return nil
}

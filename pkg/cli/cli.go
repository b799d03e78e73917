// Package cli holds kedge's cobra commands: it binds flags to the typed
// config and dispatches to the roles and the built-in tools. It is the only
// package that imports cobra.
package cli

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// ExitError carries a process exit code chosen by a built-in tool.
type ExitError struct{ Code int }

func (e ExitError) Error() string { return fmt.Sprintf("exit status %d", e.Code) }

// Run runs kedge with args (argv without the program name). name is the
// program name as invoked: a symlink named kubectl runs the built-in kubectl.
func Run(ctx context.Context, name string, args []string) error {
	switch filepath.Base(name) {
	case "kubectl":
		return runKubectl(args)
	case "ctr":
		return runCtr(args)
	case "crictl":
		return runCrictl(args)
	}
	// Internal and pass-through commands that parse their own flags.
	if len(args) > 0 {
		switch args[0] {
		case "containerd":
			return runContainerd(args[1:])
		case "ctr":
			return runCtr(args[1:])
		case "crictl":
			return runCrictl(args[1:])
		}
	}
	// Kubernetes packages register flags (--version, klog's) on the global
	// flag set at init, and cobra would merge them into kedge's commands.
	pflag.CommandLine = pflag.NewFlagSet(name, pflag.ContinueOnError)
	root := newRoot(ctx, os.Stdout, os.Stderr)
	root.SetArgs(args)
	return root.ExecuteContext(ctx)
}

func newRoot(ctx context.Context, stdout, stderr io.Writer) *cobra.Command {
	root := &cobra.Command{
		Use:   "kedge",
		Short: "kedge: a Kubernetes distribution for the edge in one binary",
		Long: `kedge runs a complete Kubernetes node from one binary: the API server on
an embedded SQLite datastore, the scheduler, the controller manager and, on
agents, the kubelet. Stock kubectl and Helm work against it.

  kedge server            start a server (control plane) node
  kedge kubectl ...       run the built-in kubectl against this server`,
		Version:       versionString(),
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return cmd.Help()
		},
	}
	root.SetVersionTemplate("{{.Version}}")
	root.SetOut(stdout)
	root.SetErr(stderr)
	root.SetFlagErrorFunc(func(cmd *cobra.Command, err error) error {
		return fmt.Errorf("%w (see %s --help)", err, cmd.CommandPath())
	})
	root.AddCommand(
		newServerCommand(),
		newAgentCommand(),
		newKubectlCommand(),
		newEtcdSnapshotCommand(stdout),
		newEtcdCommand(stdout),
		newDatastoreCommand(stdout),
		newTokenCommand(stdout),
		newSecretsEncryptCommand(stdout),
		newCertificateCommand(stdout),
		newCheckConfigCommand(stdout),
		newVersionCommand(stdout),
	)
	return root
}

func newVersionCommand(out io.Writer) *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the versions of kedge and of the components it bundles",
		Args:  cobra.NoArgs,
		RunE: func(*cobra.Command, []string) error {
			_, err := io.WriteString(out, versionString())
			return err
		},
	}
}

// IsExit reports the exit code a built-in tool asked for.
func IsExit(err error) (int, bool) {
	var e ExitError
	if errors.As(err, &e) {
		return e.Code, true
	}
	return 0, false
}

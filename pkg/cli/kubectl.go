package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"k8s.io/component-base/cli"
	kubectlcmd "k8s.io/kubectl/pkg/cmd"
	cmdutil "k8s.io/kubectl/pkg/cmd/util"

	"github.com/kedge-dev/kedge/pkg/config"
)

func newKubectlCommand() *cobra.Command {
	return &cobra.Command{
		Use:                "kubectl",
		Short:              "Run the built-in kubectl (default kubeconfig: the admin kubeconfig)",
		DisableFlagParsing: true,
		RunE: func(_ *cobra.Command, args []string) error {
			return runKubectl(args)
		},
	}
}

// runKubectl runs upstream kubectl in-process. Without KUBECONFIG or
// --kubeconfig it uses the admin kubeconfig the server wrote. kubectl
// reports fatal errors by exiting; kedge turns that into an ExitError so
// that only main exits.
func runKubectl(args []string) (err error) {
	if os.Getenv("KUBECONFIG") == "" && !hasFlag(args, "kubeconfig") {
		path := os.Getenv(config.EnvName("write-kubeconfig"))
		if path == "" {
			path = config.DefaultKubeconfig
		}
		os.Setenv("KUBECONFIG", path)
	}
	type fatal struct{ code int }
	cmdutil.BehaviorOnFatal(func(msg string, code int) {
		if msg != "" {
			fmt.Fprint(os.Stderr, msg)
			if msg[len(msg)-1] != '\n' {
				fmt.Fprintln(os.Stderr)
			}
		}
		panic(fatal{code})
	})
	defer func() {
		if r := recover(); r != nil {
			f, ok := r.(fatal)
			if !ok {
				panic(r)
			}
			err = ExitError{Code: f.code}
		}
	}()
	cmd := kubectlcmd.NewDefaultKubectlCommand()
	cmd.SetArgs(args)
	if err := cli.RunNoErrOutput(cmd); err != nil {
		cmdutil.CheckErr(err)
	}
	return nil
}

func hasFlag(args []string, name string) bool {
	for _, a := range args {
		if a == "--"+name || len(a) > len(name)+3 && a[:len(name)+3] == "--"+name+"=" {
			return true
		}
	}
	return false
}

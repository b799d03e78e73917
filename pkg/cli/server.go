package cli

import (
	"log/slog"
	"os"

	"github.com/spf13/cobra"

	"github.com/kedge-dev/kedge/pkg/config"
	kedgelog "github.com/kedge-dev/kedge/pkg/log"
	"github.com/kedge-dev/kedge/pkg/memlimit"
	"github.com/kedge-dev/kedge/pkg/server"
)

func newServerCommand() *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "server",
		Short: "Run a server: datastore, control plane and (unless --disable-agent) an agent",
		Long: `Run a kedge server: kine on SQLite, kube-apiserver, kube-controller-manager
and kube-scheduler in one process, serving the Kubernetes API on
--https-listen-port (6443).

Every flag can also be set in the config file (` + config.DefaultConfigFile + `, then
` + config.DefaultConfigFile + `.d/*.yaml), with the long flag name as key, or in
the environment as KEDGE_<FLAG> (e.g. KEDGE_DATA_DIR). Flags win over the
environment, which wins over the config file.

The admin kubeconfig is written to --write-kubeconfig (` + config.DefaultKubeconfig + `);
"kedge kubectl" uses it by default.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := loadConfig(cmd, &cfg, cfg.Validate)
			if err != nil {
				return err
			}
			return server.Run(cmd.Context(), cfg, log)
		},
	}
	cfg.AddServerFlags(cmd.Flags())
	return cmd
}

// loadConfig completes cfg from the config file and environment, validates
// it, and sets up logging and the soft memory limit: what every role does
// before it starts.
func loadConfig(cmd *cobra.Command, cfg *config.Config, validate func() error) (*slog.Logger, error) {
	if err := config.ApplySources(cmd.Flags(), os.Getenv); err != nil {
		return nil, err
	}
	if err := validate(); err != nil {
		return nil, err
	}
	log := kedgelog.Setup(os.Stderr, kedgelog.Options{Verbosity: cfg.Verbosity, JSON: cfg.LogJSON})
	memlimit.Apply(log)
	return log, nil
}

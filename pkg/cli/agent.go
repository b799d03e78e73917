package cli

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"

	"github.com/kedge-dev/kedge/pkg/agent"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/pki"
	"github.com/kedge-dev/kedge/pkg/sdnotify"
)

func newAgentCommand() *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent: containerd, kubelet and the pod network of a node",
		Long: `Run a kedge agent: containerd (with runc and the shim kedge carries) and the
kubelet, registered with the server at --server.

For now an agent joins the server whose data dir it shares (local
credentials): run "kedge server --disable-agent" and "kedge agent" on the
same host with the same --data-dir. Joining remote servers with a token
comes with the multi-node work.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := loadConfig(cmd, &cfg, cfg.ValidateAgent)
			if err != nil {
				return err
			}
			layout := datadir.Layout{Root: cfg.DataDir}
			files := pki.FilesIn(layout.TLSDir())
			if _, err := os.Stat(files.ClientCAKey); err != nil {
				return fmt.Errorf("no server credentials in %s: an agent currently joins the server sharing its --data-dir (%w)", layout.TLSDir(), err)
			}
			removePID, err := datadir.WritePIDFile(cfg.RunDir, "kedge-agent")
			if err != nil {
				return err
			}
			defer removePID()
			node, err := agent.Components(agent.Options{Config: cfg, ServerURL: cfg.Server, Creds: agent.LocalCredentials(files), Log: log})
			if err != nil {
				return err
			}
			return component.NewRunner(log).Run(cmd.Context(), node, func() {
				log.Info("kedge agent is ready", "node", agent.NodeName(cfg), "server", cfg.Server)
				sdnotify.ReadyUntil(cmd.Context(), log)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&cfg.Server, "server", "s", "https://127.0.0.1:6443", "URL of the server to join")
	cfg.AddNodeFlags(fs)
	return cmd
}

package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/spf13/cobra"

	"github.com/kedge-dev/kedge/pkg/agent"
	"github.com/kedge-dev/kedge/pkg/component"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/kernel"
	"github.com/kedge-dev/kedge/pkg/pki"
	"github.com/kedge-dev/kedge/pkg/sdnotify"
)

func newAgentCommand() *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Run an agent: containerd, kubelet and the pod network of a node",
		Long: `Run a kedge agent: containerd (with runc and the shim kedge carries), the
kubelet, kube-proxy and flannel, registered with the server at --server.

Join a server with its token (the server's <data-dir>/server/token):

  kedge agent --server https://SERVER:6443 --token K10...

or, in the environment (as install.sh writes it), KEDGE_URL and
KEDGE_TOKEN. The agent checks the server's CA against the hash in the
token, then has the server sign its node certificates. Without a token,
an agent shares the credentials of a server on the same host (same
--data-dir).`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			log, err := loadConfig(cmd, &cfg, cfg.ValidateAgent)
			if err != nil {
				return err
			}
			if err := kernel.Require(kernel.Needed(cfg.FlannelBackend, !cfg.DisableNetworkPolicy)); err != nil {
				return err
			}
			removePID, err := datadir.WritePIDFile(cfg.RunDir, "kedge-agent")
			if err != nil {
				return err
			}
			defer removePID()
			creds, err := agentCredentials(cmd.Context(), cfg, log)
			if err != nil {
				return err
			}
			node, err := agent.Components(agent.Options{Config: cfg, ServerURL: cfg.Server, LoadBalance: true, Creds: creds, Log: log})
			if err != nil {
				return err
			}
			return component.NewRunner(log).Run(cmd.Context(), node.All(), func() {
				log.Info("kedge agent is ready", "node", agent.NodeName(cfg), "server", cfg.Server)
				sdnotify.ReadyUntil(cmd.Context(), log)
			})
		},
	}
	fs := cmd.Flags()
	fs.StringVarP(&cfg.Server, "server", "s", "https://127.0.0.1:6443", "URL of the server to join (env KEDGE_URL)")
	fs.StringVarP(&cfg.Token, "token", "t", "", "join token of the server (its <data-dir>/server/token)")
	fs.BoolVar(&cfg.Autonomy, "autonomy", false, "keep this node's pods running and serving while no server answers: the node's components read through a cache on its disk, and the node is labelled kedge.io/autonomy=true so its pods are not evicted (see the README, Offline operation)")
	cfg.AddNodeFlags(fs)
	return cmd
}

// agentCredentials joins the server with the token, or, without one,
// shares the credentials of a server on this host.
func agentCredentials(ctx context.Context, cfg config.Config, log *slog.Logger) (agent.Credentials, error) {
	if cfg.Token != "" {
		token, err := join.Parse(cfg.Token)
		if err != nil {
			return agent.Credentials{}, fmt.Errorf("--token: %w", err)
		}
		password, err := join.NodePassword(filepath.Join(cfg.DataDir, "agent"))
		if err != nil {
			return agent.Credentials{}, fmt.Errorf("node password: %w", err)
		}
		remote := &join.Remote{Server: cfg.Server, Token: token, NodeName: agent.NodeName(cfg), NodePassword: password, Dir: filepath.Join(cfg.DataDir, "agent", "tls"), Log: log}
		if err := remote.Bootstrap(ctx); err != nil {
			return agent.Credentials{}, err
		}
		return agent.Credentials{ServerCACert: remote.ServerCACert(), ClientCACert: remote.ClientCACert(), Issuer: remote}, nil
	}
	files := pki.FilesIn(datadir.Layout{Root: cfg.DataDir}.TLSDir())
	if _, err := os.Stat(files.ClientCAKey); err != nil {
		return agent.Credentials{}, fmt.Errorf("no --token (or KEDGE_TOKEN) to join %s with, and no server credentials in %s to share: %w", cfg.Server, filepath.Dir(files.ClientCAKey), err)
	}
	return agent.LocalCredentials(files, agent.NodeName(cfg)), nil
}

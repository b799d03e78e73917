package cli

import (
	"context"
	"fmt"
	"io"
	"os"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"

	"github.com/kedge-dev/kedge/pkg/agent"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/datastore"
	"github.com/kedge-dev/kedge/pkg/etcd"
	kedgelog "github.com/kedge-dev/kedge/pkg/log"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// serverToolFlags gives an operations command the server's flags (so the
// config file and KEDGE_* variables of the server apply), showing only
// the ones it uses.
func serverToolFlags(cmd *cobra.Command, cfg *config.Config, shown ...string) {
	cfg.AddServerFlags(cmd.PersistentFlags())
	keep := map[string]bool{"config": true, "data-dir": true}
	for _, s := range shown {
		keep[s] = true
	}
	cmd.PersistentFlags().VisitAll(func(f *pflag.Flag) {
		if !keep[f.Name] {
			f.Hidden = true
		}
	})
}

func loadToolConfig(cmd *cobra.Command, cfg *config.Config) error {
	if err := config.ApplySources(cmd.Flags(), os.Getenv); err != nil {
		return err
	}
	kedgelog.Setup(os.Stderr, kedgelog.Options{Verbosity: cfg.Verbosity, JSON: cfg.LogJSON})
	return nil
}

func tlsFiles(cfg config.Config) pki.Files {
	return pki.FilesIn(datadir.Layout{Root: cfg.DataDir}.TLSDir())
}

func newEtcdSnapshotCommand(out io.Writer) *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "etcd-snapshot",
		Short: "Save, list, delete and prune snapshots of this server's embedded etcd",
		Long: `Snapshots of a server running embedded etcd (--cluster-init or --server),
in --etcd-snapshot-dir (default <data-dir>/server/db/snapshots). Restore one
with: kedge server --cluster-reset --cluster-reset-restore-path=FILE`,
		Args: cobra.NoArgs,
	}
	serverToolFlags(cmd, &cfg, "etcd-snapshot-dir", "etcd-snapshot-retention", "node-name")
	var name string
	save := &cobra.Command{
		Use:   "save",
		Short: "Take a snapshot now (named on-demand-<node>-<time>, or --name)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			ctx, cancel := context.WithTimeout(cmd.Context(), 5*time.Minute)
			defer cancel()
			path, err := etcd.Save(ctx, tlsFiles(cfg), cfg.SnapshotDir(), name, agent.NodeName(cfg), kedgelog.For("etcd-snapshot"))
			if err != nil {
				return err
			}
			fmt.Fprintln(out, path)
			return nil
		},
	}
	save.Flags().StringVar(&name, "name", etcd.OnDemandPrefix, "name prefix of the snapshot")
	ls := &cobra.Command{
		Use:     "ls",
		Aliases: []string{"list"},
		Short:   "List the snapshots",
		Args:    cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			snaps, err := etcd.Snapshots(cfg.SnapshotDir())
			if err != nil {
				return err
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "NAME\tSIZE\tCREATED")
			for _, s := range snaps {
				fmt.Fprintf(w, "%s\t%d\t%s\n", s.Name, s.Size, s.Created.UTC().Format(time.RFC3339))
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME...",
		Short: "Delete snapshots by name",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			for _, n := range args {
				if err := etcd.Delete(cfg.SnapshotDir(), n); err != nil {
					return err
				}
				fmt.Fprintln(out, "deleted", n)
			}
			return nil
		},
	}
	prune := &cobra.Command{
		Use:   "prune",
		Short: "Keep the newest --etcd-snapshot-retention snapshots of a name (--name), delete the others",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			deleted, err := etcd.Prune(cfg.SnapshotDir(), name, cfg.EtcdSnapshotRetention)
			for _, n := range deleted {
				fmt.Fprintln(out, "deleted", n)
			}
			return err
		},
	}
	prune.Flags().StringVar(&name, "name", etcd.OnDemandPrefix, "name prefix of the snapshots to prune ("+etcd.ScheduledPrefix+" for the scheduled ones)")
	cmd.AddCommand(save, ls, del, prune)
	return cmd
}

func newEtcdCommand(out io.Writer) *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "etcd",
		Short: "Inspect and change the members of the embedded etcd cluster",
		Args:  cobra.NoArgs,
	}
	serverToolFlags(cmd, &cfg)
	member := &cobra.Command{Use: "member", Short: "The cluster's etcd members", Args: cobra.NoArgs}
	list := &cobra.Command{
		Use:   "list",
		Short: "List the members, their health and the leader",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			cli, err := etcd.NewClient(tlsFiles(cfg), []string{etcd.ClientURL("127.0.0.1")})
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			members, err := etcd.Members(ctx, cli)
			if err != nil {
				return fmt.Errorf("etcd member list (is kedge server running with embedded etcd?): %w", err)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tNAME\tPEER\tHEALTH\tROLE")
			for _, m := range members {
				health, role := "unhealthy", "follower"
				if m.Healthy {
					health = "healthy"
				}
				switch {
				case m.Leader:
					role = "leader"
				case m.Learner:
					role = "learner"
				}
				fmt.Fprintf(w, "%x\t%s\t%s\t%s\t%s\n", m.ID, m.Name, m.PeerURL, health, role)
			}
			return w.Flush()
		},
	}
	remove := &cobra.Command{
		Use:   "remove NAME",
		Short: "Remove a server's member (a server gone for good); kubectl delete node does it too",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			cli, err := etcd.NewClient(tlsFiles(cfg), []string{etcd.ClientURL("127.0.0.1")})
			if err != nil {
				return err
			}
			defer cli.Close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 20*time.Second)
			defer cancel()
			removed, err := etcd.Remove(ctx, cli, args[0])
			if err != nil {
				return err
			}
			if !removed {
				return fmt.Errorf("no etcd member named %q (see kedge etcd member list)", args[0])
			}
			fmt.Fprintln(out, "removed", args[0])
			return nil
		},
	}
	member.AddCommand(list, remove)
	cmd.AddCommand(member)
	return cmd
}

func newDatastoreCommand(out io.Writer) *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "datastore",
		Short: "Snapshot and restore the SQLite datastore of a single server",
		Args:  cobra.NoArgs,
	}
	serverToolFlags(cmd, &cfg, "run-dir")
	var dir string
	snap := &cobra.Command{
		Use:   "snapshot",
		Short: "Write a consistent copy of the SQLite database, while kedge runs",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			l := datadir.Layout{Root: cfg.DataDir}
			if dir == "" {
				dir = l.SQLiteSnapshotDir()
			}
			path, err := datastore.Snapshot(cmd.Context(), l.DBFile(), dir)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, path)
			return nil
		},
	}
	snap.Flags().StringVar(&dir, "dir", "", "where the copy goes (default <data-dir>/server/db/snapshots)")
	restore := &cobra.Command{
		Use:   "restore FILE",
		Short: "Replace the SQLite database with a snapshot (kedge must be stopped)",
		Args:  cobra.ExactArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			if pid, ok := datadir.Running(cfg.RunDir, "kedge"); ok {
				return fmt.Errorf("kedge server is running (pid %d): stop it first", pid)
			}
			backup, err := datastore.Restore(args[0], datadir.Layout{Root: cfg.DataDir}.DBFile())
			if err != nil {
				return err
			}
			fmt.Fprintf(out, "restored %s; the previous database is %s\n", args[0], backup)
			return nil
		},
	}
	cmd.AddCommand(snap, restore)
	return cmd
}

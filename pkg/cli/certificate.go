package cli

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"

	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// certServices name the leaf certificates kedge certificate rotate
// replaces, by the file names they start with.
var certServices = map[string][]string{
	"admin":              {"client-admin"},
	"api-server":         {"serving-kube-apiserver", "client-kube-apiserver", "client-auth-proxy"},
	"controller-manager": {"client-controller"},
	"scheduler":          {"client-scheduler"},
	"supervisor":         {"client-supervisor"},
	"etcd":               {"etcd/server", "etcd/peer", "etcd/client"},
	"metrics-server":     {"serving-metrics-server", "client-metrics-server"},
	"kubelet":            {"client-kubelet", "serving-kubelet"},
	"kube-proxy":         {"client-kube-proxy"},
	"flannel":            {"client-flannel"},
	"servicelb":          {"client-servicelb"},
	"local-storage":      {"client-local-storage"},
	"network-policy":     {"client-network-policy"},
}

func newCertificateCommand(out io.Writer) *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "certificate",
		Short: "List kedge's certificates and their expiry; replace leaf certificates or the CAs",
		Long: `kedge issues its leaf certificates for a year and reissues them when they
are within 120 days of expiry (at start and daily while running); it warns
30 days before any certificate, CAs included, expires.`,
		Args: cobra.NoArgs,
	}
	serverToolFlags(cmd, &cfg, "run-dir")
	dirs := func() []string {
		l := datadir.Layout{Root: cfg.DataDir}
		return []string{l.TLSDir(), filepath.Join(l.Agent(), "tls")}
	}
	check := &cobra.Command{
		Use:   "check",
		Short: "List every certificate kedge issued, with its expiry",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			certs := pki.Inspect(dirs()...)
			if len(certs) == 0 {
				return fmt.Errorf("no certificates under %s", cfg.DataDir)
			}
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "FILE\tSUBJECT\tEXPIRES\tSTATUS")
			for _, c := range certs {
				status := "OK"
				switch left := time.Until(c.NotAfter); {
				case left <= 0:
					status = "EXPIRED"
				case left < pki.WarnBefore:
					status = "WARNING"
				}
				if c.CA {
					status += " (CA)"
				}
				rel, _ := filepath.Rel(cfg.DataDir, c.Path)
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", rel, c.Subject, c.NotAfter.UTC().Format(time.RFC3339), status)
			}
			return w.Flush()
		},
	}
	var services []string
	rotate := &cobra.Command{
		Use:   "rotate",
		Short: "Remove leaf certificates (all, or --service) so kedge reissues them at its next start (stop kedge first)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadStopped(cmd, &cfg); err != nil {
				return err
			}
			names := services
			if len(names) == 0 {
				for s := range certServices {
					names = append(names, s)
				}
			}
			var prefixes []string
			for _, s := range names {
				p, ok := certServices[s]
				if !ok {
					return fmt.Errorf("--service %q: not one of kedge's services (%s)", s, strings.Join(sortedKeys(certServices), ", "))
				}
				prefixes = append(prefixes, p...)
			}
			removed := 0
			for _, c := range pki.Inspect(dirs()...) {
				if c.CA {
					continue
				}
				for _, dir := range dirs() {
					rel, err := filepath.Rel(dir, c.Path)
					if err != nil || strings.HasPrefix(rel, "..") {
						continue
					}
					for _, p := range prefixes {
						if strings.TrimSuffix(rel, ".crt") == p {
							if err := os.Remove(c.Path); err != nil {
								return err
							}
							fmt.Fprintln(out, "removed", c.Path)
							removed++
						}
					}
				}
			}
			fmt.Fprintf(out, "%d certificates will be reissued when kedge starts\n", removed)
			return nil
		},
	}
	rotate.Flags().StringSliceVar(&services, "service", nil, "only these services' certificates: "+strings.Join(sortedKeys(certServices), ", "))
	var caOpts pki.RotateCAOptions
	rotateCA := &cobra.Command{
		Use:   "rotate-ca",
		Short: "Replace the CAs, cross-signed by the old ones so joined nodes keep working (stop kedge first)",
		Long: `rotate-ca replaces kedge's CAs (client, server, request-header, etcd server
and peer) on this server, after copying its TLS dir to a backup beside it.

Each new CA is cross-signed by the CA it replaces, and the CA files keep
the old CAs after the new ones. So agents that have not restarted, the
kubeconfigs handed out before and join tokens made before all keep working:
they trust the old CA, and the certificates of the new one carry the
cross-signed certificate that leads to it. At its next start kedge reissues
every leaf certificate under the new CAs, and agents take new node
certificates at theirs.

--path DIR takes the CAs from DIR (same file names as the TLS dir, e.g.
server-ca.crt and server-ca.key) instead of generating them: your own CAs,
which are cross-signed the same way, or another server's TLS dir after it
rotated. --force replaces the CAs without cross-signing and drops the old
ones (a CA key that leaked): every node must then join again with a new
token.

With several servers: run rotate-ca on one and start it. With an external
datastore the others take the new CAs at their next start; with embedded
etcd, a server started with --server takes them from the server it joins,
or run rotate-ca --path <the first server's TLS dir> on it.`,
		Args: cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadStopped(cmd, &cfg); err != nil {
				return err
			}
			caOpts.Dir = datadir.Layout{Root: cfg.DataDir}.TLSDir()
			if _, err := os.Stat(pki.FilesIn(caOpts.Dir).ServerCACert); err != nil {
				return fmt.Errorf("no server CA in %s: run rotate-ca on a server that has started once", caOpts.Dir)
			}
			backup, err := pki.RotateCA(caOpts)
			if err != nil {
				return err
			}
			fmt.Fprintln(out, "the old TLS dir is backed up in", backup)
			if caOpts.Force {
				fmt.Fprintln(out, "the CAs are replaced and the old ones are no longer trusted: start kedge, then join every agent again with the new token")
				return nil
			}
			fmt.Fprintln(out, "the CAs are replaced, cross-signed by the old ones: start kedge; joined agents and old join tokens keep working, and the token file names the new CA after the start")
			return nil
		},
	}
	rotateCA.Flags().StringVar(&caOpts.From, "path", "", "take the new CAs from this directory instead of generating them")
	rotateCA.Flags().BoolVar(&caOpts.Force, "force", false, "do not cross-sign: drop the old CAs (every node must join again)")
	cmd.AddCommand(check, rotate, rotateCA)
	return cmd
}

// loadStopped loads the tool's configuration and refuses while kedge runs
// on it: kedge would keep using, and rewrite, the files being replaced.
func loadStopped(cmd *cobra.Command, cfg *config.Config) error {
	if err := loadToolConfig(cmd, cfg); err != nil {
		return err
	}
	for _, role := range []string{"kedge", "kedge-agent"} {
		if pid, ok := datadir.Running(cfg.RunDir, role); ok {
			return fmt.Errorf("kedge is running (pid %d): stop it, rotate, then start it", pid)
		}
	}
	return nil
}

func sortedKeys(m map[string][]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

package cli

import (
	"context"
	"crypto/rand"
	"fmt"
	"io"
	"math/big"
	"os"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-dev/kedge/pkg/bootstrap"
	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/datastore"
	"github.com/kedge-dev/kedge/pkg/join"
	kedgelog "github.com/kedge-dev/kedge/pkg/log"
	"github.com/kedge-dev/kedge/pkg/pki"
)

func newTokenCommand(out io.Writer) *cobra.Command {
	var cfg config.Config
	cmd := &cobra.Command{
		Use:   "token",
		Short: "Bootstrap tokens for joining agents, and rotation of the server token",
		Long: `Bootstrap tokens let agents join for a while without the server token:

  kedge token create --ttl 24h     prints K10<CA hash>::<id>.<secret>
  kedge token list
  kedge token delete ID

kedge token rotate --new-token NEW replaces the server token; nodes that
joined keep working (they hold their certificates).`,
		Args: cobra.NoArgs,
	}
	serverToolFlags(cmd, &cfg, "write-kubeconfig", "datastore-endpoint", "token")
	client := func(cmd *cobra.Command) (kubernetes.Interface, error) {
		if err := loadToolConfig(cmd, &cfg); err != nil {
			return nil, err
		}
		rc, err := clientcmd.BuildConfigFromFlags("", cfg.WriteKubeconfig)
		if err != nil {
			return nil, fmt.Errorf("admin kubeconfig %s (--write-kubeconfig): %w", cfg.WriteKubeconfig, err)
		}
		return kubernetes.NewForConfig(rc)
	}
	var ttl time.Duration
	var description string
	create := &cobra.Command{
		Use:   "create",
		Short: "Create a bootstrap token (expires after --ttl; 0: never)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			if ttl < 0 {
				return fmt.Errorf("--ttl %s: must not be negative", ttl)
			}
			hash, err := pki.CAHash(pki.FilesIn(datadir.Layout{Root: cfg.DataDir}.TLSDir()).ServerCACert)
			if err != nil {
				return fmt.Errorf("run this on a server (its CA): %w", err)
			}
			id, secret := randomToken(6), randomToken(16)
			data := map[string][]byte{
				"token-id": []byte(id), "token-secret": []byte(secret),
				"usage-bootstrap-authentication": []byte("true"),
				"description":                    []byte(description),
			}
			if ttl > 0 {
				data["expiration"] = []byte(time.Now().Add(ttl).UTC().Format(time.RFC3339))
			}
			_, err = c.CoreV1().Secrets(metav1.NamespaceSystem).Create(cmd.Context(), &corev1.Secret{
				ObjectMeta: metav1.ObjectMeta{Name: "bootstrap-token-" + id, Namespace: metav1.NamespaceSystem},
				Type:       corev1.SecretTypeBootstrapToken,
				Data:       data,
			}, metav1.CreateOptions{})
			if err != nil {
				return err
			}
			fmt.Fprintln(out, join.Token{CAHash: hash, Username: id, Secret: secret, Bootstrap: true}.String())
			return nil
		},
	}
	create.Flags().DurationVar(&ttl, "ttl", 24*time.Hour, "how long the token lets agents join (0: forever)")
	create.Flags().StringVar(&description, "description", "", "what the token is for")
	list := &cobra.Command{
		Use:   "list",
		Short: "List the bootstrap tokens",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			secrets, err := c.CoreV1().Secrets(metav1.NamespaceSystem).List(cmd.Context(), metav1.ListOptions{FieldSelector: "type=" + string(corev1.SecretTypeBootstrapToken)})
			if err != nil {
				return err
			}
			sort.Slice(secrets.Items, func(i, j int) bool { return secrets.Items[i].Name < secrets.Items[j].Name })
			w := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
			fmt.Fprintln(w, "ID\tEXPIRES\tSTATE\tDESCRIPTION")
			for _, s := range secrets.Items {
				exp, state := "never", "valid"
				if e := string(s.Data["expiration"]); e != "" {
					exp = e
					if t, err := time.Parse(time.RFC3339, e); err != nil || time.Now().After(t) {
						state = "expired"
					}
				}
				fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", s.Data["token-id"], exp, state, s.Data["description"])
			}
			return w.Flush()
		},
	}
	del := &cobra.Command{
		Use:   "delete ID...",
		Short: "Delete bootstrap tokens",
		Args:  cobra.MinimumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			c, err := client(cmd)
			if err != nil {
				return err
			}
			for _, id := range args {
				id = strings.TrimPrefix(id, "bootstrap-token-")
				if err := c.CoreV1().Secrets(metav1.NamespaceSystem).Delete(cmd.Context(), "bootstrap-token-"+id, metav1.DeleteOptions{}); err != nil {
					return fmt.Errorf("token %s: %w", id, err)
				}
				fmt.Fprintln(out, "deleted", id)
			}
			return nil
		},
	}
	var newToken string
	rotate := &cobra.Command{
		Use:   "rotate --new-token NEW",
		Short: "Replace the server token (--token: the current one, to be sure)",
		Args:  cobra.NoArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if err := loadToolConfig(cmd, &cfg); err != nil {
				return err
			}
			return rotateToken(cmd.Context(), out, cfg, newToken)
		},
	}
	rotate.Flags().StringVar(&newToken, "new-token", "", "the new server token's secret (or a full K10 token of this cluster)")
	cmd.AddCommand(create, list, del, rotate)
	return cmd
}

// rotateToken writes the new server token and, on an external datastore,
// seals the cluster's bootstrap data with it.
func rotateToken(ctx context.Context, out io.Writer, cfg config.Config, given string) error {
	l := datadir.Layout{Root: cfg.DataDir}
	old, err := join.ReadToken(l.TokenFile())
	if err != nil {
		return fmt.Errorf("the server token (%s): %w (run this on a server)", l.TokenFile(), err)
	}
	if cfg.Token != "" {
		if t, err := join.Parse(cfg.Token); err != nil || t.Secret != old.Secret {
			return fmt.Errorf("--token is not this server's current token")
		}
	}
	nt, err := join.Parse(given)
	if err != nil {
		return fmt.Errorf("--new-token: %w", err)
	}
	ca, err := pki.ReadCA(pki.FilesIn(l.TLSDir()).ServerCACert)
	if err != nil {
		return err
	}
	if nt.CAHash != "" && !pki.PinnedBy(ca, nt.CAHash) {
		return fmt.Errorf("--new-token names another cluster's CA")
	}
	if nt.Secret == old.Secret {
		return fmt.Errorf("--new-token is the current token")
	}
	if cfg.DatastoreEndpoint != "" {
		opts := datastore.Options{Endpoint: cfg.DatastoreEndpoint, Socket: l.KineSocket() + ".rotate", Log: kedgelog.For("kine")}
		err := datastore.Peek(ctx, opts, func(cli *clientv3.Client) error {
			b, err := bootstrap.Collect(l.TLSDir())
			if err != nil {
				return err
			}
			sealed, err := b.Seal(nt.Secret)
			if err != nil {
				return err
			}
			_, err = cli.Put(ctx, bootstrap.Key, string(sealed))
			return err
		})
		if err != nil {
			return fmt.Errorf("reseal the bootstrap data in the datastore: %w", err)
		}
	}
	t := join.Token{CAHash: old.CAHash, Username: "server", Secret: nt.Secret}
	if err := datadir.WriteFileAtomic(l.TokenFile(), []byte(t.String()+"\n"), 0o600); err != nil {
		return err
	}
	fmt.Fprintln(out, t.String())
	fmt.Fprintln(os.Stderr, "the server token is rotated: joined nodes keep working; join new ones with the new token. On other servers, run the same command; with --datastore-endpoint, start every server with --token NEW from now on.")
	return nil
}

// randomToken is n characters of [a-z0-9], the bootstrap token alphabet.
func randomToken(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
	b := make([]byte, n)
	for i := range b {
		v, _ := rand.Int(rand.Reader, big.NewInt(int64(len(alphabet))))
		b[i] = alphabet[v.Int64()]
	}
	return string(b)
}

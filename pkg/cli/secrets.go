package cli

import (
	"context"
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/spf13/cobra"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-dev/kedge/pkg/config"
	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/etcd"
	"github.com/kedge-dev/kedge/pkg/secretsencrypt"
)

// secretsTool is what the secrets-encrypt commands work with.
type secretsTool struct {
	cfg  config.Config
	out  io.Writer
	dir  string // the server dir
	kube kubernetes.Interface
	raw  *clientv3.Client
	ha   bool
}

func (t *secretsTool) connect(cmd *cobra.Command) error {
	if err := loadToolConfig(cmd, &t.cfg); err != nil {
		return err
	}
	l := datadir.Layout{Root: t.cfg.DataDir}
	t.dir = l.Server()
	rc, err := clientcmd.BuildConfigFromFlags("", t.cfg.WriteKubeconfig)
	if err != nil {
		return fmt.Errorf("admin kubeconfig %s (--write-kubeconfig): %w", t.cfg.WriteKubeconfig, err)
	}
	if t.kube, err = kubernetes.NewForConfig(rc); err != nil {
		return err
	}
	// The running server's datastore, to see what it stores.
	if etcd.HasData(l.DBDir() + "/etcd") {
		t.ha = true
		t.raw, err = etcd.NewClient(tlsFiles(t.cfg), []string{etcd.ClientURL("127.0.0.1")})
	} else {
		t.ha = t.cfg.DatastoreEndpoint != ""
		t.raw, err = clientv3.New(clientv3.Config{Endpoints: []string{"unix://" + l.KineSocket()}, DialTimeout: 5 * time.Second, Logger: zap.NewNop()})
	}
	return err
}

func (t *secretsTool) close() {
	if t.raw != nil {
		t.raw.Close()
	}
}

// apply saves the configuration, shares it with the other servers, and
// waits until the apiserver writes Secrets as it says.
func (t *secretsTool) apply(ctx context.Context, c *secretsencrypt.Config, stage string) error {
	if err := secretsencrypt.Save(t.dir, c); err != nil {
		return err
	}
	if t.ha {
		secret, err := secretsencrypt.SealSecret(tlsFiles(t.cfg).ServiceAccountKey)
		if err != nil {
			return err
		}
		if err := secretsencrypt.Publish(ctx, t.raw, t.dir, secret); err != nil {
			return fmt.Errorf("share the configuration with the other servers: %w", err)
		}
	}
	if err := secretsencrypt.SaveState(t.dir, secretsencrypt.State{Stage: stage}); err != nil {
		return err
	}
	key := ""
	if secretsencrypt.Enabled(c) {
		key = secretsencrypt.Keys(c)[0]
	}
	return secretsencrypt.WaitApplied(ctx, t.kube, t.raw, key)
}

func (t *secretsTool) load() (*secretsencrypt.Config, error) {
	c, ok, err := secretsencrypt.Load(t.dir)
	if err != nil {
		return nil, err
	}
	if !ok {
		return nil, fmt.Errorf("this cluster has no encryption configuration (%s): it was made with --secrets-encryption=false or before kedge encrypted Secrets; run kedge secrets-encrypt enable, then restart kedge", secretsencrypt.File(t.dir))
	}
	return c, nil
}

func (t *secretsTool) reencrypt(ctx context.Context, c *secretsencrypt.Config) error {
	n, err := secretsencrypt.Reencrypt(ctx, t.kube)
	if err != nil {
		return err
	}
	secretsencrypt.Prune(c)
	if err := t.apply(ctx, c, secretsencrypt.StageReencrypt); err != nil {
		return err
	}
	fmt.Fprintf(t.out, "re-encrypted %d Secrets; keys left: %s\n", n, strings.Join(secretsencrypt.Keys(c), ", "))
	return nil
}

func newSecretsEncryptCommand(out io.Writer) *cobra.Command {
	t := &secretsTool{out: out}
	cmd := &cobra.Command{
		Use:   "secrets-encrypt",
		Short: "Encryption of Secrets at rest: status, enable, disable, key rotation and re-encryption",
		Long: `Secrets are stored encrypted (AES-CBC) in new clusters. The configuration is
<data-dir>/server/cred/encryption-config.json; the apiserver reloads it by
itself, so no step needs a restart (except enable on a cluster that had none).

Rotate a key in one go with rotate-keys, or step by step as k3s users do:
prepare (add a key), rotate (encrypt with it), reencrypt (rewrite every
Secret with it and drop the old key).`,
		Args: cobra.NoArgs,
	}
	serverToolFlags(cmd, &t.cfg, "write-kubeconfig", "datastore-endpoint")
	run := func(f func(ctx context.Context) error) func(*cobra.Command, []string) error {
		return func(cmd *cobra.Command, _ []string) error {
			if err := t.connect(cmd); err != nil {
				return err
			}
			defer t.close()
			ctx, cancel := context.WithTimeout(cmd.Context(), 10*time.Minute)
			defer cancel()
			return f(ctx)
		}
	}
	status := &cobra.Command{Use: "status", Short: "Show whether Secrets are encrypted, the rotation stage and the keys", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, ok, err := secretsencrypt.Load(t.dir)
			if err != nil {
				return err
			}
			state := "Disabled"
			if ok && secretsencrypt.Enabled(c) {
				state = "Enabled"
			}
			fmt.Fprintf(out, "Encryption Status: %s\n", state)
			if !ok {
				return nil
			}
			fmt.Fprintf(out, "Current Rotation Stage: %s\n", secretsencrypt.LoadState(t.dir).Stage)
			fmt.Fprintf(out, "Server Encryption Hash: %s\n", secretsencrypt.Hash(c))
			fmt.Fprintf(out, "Active Key Type Names: AES-CBC %s\n", strings.Join(secretsencrypt.Keys(c), ", "))
			return nil
		})}
	enable := &cobra.Command{Use: "enable", Short: "Encrypt Secrets written from now on (then: reencrypt)", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, ok, err := secretsencrypt.Load(t.dir)
			if err != nil {
				return err
			}
			if !ok {
				if c, err = secretsencrypt.New(); err != nil {
					return err
				}
				if err := secretsencrypt.Save(t.dir, c); err != nil {
					return err
				}
				fmt.Fprintln(out, "encryption configured: restart kedge (the apiserver reads a new configuration file at start), then run kedge secrets-encrypt reencrypt")
				return nil
			}
			if err := secretsencrypt.Enable(c); err != nil {
				return err
			}
			if err := t.apply(ctx, c, secretsencrypt.StageStart); err != nil {
				return err
			}
			fmt.Fprintln(out, "Secrets are now written encrypted; run kedge secrets-encrypt reencrypt to encrypt the existing ones")
			return nil
		})}
	disable := &cobra.Command{Use: "disable", Short: "Write Secrets in the clear from now on (then: reencrypt to decrypt the rest)", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, err := t.load()
			if err != nil {
				return err
			}
			secretsencrypt.Disable(c)
			if err := t.apply(ctx, c, secretsencrypt.StageStart); err != nil {
				return err
			}
			fmt.Fprintln(out, "Secrets are now written in the clear; run kedge secrets-encrypt reencrypt to decrypt the existing ones")
			return nil
		})}
	prepare := &cobra.Command{Use: "prepare", Short: "Add a new key (it decrypts, it does not encrypt yet)", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, err := t.load()
			if err != nil {
				return err
			}
			name, err := secretsencrypt.Prepare(c)
			if err != nil {
				return err
			}
			if err := t.apply(ctx, c, secretsencrypt.StagePrepare); err != nil {
				return err
			}
			fmt.Fprintf(out, "prepared key %s; next: kedge secrets-encrypt rotate\n", name)
			return nil
		})}
	rotate := &cobra.Command{Use: "rotate", Short: "Encrypt with the prepared key from now on", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, err := t.load()
			if err != nil {
				return err
			}
			name, err := secretsencrypt.Rotate(c)
			if err != nil {
				return err
			}
			if err := t.apply(ctx, c, secretsencrypt.StageRotate); err != nil {
				return err
			}
			fmt.Fprintf(out, "Secrets are now encrypted with %s; next: kedge secrets-encrypt reencrypt\n", name)
			return nil
		})}
	reencrypt := &cobra.Command{Use: "reencrypt", Short: "Rewrite every Secret with the current key, and drop the other keys", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, err := t.load()
			if err != nil {
				return err
			}
			return t.reencrypt(ctx, c)
		})}
	rotateKeys := &cobra.Command{Use: "rotate-keys", Short: "prepare, rotate and reencrypt in one go", Args: cobra.NoArgs,
		RunE: run(func(ctx context.Context) error {
			c, err := t.load()
			if err != nil {
				return err
			}
			if _, err := secretsencrypt.Prepare(c); err != nil {
				return err
			}
			if err := t.apply(ctx, c, secretsencrypt.StagePrepare); err != nil {
				return err
			}
			name, err := secretsencrypt.Rotate(c)
			if err != nil {
				return err
			}
			if err := t.apply(ctx, c, secretsencrypt.StageRotate); err != nil {
				return err
			}
			fmt.Fprintf(out, "encrypting with %s\n", name)
			return t.reencrypt(ctx, c)
		})}
	cmd.AddCommand(status, enable, disable, prepare, rotate, reencrypt, rotateKeys)
	return cmd
}

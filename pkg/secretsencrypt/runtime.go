package secretsencrypt

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"time"

	clientv3 "go.etcd.io/etcd/client/v3"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/kedge-dev/kedge/pkg/bootstrap"
	"github.com/kedge-dev/kedge/pkg/datadir"
)

// Key holds the sealed configuration in a shared datastore.
const Key = "/kedge/encryption-config"

// SealSecret derives the key that seals the configuration in the
// datastore from the service-account key: every server has it, the
// datastore does not, and it outlives token and CA rotations. (Before
// kedge certificate rotate-ca it was derived from the server CA's key,
// which Sync still opens, as Legacy.)
func SealSecret(keyFile string) (string, error) {
	data, err := os.ReadFile(keyFile)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256(append([]byte("kedge-encryption-config\x00"), data...))
	return hex.EncodeToString(sum[:]), nil
}

const fileName = "encryption-config.json"

// Publish stores the server's configuration in the datastore, for the
// other servers' Sync.
func Publish(ctx context.Context, cli *clientv3.Client, serverDir, secret string) error {
	data, err := os.ReadFile(File(serverDir))
	if err != nil {
		return err
	}
	sealed, err := bootstrap.Bundle{fileName: data}.Seal(secret)
	if err != nil {
		return err
	}
	_, err = cli.Put(ctx, Key, string(sealed))
	return err
}

// Sync keeps this server's configuration file equal to the datastore's:
// at start (before the apiserver) it takes the shared one, or shares its
// own; then it follows changes (the apiserver reloads the file).
type Sync struct {
	Client    func() (*clientv3.Client, error)
	ServerDir string
	Secret    string
	// Legacy opens a configuration sealed the older way (SealSecret of
	// the server CA key); it is sealed again with Secret.
	Legacy string
	Log    *slog.Logger

	cli    *clientv3.Client
	cancel context.CancelFunc
	done   chan struct{}
}

func (s *Sync) Name() string { return "secrets-encryption-sync" }

func (s *Sync) Start(ctx context.Context) error {
	cli, err := s.Client()
	if err != nil {
		return err
	}
	s.cli = cli
	resp, err := cli.Get(ctx, Key)
	if err != nil {
		return fmt.Errorf("read the shared encryption configuration: %w", err)
	}
	rev := resp.Header.Revision
	if len(resp.Kvs) == 0 {
		if _, err := os.Stat(File(s.ServerDir)); err == nil {
			if err := Publish(ctx, cli, s.ServerDir, s.Secret); err != nil {
				return fmt.Errorf("share the encryption configuration: %w", err)
			}
		}
	} else if err := s.apply(resp.Kvs[0].Value); err != nil {
		return err
	}
	wctx, cancel := context.WithCancel(context.Background())
	s.cancel, s.done = cancel, make(chan struct{})
	go func() {
		defer close(s.done)
		for wctx.Err() == nil {
			for wr := range cli.Watch(wctx, Key, clientv3.WithRev(rev+1)) {
				for _, ev := range wr.Events {
					rev = ev.Kv.ModRevision
					if ev.Type == clientv3.EventTypePut {
						if err := s.apply(ev.Kv.Value); err != nil {
							s.Log.Error("encryption configuration from the datastore", "err", err)
						}
					}
				}
			}
			select {
			case <-wctx.Done():
			case <-time.After(5 * time.Second):
			}
		}
	}()
	return nil
}

func (s *Sync) apply(sealed []byte) error {
	b, err := bootstrap.Open(sealed, s.Secret)
	legacy := false
	if errors.Is(err, bootstrap.ErrWrongToken) && s.Legacy != "" {
		b, err = bootstrap.Open(sealed, s.Legacy)
		legacy = err == nil
	}
	if err != nil {
		return fmt.Errorf("the shared encryption configuration does not open with this server's keys: %w", err)
	}
	data := b[fileName]
	if old, err := os.ReadFile(File(s.ServerDir)); err == nil && bytes.Equal(old, data) {
		return s.reseal(legacy)
	}
	if err := os.MkdirAll(strings.TrimSuffix(File(s.ServerDir), "/"+fileName), 0o700); err != nil {
		return err
	}
	if err := datadir.WriteFileAtomic(File(s.ServerDir), data, 0o600); err != nil {
		return err
	}
	s.Log.Info("encryption configuration updated from the datastore")
	return s.reseal(legacy)
}

// reseal stores the configuration sealed with Secret when it was found
// sealed the older way.
func (s *Sync) reseal(legacy bool) error {
	if !legacy {
		return nil
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := Publish(ctx, s.cli, s.ServerDir, s.Secret); err != nil {
		return fmt.Errorf("seal the shared encryption configuration anew: %w", err)
	}
	s.Log.Info("the shared encryption configuration is sealed with the service-account key from now on")
	return nil
}

func (s *Sync) Ready(context.Context) error { return nil }

func (s *Sync) Stop() error {
	if s.cancel != nil {
		s.cancel()
		<-s.done
	}
	if s.cli != nil {
		return s.cli.Close()
	}
	return nil
}

// ProbeName is the Secret written to see which key the apiserver uses.
const ProbeName = "kedge-encryption-probe"

// WaitApplied writes the probe Secret until the datastore holds it
// encrypted with key (or in the clear, key ""): the apiserver has then
// reloaded the configuration.
func WaitApplied(ctx context.Context, kube kubernetes.Interface, raw *clientv3.Client, key string) error {
	secrets := kube.CoreV1().Secrets(metav1.NamespaceSystem)
	want := "k8s:enc:aescbc:v1:" + key + ":"
	deadline := time.Now().Add(3 * time.Minute)
	for {
		nonce := make([]byte, 8)
		rand.Read(nonce)
		s := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: ProbeName, Namespace: metav1.NamespaceSystem}, Data: map[string][]byte{"probe": []byte(hex.EncodeToString(nonce))}}
		if _, err := secrets.Update(ctx, s, metav1.UpdateOptions{}); apierrors.IsNotFound(err) {
			_, err = secrets.Create(ctx, s, metav1.CreateOptions{})
			if err != nil {
				return err
			}
		} else if err != nil {
			return err
		}
		resp, err := raw.Get(ctx, "/registry/secrets/kube-system/"+ProbeName)
		if err == nil && len(resp.Kvs) == 1 {
			v := string(resp.Kvs[0].Value)
			if key == "" && !strings.HasPrefix(v, "k8s:enc:") || key != "" && strings.HasPrefix(v, want) {
				return nil
			}
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("the apiserver did not take the new encryption configuration within 3 minutes (want key %q)", key)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
	}
}

// Reencrypt rewrites every Secret, so each is stored with the key that
// encrypts now; it returns how many.
func Reencrypt(ctx context.Context, kube kubernetes.Interface) (int, error) {
	list, err := kube.CoreV1().Secrets("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return 0, err
	}
	n := 0
	for _, s := range list.Items {
		for attempt := 0; ; attempt++ {
			_, err := kube.CoreV1().Secrets(s.Namespace).Update(ctx, &s, metav1.UpdateOptions{})
			if err == nil || apierrors.IsNotFound(err) {
				break
			}
			if !apierrors.IsConflict(err) || attempt > 5 {
				return n, fmt.Errorf("rewrite secret %s/%s: %w", s.Namespace, s.Name, err)
			}
			cur, gerr := kube.CoreV1().Secrets(s.Namespace).Get(ctx, s.Name, metav1.GetOptions{})
			if gerr != nil {
				return n, gerr
			}
			s = *cur
		}
		n++
	}
	return n, nil
}

package join

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/hex"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"golang.org/x/crypto/bcrypt"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// Who a join request authenticated as.
const (
	AsServer    = "server"    // the server token: may also join servers
	AsAgent     = "agent"     // the agent token (--agent-token)
	AsBootstrap = "bootstrap" // a bootstrap token (kedge token create)
)

// Authenticator checks the credential of a join request: the server token
// or the agent token (both read from their files at each request, so
// `kedge token rotate` needs no restart), or an unexpired bootstrap token.
type Authenticator struct {
	ServerTokenFile string
	AgentTokenFile  string
	Store           *Store
}

// Authenticate returns what r authenticated as, or "".
func (a *Authenticator) Authenticate(r *http.Request) string {
	user, secret, ok := r.BasicAuth()
	if !ok {
		return ""
	}
	for _, t := range []struct{ file, as string }{{a.ServerTokenFile, AsServer}, {a.AgentTokenFile, AsAgent}} {
		if tok, err := ReadToken(t.file); err == nil && tok.Username == user && subtle.ConstantTimeCompare([]byte(tok.Secret), []byte(secret)) == 1 {
			return t.as
		}
	}
	if user != "server" && bootstrapID.MatchString(user) && a.Store != nil {
		want, err := a.Store.BootstrapToken(r.Context(), user)
		if err == nil && subtle.ConstantTimeCompare([]byte(want), []byte(secret)) == 1 {
			return AsBootstrap
		}
	}
	return ""
}

// ReadToken reads a token file.
func ReadToken(path string) (Token, error) {
	if path == "" {
		return Token{}, errors.New("no token file")
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return Token{}, err
	}
	return Parse(string(data))
}

var bootstrapID = regexp.MustCompile(`^[a-z0-9]{6}$`)

// Store keeps what the join path needs in the cluster: bootstrap tokens
// (Secrets of type bootstrap.kubernetes.io/token) and node passwords.
type Store struct {
	Config *rest.Config

	once   sync.Once
	client kubernetes.Interface
	err    error
}

func (s *Store) kube() (kubernetes.Interface, error) {
	s.once.Do(func() { s.client, s.err = kubernetes.NewForConfig(s.Config) })
	return s.client, s.err
}

// BootstrapToken returns the secret of the unexpired bootstrap token id.
func (s *Store) BootstrapToken(ctx context.Context, id string) (string, error) {
	c, err := s.kube()
	if err != nil {
		return "", err
	}
	sec, err := c.CoreV1().Secrets(metav1.NamespaceSystem).Get(ctx, "bootstrap-token-"+id, metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	if sec.Type != corev1.SecretTypeBootstrapToken || string(sec.Data["usage-bootstrap-authentication"]) != "true" {
		return "", errors.New("not a bootstrap token for joining")
	}
	if exp := string(sec.Data["expiration"]); exp != "" {
		t, err := time.Parse(time.RFC3339, exp)
		if err != nil || time.Now().After(t) {
			return "", errors.New("bootstrap token expired")
		}
	}
	return string(sec.Data["token-secret"]), nil
}

// PasswordSecret names the Secret holding a node's password hash.
func PasswordSecret(node string) string { return node + ".node-password.kedge" }

// ErrNodePassword refuses a machine that claims another's node name.
var ErrNodePassword = errors.New("node password mismatch")

// VerifyNodePassword checks password against the hash recorded for node,
// recording it on the node's first join. A node whose Secret was deleted
// (kubectl delete node removes it) may join afresh.
func (s *Store) VerifyNodePassword(ctx context.Context, node, password string) error {
	if password == "" {
		return errors.New("the request carries no node password (an agent older than this server?)")
	}
	c, err := s.kube()
	if err != nil {
		return err
	}
	secrets := c.CoreV1().Secrets(metav1.NamespaceSystem)
	sec, err := secrets.Get(ctx, PasswordSecret(node), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
		if err != nil {
			return err
		}
		_, err = secrets.Create(ctx, &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: PasswordSecret(node), Namespace: metav1.NamespaceSystem,
				Labels: map[string]string{"kedge.io/node-password": "true"}},
			Immutable: ptrTrue(),
			Data:      map[string][]byte{"hash": hash},
		}, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			return s.VerifyNodePassword(ctx, node, password)
		}
		return err
	}
	if err != nil {
		return err
	}
	if bcrypt.CompareHashAndPassword(sec.Data["hash"], []byte(password)) != nil {
		return fmt.Errorf("%w: node name %q is registered by another machine; give this one another --node-name (or --with-node-id), or, if the old machine is gone, kubectl delete node %s", ErrNodePassword, node, node)
	}
	return nil
}

func ptrTrue() *bool { t := true; return &t }

// NodePassword returns the node's password, kept in
// <agent dir>/node-password (0600), made on first use.
func NodePassword(agentDir string) (string, error) {
	return randomFile(filepath.Join(agentDir, "node-password"), 16)
}

// NodeID returns the node's stable random ID (--with-node-id), kept in
// <agent dir>/node-id.
func NodeID(agentDir string) (string, error) {
	return randomFile(filepath.Join(agentDir, "node-id"), 4)
}

func randomFile(path string, n int) (string, error) {
	if data, err := os.ReadFile(path); err == nil && len(strings.TrimSpace(string(data))) > 0 {
		return strings.TrimSpace(string(data)), nil
	}
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		return "", err
	}
	v := hex.EncodeToString(b)
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return "", err
	}
	if err := datadir.WriteFileAtomic(path, []byte(v+"\n"), 0o600); err != nil {
		return "", err
	}
	return v, nil
}

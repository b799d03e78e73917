// Package bootstrap is the material every server of one cluster shares:
// the CAs with their keys and the service-account key (the leaf
// certificates each server issues itself). A server joining an embedded
// etcd cluster fetches it from a member; servers on one external
// datastore keep it in the datastore. Either way it travels sealed with a
// key derived from the server token (AES-256-GCM, PBKDF2-SHA256), so only
// holders of the token can read it, and a wrong token is told apart from
// another cluster's data before anything is written.
package bootstrap

import (
	"bytes"
	"context"
	"crypto/aes"
	"crypto/cipher"
	"crypto/pbkdf2"
	"crypto/rand"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/kedge-dev/kedge/pkg/datadir"
	"github.com/kedge-dev/kedge/pkg/join"
	"github.com/kedge-dev/kedge/pkg/pki"
)

// Path is where a member serves the sealed bundle to joining servers.
const Path = "/v1-kedge/bootstrap"

// Bundle is the shared files, by path relative to the TLS dir.
type Bundle map[string][]byte

// shared lists the files of a bundle in a TLS dir.
func shared(f pki.Files) []string {
	return []string{
		f.ClientCACert, f.ClientCAKey,
		f.ServerCACert, f.ServerCAKey,
		f.RequestHeaderCACert, f.RequestHeaderCAKey,
		f.ServiceAccountKey,
		f.EtcdServerCACert, f.EtcdServerCAKey,
		f.EtcdPeerCACert, f.EtcdPeerCAKey,
	}
}

// encryptionConfig is the secrets encryption configuration, beside the
// TLS dir: shared when present; a newer one replaces an older one (its
// keys rotate) instead of marking another cluster.
const encryptionConfig = "../cred/encryption-config.json"

// Collect reads the bundle of the TLS dir.
func Collect(dir string) (Bundle, error) {
	b := Bundle{}
	for _, p := range shared(pki.FilesIn(dir)) {
		data, err := os.ReadFile(p)
		if err != nil {
			return nil, fmt.Errorf("bootstrap file: %w", err)
		}
		rel, _ := filepath.Rel(dir, p)
		b[rel] = data
	}
	if data, err := os.ReadFile(filepath.Join(dir, encryptionConfig)); err == nil {
		b[encryptionConfig] = data
	}
	return b, nil
}

// Present reports whether the TLS dir holds any file of a bundle.
func Present(dir string) bool {
	for _, p := range shared(pki.FilesIn(dir)) {
		if _, err := os.Stat(p); err == nil {
			return true
		}
	}
	return false
}

// ErrOtherCluster is returned when the TLS dir holds another cluster's CAs.
var ErrOtherCluster = errors.New("this server's data dir belongs to another cluster")

// Install writes the bundle into the TLS dir. Files already there must
// hold the same bytes: a data dir of another cluster is refused, with
// nothing changed. A CA that one side rotated (kedge certificate
// rotate-ca) is not another cluster's: the rotated CA wins, with its key.
func (b Bundle) Install(dir string) error {
	_, err := b.install(dir)
	return err
}

// install is Install, reporting whether the TLS dir kept a CA it had
// rotated, so that the bundle it came from is now older than the dir's.
func (b Bundle) install(dir string) (newer bool, err error) {
	names := make([]string, 0, len(b))
	for n := range b {
		names = append(names, n)
	}
	sort.Strings(names)
	keep := map[string]bool{}
	for _, n := range names {
		old, err := os.ReadFile(filepath.Join(dir, n))
		if err != nil || bytes.Equal(old, b[n]) || n == encryptionConfig || keep[n] {
			continue
		}
		key := strings.TrimSuffix(n, ".crt") + ".key"
		switch {
		case strings.HasSuffix(n, ".crt") && pki.Rotates(b[n], old):
			// Theirs is the rotation: taken with its key below.
		case strings.HasSuffix(n, ".crt") && pki.Rotates(old, b[n]):
			keep[n], keep[key], newer = true, true, true
		case strings.HasSuffix(n, ".key") && b.rotated(dir, strings.TrimSuffix(n, ".key")+".crt"):
		default:
			return false, fmt.Errorf("%w: %s differs from the cluster's (remove %s to join this cluster, or use the right --token and --server)", ErrOtherCluster, filepath.Join(dir, n), dir)
		}
	}
	for _, n := range names {
		if keep[n] {
			continue
		}
		p := filepath.Join(dir, n)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			return false, err
		}
		if err := datadir.WriteFileAtomic(p, b[n], 0o600); err != nil {
			return false, err
		}
	}
	return newer, nil
}

// rotated reports whether the CA cert cert differs between the bundle and
// the dir by a rotation, either way: its key may differ too.
func (b Bundle) rotated(dir, cert string) bool {
	old, err := os.ReadFile(filepath.Join(dir, cert))
	return err == nil && (pki.Rotates(b[cert], old) || pki.Rotates(old, b[cert]))
}

// replace writes the bundle over whatever the TLS dir holds (a bundle this
// server made a moment ago and lost).
func (b Bundle) replace(dir string) error {
	for n := range b {
		if err := os.Remove(filepath.Join(dir, n)); err != nil && !os.IsNotExist(err) {
			return err
		}
	}
	return b.Install(dir)
}

// Equal reports whether two bundles hold the same files.
func (b Bundle) Equal(o Bundle) bool {
	if len(b) != len(o) {
		return false
	}
	for k, v := range b {
		if k != encryptionConfig && !bytes.Equal(v, o[k]) {
			return false
		}
	}
	return true
}

// sealed is the bundle as stored and sent.
type sealed struct {
	Version int    `json:"version"`
	Salt    []byte `json:"salt"`
	Nonce   []byte `json:"nonce"`
	Data    []byte `json:"data"`
}

const iterations = 100_000

// ErrWrongToken is returned when a sealed bundle does not open with the token.
var ErrWrongToken = errors.New("the bootstrap data does not open with this token")

// deriveKey is the AES key for a secret and salt. The fuzz test swaps in
// a cheap one: at 100,000 rounds each input takes tens of milliseconds,
// too slow for the fuzzer to explore what comes after it.
var deriveKey = func(secret string, salt []byte) ([]byte, error) {
	return pbkdf2.Key(sha256.New, secret, salt, iterations, 32)
}

func aead(secret string, salt []byte) (cipher.AEAD, error) {
	key, err := deriveKey(secret, salt)
	if err != nil {
		return nil, err
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	return cipher.NewGCM(block)
}

// Seal encrypts the bundle with a key derived from secret.
func (b Bundle) Seal(secret string) ([]byte, error) {
	plain, err := json.Marshal(b)
	if err != nil {
		return nil, err
	}
	s := sealed{Version: 1, Salt: make([]byte, 16)}
	if _, err := rand.Read(s.Salt); err != nil {
		return nil, err
	}
	g, err := aead(secret, s.Salt)
	if err != nil {
		return nil, err
	}
	s.Nonce = make([]byte, g.NonceSize())
	if _, err := rand.Read(s.Nonce); err != nil {
		return nil, err
	}
	s.Data = g.Seal(nil, s.Nonce, plain, []byte("kedge-bootstrap-v1"))
	return json.Marshal(s)
}

// Open decrypts a sealed bundle; ErrWrongToken if secret is not its key.
func Open(data []byte, secret string) (Bundle, error) {
	var s sealed
	if err := json.Unmarshal(data, &s); err != nil || s.Version != 1 {
		return nil, fmt.Errorf("not kedge bootstrap data (%v)", err)
	}
	g, err := aead(secret, s.Salt)
	if err != nil {
		return nil, err
	}
	if len(s.Nonce) != g.NonceSize() {
		return nil, errors.New("not kedge bootstrap data: bad nonce")
	}
	plain, err := g.Open(nil, s.Nonce, s.Data, []byte("kedge-bootstrap-v1"))
	if err != nil {
		return nil, ErrWrongToken
	}
	var b Bundle
	if err := json.Unmarshal(plain, &b); err != nil {
		return nil, fmt.Errorf("bootstrap data: %w", err)
	}
	return b, nil
}

// Handler serves the sealed bundle of Dir to holders of the server token.
type Handler struct {
	Auth *join.Authenticator
	Dir  string
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		http.Error(w, "use GET", http.StatusMethodNotAllowed)
		return
	}
	if h.Auth.Authenticate(r) != join.AsServer {
		http.Error(w, "invalid server token (an agent token cannot join a server)", http.StatusUnauthorized)
		return
	}
	token, err := join.ReadToken(h.Auth.ServerTokenFile)
	if err != nil {
		http.Error(w, "server token unavailable", http.StatusInternalServerError)
		return
	}
	b, err := Collect(h.Dir)
	if err != nil {
		http.Error(w, "bootstrap data unavailable", http.StatusInternalServerError)
		return
	}
	data, err := b.Seal(token.Secret)
	if err != nil {
		http.Error(w, "seal: "+err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_, _ = w.Write(data)
}

// Fetch gets and opens the bundle of the server behind remote.
func Fetch(ctx context.Context, remote *join.Remote) (Bundle, error) {
	var raw json.RawMessage
	if err := remote.Call(ctx, Path, nil, &raw); err != nil {
		return nil, fmt.Errorf("fetch the cluster's bootstrap data: %w", err)
	}
	b, err := Open(raw, remote.Token.Secret)
	if err != nil {
		return nil, fmt.Errorf("bootstrap data of %s: %w", remote.Server, err)
	}
	return b, nil
}

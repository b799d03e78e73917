// Package secretsencrypt owns the encryption of Secrets at rest: the
// apiserver's EncryptionConfiguration (<data-dir>/server/cred/
// encryption-config.json, 0600; AES-CBC keys, as k3s), its rotation
// stages, and re-encrypting every Secret. The apiserver reloads the file
// by itself (--encryption-provider-config-automatic-reload), so no step
// needs a restart. With more than one server, the configuration also
// lives in the datastore, sealed with the token, and every server keeps
// its file in line with it (Sync).
package secretsencrypt

import (
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apiserverv1 "k8s.io/apiserver/pkg/apis/apiserver/v1"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// File is the configuration's path under the server dir.
func File(serverDir string) string { return filepath.Join(serverDir, "cred", "encryption-config.json") }

// stateFile keeps the rotation stage beside it.
func stateFile(serverDir string) string {
	return filepath.Join(serverDir, "cred", "encryption-state.json")
}

// Stages of a key rotation, as k3s names them.
const (
	StageStart     = "start"
	StagePrepare   = "prepare"
	StageRotate    = "rotate"
	StageReencrypt = "reencrypt_finished"
)

// Config is the apiserver's EncryptionConfiguration.
type Config = apiserverv1.EncryptionConfiguration

// New is an enabled configuration with one fresh AES-CBC key.
func New() (*Config, error) {
	k, err := newKey()
	if err != nil {
		return nil, err
	}
	return &Config{
		TypeMeta: metav1.TypeMeta{APIVersion: "apiserver.config.k8s.io/v1", Kind: "EncryptionConfiguration"},
		Resources: []apiserverv1.ResourceConfiguration{{
			Resources: []string{"secrets"},
			Providers: []apiserverv1.ProviderConfiguration{
				{AESCBC: &apiserverv1.AESConfiguration{Keys: []apiserverv1.Key{k}}},
				{Identity: &apiserverv1.IdentityConfiguration{}},
			},
		}},
	}, nil
}

func newKey() (apiserverv1.Key, error) {
	b := make([]byte, 32)
	if _, err := rand.Read(b); err != nil {
		return apiserverv1.Key{}, err
	}
	// Key names are unique within a config; nanoseconds keep two keys
	// made in one second apart.
	return apiserverv1.Key{Name: "aescbckey-" + strconv.FormatInt(time.Now().UnixNano(), 10), Secret: base64.StdEncoding.EncodeToString(b)}, nil
}

// Load reads the configuration; ok is false when there is none.
func Load(serverDir string) (*Config, bool, error) {
	data, err := os.ReadFile(File(serverDir))
	if errors.Is(err, os.ErrNotExist) {
		return nil, false, nil
	}
	if err != nil {
		return nil, false, err
	}
	var c Config
	if err := json.Unmarshal(data, &c); err != nil {
		return nil, false, fmt.Errorf("%s: %w", File(serverDir), err)
	}
	if len(c.Resources) != 1 {
		return nil, false, fmt.Errorf("%s: expected one resources entry (secrets), found %d; kedge manages this file", File(serverDir), len(c.Resources))
	}
	return &c, true, nil
}

// Save writes the configuration atomically, 0600.
func Save(serverDir string, c *Config) error {
	data, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(File(serverDir)), 0o700); err != nil {
		return err
	}
	return datadir.WriteFileAtomic(File(serverDir), append(data, '\n'), 0o600)
}

// Hash identifies a configuration (status compares servers by it).
func Hash(c *Config) string {
	data, _ := json.Marshal(c)
	sum := sha256.Sum256(data)
	return hex.EncodeToString(sum[:8])
}

func providers(c *Config) []apiserverv1.ProviderConfiguration { return c.Resources[0].Providers }

func aescbc(c *Config) *apiserverv1.AESConfiguration {
	for _, p := range providers(c) {
		if p.AESCBC != nil {
			return p.AESCBC
		}
	}
	return nil
}

// Enabled: new Secrets are written encrypted (AES-CBC is first).
func Enabled(c *Config) bool { return c != nil && providers(c)[0].AESCBC != nil }

// Keys are the AES-CBC key names, the one that encrypts first.
func Keys(c *Config) []string {
	var out []string
	if a := aescbc(c); a != nil {
		for _, k := range a.Keys {
			out = append(out, k.Name)
		}
	}
	return out
}

// Enable puts AES-CBC first (making a key if there is none).
func Enable(c *Config) error {
	if aescbc(c) == nil {
		k, err := newKey()
		if err != nil {
			return err
		}
		c.Resources[0].Providers = append([]apiserverv1.ProviderConfiguration{{AESCBC: &apiserverv1.AESConfiguration{Keys: []apiserverv1.Key{k}}}}, providers(c)...)
	}
	c.Resources[0].Providers = order(c, true)
	return nil
}

// Disable puts identity first: new Secrets are written in the clear; the
// keys stay so existing ones still read (reencrypt then decrypts them).
func Disable(c *Config) { c.Resources[0].Providers = order(c, false) }

func order(c *Config, encrypt bool) []apiserverv1.ProviderConfiguration {
	var a, id []apiserverv1.ProviderConfiguration
	for _, p := range providers(c) {
		if p.AESCBC != nil {
			a = append(a, p)
		} else if p.Identity != nil {
			id = append(id, p)
		}
	}
	if len(id) == 0 {
		id = []apiserverv1.ProviderConfiguration{{Identity: &apiserverv1.IdentityConfiguration{}}}
	}
	if encrypt {
		return append(a, id...)
	}
	return append(id, a...)
}

// Prepare adds a new key that can decrypt but does not encrypt yet (the
// other servers learn it before any Secret is written with it).
func Prepare(c *Config) (string, error) {
	a := aescbc(c)
	if a == nil {
		return "", errors.New("encryption is disabled: enable it first (kedge secrets-encrypt enable)")
	}
	k, err := newKey()
	if err != nil {
		return "", err
	}
	a.Keys = append(a.Keys, k)
	return k.Name, nil
}

// Rotate makes the newest key the one that encrypts.
func Rotate(c *Config) (string, error) {
	a := aescbc(c)
	if a == nil || len(a.Keys) < 2 {
		return "", errors.New("no prepared key to rotate to: run kedge secrets-encrypt prepare first")
	}
	newest := a.Keys[len(a.Keys)-1]
	a.Keys = append([]apiserverv1.Key{newest}, a.Keys[:len(a.Keys)-1]...)
	return newest.Name, nil
}

// Prune keeps only what reads the Secrets after a re-encryption: the key
// that encrypts (and identity); with encryption disabled, identity alone.
func Prune(c *Config) {
	if !Enabled(c) {
		c.Resources[0].Providers = []apiserverv1.ProviderConfiguration{{Identity: &apiserverv1.IdentityConfiguration{}}}
		return
	}
	a := aescbc(c)
	a.Keys = a.Keys[:1]
	c.Resources[0].Providers = order(c, true)
}

// State is the rotation stage, kept beside the configuration.
type State struct {
	Stage string `json:"stage"`
}

// LoadState reads the stage ("start" if none was recorded).
func LoadState(serverDir string) State {
	var s State
	if data, err := os.ReadFile(stateFile(serverDir)); err == nil && json.Unmarshal(data, &s) == nil && s.Stage != "" {
		return s
	}
	return State{Stage: StageStart}
}

// SaveState records the stage.
func SaveState(serverDir string, s State) error {
	data, _ := json.Marshal(s)
	return datadir.WriteFileAtomic(stateFile(serverDir), data, 0o600)
}

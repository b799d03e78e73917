// Package registries turns /etc/kedge/registries.yaml (the format k3s users
// know: mirrors and per-registry configs with auth and TLS) into
// containerd's hosts directory (certs.d/<registry>/hosts.toml).
package registries

import (
	"encoding/base64"
	"errors"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"sigs.k8s.io/yaml"
)

// File is registries.yaml.
type File struct {
	Mirrors map[string]Mirror         `json:"mirrors"`
	Configs map[string]RegistryConfig `json:"configs"`
}

// Mirror lists the endpoints tried, in order, for a registry.
type Mirror struct {
	Endpoints []string `json:"endpoint"`
}

// RegistryConfig holds credentials and TLS settings for a registry host.
type RegistryConfig struct {
	Auth *Auth `json:"auth"`
	TLS  *TLS  `json:"tls"`
}

// Auth is basic authentication (or a ready-made auth string).
type Auth struct {
	Username string `json:"username"`
	Password string `json:"password"`
	Auth     string `json:"auth"`
}

// TLS configures how a registry's certificate is checked.
type TLS struct {
	CAFile             string `json:"ca_file"`
	CertFile           string `json:"cert_file"`
	KeyFile            string `json:"key_file"`
	InsecureSkipVerify bool   `json:"insecure_skip_verify"`
}

// Load reads path strictly; a missing file is an empty configuration.
func Load(path string) (File, error) {
	var f File
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return f, nil
	}
	if err != nil {
		return f, fmt.Errorf("registries file %s: %w", path, err)
	}
	if err := yaml.UnmarshalStrict(data, &f); err != nil {
		return f, fmt.Errorf("registries file %s (--private-registry): %w", path, err)
	}
	return f, nil
}

// Render writes certs.d under dir from the file at path, replacing what an
// earlier start wrote.
func Render(path, dir string) error {
	f, err := Load(path)
	if err != nil {
		return err
	}
	files, err := HostsFiles(f)
	if err != nil {
		return fmt.Errorf("registries file %s: %w", path, err)
	}
	if err := os.RemoveAll(dir); err != nil {
		return err
	}
	for host, content := range files {
		d := filepath.Join(dir, host)
		if err := os.MkdirAll(d, 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(d, "hosts.toml"), []byte(content), 0o600); err != nil {
			return err
		}
	}
	return nil
}

// HostsFiles returns hosts.toml contents by registry host directory name.
func HostsFiles(f File) (map[string]string, error) {
	out := map[string]string{}
	names := make([]string, 0, len(f.Mirrors))
	for n := range f.Mirrors {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, registry := range names {
		var b strings.Builder
		if registry != "*" {
			fmt.Fprintf(&b, "server = %q\n", upstream(registry))
		}
		for _, ep := range f.Mirrors[registry].Endpoints {
			u, err := url.Parse(ep)
			if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
				return nil, fmt.Errorf("mirror endpoint %q of %q is not an http(s) URL", ep, registry)
			}
			fmt.Fprintf(&b, "\n[host.%q]\n  capabilities = [\"pull\", \"resolve\"]\n", ep)
			writeHostConfig(&b, ep, f.Configs[u.Host])
		}
		dirName := registry
		if registry == "*" {
			dirName = "_default"
		}
		out[dirName] = b.String()
	}
	// Configs for registries that have no mirror entry apply to the
	// registry itself.
	for host, rc := range f.Configs {
		if _, ok := f.Mirrors[host]; ok {
			continue
		}
		var b strings.Builder
		fmt.Fprintf(&b, "server = %q\n\n[host.%q]\n  capabilities = [\"pull\", \"resolve\", \"push\"]\n", "https://"+host, "https://"+host)
		writeHostConfig(&b, "https://"+host, rc)
		out[host] = b.String()
	}
	return out, nil
}

func upstream(registry string) string {
	if registry == "docker.io" {
		return "https://registry-1.docker.io"
	}
	return "https://" + registry
}

func writeHostConfig(b *strings.Builder, endpoint string, rc RegistryConfig) {
	if rc.TLS != nil {
		if rc.TLS.CAFile != "" {
			fmt.Fprintf(b, "  ca = %q\n", rc.TLS.CAFile)
		}
		if rc.TLS.CertFile != "" {
			fmt.Fprintf(b, "  client = [[%q, %q]]\n", rc.TLS.CertFile, rc.TLS.KeyFile)
		}
		if rc.TLS.InsecureSkipVerify {
			b.WriteString("  skip_verify = true\n")
		}
	}
	if rc.Auth != nil {
		auth := rc.Auth.Auth
		if auth == "" && rc.Auth.Username != "" {
			auth = base64.StdEncoding.EncodeToString([]byte(rc.Auth.Username + ":" + rc.Auth.Password))
		}
		if auth != "" {
			fmt.Fprintf(b, "  [host.%q.header]\n    Authorization = [%q]\n", endpoint, "Basic "+auth)
		}
	}
}

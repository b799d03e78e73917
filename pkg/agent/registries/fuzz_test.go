package registries

import (
	"os"
	"path/filepath"
	"testing"
)

// registries.yaml is written by users; its hosts.toml output must always
// be produced or refused, never crash.
func FuzzRegistries(f *testing.F) {
	for _, s := range []string{
		"mirrors:\n  docker.io:\n    endpoint: [\"https://m.lan:5000\"]\n",
		"configs:\n  m.lan:\n    auth: {username: a, password: b}\n    tls: {ca_file: /x}\n",
		"mirrors: {}\n", "mirrors:\n  \"\":\n    endpoint: [\"\"]\n", "x: y\n",
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		file := filepath.Join(dir, "registries.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		_ = Render(file, filepath.Join(dir, "certs.d"))
	})
}

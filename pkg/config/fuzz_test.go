package config

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/spf13/pflag"
)

// The config file and its drop-ins are written by users.
func FuzzConfigFile(f *testing.F) {
	for _, s := range []string{"data-dir: /var/lib/kedge\n", "tls-san: [a, b]\n", "disable: coredns\nkube-apiserver-arg: [a=b]\n", "https-listen-port: 6443\n", "a: [b\n", "- x\n", "v: 3\nlog-json: true\n"} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := t.TempDir()
		file := filepath.Join(dir, "config.yaml")
		if err := os.WriteFile(file, data, 0o600); err != nil {
			t.Fatal(err)
		}
		var c Config
		fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
		c.AddServerFlags(fs)
		if err := fs.Parse([]string{"--config", file}); err != nil {
			t.Fatal(err)
		}
		if err := ApplySources(fs, func(string) string { return "" }); err != nil {
			return
		}
		_ = c.Validate()
	})
}

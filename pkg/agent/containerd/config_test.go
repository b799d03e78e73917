package containerd

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	dir := t.TempDir()
	d := ConfigData{Root: "/r", State: "/s", Socket: "/run/x.sock", BinDir: "/bin/k", CNIConfDir: "/cni", RegistryConfigDir: "/certs.d", PauseImage: "kedge.local/pause:3.10", RestrictOOMScoreAdj: true, ImportsGlob: "/etc/c/*.toml"}
	path, err := Render(dir, d)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(path)
	for _, want := range []string{`address = "/run/x.sock"`, `BinaryName = "/bin/k/runc"`, `restrict_oom_score_adj = true`, `SystemdCgroup = false`, `sandbox = "kedge.local/pause:3.10"`, `config_path = "/certs.d"`, `bin_dirs = ["/bin/k"]`} {
		if !strings.Contains(string(b), want) {
			t.Errorf("config lacks %s", want)
		}
	}
	// A user template replaces kedge's and sees the same data.
	os.WriteFile(filepath.Join(dir, "config.toml.tmpl"), []byte("root = \"{{.Root}}\"\n"), 0o600)
	path, err = Render(dir, d)
	if err != nil {
		t.Fatal(err)
	}
	if b, _ := os.ReadFile(path); string(b) != "root = \"/r\"\n" {
		t.Fatalf("user template output %q", b)
	}
	os.WriteFile(filepath.Join(dir, "config.toml.tmpl"), []byte("{{.NoSuchField}}"), 0o600)
	if _, err := Render(dir, d); err == nil || !strings.Contains(err.Error(), "NoSuchField") {
		t.Fatalf("bad template: %v", err)
	}
}

package registries

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestRender(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "registries.yaml")
	os.WriteFile(file, []byte(`mirrors:
  docker.io:
    endpoint: ["https://mirror.example:5000", "http://10.0.0.5:5000"]
  "*":
    endpoint: ["https://catch.example"]
configs:
  mirror.example:5000:
    auth: {username: alice, password: secret}
    tls: {ca_file: /etc/ssl/mirror-ca.pem, insecure_skip_verify: true}
  private.example:
    tls: {cert_file: /c.pem, key_file: /k.pem}
`), 0o600)
	out := filepath.Join(dir, "certs.d")
	if err := Render(file, out); err != nil {
		t.Fatal(err)
	}
	read := func(host string) string {
		b, err := os.ReadFile(filepath.Join(out, host, "hosts.toml"))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	docker := read("docker.io")
	for _, want := range []string{
		`server = "https://registry-1.docker.io"`,
		`[host."https://mirror.example:5000"]`,
		`ca = "/etc/ssl/mirror-ca.pem"`,
		`skip_verify = true`,
		`[host."https://mirror.example:5000".header]`,
		`Authorization = ["Basic YWxpY2U6c2VjcmV0"]`,
		`[host."http://10.0.0.5:5000"]`,
	} {
		if !strings.Contains(docker, want) {
			t.Errorf("docker.io hosts.toml lacks %s:\n%s", want, docker)
		}
	}
	if strings.Index(docker, "mirror.example") > strings.Index(docker, "10.0.0.5") {
		t.Errorf("mirror order not kept:\n%s", docker)
	}
	if d := read("_default"); !strings.Contains(d, `[host."https://catch.example"]`) {
		t.Errorf("wildcard mirror:\n%s", d)
	}
	if p := read("private.example"); !strings.Contains(p, `client = [["/c.pem", "/k.pem"]]`) {
		t.Errorf("client cert:\n%s", p)
	}
}

func TestLoadErrors(t *testing.T) {
	dir := t.TempDir()
	if f, err := Load(filepath.Join(dir, "missing.yaml")); err != nil || len(f.Mirrors) != 0 {
		t.Fatalf("missing file: %v %v", f, err)
	}
	bad := filepath.Join(dir, "bad.yaml")
	os.WriteFile(bad, []byte("mirrors:\n  docker.io:\n    endpoints: [x]\n"), 0o600)
	if _, err := Load(bad); err == nil || !strings.Contains(err.Error(), bad) {
		t.Fatalf("unknown field: %v", err)
	}
	os.WriteFile(bad, []byte("mirrors:\n  docker.io:\n    endpoint: [\"ftp://x\"]\n"), 0o600)
	if err := Render(bad, filepath.Join(dir, "out")); err == nil || !strings.Contains(err.Error(), "ftp://x") {
		t.Fatalf("bad endpoint: %v", err)
	}
}

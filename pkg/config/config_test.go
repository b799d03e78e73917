package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/pflag"
)

func newFlags(t *testing.T, args ...string) (*Config, *pflag.FlagSet) {
	t.Helper()
	var c Config
	fs := pflag.NewFlagSet("server", pflag.ContinueOnError)
	c.AddServerFlags(fs)
	if err := fs.Parse(args); err != nil {
		t.Fatal(err)
	}
	return &c, fs
}

func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func writeFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

func TestPrecedence(t *testing.T) {
	dir := t.TempDir()
	cfgFile := filepath.Join(dir, "config.yaml")
	writeFile(t, cfgFile, "cluster-domain: file.local\nhttps-listen-port: 7000\ndata-dir: /file\ntls-san: [a.example, 192.0.2.7]\ndisable-agent: true\n")
	writeFile(t, cfgFile+".d/10-extra.yaml", "data-dir: /dropin\nkube-apiserver-arg:\n- v=2\n- audit-log-maxage=3\n")
	c, fs := newFlags(t, "--config", cfgFile, "--https-listen-port", "9000")
	err := ApplySources(fs, env(map[string]string{"KEDGE_CLUSTER_DOMAIN": "env.local"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.HTTPSListenPort != 9000 {
		t.Errorf("flag should win over file: port %d", c.HTTPSListenPort)
	}
	if c.ClusterDomain != "env.local" {
		t.Errorf("env should win over file: domain %q", c.ClusterDomain)
	}
	if c.DataDir != "/dropin" {
		t.Errorf("drop-in should win over config.yaml: data dir %q", c.DataDir)
	}
	if strings.Join(c.TLSSAN, ",") != "a.example,192.0.2.7" || !c.DisableAgent {
		t.Errorf("lists and bools from file: %v %v", c.TLSSAN, c.DisableAgent)
	}
	if strings.Join(c.KubeAPIServerArgs, " ") != "v=2 audit-log-maxage=3" {
		t.Errorf("pass-through args from drop-in: %v", c.KubeAPIServerArgs)
	}
	if c.ServiceCIDR != DefaultServiceCIDR {
		t.Errorf("default kept: %q", c.ServiceCIDR)
	}
}

func TestConfigFileErrors(t *testing.T) {
	cases := []struct {
		name, content string
		want          []string
	}{
		{"unknown key", "data-dirr: /x\n", []string{`unknown key "data-dirr"`}},
		{"wrong type", "https-listen-port: many\n", []string{`key "https-listen-port"`, `"many"`}},
		{"list for scalar", "cluster-cidr: [a, b]\n", []string{`key "cluster-cidr"`, "got a list"}},
		{"map value", "data-dir: {a: b}\n", []string{`key "data-dir"`, "scalar"}},
		{"not a mapping", "just a string\n", []string{"mapping"}},
		{"duplicate key", "data-dir: /a\ndata-dir: /b\n", []string{"mapping"}},
		{"config key", "config: /other.yaml\n", []string{`unknown key "config"`}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			file := filepath.Join(t.TempDir(), "config.yaml")
			writeFile(t, file, tc.content)
			_, fs := newFlags(t, "--config", file)
			err := ApplySources(fs, env(nil))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range append(tc.want, file) {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestConfigFileMissing(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "nope.yaml")
	// The default file may be absent.
	_, fs := newFlags(t)
	if err := fs.Set("config", missing); err != nil {
		t.Fatal(err)
	}
	fs.Lookup("config").Changed = false
	if err := ApplySources(fs, env(nil)); err != nil {
		t.Fatalf("absent default config file: %v", err)
	}
	// A file the user named must exist, by flag or by environment.
	_, fs = newFlags(t, "--config", missing)
	if err := ApplySources(fs, env(nil)); err == nil || !strings.Contains(err.Error(), missing) {
		t.Fatalf("named missing file: %v", err)
	}
	_, fs = newFlags(t)
	if err := ApplySources(fs, env(map[string]string{"KEDGE_CONFIG_FILE": missing})); err == nil {
		t.Fatal("KEDGE_CONFIG_FILE naming a missing file: no error")
	}
}

func TestEnvErrors(t *testing.T) {
	_, fs := newFlags(t, "--config", filepath.Join(t.TempDir(), "none"))
	fs.Lookup("config").Changed = false
	err := ApplySources(fs, env(map[string]string{"KEDGE_HTTPS_LISTEN_PORT": "x", "KEDGE_DISABLE_AGENT": "maybe"}))
	if err == nil || !strings.Contains(err.Error(), "KEDGE_HTTPS_LISTEN_PORT") || !strings.Contains(err.Error(), "KEDGE_DISABLE_AGENT") {
		t.Fatalf("want both env errors, got %v", err)
	}
}

func TestValidate(t *testing.T) {
	valid := func() Config {
		c, _ := newFlags(t)
		return *c
	}
	if err := func() error { c := valid(); return c.Validate() }(); err != nil {
		t.Fatalf("defaults do not validate: %v", err)
	}
	// Dual-stack and IPv6-only; the DNS address follows the service CIDR.
	for _, tc := range []struct{ cluster, service, nodeIP, dns string }{
		{"10.42.0.0/16,fd42::/56", "10.43.0.0/16,fd43::/112", "10.0.0.1,fd00::1", "10.43.0.10"},
		{"fd42::/56", "fd43::/112", "fd00::1", "fd43::a"},
	} {
		c := valid()
		c.ClusterCIDR, c.ServiceCIDR, c.NodeIP = tc.cluster, tc.service, tc.nodeIP
		if err := c.Validate(); err != nil {
			t.Errorf("%s / %s: %v", tc.cluster, tc.service, err)
		}
		if got := c.ClusterDNSIP(); got != tc.dns {
			t.Errorf("%s: DNS %s, want %s", tc.service, got, tc.dns)
		}
	}
	// Without an agent no containerd runs: a long run dir is fine.
	if err := func() error {
		c := valid()
		c.DisableAgent, c.RunDir = true, "/"+strings.Repeat("r", 80)
		return c.Validate()
	}(); err != nil {
		t.Errorf("a long run dir with --disable-agent: %v", err)
	}
	cases := []struct {
		name   string
		mutate func(*Config)
		want   []string
	}{
		{"relative data dir", func(c *Config) { c.DataDir = "data" }, []string{"--data-dir"}},
		{"port", func(c *Config) { c.HTTPSListenPort = 70000 }, []string{"--https-listen-port", "70000"}},
		{"bind address", func(c *Config) { c.BindAddress = "localhost" }, []string{"--bind-address"}},
		{"bad cluster cidr", func(c *Config) { c.ClusterCIDR = "10.42.0.0/40" }, []string{"--cluster-cidr", "10.42.0.0/40"}},
		{"host bits", func(c *Config) { c.ClusterCIDR = "10.42.1.0/16" }, []string{"--cluster-cidr", "10.42.0.0/16"}},
		{"overlap", func(c *Config) { c.ClusterCIDR = "10.0.0.0/8" }, []string{"overlaps"}},
		{"service too large", func(c *Config) {
			c.ServiceCIDR = "10.0.0.0/8"
			c.ClusterCIDR = "192.168.0.0/16"
			c.ClusterDNS = "10.0.0.10"
		}, []string{"too large"}},
		{"dns outside", func(c *Config) { c.ClusterDNS = "10.42.0.10" }, []string{"--cluster-dns", "outside"}},
		{"two v4 cidrs", func(c *Config) { c.ClusterCIDR = "10.42.0.0/16,10.44.0.0/16" }, []string{"--cluster-cidr", "one IPv4 and one IPv6"}},
		{"three cidrs", func(c *Config) { c.ClusterCIDR = "10.42.0.0/16,fd42::/56,fd44::/56" }, []string{"--cluster-cidr", "more than two"}},
		{"families differ", func(c *Config) { c.ClusterCIDR = "10.42.0.0/16,fd42::/56" }, []string{"--service-cidr", "same IP families"}},
		{"families in another order", func(c *Config) {
			c.ClusterCIDR = "fd42::/56,10.42.0.0/16"
			c.ServiceCIDR = "10.43.0.0/16,fd43::/112"
		}, []string{"same IP families in the same order"}},
		{"v6 service too large", func(c *Config) {
			c.ClusterCIDR = "10.42.0.0/16,fd42::/56"
			c.ServiceCIDR = "10.43.0.0/16,fd43::/64"
		}, []string{"/108"}},
		{"node ip", func(c *Config) { c.NodeIP = "10.0.0.1,10.0.0.2" }, []string{"--node-ip", "one IPv4 and one IPv6"}},
		{"mode", func(c *Config) { c.WriteKubeconfigMode = "999" }, []string{"--write-kubeconfig-mode"}},
		{"arg", func(c *Config) { c.KubeSchedulerArgs = []string{"v"} }, []string{"--kube-scheduler-arg", "key=value"}},
		{"run dir too long", func(c *Config) { c.RunDir = "/" + strings.Repeat("r", 80) }, []string{"--run-dir", "too long", "at most 71"}},
		{"many at once", func(c *Config) { c.HTTPSListenPort = 0; c.ClusterDomain = "" }, []string{"--https-listen-port", "--cluster-domain"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := valid()
			tc.mutate(&c)
			err := c.Validate()
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not mention %q", err, w)
				}
			}
		})
	}
}

func TestServiceIPAndSplitArg(t *testing.T) {
	c := Config{ServiceCIDR: "10.43.0.0/16"}
	if got := c.ServiceIP().String(); got != "10.43.0.1" {
		t.Errorf("service IP %s", got)
	}
	c.ServiceCIDR = "fd00:43::/112"
	if got := c.ServiceIP().String(); got != "fd00:43::1" {
		t.Errorf("service IP %s", got)
	}
	for in, want := range map[string]string{"v=2": "v|2", "--feature-gates=A=true,B=false": "feature-gates|A=true,B=false", "x=": "x|"} {
		k, v, err := SplitArg(in)
		if err != nil || k+"|"+v != want {
			t.Errorf("SplitArg(%q) = %q %q %v", in, k, v, err)
		}
	}
	for _, bad := range []string{"v", "=2", "--"} {
		if _, _, err := SplitArg(bad); err == nil {
			t.Errorf("SplitArg(%q): no error", bad)
		}
	}
}

func TestEnvNames(t *testing.T) {
	for flag, want := range map[string]string{"data-dir": "KEDGE_DATA_DIR", "token": "KEDGE_TOKEN", "server": "KEDGE_URL"} {
		if got := EnvName(flag); got != want {
			t.Errorf("EnvName(%q) = %q, want %q", flag, got, want)
		}
	}
}

// The Traefik image kedge deploys is the one scripts/addon-images builds
// from scripts/traefik/go.mod.
func TestTraefikImageMatchesItsBuild(t *testing.T) {
	data, err := os.ReadFile("../../scripts/traefik/go.mod")
	if err != nil {
		t.Fatal(err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		f := strings.Fields(line)
		if len(f) >= 2 && (f[0] == "github.com/traefik/traefik/v3" || (f[0] == "require" && len(f) == 3 && f[1] == "github.com/traefik/traefik/v3")) {
			v := f[len(f)-1]
			if want := "kedge.local/traefik:" + strings.TrimPrefix(v, "v"); TraefikImage != want {
				t.Fatalf("TraefikImage %s, but scripts/traefik builds %s", TraefikImage, want)
			}
			return
		}
	}
	t.Fatal("scripts/traefik/go.mod requires no github.com/traefik/traefik/v3")
}

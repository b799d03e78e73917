package integration

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	_ "modernc.org/sqlite"
)

// runBad runs "kedge server" expecting it to refuse to start; it returns the
// combined output.
func runBad(t *testing.T, dir string, configYAML string, args ...string) string {
	t.Helper()
	cfg := filepath.Join(dir, "config.yaml")
	if err := os.WriteFile(cfg, []byte(configYAML), 0o600); err != nil {
		t.Fatal(err)
	}
	port, err := freePort()
	if err != nil {
		t.Fatal(err)
	}
	base := []string{"server", "--config", cfg, "--disable-agent",
		"--data-dir", filepath.Join(dir, "data"),
		"--write-kubeconfig", filepath.Join(dir, "kubeconfig.yaml"),
		"--run-dir", filepath.Join(dir, "run"),
		"--https-listen-port", strconv.Itoa(port)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, kedgeBin, append(base, args...)...)
	cmd.Env = cleanEnv()
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err = cmd.Run()
	if ctx.Err() != nil {
		t.Fatalf("kedge did not refuse to start within a minute:\n%s", out.String())
	}
	if err == nil {
		t.Fatalf("kedge exited 0, want an error:\n%s", out.String())
	}
	if _, err := os.Stat(filepath.Join(dir, "kubeconfig.yaml")); err == nil {
		t.Errorf("a kubeconfig was written although kedge refused to start")
	}
	return out.String()
}

func wantAll(t *testing.T, out string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(out, s) {
			t.Errorf("output does not mention %q:\n%s", s, out)
		}
	}
}

func TestBadInput(t *testing.T) {
	cases := []struct {
		name   string
		config string
		args   []string
		want   []string
	}{
		{"unknown config key", "data-dirr: /tmp/x\n", nil, []string{`unknown key "data-dirr"`, "config.yaml"}},
		{"wrong type in config", "log-json: maybe\n", nil, []string{`"log-json"`, "config.yaml", "maybe"}},
		{"wrong type in config drop-in", "", []string{"--config", "DROPIN"}, []string{`"v"`, "50-verbose.yaml", "lots"}},
		{"list for a scalar key", "cluster-cidr: [10.0.0.0/16]\n", nil, []string{`"cluster-cidr"`, "list"}},
		{"config not a mapping", "- a\n- b\n", nil, []string{"config.yaml", "mapping"}},
		{"unknown flag", "", []string{"--no-such-flag"}, []string{"unknown flag: --no-such-flag"}},
		{"invalid cluster CIDR", "", []string{"--cluster-cidr", "10.42.0.0/33"}, []string{"--cluster-cidr", "10.42.0.0/33"}},
		{"invalid service CIDR in config", "service-cidr: banana\n", nil, []string{"--service-cidr", "banana"}},
		{"overlapping CIDRs", "", []string{"--cluster-cidr", "10.0.0.0/8", "--service-cidr", "10.43.0.0/16", "--cluster-dns", "10.43.0.10"}, []string{"overlaps", "--cluster-cidr 10.0.0.0/8"}},
		{"bad kubeconfig mode", "", []string{"--write-kubeconfig-mode", "rw"}, []string{"--write-kubeconfig-mode"}},
		{"bad pass-through arg", "", []string{"--kube-apiserver-arg", "novalue"}, []string{"--kube-apiserver-arg", "key=value"}},
		{"unknown apiserver flag", "", []string{"--kube-apiserver-arg", "no-such-apiserver-flag=1"}, []string{"kube-apiserver", "no-such-apiserver-flag"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			args := tc.args
			if len(args) == 2 && args[1] == "DROPIN" {
				cfg := filepath.Join(dir, "main.yaml")
				writeTestFile(t, cfg, "cluster-domain: example.local\n")
				writeTestFile(t, cfg+".d/50-verbose.yaml", "v: lots\n")
				args = []string{"--config", cfg}
			}
			out := runBad(t, dir, tc.config, args...)
			wantAll(t, out, tc.want...)
		})
	}
}

func TestBadInputEnvironment(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("KEDGE_HTTPS_LISTEN_PORT", "notaport")
	out := runBadEnv(t, dir)
	wantAll(t, out, "KEDGE_HTTPS_LISTEN_PORT", "notaport")
}

// runBadEnv is runBad with the test's KEDGE_* variables passed through.
func runBadEnv(t *testing.T, dir string) string {
	t.Helper()
	cfg := filepath.Join(dir, "empty.yaml")
	writeTestFile(t, cfg, "")
	cmd := exec.Command(kedgeBin, "server", "--config", cfg)
	cmd.Env = append(cleanEnv(), "KEDGE_HTTPS_LISTEN_PORT="+os.Getenv("KEDGE_HTTPS_LISTEN_PORT"))
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("kedge exited 0:\n%s", out)
	}
	return string(out)
}

func TestPortInUse(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := strconv.Itoa(ln.Addr().(*net.TCPAddr).Port)
	dir := t.TempDir()
	out := runBad(t, dir, "", "--bind-address", "127.0.0.1", "--https-listen-port", port)
	wantAll(t, out, "port "+port, "already in use", "--https-listen-port")
	if _, err := os.Stat(filepath.Join(dir, "data")); err == nil {
		t.Errorf("the data dir was created although the port was taken")
	}
}

func TestDataDirNotWritable(t *testing.T) {
	dir := t.TempDir()
	ro := filepath.Join(dir, "ro")
	if err := os.Mkdir(ro, 0o755); err != nil {
		t.Fatal(err)
	}
	// Root ignores file modes: a read-only mount is what makes it fail.
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "kedge-test-ro", ro).CombinedOutput(); err != nil {
		t.Fatalf("mount read-only tmpfs: %v %s", err, out)
	}
	defer exec.Command("umount", ro).Run()
	out := runBad(t, dir, "", "--data-dir", filepath.Join(ro, "kedge"))
	wantAll(t, out, filepath.Join(ro, "kedge"), "--data-dir")
}

func TestForeignDatabaseIsRefused(t *testing.T) {
	t.Run("garbage", func(t *testing.T) {
		dir := t.TempDir()
		db := filepath.Join(dir, "data", "server", "db", "state.db")
		os.MkdirAll(filepath.Dir(db), 0o700)
		garbage := bytes.Repeat([]byte("not a database\n"), 100)
		if err := os.WriteFile(db, garbage, 0o600); err != nil {
			t.Fatal(err)
		}
		out := runBad(t, dir, "")
		wantAll(t, out, db, "not a SQLite database", "will not overwrite")
		if got, _ := os.ReadFile(db); !bytes.Equal(got, garbage) {
			t.Fatalf("the foreign file was modified")
		}
	})
	t.Run("another program's SQLite", func(t *testing.T) {
		dir := t.TempDir()
		db := filepath.Join(dir, "data", "server", "db", "state.db")
		os.MkdirAll(filepath.Dir(db), 0o700)
		conn, err := sql.Open("sqlite", db)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := conn.Exec(`CREATE TABLE users (name TEXT); INSERT INTO users VALUES ('alice')`); err != nil {
			t.Fatal(err)
		}
		conn.Close()
		before, _ := os.ReadFile(db)
		out := runBad(t, dir, "")
		wantAll(t, out, db, "another program", "users")
		if got, _ := os.ReadFile(db); !bytes.Equal(got, before) {
			t.Fatalf("the foreign database was modified")
		}
	})
}

func writeTestFile(t *testing.T, path, content string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
}

// A kernel that lacks a feature kedge needs (here a configuration without
// VXLAN, named by KEDGE_KERNEL_CONFIG) stops a server and an agent before
// they write anything, naming the feature; kedge check-config reports it
// and passes on this machine's own kernel.
func TestKernelCheck(t *testing.T) {
	dir := t.TempDir()
	noVXLAN := filepath.Join(dir, "config-no-vxlan")
	real, err := exec.Command("sh", "-c", "zcat /proc/config.gz 2>/dev/null || cat /boot/config-$(uname -r)").Output()
	if err != nil || len(real) == 0 {
		t.Fatalf("this kernel's configuration: %v", err)
	}
	fake := strings.ReplaceAll(string(real), "CONFIG_VXLAN=y", "# CONFIG_VXLAN is not set")
	fake = strings.ReplaceAll(fake, "CONFIG_VXLAN=m", "# CONFIG_VXLAN is not set")
	writeTestFile(t, noVXLAN, fake)

	if out, err := exec.Command(kedgeBin, "check-config").CombinedOutput(); err != nil || strings.Contains(string(out), "missing") {
		t.Fatalf("check-config on this machine: %v\n%s", err, out)
	}
	out, err := exec.Command(kedgeBin, "check-config", noVXLAN).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("check-config without VXLAN exited %d:\n%s", code, out)
	}
	wantAll(t, string(out), "missing", "VXLAN", "CONFIG_VXLAN is not set")
	if out, err := exec.Command(kedgeBin, "check-config", "--flannel-backend", "host-gw", noVXLAN).CombinedOutput(); err != nil {
		t.Fatalf("check-config for host-gw needs no VXLAN: %v\n%s", err, out)
	}
	// WireGuard, for wireguard-native: present, then missing.
	without := func(text, option string) string {
		var keep []string
		for _, line := range strings.Split(text, "\n") {
			if !strings.HasPrefix(line, "CONFIG_"+option+"=") && !strings.HasPrefix(line, "# CONFIG_"+option+" ") {
				keep = append(keep, line)
			}
		}
		return strings.Join(keep, "\n") + "\n# CONFIG_" + option + " is not set\n"
	}
	withWG, noWG := filepath.Join(dir, "config-wg"), filepath.Join(dir, "config-no-wg")
	writeTestFile(t, withWG, without(string(real), "WIREGUARD")+"CONFIG_WIREGUARD=y\n")
	writeTestFile(t, noWG, without(string(real), "WIREGUARD"))
	if out, err := exec.Command(kedgeBin, "check-config", "--flannel-backend", "wireguard-native", withWG).CombinedOutput(); err != nil || !regexpLine(string(out), `ok .*WireGuard`) {
		t.Fatalf("check-config for wireguard-native with WireGuard: %v\n%s", err, out)
	}
	out, err = exec.Command(kedgeBin, "check-config", "--flannel-backend", "wireguard-native", noWG).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("check-config for wireguard-native without WireGuard exited %d:\n%s", code, out)
	}
	wantAll(t, string(out), "missing", "WireGuard", "CONFIG_WIREGUARD is not set")
	// The netlink queue, for NetworkPolicy; not needed without it.
	noQueue := filepath.Join(dir, "config-no-queue")
	writeTestFile(t, noQueue, without(string(real), "NETFILTER_NETLINK_QUEUE"))
	out, err = exec.Command(kedgeBin, "check-config", noQueue).CombinedOutput()
	if code := exitCode(err); code != 1 {
		t.Fatalf("check-config without the netlink queue exited %d:\n%s", code, out)
	}
	wantAll(t, string(out), "netlink queue", "NetworkPolicy")
	if out, err := exec.Command(kedgeBin, "check-config", "--disable-network-policy", noQueue).CombinedOutput(); err != nil {
		t.Fatalf("check-config without network policy needs no netlink queue: %v\n%s", err, out)
	}

	for _, role := range []string{"server", "agent"} {
		d := filepath.Join(dir, role)
		port, err := freePort()
		if err != nil {
			t.Fatal(err)
		}
		args := []string{role, "--config", filepath.Join(dir, "none.yaml"), "--data-dir", filepath.Join(d, "data"), "--run-dir", filepath.Join(d, "run")}
		if role == "server" {
			args = append(args, "--https-listen-port", strconv.Itoa(port), "--write-kubeconfig", filepath.Join(d, "kubeconfig.yaml"))
		} else {
			args = append(args, "--server", "https://127.0.0.1:"+strconv.Itoa(port), "--token", "x")
		}
		writeTestFile(t, filepath.Join(dir, "none.yaml"), "")
		cmd := exec.Command(kedgeBin, args...)
		cmd.Env = append(cleanEnv(), "KEDGE_KERNEL_CONFIG="+noVXLAN)
		out, err := cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("kedge %s started on a kernel without VXLAN:\n%s", role, out)
		}
		wantAll(t, string(out), "VXLAN", "--flannel-backend vxlan", "kedge check-config")
		if _, err := os.Stat(d); err == nil {
			t.Errorf("kedge %s wrote %s before refusing the kernel", role, d)
		}
		cmd = exec.Command(kedgeBin, append(args, "--flannel-backend", "wireguard-native")...)
		cmd.Env = append(cleanEnv(), "KEDGE_KERNEL_CONFIG="+noWG)
		out, err = cmd.CombinedOutput()
		if err == nil {
			t.Fatalf("kedge %s with wireguard-native started on a kernel without WireGuard:\n%s", role, out)
		}
		wantAll(t, string(out), "WireGuard", "--flannel-backend wireguard-native", "kedge check-config")
		if _, err := os.Stat(d); err == nil {
			t.Errorf("kedge %s wrote %s before refusing the kernel", role, d)
		}
	}
}

// exitCode is a command's exit status (0 for success, -1 if it did not run).
func exitCode(err error) int {
	var ee *exec.ExitError
	switch {
	case err == nil:
		return 0
	case errors.As(err, &ee):
		return ee.ExitCode()
	}
	return -1
}

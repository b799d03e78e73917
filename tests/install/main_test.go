// Package install tests install.sh as a user runs it, as root, against
// release artifacts served from 127.0.0.1: the files, modes, symlinks and
// units it installs, the failures it must refuse to install through, an
// upgrade, and a server started from the installed unit and then removed
// with the uninstall script, inside a network namespace of the test's own.
//
// install.sh's system paths are pointed at temporary directories with its
// documented variables; a fake systemctl (or rc-update and rc-service)
// earlier in PATH records what the installer asks of the service manager.
package install

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

const (
	installSh = "../../install.sh"
	killallSh = "../../scripts/kedge-killall.sh"
	// installPath is the PATH install.sh runs with, after the fake tools.
	installPath = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
)

// artifactArch is the release name of this machine's architecture.
func artifactArch() string {
	if runtime.GOARCH == "arm" {
		return "armv7"
	}
	return runtime.GOARCH
}

func needRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("install.sh runs as root (scripts/test runs these tests as root)")
	}
}

// kedgeBin is the real kedge binary to release: $KEDGE_BIN, as in
// tests/integration, else bin/kedge.
func kedgeBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("KEDGE_BIN")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/kedge")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("kedge binary %s: %v (set KEDGE_BIN or run scripts/build)", bin, err)
	}
	return bin
}

// releaseBin is the release binary to install where one must run:
// $KEDGE_RELEASE_BIN (scripts/test makes it from bin/kedge with
// scripts/release: the launcher with kedge appended), else kedgeBin.
func releaseBin(t *testing.T) string {
	t.Helper()
	if bin := os.Getenv("KEDGE_RELEASE_BIN"); bin != "" {
		if _, err := os.Stat(bin); err != nil {
			t.Fatalf("KEDGE_RELEASE_BIN: %v", err)
		}
		return bin
	}
	return kedgeBin(t)
}

// release is a directory of release artifacts served over HTTP on loopback.
type release struct {
	dir string
	url string
}

func newRelease(t *testing.T) *release {
	t.Helper()
	r := &release{dir: t.TempDir()}
	srv := httptest.NewServer(http.FileServer(http.Dir(r.dir)))
	t.Cleanup(srv.Close)
	r.url = srv.URL
	return r
}

// publish writes kedge-<arch> with data and its sha256 file as the release
// engineer's scripts do ("<hex>  kedge-<arch>").
func (r *release) publish(t *testing.T, data []byte) {
	t.Helper()
	name := "kedge-" + artifactArch()
	sum := sha256.Sum256(data)
	if err := os.WriteFile(filepath.Join(r.dir, name), data, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, name+".sha256"), []byte(hex.EncodeToString(sum[:])+"  "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// publishAddons writes kedge-addons-<arch>.tar.zst and its sha256 file.
func (r *release) publishAddons(t *testing.T, data []byte) {
	t.Helper()
	name := "kedge-addons-" + artifactArch() + ".tar.zst"
	sum := sha256.Sum256(data)
	if err := os.WriteFile(filepath.Join(r.dir, name), data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, name+".sha256"), []byte(hex.EncodeToString(sum[:])+"  "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// fakeKedge is a small stand-in for kedge where the test needs none that runs.
func fakeKedge(version string) []byte {
	return []byte("#!/bin/sh\necho \"fake kedge " + version + "\"\n")
}

// host is one installation's root: every path install.sh writes is under
// dir, and its fake service-manager tools log to calls.
type host struct {
	dir  string
	fake string // PATH entry with the fake systemctl, rc-update, rc-service
	rel  *release
}

func newHost(t *testing.T, rel *release) *host {
	t.Helper()
	h := &host{dir: t.TempDir(), rel: rel}
	h.fake = filepath.Join(h.dir, "fakebin")
	if err := os.MkdirAll(h.fake, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"systemctl", "rc-update", "rc-service"} {
		h.fakeTool(t, tool, fmt.Sprintf("#!/bin/sh\necho \"%s $*\" >>%s\n", tool, h.path("calls")))
	}
	return h
}

func (h *host) path(rel string) string { return filepath.Join(h.dir, rel) }
func (h *host) binDir() string         { return h.path("usr/local/bin") }
func (h *host) configDir() string      { return h.path("etc/kedge") }
func (h *host) systemdDir() string     { return h.path("etc/systemd/system") }
func (h *host) openrcDir() string      { return h.path("etc/init.d") }

// fakeTool puts an executable script named name first in install.sh's PATH.
func (h *host) fakeTool(t *testing.T, name, script string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(h.fake, name), []byte(script), 0o755); err != nil {
		t.Fatal(err)
	}
}

// calls returns and forgets what the fake service-manager tools were asked.
func (h *host) calls() []string {
	data, _ := os.ReadFile(h.path("calls"))
	os.Remove(h.path("calls"))
	return strings.Split(strings.TrimSpace(string(data)), "\n")
}

// env is the environment install.sh runs in: nothing of the test's own
// KEDGE_*, proxies or NOTIFY_SOCKET; the system paths under h.dir.
func (h *host) env(extra ...string) []string {
	env := []string{
		"PATH=" + h.fake + ":" + installPath,
		"HOME=" + h.dir,
		"INSTALL_KEDGE_BIN_DIR=" + h.binDir(),
		"INSTALL_KEDGE_CONFIG_DIR=" + h.configDir(),
		"INSTALL_KEDGE_SYSTEMD_DIR=" + h.systemdDir(),
		"INSTALL_KEDGE_OPENRC_DIR=" + h.openrcDir(),
		"INSTALL_KEDGE_INIT=systemd",
		// kedge's own dirs, for the uninstall script to remove.
		"KEDGE_DATA_DIR=" + h.path("var/lib/kedge"),
		"KEDGE_RUN_DIR=" + h.path("run/kedge"),
	}
	if h.rel != nil {
		env = append(env, "INSTALL_KEDGE_DOWNLOAD_URL="+h.rel.url)
	}
	// Later entries win: a test may override any of the above.
	return append(env, extra...)
}

// install runs install.sh with env (KEY=VALUE) and args.
func (h *host) install(env []string, args ...string) (string, error) {
	cmd := exec.Command("sh", append([]string{installSh}, args...)...)
	cmd.Env = dedupEnv(h.env(env...))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// mustInstall runs install.sh and fails the test if it fails.
func (h *host) mustInstall(t *testing.T, env []string, args ...string) string {
	t.Helper()
	out, err := h.install(env, args...)
	if err != nil {
		t.Fatalf("install.sh %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// dedupEnv keeps the last value of each variable.
func dedupEnv(env []string) []string {
	last := map[string]int{}
	for i, e := range env {
		last[strings.SplitN(e, "=", 2)[0]] = i
	}
	var out []string
	for i, e := range env {
		if last[strings.SplitN(e, "=", 2)[0]] == i {
			out = append(out, e)
		}
	}
	return out
}

func readFile(t *testing.T, path string) string {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return string(data)
}

func wantMode(t *testing.T, path string, want os.FileMode) {
	t.Helper()
	st, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got := st.Mode().Perm(); got != want {
		t.Errorf("%s: mode %04o, want %04o", path, got, want)
	}
}

func wantContains(t *testing.T, what, text string, subs ...string) {
	t.Helper()
	for _, s := range subs {
		if !strings.Contains(text, s) {
			t.Errorf("%s lacks %q:\n%s", what, s, text)
		}
	}
}

// listTree lists every path under dir (relative), for "nothing installed"
// and "nothing left" checks.
func listTree(dir string) []string {
	var paths []string
	filepath.WalkDir(dir, func(p string, _ os.DirEntry, err error) error {
		if err == nil && p != dir {
			rel, _ := filepath.Rel(dir, p)
			paths = append(paths, rel)
		}
		return nil
	})
	return paths
}

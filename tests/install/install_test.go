package install

import (
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// A server install: the binary, symlinks, scripts, environment file and a
// unit systemd accepts; re-running is an upgrade that restarts only when
// something changed.
func TestServerInstall(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	env := []string{"KEDGE_NODE_NAME=edge-1", "KEDGE_TOKEN=s3cret 'quoted'"}
	h.mustInstall(t, env, "--disable", "coredns", "--node-label", "site=a b")

	bin := filepath.Join(h.binDir(), "kedge")
	if got := readFile(t, bin); got != string(fakeKedge("v1")) {
		t.Errorf("%s is not the released binary: %q", bin, got)
	}
	wantMode(t, bin, 0o755)
	wantMode(t, h.binDir(), 0o755)
	for _, script := range []string{"kedge-killall.sh", "kedge-uninstall.sh"} {
		p := filepath.Join(h.binDir(), script)
		wantMode(t, p, 0o755)
		if out, err := exec.Command("shellcheck", p).CombinedOutput(); err != nil {
			t.Errorf("shellcheck %s: %v\n%s", script, err, out)
		}
	}
	if got, want := readFile(t, filepath.Join(h.binDir(), "kedge-killall.sh")), readFile(t, killallSh); got != want {
		t.Errorf("installed kedge-killall.sh differs from scripts/kedge-killall.sh")
	}

	// Symlinks: made where no other program of the name is in PATH.
	for _, tool := range []string{"kubectl", "crictl", "ctr"} {
		link := filepath.Join(h.binDir(), tool)
		target, err := os.Readlink(link)
		other := lookIn(installPath, tool)
		switch {
		case other != "":
			if err == nil {
				t.Errorf("%s links to %s although %s exists", link, target, other)
			}
		case err != nil || target != "kedge":
			t.Errorf("%s: want a symlink to kedge, got %q (%v)", link, target, err)
		}
	}

	envFile := filepath.Join(h.configDir(), "kedge.env")
	wantMode(t, envFile, 0o600)
	wantContains(t, envFile, readFile(t, envFile),
		"KEDGE_NODE_NAME='edge-1'\n",
		`KEDGE_TOKEN='s3cret '\''quoted'\'''`+"\n",
		"KEDGE_DATA_DIR='"+h.path("var/lib/kedge")+"'\n")
	// The file is read by sh (OpenRC, the by-hand start) as well as systemd.
	out, err := exec.Command("sh", "-c", `set -a; . "$1"; printf %s "$KEDGE_TOKEN"`, "sh", envFile).CombinedOutput()
	if err != nil || string(out) != "s3cret 'quoted'" {
		t.Errorf("sourcing %s: KEDGE_TOKEN=%q (%v)", envFile, out, err)
	}

	unit := filepath.Join(h.systemdDir(), "kedge.service")
	wantMode(t, unit, 0o644)
	wantContains(t, unit, readFile(t, unit),
		"Type=notify\n", "KillMode=process\n", "Delegate=yes\n", "LimitNOFILE=1048576\n",
		"Restart=always\n", "EnvironmentFile=-"+envFile+"\n",
		"ExecStart="+bin+" \\\n    'server' \\\n    '--disable' \\\n    'coredns' \\\n    '--node-label' \\\n    'site=a b'\n")
	verifyUnit(t, unit)
	if got, want := h.calls(), []string{"systemctl daemon-reload", "systemctl enable kedge", "systemctl restart kedge"}; !slices.Equal(got, want) {
		t.Errorf("service manager calls: %q, want %q", got, want)
	}

	// The same again: nothing changed, nothing restarted.
	out2 := h.mustInstall(t, env, "--disable", "coredns", "--node-label", "site=a b")
	wantContains(t, "second install's output", out2, "is already this version", "unchanged; not restarting")
	if got := h.calls(); slices.Contains(got, "systemctl restart kedge") || !slices.Contains(got, "systemctl start kedge") {
		t.Errorf("an unchanged re-install asked: %q; want start, not restart", got)
	}

	// A new release: the binary is replaced and the service restarted.
	rel.publish(t, fakeKedge("v2"))
	out3 := h.mustInstall(t, env, "--disable", "coredns", "--node-label", "site=a b")
	wantContains(t, "upgrade's output", out3, "changed: binary")
	if got := readFile(t, bin); got != string(fakeKedge("v2")) {
		t.Errorf("after the upgrade %s holds %q", bin, got)
	}
	if got := h.calls(); !slices.Contains(got, "systemctl restart kedge") {
		t.Errorf("an upgrade asked: %q; want a restart", got)
	}

	// Another flag changes the unit, another variable the environment.
	out4 := h.mustInstall(t, append(env, "KEDGE_NODE_NAME=edge-2"), "--disable", "coredns")
	wantContains(t, "reconfiguration's output", out4, "changed: environment service")
	if got := h.calls(); !slices.Contains(got, "systemctl restart kedge") {
		t.Errorf("a reconfiguration asked: %q; want a restart", got)
	}

	// INSTALL_KEDGE_SKIP_START enables but does not start;
	// INSTALL_KEDGE_SKIP_ENABLE does neither.
	h.mustInstall(t, append(env, "INSTALL_KEDGE_SKIP_START=true", "KEDGE_NODE_NAME=edge-3"))
	if got, want := h.calls(), []string{"systemctl daemon-reload", "systemctl enable kedge"}; !slices.Equal(got, want) {
		t.Errorf("with INSTALL_KEDGE_SKIP_START: %q, want %q", got, want)
	}
	h.mustInstall(t, append(env, "INSTALL_KEDGE_SKIP_ENABLE=true", "KEDGE_NODE_NAME=edge-4"))
	if got := h.calls(); len(got) != 1 || got[0] != "" {
		t.Errorf("with INSTALL_KEDGE_SKIP_ENABLE: %q, want no call", got)
	}
}

// lookIn finds tool in a PATH list, as the installer's "command -v" does.
func lookIn(path, tool string) string {
	for _, dir := range filepath.SplitList(path) {
		p := filepath.Join(dir, tool)
		if st, err := os.Stat(p); err == nil && !st.IsDir() && st.Mode()&0o111 != 0 {
			return p
		}
	}
	return ""
}

// verifyUnit runs systemd-analyze verify on a unit (it needs no running
// systemd) and fails on any complaint.
func verifyUnit(t *testing.T, unit string) {
	t.Helper()
	if _, err := exec.LookPath("systemd-analyze"); err != nil {
		t.Fatalf("systemd-analyze is missing (apt-get install systemd): %v", err)
	}
	out, err := exec.Command("systemd-analyze", "verify", unit).CombinedOutput()
	if err != nil || strings.TrimSpace(string(out)) != "" {
		t.Errorf("systemd-analyze verify %s: %v\n%s", unit, err, out)
	}
}

// With KEDGE_URL and KEDGE_TOKEN the installer sets up an agent.
func TestAgentInstall(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	h.mustInstall(t, []string{"KEDGE_URL=https://10.0.0.1:6443", "KEDGE_TOKEN=K10abc::server:xyz"}, "--node-label", "role=edge")
	envFile := filepath.Join(h.configDir(), "kedge-agent.env")
	wantMode(t, envFile, 0o600)
	wantContains(t, envFile, readFile(t, envFile), "KEDGE_URL='https://10.0.0.1:6443'\n", "KEDGE_TOKEN='K10abc::server:xyz'\n")
	unit := filepath.Join(h.systemdDir(), "kedge-agent.service")
	wantContains(t, unit, readFile(t, unit), "EnvironmentFile=-"+envFile+"\n", "    'agent' \\\n    '--node-label' \\\n    'role=edge'\n")
	verifyUnit(t, unit)
	if _, err := os.Stat(filepath.Join(h.binDir(), "kedge-agent-uninstall.sh")); err != nil {
		t.Error(err)
	}
	if got := h.calls(); !slices.Contains(got, "systemctl restart kedge-agent") {
		t.Errorf("service manager calls: %q, want kedge-agent restarted", got)
	}

	// An agent without a token is refused before anything is written.
	h2 := newHost(t, rel)
	out, err := h2.install([]string{"KEDGE_URL=https://10.0.0.1:6443"})
	if err == nil || !strings.Contains(out, "KEDGE_TOKEN") {
		t.Errorf("an agent without KEDGE_TOKEN: err %v, output:\n%s", err, out)
	}
	wantNothingInstalled(t, h2)
}

// wantNothingInstalled checks that no file was written under the host's
// system paths (only the fake tools exist).
func wantNothingInstalled(t *testing.T, h *host) {
	t.Helper()
	for _, p := range listTree(h.dir) {
		if !strings.HasPrefix(p, "fakebin") {
			t.Errorf("installed although it failed: %s", p)
		}
	}
}

// A binary that does not match its checksum is not installed, and nothing
// else is.
func TestChecksumMismatch(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	// Tamper with the binary after its checksum was written.
	name := filepath.Join(rel.dir, "kedge-"+artifactArch())
	if err := os.WriteFile(name, fakeKedge("evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	h := newHost(t, rel)
	out, err := h.install(nil)
	if err == nil || !strings.Contains(out, "checksum mismatch") || !strings.Contains(out, "Nothing was installed") {
		t.Fatalf("tampered binary: err %v, output:\n%s", err, out)
	}
	wantNothingInstalled(t, h)

	// An upgrade that fails its checksum leaves the installed version.
	rel.publish(t, fakeKedge("v1"))
	h.mustInstall(t, nil)
	if err := os.WriteFile(name, fakeKedge("evil"), 0o755); err != nil {
		t.Fatal(err)
	}
	if out, err := h.install(nil); err == nil {
		t.Fatalf("tampered upgrade succeeded:\n%s", out)
	}
	if got := readFile(t, filepath.Join(h.binDir(), "kedge")); got != string(fakeKedge("v1")) {
		t.Errorf("a failed upgrade changed the binary to %q", got)
	}
}

// A release's add-on images archive is verified and placed in the images
// dir, where kedge imports it; a release without one installs with a
// warning; a tampered one installs nothing.
func TestAddonsArchive(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	out := h.mustInstall(t, nil)
	wantContains(t, "install.sh output", out, "installing without the add-on images")
	images := h.path("var/lib/kedge/agent/images")
	if _, err := os.Stat(filepath.Join(images, "kedge-addons.tar.zst")); !os.IsNotExist(err) {
		t.Fatalf("an archive the release does not have was installed: %v", err)
	}

	rel.publishAddons(t, []byte("addon images v1"))
	h.mustInstall(t, nil)
	if got := readFile(t, filepath.Join(images, "kedge-addons.tar.zst")); got != "addon images v1" {
		t.Fatalf("installed archive %q", got)
	}
	wantMode(t, images, 0o700)
	if out := h.mustInstall(t, []string{"INSTALL_KEDGE_SKIP_ADDONS=true"}); strings.Contains(out, "kedge-addons") {
		t.Errorf("INSTALL_KEDGE_SKIP_ADDONS still fetched it:\n%s", out)
	}

	// Tampered after its checksum was written: refused before any change.
	name := filepath.Join(rel.dir, "kedge-addons-"+artifactArch()+".tar.zst")
	if err := os.WriteFile(name, []byte("evil"), 0o644); err != nil {
		t.Fatal(err)
	}
	rel.publish(t, fakeKedge("v2"))
	if out, err := h.install(nil); err == nil || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("tampered archive: %v\n%s", err, out)
	}
	if got := readFile(t, filepath.Join(h.binDir(), "kedge")); got != string(fakeKedge("v1")) {
		t.Errorf("a refused install changed the binary to %q", got)
	}
	if got := readFile(t, filepath.Join(images, "kedge-addons.tar.zst")); got != "addon images v1" {
		t.Errorf("a refused install changed the archive to %q", got)
	}
}

// An architecture kedge is not released for is named in a clear error.
func TestUnknownArchitecture(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	h.fakeTool(t, "uname", "#!/bin/sh\n[ \"$1\" = -m ] && echo mips64 && exit 0\nexec /bin/uname \"$@\"\n")
	out, err := h.install(nil)
	if err == nil || !strings.Contains(out, `unsupported architecture "mips64"`) {
		t.Fatalf("mips64: err %v, output:\n%s", err, out)
	}
	wantNothingInstalled(t, h)
}

// The architectures install.sh knows map to the release artifacts' names.
func TestArchitectures(t *testing.T) {
	needRoot(t)
	for machine, arch := range map[string]string{
		"x86_64": "amd64", "aarch64": "arm64", "arm64": "arm64", "armv7l": "armv7", "armv8l": "armv7",
	} {
		t.Run(machine, func(t *testing.T) {
			rel := newRelease(t)
			h := newHost(t, rel)
			h.fakeTool(t, "uname", "#!/bin/sh\n[ \"$1\" = -m ] && echo "+machine+" && exit 0\nexec /bin/uname \"$@\"\n")
			out, _ := h.install(nil)
			// Nothing is published: the error names the URL it tried.
			wantContains(t, "output", out, rel.url+"/kedge-"+arch+".sha256")
			wantNothingInstalled(t, h)
		})
	}
}

// kubectl, crictl and ctr never replace another program unless forced.
func TestSymlinks(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	kubectl := filepath.Join(h.binDir(), "kubectl")
	if err := os.MkdirAll(h.binDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(kubectl, []byte("#!/bin/sh\necho mine\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := h.mustInstall(t, nil)
	wantContains(t, "output", out, "not linking "+kubectl+": it exists and is not kedge")
	if got := readFile(t, kubectl); got != "#!/bin/sh\necho mine\n" {
		t.Errorf("%s was replaced: %q", kubectl, got)
	}

	out = h.mustInstall(t, []string{"INSTALL_KEDGE_SYMLINK=force"})
	for _, tool := range []string{"kubectl", "crictl", "ctr"} {
		if target, err := os.Readlink(filepath.Join(h.binDir(), tool)); err != nil || target != "kedge" {
			t.Errorf("INSTALL_KEDGE_SYMLINK=force: %s -> %q (%v)\n%s", tool, target, err, out)
		}
	}

	h2 := newHost(t, rel)
	h2.mustInstall(t, []string{"INSTALL_KEDGE_SYMLINK=skip"})
	for _, tool := range []string{"kubectl", "crictl", "ctr"} {
		if _, err := os.Lstat(filepath.Join(h2.binDir(), tool)); err == nil {
			t.Errorf("INSTALL_KEDGE_SYMLINK=skip made %s", tool)
		}
	}
}

// INSTALL_KEDGE_SKIP_DOWNLOAD installs the binary already in place, as an
// air-gapped site does: no network is asked.
func TestSkipDownload(t *testing.T) {
	needRoot(t)
	h := newHost(t, nil)
	bin := filepath.Join(h.binDir(), "kedge")
	if err := os.MkdirAll(h.binDir(), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(bin, fakeKedge("airgap"), 0o755); err != nil {
		t.Fatal(err)
	}
	out := h.mustInstall(t, []string{"INSTALL_KEDGE_SKIP_DOWNLOAD=true", "INSTALL_KEDGE_DOWNLOAD_URL=http://127.0.0.1:1"})
	wantContains(t, "output", out, "INSTALL_KEDGE_SKIP_DOWNLOAD")
	if got := readFile(t, bin); got != string(fakeKedge("airgap")) {
		t.Errorf("%s changed: %q", bin, got)
	}
	verifyUnit(t, filepath.Join(h.systemdDir(), "kedge.service"))
	h.calls()

	// An air-gapped upgrade: a new binary copied in by hand restarts
	// the service; the same one again does not.
	skip := []string{"INSTALL_KEDGE_SKIP_DOWNLOAD=true"}
	if err := os.WriteFile(bin, fakeKedge("airgap-2"), 0o755); err != nil {
		t.Fatal(err)
	}
	out = h.mustInstall(t, skip)
	wantContains(t, "output", out, "changed: binary")
	if got := h.calls(); !slices.Contains(got, "systemctl restart kedge") {
		t.Errorf("a binary replaced by hand: %q; want a restart", got)
	}
	h.mustInstall(t, skip)
	if got := h.calls(); slices.Contains(got, "systemctl restart kedge") {
		t.Errorf("the same binary again: %q; want no restart", got)
	}
}

// With a server and an agent installed, uninstalling one keeps kedge and
// the data for the other.
func TestUninstallKeepsTheOther(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	h.mustInstall(t, nil)
	h.mustInstall(t, []string{"KEDGE_URL=https://10.0.0.1:6443", "KEDGE_TOKEN=t"})
	// In a network namespace of its own: were it to run kedge-killall.sh,
	// that would clean only the namespace's (empty) network.
	netns := newNetns(t)
	uninstall := exec.Command("nsenter", "--net=/run/netns/"+netns, "sh", filepath.Join(h.binDir(), "kedge-agent-uninstall.sh"))
	uninstall.Env = h.env()
	out, err := uninstall.CombinedOutput()
	if err != nil {
		t.Fatalf("kedge-agent-uninstall.sh: %v\n%s", err, out)
	}
	wantContains(t, "output", string(out), "kedge itself stays for")
	for _, gone := range []string{"usr/local/bin/kedge-agent-uninstall.sh", "etc/kedge/kedge-agent.env", "etc/systemd/system/kedge-agent.service"} {
		if _, err := os.Stat(h.path(gone)); err == nil {
			t.Errorf("%s is left", gone)
		}
	}
	for _, kept := range []string{"usr/local/bin/kedge", "usr/local/bin/kedge-killall.sh", "usr/local/bin/kedge-uninstall.sh", "etc/kedge/kedge.env", "etc/systemd/system/kedge.service"} {
		if _, err := os.Stat(h.path(kept)); err != nil {
			t.Errorf("the server's %s is gone: %v", kept, err)
		}
	}
	if got := h.calls(); !slices.Contains(got, "systemctl stop kedge-agent") || slices.Contains(got, "systemctl stop kedge") {
		t.Errorf("service manager calls: %q; want kedge-agent stopped, kedge not", got)
	}
}

// Where OpenRC runs the host, an OpenRC service is installed.
func TestOpenRC(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	h.mustInstall(t, []string{"INSTALL_KEDGE_INIT=openrc"}, "server", "--node-label", "it's=x")
	svc := filepath.Join(h.openrcDir(), "kedge")
	wantMode(t, svc, 0o755)
	text := readFile(t, svc)
	wantContains(t, svc, text, "#!/sbin/openrc-run\n", "supervisor=supervise-daemon\n",
		"command='"+filepath.Join(h.binDir(), "kedge")+"'\n",
		". '"+filepath.Join(h.configDir(), "kedge.env")+"'")
	if out, err := exec.Command("sh", "-n", svc).CombinedOutput(); err != nil {
		t.Errorf("sh -n %s: %v\n%s", svc, err, out)
	}
	// OpenRC expands command_args with eval: the arguments come back whole.
	out, err := exec.Command("sh", "-c", `. "$1"; eval "set -- $command_args"; printf '<%s>' "$@"`, "sh", svc).CombinedOutput()
	if err != nil || string(out) != "<server><--node-label><it's=x>" {
		t.Errorf("command_args evaluates to %q (%v)", out, err)
	}
	if _, err := os.Stat(filepath.Join(h.systemdDir(), "kedge.service")); err == nil {
		t.Error("a systemd unit was installed for OpenRC")
	}
	if got, want := h.calls(), []string{"rc-update add kedge default", "rc-service kedge restart"}; !slices.Equal(got, want) {
		t.Errorf("service manager calls: %q, want %q", got, want)
	}
}

// Without systemd or OpenRC, everything but a service is installed and the
// installer says how to start kedge by hand.
func TestNoServiceManager(t *testing.T) {
	needRoot(t)
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	out := h.mustInstall(t, []string{"INSTALL_KEDGE_INIT=none", "KEDGE_NODE_NAME=n1"}, "--disable-agent")
	envFile := filepath.Join(h.configDir(), "kedge.env")
	wantContains(t, "output", out, "neither systemd nor OpenRC",
		"set -a; . "+envFile+"; set +a\n",
		filepath.Join(h.binDir(), "kedge")+" 'server' '--disable-agent'")
	for _, p := range []string{"kedge", "kedge-killall.sh", "kedge-uninstall.sh"} {
		if _, err := os.Stat(filepath.Join(h.binDir(), p)); err != nil {
			t.Error(err)
		}
	}
	wantMode(t, envFile, 0o600)
	if _, err := os.Stat(h.systemdDir()); err == nil {
		t.Error("a systemd unit was installed without systemd")
	}
	if got := h.calls(); len(got) != 1 || got[0] != "" {
		t.Errorf("service manager calls without one: %q", got)
	}
	// The command it prints runs the installed kedge with its environment.
	cmd := exec.Command("sh", "-c", "set -a; . "+envFile+"; set +a\n"+filepath.Join(h.binDir(), "kedge")+" 'server'")
	if b, err := cmd.CombinedOutput(); err != nil || string(b) != "fake kedge v1\n" {
		t.Errorf("the printed start command: %q, %v", b, err)
	}
}

// wget works where curl is missing.
func TestWget(t *testing.T) {
	needRoot(t)
	if _, err := exec.LookPath("wget"); err != nil {
		t.Skip("wget is not installed")
	}
	rel := newRelease(t)
	rel.publish(t, fakeKedge("v1"))
	h := newHost(t, rel)
	// A PATH holding only the tools the installer may use, curl left out.
	tools := filepath.Join(h.dir, "tools")
	if err := os.MkdirAll(tools, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, tool := range []string{"sh", "awk", "cat", "chmod", "cmp", "cp", "dirname", "env", "grep", "id", "ln",
		"mkdir", "mktemp", "mv", "readlink", "rm", "sed", "sha256sum", "sort", "uname", "wget"} {
		path, err := exec.LookPath(tool)
		if err != nil {
			t.Fatalf("%s: %v", tool, err)
		}
		if err := os.Symlink(path, filepath.Join(tools, tool)); err != nil {
			t.Fatal(err)
		}
	}
	out := h.mustInstall(t, []string{"PATH=" + h.fake + ":" + tools})
	if got := readFile(t, filepath.Join(h.binDir(), "kedge")); got != string(fakeKedge("v1")) {
		t.Errorf("wget download: %q\n%s", got, out)
	}
}

package install

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/kedge-dev/kedge/tests/internal/cgroup"
)

const (
	// The node's address, on a dummy interface inside the test's netns.
	nodeIP     = "10.251.0.1"
	nodeIface  = "kedge-inst0"
	nodePeer   = "kedge-inst1"
	cgroupName = "kedge-inst"
	kubectlBin = "/usr/bin/kubectl"
)

// The released binary, installed as a server, starts from its unit's
// command line and environment, tells systemd it is ready, serves stock
// kubectl and runs a pod; re-installing it changes nothing; the uninstall
// script then leaves no file, mount, interface, rule or process behind.
// kedge runs in a network namespace of the test's own, with its own
// kubelet cgroup root, so nothing on the host is touched.
func TestServerFromUnitThenUninstall(t *testing.T) {
	needRoot(t)
	if _, err := os.Stat(kubectlBin); err != nil {
		t.Fatalf("stock kubectl: %v", err)
	}
	rel := newRelease(t)
	rel.publishFile(t, releaseBin(t))
	netns := newNetns(t)
	t.Cleanup(cgroupRoot(t, cgroupName))

	h := newHost(t, rel)
	kubeconfig := filepath.Join(h.configDir(), "kedge.yaml")
	env := []string{
		"KEDGE_WRITE_KUBECONFIG=" + kubeconfig,
		"KEDGE_CONFIG_FILE=" + filepath.Join(h.configDir(), "config.yaml"),
		"KEDGE_PRIVATE_REGISTRY=" + filepath.Join(h.configDir(), "registries.yaml"),
	}
	args := []string{"--node-ip", nodeIP, "--advertise-address", nodeIP, "--node-name", "kedge-inst-node",
		"--flannel-iface", nodeIface, "--kubelet-arg", "cgroup-root=/" + cgroupName}
	h.mustInstall(t, env, args...)
	unit := filepath.Join(h.systemdDir(), "kedge.service")
	verifyUnit(t, unit)
	h.calls()
	if err := os.WriteFile(filepath.Join(h.configDir(), "config.yaml"), []byte("# kedge's config\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	// Start kedge as systemd would: the unit's ExecStart with its
	// EnvironmentFile, and a notify socket.
	argv, err := execStart(readFile(t, unit))
	if err != nil {
		t.Fatal(err)
	}
	notify := listenNotify(t, filepath.Join(t.TempDir(), "notify.sock"))
	logFile := filepath.Join(t.TempDir(), "kedge.log")
	k := startService(t, netns, filepath.Join(h.configDir(), "kedge.env"), notify.LocalAddr().String(), logFile, argv)
	t.Cleanup(func() {
		if k.running() {
			k.cmd.Process.Kill()
			<-k.done
		}
		if t.Failed() {
			data, _ := os.ReadFile(logFile)
			lines := strings.Split(string(data), "\n")
			t.Logf("--- kedge log (tail) ---\n%s", strings.Join(lines[max(0, len(lines)-60):], "\n"))
		}
	})
	if got := k.waitNotify(t, notify, 4*time.Minute); got != "READY=1" {
		t.Fatalf("kedge sent %q first, want READY=1", got)
	}

	kubectlHome := t.TempDir() // its cache is not the installation's
	kubectl := func(stdin string, args ...string) (string, error) {
		cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, kubectlBin, "--kubeconfig", kubeconfig, "--request-timeout=30s"}, args...)...)
		cmd.Env = []string{"PATH=" + installPath, "HOME=" + kubectlHome}
		cmd.Stdin = strings.NewReader(stdin)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := kubectl("", "get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("stock kubectl get --raw /readyz: %q, %v", out, err)
	}
	eventually(t, 3*time.Minute, "node Ready", func() error {
		out, err := kubectl("", "get", "node", "kedge-inst-node", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if err != nil || out != "True" {
			return fmt.Errorf("%q %v", out, err)
		}
		return nil
	})
	// A release binary (launcher + compressed kedge) runs the kedge it
	// extracted into the data dir.
	if os.Getenv("KEDGE_RELEASE_BIN") != "" {
		extracted, _ := filepath.Glob(h.path("var/lib/kedge/data/*/kedge"))
		exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", k.cmd.Process.Pid))
		if len(extracted) != 1 || err != nil || exe != extracted[0] {
			t.Errorf("kedge runs %q (%v); extracted: %v", exe, err, extracted)
		}
	}
	// A pod: containers, mounts, the pod bridge and its rules to clean up.
	pod := `apiVersion: v1
kind: Pod
metadata: {name: pause, namespace: default}
spec:
  containers:
  - {name: pause, image: "kedge.local/pause:3.10", imagePullPolicy: Never}
`
	if out, err := kubectl(pod, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
	if out, err := kubectl("", "wait", "--for=condition=Ready", "pod/pause", "--timeout=150s"); err != nil {
		t.Fatalf("pod not Ready: %v\n%s", err, out)
	}

	// Re-running the installer unchanged leaves the service alone.
	out := h.mustInstall(t, env, args...)
	if calls := h.calls(); slices.Contains(calls, "systemctl restart kedge") {
		t.Errorf("an unchanged re-install restarted kedge: %q\n%s", calls, out)
	}

	// Uninstall, in the node's namespace as it would run on the node.
	uninstall := exec.Command("nsenter", "--net=/run/netns/"+netns, "sh", filepath.Join(h.binDir(), "kedge-uninstall.sh"))
	uninstall.Env = []string{"PATH=" + h.fake + ":" + installPath, "HOME=" + h.dir}
	if b, err := uninstall.CombinedOutput(); err != nil {
		t.Fatalf("kedge-uninstall.sh: %v\n%s", err, b)
	} else {
		t.Logf("kedge-uninstall.sh:\n%s", b)
	}
	select {
	case <-k.done:
	case <-time.After(30 * time.Second):
		t.Fatal("kedge still runs after kedge-uninstall.sh")
	}
	if calls := h.calls(); !slices.Contains(calls, "systemctl stop kedge") || !slices.Contains(calls, "systemctl disable kedge") {
		t.Errorf("uninstall asked the service manager: %q; want stop and disable", calls)
	}
	wantNothingLeft(t, h, netns)
}

// wantNothingLeft checks that no file of the installation is left, and no
// mount, interface, rule, nftables table or container process of kedge's.
func wantNothingLeft(t *testing.T, h *host, netns string) {
	t.Helper()
	for _, p := range listTree(h.dir) {
		st, err := os.Lstat(filepath.Join(h.dir, p))
		if err != nil || st.IsDir() || strings.HasPrefix(p, "fakebin/") || p == "calls" {
			continue
		}
		t.Errorf("left after uninstall: %s", p)
	}
	for _, dir := range []string{h.configDir(), h.path("var/lib/kedge"), h.path("run/kedge")} {
		if _, err := os.Stat(dir); err == nil {
			t.Errorf("left after uninstall: %s", dir)
		}
	}
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if strings.Contains(line, h.dir) {
			t.Errorf("mount left after uninstall: %s", line)
		}
	}
	links, _ := exec.Command("ip", "-n", netns, "-o", "link", "show").CombinedOutput()
	for _, line := range strings.Split(strings.TrimSpace(string(links)), "\n") {
		f := strings.Fields(line)
		if len(f) > 1 && strings.TrimSuffix(strings.Split(f[1], "@")[0], ":") != "lo" && !strings.HasPrefix(f[1], "kedge-inst") {
			t.Errorf("interface left after uninstall: %s", line)
		}
	}
	for _, ipt := range []string{"iptables-save", "ip6tables-save"} {
		rules, err := exec.Command("ip", "netns", "exec", netns, ipt).CombinedOutput()
		if err != nil {
			continue
		}
		for _, line := range strings.Split(string(rules), "\n") {
			if strings.Contains(line, "KUBE-") || strings.Contains(line, "FLANNEL-") || strings.Contains(line, "CNI-") {
				t.Errorf("%s rule left after uninstall: %s", ipt, line)
			}
		}
	}
	if _, err := exec.LookPath("nft"); err == nil {
		tables, _ := exec.Command("ip", "netns", "exec", netns, "nft", "list", "tables").CombinedOutput()
		for _, name := range []string{"kube-proxy", "cni_plugins_masquerade"} {
			if strings.Contains(string(tables), name) {
				t.Errorf("nftables table %s left after uninstall:\n%s", name, tables)
			}
		}
	}
	if procs := cgroupProcs(cgroupName); len(procs) > 0 {
		t.Errorf("processes left in the kubelet's cgroup after uninstall: %v", procs)
	}
}

// publishFile publishes a copy of the binary at path.
func (r *release) publishFile(t *testing.T, path string) {
	t.Helper()
	name := "kedge-" + artifactArch()
	src, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer src.Close()
	dst, err := os.OpenFile(filepath.Join(r.dir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.New()
	if _, err := io.Copy(io.MultiWriter(dst, sum), src); err != nil {
		t.Fatal(err)
	}
	if err := dst.Close(); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(r.dir, name+".sha256"), []byte(hex.EncodeToString(sum.Sum(nil))+"  "+name+"\n"), 0o644); err != nil {
		t.Fatal(err)
	}
}

// execStart returns the argv of a unit's ExecStart=, unquoted as systemd
// does for the quoting install.sh writes: '...' with \\ and \' inside,
// and %% and $$ for % and $.
func execStart(unit string) ([]string, error) {
	i := strings.Index(unit, "\nExecStart=")
	if i < 0 {
		return nil, fmt.Errorf("no ExecStart= in the unit:\n%s", unit)
	}
	line := unit[i+len("\nExecStart="):]
	var joined strings.Builder
	for _, l := range strings.Split(line, "\n") {
		if rest, ok := strings.CutSuffix(l, "\\"); ok {
			joined.WriteString(rest + " ")
			continue
		}
		joined.WriteString(l)
		break
	}
	s := joined.String()
	var argv []string
	var word strings.Builder
	inWord, quoted := false, false
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case quoted && c == '\\' && i+1 < len(s):
			i++
			word.WriteByte(s[i])
		case quoted && c == '\'':
			quoted = false
		case !quoted && c == '\'':
			quoted, inWord = true, true
		case !quoted && (c == ' ' || c == '\t'):
			if inWord {
				argv = append(argv, word.String())
				word.Reset()
				inWord = false
			}
		case (c == '%' || c == '$') && i+1 < len(s) && s[i+1] == c:
			i++
			word.WriteByte(c)
			inWord = true
		default:
			word.WriteByte(c)
			inWord = true
		}
	}
	if quoted {
		return nil, fmt.Errorf("unterminated quote in ExecStart=%s", s)
	}
	if inWord {
		argv = append(argv, word.String())
	}
	return argv, nil
}

func TestExecStartParsing(t *testing.T) {
	got, err := execStart("[Service]\nExecStart=/usr/local/bin/kedge \\\n    'server' \\\n    'a b' \\\n    'it\\'s' \\\n    '100%%$$'\n[Install]\n")
	want := []string{"/usr/local/bin/kedge", "server", "a b", "it's", "100%$"}
	if err != nil || !slices.Equal(got, want) {
		t.Errorf("execStart = %q, %v; want %q", got, err, want)
	}
}

// newNetns makes a network namespace with loopback and an interface
// holding the node's address, and deletes it at the end of the test.
func newNetns(t *testing.T) string {
	t.Helper()
	name := fmt.Sprintf("kedge-inst-%d", os.Getpid())
	run := func(args ...string) {
		t.Helper()
		if out, err := exec.Command("ip", args...).CombinedOutput(); err != nil {
			t.Fatalf("ip %s: %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("netns", "add", name)
	t.Cleanup(func() { exec.Command("ip", "netns", "delete", name).Run() })
	run("-n", name, "link", "set", "lo", "up")
	// A veth pair with both ends inside: the kernel may lack "dummy".
	run("link", "add", nodeIface, "netns", name, "type", "veth", "peer", "name", nodePeer, "netns", name)
	run("-n", name, "addr", "add", nodeIP+"/24", "dev", nodeIface)
	run("-n", name, "link", "set", nodeIface, "up")
	run("-n", name, "link", "set", nodePeer, "up")
	return name
}

// service is kedge started the way its unit starts it.
type service struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error
}

func (s *service) running() bool {
	select {
	case <-s.done:
		return false
	default:
		return true
	}
}

// startService runs argv in netns with the variables of envFile (read by
// sh, as OpenRC and the by-hand start read it), NOTIFY_SOCKET and nothing
// of the test's own environment.
func startService(t *testing.T, netns, envFile, notifySocket, logFile string, argv []string) *service {
	t.Helper()
	log, err := os.Create(logFile)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, "sh", "-c", `set -a; . "$0"; set +a; exec "$@"`, envFile}, argv...)...)
	cmd.Env = []string{"PATH=" + installPath, "NOTIFY_SOCKET=" + notifySocket}
	cmd.Stdout, cmd.Stderr = log, log
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	s := &service{cmd: cmd, done: make(chan struct{})}
	go func() {
		s.err = cmd.Wait()
		log.Close()
		close(s.done)
	}()
	return s
}

func listenNotify(t *testing.T, path string) *net.UnixConn {
	t.Helper()
	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitNotify returns the first message kedge sends to its notify socket.
func (s *service) waitNotify(t *testing.T, conn *net.UnixConn, timeout time.Duration) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	go func() {
		select {
		case <-s.done:
		case <-ctx.Done():
		}
		conn.SetReadDeadline(time.Now())
	}()
	buf := make([]byte, 256)
	n, err := conn.Read(buf)
	if err != nil {
		if !s.running() {
			t.Fatalf("kedge exited before it was ready: %v", s.err)
		}
		t.Fatalf("no sd_notify message from kedge within %s: %v", timeout, err)
	}
	return string(bytes.TrimSpace(buf[:n]))
}

func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(500 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}

// cgroupRoot creates the kubelet's cgroup root in every hierarchy, so this
// kubelet never manages another's pods, and returns a function removing it.
func cgroupRoot(t *testing.T, name string) func() {
	t.Helper()
	dirs := cgroup.Create(name)
	return func() {
		for _, d := range cgroup.Remove(dirs, 10*time.Second) {
			t.Errorf("cgroup %s could not be removed", d)
		}
	}
}

// cgroupProcs lists the processes in cgroup name and below.
func cgroupProcs(name string) []string {
	var procs []string
	for _, h := range cgroup.Hierarchies() {
		filepath.WalkDir(filepath.Join(h, name), func(p string, e os.DirEntry, err error) error {
			if err == nil && e.Name() == "cgroup.procs" {
				data, _ := os.ReadFile(p)
				procs = append(procs, strings.Fields(string(data))...)
			}
			return nil
		})
	}
	slices.Sort(procs)
	return slices.Compact(procs)
}

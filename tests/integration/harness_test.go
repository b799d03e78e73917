// Package integration runs the real bin/kedge as root and drives it with the
// stock /usr/bin/kubectl, asserting on what a user sees.
package integration

import (
	"bytes"
	"compress/gzip"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const sharedNodeName = "kedge-test-node"

var (
	imagesDir  string
	kedgeBin   string
	kubectlBin = "/usr/bin/kubectl"
	shared     *node
)

func TestMain(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "integration tests start kedge as root: run them as root (scripts/test does)")
		return 1
	}
	kedgeBin = os.Getenv("KEDGE_BIN")
	if kedgeBin == "" {
		kedgeBin, _ = filepath.Abs("../../bin/kedge")
	}
	if _, err := os.Stat(kedgeBin); err != nil {
		fmt.Fprintf(os.Stderr, "kedge binary %s: %v (run scripts/build first)\n", kedgeBin, err)
		return 1
	}
	if k := os.Getenv("KUBECTL"); k != "" {
		kubectlBin = k
	}
	if _, err := os.Stat(kubectlBin); err != nil {
		fmt.Fprintf(os.Stderr, "stock kubectl %s: %v\n", kubectlBin, err)
		return 1
	}
	imagesDir = os.Getenv("KEDGE_TEST_IMAGES")
	if imagesDir == "" {
		imagesDir, _ = filepath.Abs("../../bin/images")
	}
	if _, err := os.Stat(filepath.Join(imagesDir, "hello-v1.tar")); err != nil {
		fmt.Fprintf(os.Stderr, "test images in %s: %v (run tests/images/build.sh)\n", imagesDir, err)
		return 1
	}
	dir, err := os.MkdirTemp("", "kedge-test-shared-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// The shared node runs an agent, with the test images in its air-gap
	// directory from the start.
	for _, img := range []string{"hello-v1.tar", "worker.tar"} {
		if err := copyFile(filepath.Join(imagesDir, img), filepath.Join(dir, "data", "agent", "images", img)); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 1
		}
	}
	// The add-on images archive of a release (Traefik), as install.sh
	// places it.
	addons := os.Getenv("KEDGE_TEST_ADDONS")
	if addons == "" {
		addons, _ = filepath.Abs(filepath.Join("../../bin/addons", runtime.GOARCH, "kedge-addons.tar.zst"))
	}
	if err := copyFile(addons, filepath.Join(dir, "data", "agent", "images", "kedge-addons.tar.zst")); err != nil {
		fmt.Fprintf(os.Stderr, "add-on images archive: %v (run scripts/addon-images)\n", err)
		return 1
	}
	// One archive gzip-compressed, as users often ship them.
	if err := gzipFile(filepath.Join(imagesDir, "hello-v2.tar"), filepath.Join(dir, "data", "agent", "images", "hello-v2.tar.gz")); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 1
	}
	// A registry on loopback, reached only through the mirror configured
	// in registries.yaml (--private-registry).
	regFile, stopRegistry, err := startMirrorRegistry(dir)
	if err != nil {
		fmt.Fprintf(os.Stderr, "test registry: %v\n", err)
		return 1
	}
	defer stopRegistry()
	shared, err = startAgentNode(dir, "--private-registry", regFile,
		"--node-name", sharedNodeName,
		"--node-label", "kedge.test/role=shared",
		"--node-taint", "kedge.test/soft=yes:PreferNoSchedule",
		"--kubelet-arg", "max-pods=250")
	if err != nil {
		fmt.Fprintf(os.Stderr, "start shared node: %v\n", err)
		if shared != nil {
			shared.stop()
			killall(shared)
			fmt.Fprint(os.Stderr, shared.logTail(60))
		}
		return 1
	}
	code := m.Run()
	if err := shared.stop(); err != nil {
		fmt.Fprintf(os.Stderr, "stop shared node: %v\n", err)
		code = 1
	}
	// Whatever the tests did, leave no container, mount or rule behind.
	if out, err := killall(shared); err != nil {
		fmt.Fprintf(os.Stderr, "kedge-killall.sh: %v\n%s", err, out)
		code = 1
	}
	if code != 0 {
		fmt.Fprintf(os.Stderr, "--- shared node log ---\n%s", shared.report(80))
	} else {
		os.RemoveAll(dir)
	}
	return code
}

// node is one kedge server started by a test.
type node struct {
	// netns, if set, is the network namespace kedge and kubectl run in.
	netns string
	// hostname, if set, is kedge's host name (a UTS namespace of its own):
	// servers on one machine then have distinct identities in leases.
	hostname   string
	dir        string // test root: data/, kubeconfig, config.yaml, kedge.log
	port       int
	kubeconfig string
	args       []string
	env        []string // extra environment, e.g. KEDGE_TOKEN
	cmd        *exec.Cmd
	exited     chan struct{}
	exitErr    error
}

func (n *node) dataDir() string { return filepath.Join(n.dir, "data") }
func (n *node) logFile() string { return filepath.Join(n.dir, "kedge.log") }

// startAgentNode starts a server with its agent and waits until the node
// is Ready and the server says it is ready (its add-ons applied: the node
// comes first).
func startAgentNode(dir string, extra ...string) (*node, error) {
	n, err := newNode(dir, extra, true)
	if err != nil {
		return nil, err
	}
	if err := n.start(); err != nil {
		return n, err
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		return n, err
	}
	if err := n.waitNodeReady(3 * time.Minute); err != nil {
		return n, err
	}
	return n, n.waitLogged("kedge server is ready", time.Minute)
}

// waitLogged waits until kedge's log since its last start has msg.
func (n *node) waitLogged(msg string, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		if strings.Contains(sinceStart(n), msg) {
			return nil
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("kedge did not log %q within %s", msg, timeout)
}

func (n *node) waitNodeReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	var out string
	for time.Now().Before(deadline) {
		out, _ = n.kubectlErr("get", "nodes", "-o", `jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}`)
		if out == "True" {
			return nil
		}
		time.Sleep(500 * time.Millisecond)
	}
	nodes, _ := n.kubectlErr("describe", "nodes")
	return fmt.Errorf("node not Ready after %s (%q):\n%s", timeout, out, nodes)
}

func gzipFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	zw := gzip.NewWriter(&buf)
	zw.Write(data)
	if err := zw.Close(); err != nil {
		return err
	}
	return os.WriteFile(dst, buf.Bytes(), 0o644)
}

func copyFile(src, dst string) error {
	data, err := os.ReadFile(src)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	return os.WriteFile(dst, data, 0o644)
}

// newNode prepares a node in dir on a free port without starting it; only
// agent nodes run containerd and a kubelet.
func newNode(dir string, extra []string, withAgent bool) (*node, error) {
	port, err := freePort()
	if err != nil {
		return nil, err
	}
	n := &node{dir: dir, port: port, kubeconfig: filepath.Join(dir, "kubeconfig.yaml")}
	cfg := filepath.Join(dir, "config.yaml")
	if _, err := os.Stat(cfg); os.IsNotExist(err) {
		if err := os.WriteFile(cfg, nil, 0o600); err != nil {
			return nil, err
		}
	}
	n.args = append([]string{"server",
		"--config", cfg,
		"--data-dir", n.dataDir(),
		"--https-listen-port", strconv.Itoa(port),
		"--write-kubeconfig", n.kubeconfig,
		"--run-dir", filepath.Join(dir, "run"),
	}, extra...)
	if !withAgent {
		n.args = append(n.args, "--disable-agent")
	}
	return n, nil
}

// startNode starts a node and waits until the API is ready.
func startNode(dir string, extra []string) (*node, error) {
	n, err := newNode(dir, extra, false)
	if err != nil {
		return nil, err
	}
	if err := n.start(); err != nil {
		return n, err
	}
	return n, n.waitReady(3 * time.Minute)
}

func (n *node) start() error {
	log, err := os.OpenFile(n.logFile(), os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	fmt.Fprintf(log, "=== start %s %s\n", kedgeBin, strings.Join(n.args, " "))
	n.cmd = inNetns(n.netns, kedgeBin, n.args...)
	if n.hostname != "" {
		n.cmd = inNetns(n.netns, "unshare", append([]string{"--uts", "--", "sh", "-c", `hostname "$0" && exec "$@"`, n.hostname, kedgeBin}, n.args...)...)
	}
	n.cmd.Stdout, n.cmd.Stderr = log, log
	n.cmd.Env = append(cleanEnv(), n.env...)
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := n.cmd.Start(); err != nil {
		log.Close()
		return err
	}
	n.exited = make(chan struct{})
	go func() {
		n.exitErr = n.cmd.Wait()
		log.Close()
		close(n.exited)
	}()
	return nil
}

// cleanEnv is the test's environment without KEDGE_* and KUBECONFIG, so a
// developer's settings cannot leak into a test.
func cleanEnv() []string {
	var env []string
	for _, e := range os.Environ() {
		if strings.HasPrefix(e, "KEDGE_") || strings.HasPrefix(e, "KUBECONFIG=") || strings.HasPrefix(e, "NOTIFY_SOCKET=") {
			continue
		}
		env = append(env, e)
	}
	return env
}

func (n *node) waitReady(timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for time.Now().Before(deadline) {
		select {
		case <-n.exited:
			return fmt.Errorf("kedge exited before it was ready: %v", n.exitErr)
		default:
		}
		if _, err := os.Stat(n.kubeconfig); err == nil {
			out, err := n.kubectlErr("get", "--raw", "/readyz")
			if err == nil && strings.TrimSpace(out) == "ok" {
				return nil
			}
		}
		time.Sleep(250 * time.Millisecond)
	}
	return fmt.Errorf("API not ready after %s", timeout)
}

// signal sends sig to kedge and waits for it to exit.
func (n *node) signalAndWait(sig syscall.Signal, timeout time.Duration) error {
	if n.cmd == nil || n.cmd.Process == nil {
		return nil
	}
	select {
	case <-n.exited:
		return n.exitErr
	default:
	}
	_ = n.cmd.Process.Signal(sig)
	select {
	case <-n.exited:
		return n.exitErr
	case <-time.After(timeout):
		_ = n.cmd.Process.Kill()
		<-n.exited
		return fmt.Errorf("kedge did not exit within %s of %v", timeout, sig)
	}
}

// stop stops kedge gracefully; it is an error if that fails.
func (n *node) stop() error { return n.signalAndWait(syscall.SIGTERM, time.Minute) }

// kill stops kedge with SIGKILL, as a crash would.
func (n *node) kill() { _ = n.signalAndWait(syscall.SIGKILL, 30*time.Second) }

// report is what a failed test prints of a node's log: first the lines
// that say why it stopped (kedge's stop reason, a stop that timed out, a
// panic's first line), which a long stack trace would push out of the
// tail, then the tail.
func (n *node) report(lines int) string {
	data, _ := os.ReadFile(n.logFile())
	all := strings.Split(string(data), "\n")
	var why []string
	for _, l := range all {
		if strings.Contains(l, "msg=stopping") || strings.Contains(l, "stop timed out") || strings.Contains(l, "Observed a panic") ||
			strings.HasPrefix(l, "panic: ") || strings.HasPrefix(l, "fatal error: ") {
			why = append(why, l)
		}
	}
	if len(why) > 10 {
		why = why[:10]
	}
	return fmt.Sprintf("why it stopped:\n%s\n... tail:\n%s", strings.Join(why, "\n"), lastLines(all, lines))
}

func (n *node) logTail(lines int) string {
	data, _ := os.ReadFile(n.logFile())
	return lastLines(strings.Split(string(data), "\n"), lines)
}

func lastLines(all []string, n int) string {
	if len(all) > n {
		all = all[len(all)-n:]
	}
	return strings.Join(all, "\n") + "\n"
}

// kubectlErr runs the stock kubectl against the node.
func (n *node) kubectlErr(args ...string) (string, error) {
	return n.kubectlIn("", args...)
}

func (n *node) kubectlIn(stdin string, args ...string) (string, error) {
	return kubectlRunIn(n.netns, n.kubeconfig, stdin, args...)
}

// inNetns is exec.Command, entered into a network namespace if netns is
// set (nsenter, not "ip netns exec": that would remount /sys and hide the
// host's cgroups from the kubelet).
func inNetns(netns, name string, args ...string) *exec.Cmd {
	if netns == "" {
		return exec.Command(name, args...)
	}
	return exec.Command("nsenter", append([]string{"--net=/run/netns/" + netns, name}, args...)...)
}

// runKubectlWith runs kubectl with another kubeconfig.
func runKubectlWith(kubeconfig string, args ...string) (string, error) {
	return kubectlRun(kubeconfig, "", args...)
}

func kubectlRun(kubeconfig, stdin string, args ...string) (string, error) {
	return kubectlRunIn("", kubeconfig, stdin, args...)
}

func kubectlRunIn(netns, kubeconfig, stdin string, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := inNetns(netns, kubectlBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	go func() {
		<-ctx.Done()
		if cmd.Process != nil {
			cmd.Process.Kill()
		}
	}()
	cmd.Env = cleanEnv()
	if stdin != "" {
		cmd.Stdin = strings.NewReader(stdin)
	}
	// On success only stdout counts: kubectl also logs to stderr (e.g. a
	// spurious "Unknown stream id" from exec over websockets). A failure
	// returns both, for its error message.
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String() + stderr.String(), err
	}
	return stdout.String(), nil
}

// kubectl runs kubectl and fails the test on error.
func (n *node) kubectl(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.kubectlErr(args...)
	if err != nil {
		t.Fatalf("kubectl %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

// apply pipes a manifest to kubectl apply -f -.
func (n *node) apply(t *testing.T, manifest string) {
	t.Helper()
	if out, err := n.kubectlIn(manifest, "apply", "-f", "-"); err != nil {
		t.Fatalf("kubectl apply: %v\n%s", err, out)
	}
}

// eventually polls cond until it returns nil or the timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	var err error
	for time.Now().Before(deadline) {
		if err = cond(); err == nil {
			return
		}
		time.Sleep(250 * time.Millisecond)
	}
	t.Fatalf("%s: not true after %s: %v", what, timeout, err)
}

// ownNode starts a node for one test and stops it at the end, printing its
// log if the test failed.
func ownNode(t *testing.T, extra ...string) *node {
	t.Helper()
	n, err := startNode(t.TempDir(), extra)
	t.Cleanup(func() {
		if n != nil {
			n.stop()
			if t.Failed() {
				t.Logf("--- kedge log ---\n%s", n.report(60))
			}
		}
	})
	if err != nil {
		t.Fatalf("start kedge: %v", err)
	}
	return n
}

func freePort() (int, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port, nil
}

// privilegedNamespace is namespace, labelled to opt out of the baseline
// Pod Security Standard kedge enforces (for hostPath, hostNetwork and
// hostPort pods), as a user would label it.
func privilegedNamespace(t *testing.T, n *node) string {
	t.Helper()
	ns := namespace(t, n)
	n.kubectl(t, "label", "namespace", ns, "pod-security.kubernetes.io/enforce=privileged")
	return ns
}

// namespace creates a namespace unique to the test on the shared node.
func namespace(t *testing.T, n *node) string {
	t.Helper()
	ns := strings.ToLower(strings.NewReplacer("/", "-", "_", "-").Replace(t.Name()))
	if len(ns) > 50 {
		ns = ns[:50]
	}
	n.kubectl(t, "create", "namespace", ns)
	t.Cleanup(func() { n.kubectlErr("delete", "namespace", ns, "--wait=false") })
	return ns
}

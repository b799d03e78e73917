package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/kedge-dev/kedge/tests/internal/cgroup"
	isandbox "github.com/kedge-dev/kedge/tests/internal/sandbox"
)

// The cluster's LAN: a veth pair between the server's namespace and the
// agent's, and nothing else.
const (
	serverIP = "10.252.0.1"
	agentIP  = "10.252.0.2"
	apiPort  = 6443
)

// node is one kedge process of the cluster, in its namespace.
type node struct {
	name   string // node name
	short  string // its directory under the sandbox: socket paths are short
	netns  string
	cgroup string
	ip     string
	iface  string
	cmd    *exec.Cmd
	dir    string
	// exited is closed when the process has ended.
	exited chan struct{}
}

func (n *node) dataDir() string { return filepath.Join(n.dir, "data") }
func (n *node) logFile() string { return filepath.Join(n.dir, "kedge.log") }

// runDir is on the sandbox's tmpfs, as /run/kedge is.
func (n *node) runDir(sb *isandbox.Sandbox) string { return filepath.Join(sb.Dir, "run", n.short) }

// cluster is the server node and the agent node of one run.
type cluster struct {
	sb         *isandbox.Sandbox
	server     *node
	agent      *node
	kubeconfig string
	kubectl    string
	// registries is the nodes' registries.yaml (the mirror).
	registries string
}

// newCluster makes the sandbox: two namespaces joined by a veth pair, a
// cgroup root per kubelet, a directory per node holding the images.
func newCluster(workDir, images, kubectl string) (*cluster, error) {
	name := fmt.Sprintf("kconf-%d", os.Getpid())
	sb, err := isandbox.New(workDir, name)
	if err != nil {
		return nil, err
	}
	c := &cluster{sb: sb, kubectl: kubectl, kubeconfig: filepath.Join(sb.Dir, "kubeconfig.yaml")}
	c.server = &node{name: "conformance-server", short: "s", netns: name, cgroup: "/" + name, ip: serverIP, iface: "kconf0"}
	c.agent = &node{name: "conformance-agent", short: "a", netns: name + "-b", cgroup: "/" + name + "-b", ip: agentIP, iface: "kconf1"}
	if err := c.network(); err != nil {
		c.remove(false)
		return nil, err
	}
	sb.CgroupDirs = append(sb.CgroupDirs, cgroup.Create(strings.TrimPrefix(c.agent.cgroup, "/"))...)
	for _, n := range []*node{c.server, c.agent} {
		n.dir = filepath.Join(sb.Dir, n.short)
		imgDir := filepath.Join(n.dataDir(), "agent", "images")
		if err := os.MkdirAll(imgDir, 0o755); err != nil {
			c.remove(false)
			return nil, err
		}
		if err := linkOrCopy(images, filepath.Join(imgDir, filepath.Base(images))); err != nil {
			c.remove(false)
			return nil, err
		}
		if err := os.WriteFile(filepath.Join(n.dir, "config.yaml"), nil, 0o600); err != nil {
			c.remove(false)
			return nil, err
		}
	}
	return c, nil
}

func (c *cluster) network() error {
	if err := c.sb.AddNetns(c.agent.netns); err != nil {
		return err
	}
	s, a := c.server, c.agent
	for _, st := range [][]string{
		{"-n", s.netns, "link", "add", s.iface, "type", "veth", "peer", "name", a.iface, "netns", a.netns},
		{"-n", s.netns, "addr", "add", s.ip + "/24", "dev", s.iface},
		{"-n", a.netns, "addr", "add", a.ip + "/24", "dev", a.iface},
		{"-n", s.netns, "link", "set", s.iface, "up"},
		{"-n", a.netns, "link", "set", a.iface, "up"},
		// A default route on each side, so a node has one, as a host has;
		// it leads to the other node and no further.
		{"-n", s.netns, "route", "add", "default", "via", a.ip},
		{"-n", a.netns, "route", "add", "default", "via", s.ip},
	} {
		if err := isandbox.IP(st...); err != nil {
			return err
		}
	}
	return nil
}

// start starts the server (with its agent) and waits for its node, then
// the agent, as the two-node test does: one kubelet at a time, since all
// kubelets of a host share /var/lib/kubelet/device-plugins/kubelet.sock.
func (c *cluster) start(ctx context.Context, kedge string) error {
	s, a := c.server, c.agent
	logf("starting the server %s in netns %s (log %s)", s.name, s.netns, s.logFile())
	err := c.startNode(s, kedge, "server",
		"--write-kubeconfig", c.kubeconfig, "--advertise-address", s.ip)
	if err != nil {
		return err
	}
	if err := c.waitReady(ctx, s, 5*time.Minute); err != nil {
		return err
	}
	token, err := os.ReadFile(filepath.Join(s.dataDir(), "server", "token"))
	if err != nil {
		return err
	}
	logf("starting the agent %s in netns %s (log %s)", a.name, a.netns, a.logFile())
	err = c.startNode(a, kedge, "agent",
		"--server", fmt.Sprintf("https://%s:%d", s.ip, apiPort), "--token", strings.TrimSpace(string(token)))
	if err != nil {
		return err
	}
	return c.waitReady(ctx, a, 5*time.Minute)
}

// startNode starts kedge in the node's network namespace and a mount
// namespace of its own, where /var/log/pods and /var/log/containers are
// the node's directories: a kubelet removes every pod log directory of a
// pod it does not run, so two kubelets sharing them would remove each
// other's pods' logs (on separate hosts, as in real clusters, they do not).
func (c *cluster) startNode(n *node, kedge, role string, extra ...string) error {
	for _, d := range []string{"/var/log/pods", "/var/log/containers", filepath.Join(n.dir, "pods"), filepath.Join(n.dir, "containers")} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return err
		}
	}
	const script = `mount --bind "$1" /var/log/pods && mount --bind "$2" /var/log/containers && shift 2 && exec "$@"`
	args := append([]string{"--net=/run/netns/" + n.netns, "--",
		"unshare", "--mount", "--propagation", "slave", "--",
		"/bin/sh", "-c", script, "sh", filepath.Join(n.dir, "pods"), filepath.Join(n.dir, "containers"),
		kedge, role,
		"--config", filepath.Join(n.dir, "config.yaml"),
		"--data-dir", n.dataDir(), "--run-dir", n.runDir(c.sb),
		"--node-name", n.name, "--node-ip", n.ip, "--flannel-iface", n.iface,
		"--kubelet-arg", "cgroup-root=" + n.cgroup, "--private-registry", c.registries}, extra...)
	log, err := os.Create(n.logFile())
	if err != nil {
		return err
	}
	n.cmd = exec.Command("nsenter", args...)
	n.cmd.Env = cleanEnv()
	n.cmd.Stdout, n.cmd.Stderr = log, log
	// Its own process group: a Ctrl-C reaches this runner, which stops it.
	n.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	err = n.cmd.Start()
	log.Close()
	if err != nil {
		return err
	}
	n.exited = make(chan struct{})
	go func() {
		_ = n.cmd.Wait()
		close(n.exited)
	}()
	return nil
}

// cleanEnv is this process's environment without kedge's and kubectl's
// variables, so the nodes' flags alone configure them.
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

// waitReady waits for node n to be Ready, or its process to end.
func (c *cluster) waitReady(ctx context.Context, n *node, limit time.Duration) error {
	deadline := time.Now().Add(limit)
	begin := time.Now()
	for {
		out, _ := c.kubectlOut(ctx, "get", "node", n.name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if out == "True" {
			logf("node %s Ready after %s", n.name, time.Since(begin).Round(time.Second))
			return nil
		}
		select {
		case <-n.exited:
			return fmt.Errorf("kedge on %s exited; its log ends:\n%s", n.name, tail(n.logFile(), 30))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(2 * time.Second):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("node %s not Ready after %s; its log ends:\n%s", n.name, limit, tail(n.logFile(), 30))
		}
	}
}

// kubectlOut runs kubectl against the cluster, from the server's
// namespace (the only place its address is reachable).
func (c *cluster) kubectlOut(ctx context.Context, args ...string) (string, error) {
	cmd := c.inServerNetns(ctx, c.kubectl, append([]string{"--kubeconfig", c.kubeconfig}, args...)...)
	out, err := cmd.Output()
	return strings.TrimSpace(string(out)), err
}

// inServerNetns is a command run in the server's network namespace.
func (c *cluster) inServerNetns(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, "nsenter", append([]string{"--net=/run/netns/" + c.server.netns, "--", bin}, args...)...)
	cmd.Env = cleanEnv()
	return cmd
}

// stop stops both nodes as a user does (SIGTERM, the agent first), then
// removes the sandbox with every process left in it (the pods' shims and
// containers, as kedge-killall.sh would) and the CNI library's cache files
// of its containers, the one thing the nodes keep outside it.
func (c *cluster) stop(keep bool) {
	var ids []string
	for _, n := range []*node{c.agent, c.server} {
		ids = append(ids, isandbox.ContainerIDs(n.runDir(c.sb))...)
		if n.exited == nil {
			continue
		}
		_ = n.cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-n.exited:
		case <-time.After(60 * time.Second):
			logf("%s did not stop within 60s of SIGTERM: killing it", n.name)
			_ = n.cmd.Process.Kill()
			<-n.exited
		}
	}
	c.remove(keep)
	isandbox.RemovePodFiles(nil, ids)
}

func (c *cluster) remove(keep bool) { c.sb.Remove(keep, logf) }

// linkOrCopy hard-links src to dst, or copies it across file systems.
func linkOrCopy(src, dst string) error {
	if err := os.Link(src, dst); err == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := os.Create(dst)
	if err != nil {
		return err
	}
	if _, err := io.Copy(out, in); err != nil {
		out.Close()
		return err
	}
	return out.Close()
}

// tail returns the last n lines of a file.
func tail(path string, n int) string {
	data, _ := os.ReadFile(path)
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// onSignal cancels ctx on SIGINT or SIGTERM, so the run stops its
// cluster and removes the sandbox before it exits.
func onSignal(cancel context.CancelFunc) {
	ch := make(chan os.Signal, 1)
	signal.Notify(ch, syscall.SIGINT, syscall.SIGTERM)
	go func() {
		s := <-ch
		logf("%s: stopping the suite and the cluster", s)
		cancel()
	}()
}

var errFailed = errors.New("tests failed")

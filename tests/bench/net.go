package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kedge-dev/kedge/tests/internal/cgroup"
)

// systemKedgeNet is two kedge nodes, a server (its agent included) in the
// sandbox's namespace and an agent in a second one, on the sandbox's LAN,
// with the flannel backend the run's variant names: the pod-to-pod
// throughput between them.
const systemKedgeNet = "kedge-net"

// netBackends are the backends measured, in table order.
var netBackends = []string{"vxlan", "host-gw", "wireguard-native"}

// netSeconds is how long each throughput sample sends.
const netSeconds = 5

// netSamples is how many samples each backend takes.
const netSamples = 3

func init() {
	for _, b := range netBackends {
		figures = append(figures, figure{"net_tcp_" + b, "pod-to-pod TCP throughput across two nodes, " + b + " (median of 3 × 5 s)", "Mbit/s"})
	}
}

// kedgeNetSystem runs the two nodes.
type kedgeNetSystem struct {
	spec childSpec
	cmds []*exec.Cmd
}

func (k *kedgeNetSystem) dir(node string) string { return filepath.Join(k.spec.Dir, node) }

func (k *kedgeNetSystem) kubeconfig() string { return filepath.Join(k.dir("a"), "kubeconfig.yaml") }

func (k *kedgeNetSystem) prepare(context.Context) error {
	for _, node := range []string{"a", "b"} {
		if err := os.MkdirAll(k.dir(node), 0o700); err != nil {
			return err
		}
		if err := os.WriteFile(filepath.Join(k.dir(node), "config.yaml"), nil, 0o600); err != nil {
			return err
		}
		if err := copyFile(filepath.Join(k.spec.ImagesDir, "hello-v1.tar"), filepath.Join(k.dir(node), "data", "agent", "images", "hello-v1.tar")); err != nil {
			return err
		}
		// Each kubelet under a cgroup root of its own, inside the sandbox's.
		for _, h := range cgroup.Hierarchies() {
			if err := os.MkdirAll(filepath.Join(h, k.spec.CgroupRoot, node), 0o755); err != nil {
				return err
			}
		}
	}
	return nil
}

// args are node's flags (a: the server, b: the agent).
func (k *kedgeNetSystem) args(node string, i int, extra ...string) []string {
	d := k.dir(node)
	iface := "eth0"
	if i == 1 {
		iface = "benchbr"
	}
	return append([]string{"--config", filepath.Join(d, "config.yaml"), "--data-dir", filepath.Join(d, "data"),
		"--run-dir", filepath.Join(d, "run"), "--node-name", "bench-" + node, "--node-ip", lanIP(i),
		"--flannel-iface", iface, "--flannel-backend", k.spec.Variant,
		"--kubelet-arg", "cgroup-root=" + k.spec.CgroupRoot + "/" + node}, extra...)
}

func (k *kedgeNetSystem) start() error {
	args := append([]string{"server"}, k.args("a", 1, "--write-kubeconfig", k.kubeconfig(), "--advertise-address", lanIP(1), "--token", "bench-net")...)
	cmd, err := startProc("kedge-a", filepath.Join(k.dir("a"), "kedge.log"), cleanEnv(), k.spec.Kedge, args...)
	k.cmds = append(k.cmds, cmd)
	return err
}

// afterReady starts the agent once the server's node is Ready (two
// kubelets starting at once contend for the host's device-plugin
// socket) and waits until both nodes are.
func (k *kedgeNetSystem) afterReady(ctx context.Context) error {
	client := fastClient(k.kubeconfig())
	c, cancel := context.WithTimeout(ctx, 4*time.Minute)
	defer cancel()
	if err := waitNodeReady(c, client); err != nil {
		return fmt.Errorf("node a Ready: %w", err)
	}
	data, err := os.ReadFile(filepath.Join(k.dir("a"), "data", "server", "token"))
	if err != nil {
		return err
	}
	args := append([]string{"--net=/run/netns/" + lanNetns(k.spec.Sandbox, 2), k.spec.Kedge, "agent"},
		k.args("b", 2, "--server", "https://"+lanIP(1)+":6443", "--token", strings.TrimSpace(string(data)))...)
	cmd, err := startProc("kedge-b", filepath.Join(k.dir("b"), "kedge.log"), cleanEnv(), "nsenter", args...)
	if err != nil {
		return err
	}
	k.cmds = append(k.cmds, cmd)
	for {
		out, _ := k.kubectl(c, "get", "nodes", "-o", `jsonpath={range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{end}`)
		if out == "TrueTrue" {
			return nil
		}
		if err := sleepCtx(c, 500*time.Millisecond); err != nil {
			return fmt.Errorf("both nodes Ready: %w (%q)", err, out)
		}
	}
}

func (k *kedgeNetSystem) kubectl(ctx context.Context, args ...string) (string, error) {
	out, err := exec.CommandContext(ctx, k.spec.Kedge, append([]string{"kubectl", "--kubeconfig", k.kubeconfig()}, args...)...).CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (k *kedgeNetSystem) processes() []proc {
	var ps []proc
	for i, c := range k.cmds {
		ps = append(ps, proc{"kedge-" + string(rune('a'+i)), c.Process.Pid})
	}
	return ps
}

func (k *kedgeNetSystem) stop() { stopProcs(90*time.Second, k.cmds...) }

func (k *kedgeNetSystem) logs() []string {
	return []string{filepath.Join(k.dir("a"), "kedge.log"), filepath.Join(k.dir("b"), "kedge.log")}
}

// netPods are a hello pod on each node: the sender on b, the receiver
// on a.
const netPods = `apiVersion: v1
kind: Pod
metadata: {name: receiver, namespace: default}
spec:
  nodeName: bench-a
  containers:
  - {name: hello, image: kedge.test/hello:v1, imagePullPolicy: Never}
---
apiVersion: v1
kind: Pod
metadata: {name: sender, namespace: default}
spec:
  nodeName: bench-b
  containers:
  - {name: hello, image: kedge.test/hello:v1, imagePullPolicy: Never}
`

// measureThroughput streams from the pod on b to the pod on a, through
// the hello image's /blast and /sink, netSamples times, and records the
// median in Mbit/s.
func measureThroughput(ctx context.Context, spec childSpec, res *runResult) error {
	k := &kedgeNetSystem{spec: spec}
	apply := exec.CommandContext(ctx, spec.Kedge, "kubectl", "--kubeconfig", k.kubeconfig(), "apply", "-f", "-")
	apply.Stdin = strings.NewReader(netPods)
	if out, err := apply.CombinedOutput(); err != nil {
		return fmt.Errorf("pods: %v: %s", err, out)
	}
	if out, err := k.kubectl(ctx, "wait", "--for=condition=Ready", "pod/receiver", "pod/sender", "--timeout=180s"); err != nil {
		return fmt.Errorf("pods Ready: %v: %s", err, out)
	}
	ip, err := k.kubectl(ctx, "get", "pod", "receiver", "-o", "jsonpath={.status.podIP}")
	if err != nil {
		return err
	}
	var samples []float64
	for i := 0; i < netSamples; i++ {
		out, err := k.kubectl(ctx, "exec", "sender", "--", "wget", "-qO-",
			fmt.Sprintf("http://127.0.0.1:8080/blast?addr=%s:8080&seconds=%d", ip, netSeconds))
		if err != nil {
			return fmt.Errorf("blast: %v: %s", err, out)
		}
		var bytes int64
		var secs float64
		if _, err := fmt.Sscanf(out, "%d bytes in %f s", &bytes, &secs); err != nil || secs <= 0 {
			return fmt.Errorf("blast answered %q", out)
		}
		samples = append(samples, float64(bytes)*8/secs/1e6)
	}
	res.Values["net_tcp_"+spec.Variant] = median(slices.Sorted(slices.Values(samples)))
	res.Raw["net_tcp_samples_"+spec.Variant] = samples
	return nil
}

// measureNet runs the two nodes once per backend the kernel supports.
func measureNet(ctx context.Context, o options, res *results) error {
	for _, backend := range netBackends {
		if out, err := exec.CommandContext(ctx, o.kedge, "check-config", "--flannel-backend", backend).CombinedOutput(); err != nil {
			why := "the kernel lacks what it needs"
			for _, line := range strings.Split(string(out), "\n") {
				if strings.HasPrefix(line, "missing") {
					why = strings.Join(strings.Fields(line), " ")
				}
			}
			logf("%s: %s: not measured: %s", systemKedgeNet, backend, why)
			res.Notes["net_tcp_"+backend] = "not measured: " + why
			continue
		}
		logf("%s: two nodes, %s: throughput", systemKedgeNet, backend)
		r, err := runSandboxed(ctx, o, systemKedgeNet, 1, []string{groupNet}, backend)
		if err != nil {
			return fmt.Errorf("%s %s: %w", systemKedgeNet, backend, err)
		}
		res.Runs = append(res.Runs, r)
		if v, ok := r.Values["net_tcp_"+backend]; ok {
			res.record(systemKedge, "net_tcp_"+backend, v)
		}
	}
	return nil
}

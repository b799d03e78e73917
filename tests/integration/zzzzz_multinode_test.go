package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/kedge-dev/kedge/tests/internal/cgroup"
)

// mustRun runs a command and fails the test on error.
func mustRun(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

// cgroupRoot creates a cgroup under every v1 hierarchy (or v2) for one
// test node's kubelet, so two kubelets on one host never manage each
// other's pods, and returns a function removing it.
func cgroupRoot(t *testing.T, name string) func() {
	t.Helper()
	dirs := cgroup.Create(name)
	return func() {
		// Killed processes take a moment to leave their cgroups.
		for _, d := range cgroup.Remove(dirs, 10*time.Second) {
			t.Errorf("cgroup %s could not be removed", d)
		}
	}
}

// vethPair makes network namespaces a and b (deleted when the test ends),
// joined by a veth pair ifA-ifB with the given addresses, loopback up and
// no default route: every component is given its address, and nothing
// can leave the pair.
func vethPair(t *testing.T, a, ifA string, addrsA []string, b, ifB string, addrsB []string) {
	t.Helper()
	for _, ns := range []string{a, b} {
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
	}
	mustRun(t, "ip", "link", "add", ifA, "netns", a, "type", "veth", "peer", "name", ifB, "netns", b)
	for _, side := range []struct {
		ns, link string
		addrs    []string
	}{{a, ifA, addrsA}, {b, ifB, addrsB}} {
		for _, addr := range side.addrs {
			mustRun(t, "ip", "-n", side.ns, "addr", "add", addr, "dev", side.link)
		}
		mustRun(t, "ip", "-n", side.ns, "link", "set", side.link, "up")
		mustRun(t, "ip", "-n", side.ns, "link", "set", "lo", "up")
	}
}

// helloDaemonSet runs a hello pod, ready when it serves, on every node.
const helloDaemonSet = `apiVersion: apps/v1
kind: DaemonSet
metadata: {name: hello, namespace: default}
spec:
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
`

// Two nodes, each in a network namespace of its own joined by a veth pair:
// a server on 10.250.0.1 and an agent on 10.250.0.2. Pods on the two nodes
// reach each other through flannel (VXLAN, then host-gw), a Service and
// DNS work across nodes, and NetworkPolicy holds between them.
func TestZZZZZTwoNodes(t *testing.T) {
	for _, backend := range []string{"vxlan", "host-gw"} {
		t.Run(backend, func(t *testing.T) { twoNodes(t, backend) })
	}
}

func twoNodes(t *testing.T, backend string) {
	const nsA, nsB = "kedge-test-a", "kedge-test-b"
	vethPair(t, nsA, "kedge-va", []string{"10.250.0.1/24"}, nsB, "kedge-vb", []string{"10.250.0.2/24"})
	t.Cleanup(cgroupRoot(t, "kedge-test-a"))
	t.Cleanup(cgroupRoot(t, "kedge-test-b"))
	t.Cleanup(func() {
		if procs := testContainers("/kedge-test-"); len(procs) > 0 {
			t.Errorf("container processes left after killall: %v", procs)
		}
	})

	// The server, with its agent, in A.
	a, err := newNode(t.TempDir(), []string{
		"--advertise-address", "10.250.0.1", "--node-ip", "10.250.0.1", "--node-name", "node-a",
		"--flannel-iface", "kedge-va", "--kubelet-arg", "cgroup-root=/kedge-test-a",
		"--flannel-backend", backend,
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	a.netns = nsA
	for _, img := range []string{"hello-v1.tar", "worker.tar"} {
		copyFile(filepath.Join(imagesDir, img), filepath.Join(a.dataDir(), "agent", "images", img))
	}
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.stop()
		if out, err := killall(a); err != nil {
			t.Errorf("kedge-killall.sh on node A: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("--- node A log ---\n%s", a.report(80))
		}
	})
	if err := a.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}

	// Node A's kubelet must be up before B's starts: every kubelet binds
	// the fixed /var/lib/kubelet/device-plugins/kubelet.sock, and two
	// starting at once make one exit (one kubelet per host, as upstream).
	eventually(t, 2*time.Minute, "node A Ready", func() error {
		out, _ := a.kubectlErr("get", "node", "node-a", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})

	// The agent in B joins with the server's token, given in the
	// environment as install.sh's env file gives it.
	b := &node{netns: nsB, dir: t.TempDir(), port: a.port, kubeconfig: a.kubeconfig}
	os.WriteFile(filepath.Join(b.dir, "config.yaml"), nil, 0o600)
	token, err := os.ReadFile(filepath.Join(a.dataDir(), "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	b.env = []string{"KEDGE_URL=" + fmt.Sprintf("https://10.250.0.1:%d", a.port), "KEDGE_TOKEN=" + strings.TrimSpace(string(token))}
	for _, img := range []string{"hello-v1.tar", "worker.tar"} {
		copyFile(filepath.Join(imagesDir, img), filepath.Join(b.dataDir(), "agent", "images", img))
	}
	// A token naming another CA is refused before anything is set up.
	bad := inNetns(nsB, kedgeBin, "agent", "--data-dir", filepath.Join(b.dir, "bad"), "--run-dir", filepath.Join(b.dir, "bad-run"),
		"--server", fmt.Sprintf("https://10.250.0.1:%d", a.port), "--token", "K10"+strings.Repeat("0", 64)+"::server:nope")
	bad.Env = cleanEnv()
	if out, err := bad.CombinedOutput(); err == nil || !strings.Contains(string(out), "is not the one the token names") {
		t.Errorf("an agent with another cluster's token: %v\n%s", err, out)
	}
	b.args = []string{"agent", "--config", filepath.Join(b.dir, "config.yaml"),
		"--data-dir", b.dataDir(), "--run-dir", filepath.Join(b.dir, "run"),
		"--node-ip", "10.250.0.2", "--node-name", "node-b",
		"--flannel-iface", "kedge-vb", "--kubelet-arg", "cgroup-root=/kedge-test-b",
		"--flannel-backend", backend}
	startCleaned(t, b, "node B")
	eventually(t, 3*time.Minute, "both nodes Ready", func() error {
		out, _ := a.kubectlErr("get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if !strings.Contains(out, "node-a=True") || !strings.Contains(out, "node-b=True") {
			return fmt.Errorf("nodes: %q", out)
		}
		return nil
	})

	// One hello pod and one client per node.
	a.apply(t, helloDaemonSet+`---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
`)
	a.kubectl(t, "rollout", "status", "daemonset/hello", "--timeout=180s")
	a.apply(t, strings.Replace(workerPod("default", "client", "--serve"), "spec:\n", "spec:\n  nodeName: node-b\n", 1))
	a.kubectl(t, "wait", "--for=condition=Ready", "pod/client", "--timeout=120s")
	podOnA := strings.TrimSpace(a.kubectl(t, "get", "pods", "-l", "app=hello", "--field-selector", "spec.nodeName=node-a", "-o", "jsonpath={.items[0].status.podIP}"))
	nameOnA := strings.TrimSpace(a.kubectl(t, "get", "pods", "-l", "app=hello", "--field-selector", "spec.nodeName=node-a", "-o", "jsonpath={.items[0].metadata.name}"))

	eventually(t, 60*time.Second, "a pod on node B reaches a pod on node A by IP ("+backend+")", func() error {
		out, err := a.kubectlErr("exec", "client", "--", "wget", "-qO-", "http://"+podOnA+":8080/")
		if err != nil || !strings.Contains(out, "I am "+nameOnA) {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	a.apply(t, `apiVersion: v1
kind: Service
metadata: {name: web-np, namespace: default}
spec:
  type: NodePort
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
`)
	nodePort := a.jsonpath("default", "service/web-np", "{.spec.ports[0].nodePort}")
	eventually(t, 60*time.Second, "a NodePort answers on node A's IP, from node B", func() error {
		out, err := a.kubectlErr("exec", "client", "--", "wget", "-qO-", "http://10.250.0.1:"+nodePort+"/")
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	eventually(t, 90*time.Second, "the Service by name from node B answers from both nodes", func() error {
		seen := map[string]bool{}
		for i := 0; i < 20; i++ {
			out, err := a.kubectlErr("exec", "client", "--", "wget", "-qO-", "http://web.default.svc.cluster.local/")
			if err != nil {
				return fmt.Errorf("%v %q", err, out)
			}
			if f := strings.Fields(out); len(f) >= 6 {
				seen[strings.TrimSuffix(f[5], ",")] = true
			}
		}
		if len(seen) != 2 {
			return fmt.Errorf("answered by %v", seen)
		}
		return nil
	})
	// Enforcement is the same whatever carries the packets between nodes.
	if backend == "vxlan" {
		t.Run("network policy", func(t *testing.T) { networkPolicies(t, a, b, nsB, "node-", false) })
	}
}

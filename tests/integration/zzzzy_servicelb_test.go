package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sys/unix"
)

// The servicelb node lives in a network namespace of its own, joined by a
// veth pair to a client namespace, so LoadBalancer traffic to the node's
// address comes from outside the node, as from another machine on a LAN:
//
//	client ns kedge-test-lbc: 10.251.0.1 and 10.251.0.3 (kedge-lbc)
//	node ns   kedge-test-lb:  10.251.0.2 (kedge-lbn), kedge server + agent
const (
	lbNS, lbClientNS = "kedge-test-lb", "kedge-test-lbc"
	lbNodeIP         = "10.251.0.2"
	lbClientIP       = "10.251.0.1"
	lbOtherClientIP  = "10.251.0.3"
)

// clientCurl fetches url from the client namespace, from source if set.
func clientCurl(source, url string) (string, error) {
	args := []string{"-sS", "--max-time", "3"}
	if source != "" {
		args = append(args, "--interface", source)
	}
	out, err := inNetns(lbClientNS, "curl", append(args, url)...).CombinedOutput()
	return string(out), err
}

// onNode runs a command on the servicelb node, as a user logged in there.
func onNode(name string, args ...string) (string, error) {
	out, err := inNetns(lbNS, name, args...).CombinedOutput()
	return string(out), err
}

// dialFrom opens a TCP connection from inside a network namespace: the
// socket is created on a thread switched into it, and stays there.
func dialFrom(netns, addr string) (net.Conn, error) {
	target, err := os.Open("/run/netns/" + netns)
	if err != nil {
		return nil, err
	}
	defer target.Close()
	runtime.LockOSThread()
	orig, err := os.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()))
	if err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	defer orig.Close()
	if err := unix.Setns(int(target.Fd()), unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		return nil, err
	}
	conn, dialErr := net.DialTimeout("tcp", addr, 5*time.Second)
	if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
		// Leave the thread locked: it dies with the goroutine.
		return conn, dialErr
	}
	runtime.UnlockOSThread()
	return conn, dialErr
}

func startLBNode(t *testing.T, n *node, extra ...string) {
	t.Helper()
	args := append([]string{}, n.args...)
	n.args = append(n.args, extra...)
	defer func() { n.args = args }()
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, 2*time.Minute, "node Ready", func() error {
		out, _ := n.kubectlErr("get", "node", "lb-node", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
}

// toolFreePath is a PATH of one directory linking every program of the
// host's PATH directories except the networking tools kedge carries
// (iptables, ip6tables, nft, conntrack and their kin): a host without
// those packages.
func toolFreePath(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, d := range []string{"/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin", "/bin"} {
		entries, _ := os.ReadDir(d)
		for _, e := range entries {
			name := e.Name()
			if strings.HasPrefix(name, "iptables") || strings.HasPrefix(name, "ip6tables") || strings.HasPrefix(name, "xtables") ||
				strings.HasPrefix(name, "ebtables") || strings.HasPrefix(name, "arptables") || name == "nft" || name == "conntrack" {
				continue
			}
			os.Symlink(filepath.Join(d, name), filepath.Join(dir, name)) // the first directory wins, as on PATH
		}
	}
	for _, tool := range []string{"iptables", "iptables-restore", "ip6tables", "nft", "conntrack"} {
		cmd := exec.Command("sh", "-c", "command -v "+tool)
		cmd.Env = []string{"PATH=" + dir}
		if out, err := cmd.Output(); err == nil {
			t.Fatalf("%s is still on the tool-free PATH: %s", tool, out)
		}
	}
	return dir
}

// LoadBalancer Services on a node in its own network namespace: the
// beginners' walkthroughs as written, source ranges, externalTrafficPolicy
// Local, node selection, established connections across a restart, the
// nftables kube-proxy and --disable servicelb. The node's PATH has no
// iptables, nft or conntrack: it runs on the ones kedge carries.
func TestZZZZYServiceLB(t *testing.T) {
	vethPair(t, lbNS, "kedge-lbn", []string{lbNodeIP + "/24"}, lbClientNS, "kedge-lbc", []string{lbClientIP + "/24", lbOtherClientIP + "/24"})
	t.Cleanup(cgroupRoot(t, "kedge-test-lb"))
	t.Cleanup(func() {
		if procs := testContainers("/kedge-test-lb"); len(procs) > 0 {
			t.Errorf("container processes left after killall: %v", procs)
		}
	})
	n, err := newNode(t.TempDir(), []string{
		"--advertise-address", lbNodeIP, "--node-ip", lbNodeIP, "--node-name", "lb-node",
		"--flannel-iface", "kedge-lbn", "--kubelet-arg", "cgroup-root=/kedge-test-lb",
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	n.netns = lbNS
	n.env = []string{"PATH=" + toolFreePath(t)}
	for _, img := range []string{"simple-server.tar", "flask-hello.tar", "hello-v1.tar", "hello-v2.tar"} {
		copyFile(filepath.Join(imagesDir, img), filepath.Join(n.dataDir(), "agent", "images", img))
	}
	t.Cleanup(func() {
		n.stop()
		if out, err := killall(n); err != nil {
			t.Errorf("kedge-killall.sh on the servicelb node: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("--- servicelb node log ---\n%s", n.report(100))
		}
	})
	startLBNode(t, n)
	if log := sinceStart(n); !strings.Contains(log, `msg="networking tools"`) || !strings.Contains(log, "preferBundled=true") {
		t.Fatalf("the node did not set up the networking tools kedge carries:\n%s", n.report(40))
	}

	t.Run("walkthrough imperative", func(t *testing.T) { lbImperative(t, n) })
	t.Run("walkthrough two files", func(t *testing.T) { lbTwoFiles(t, n) })
	t.Run("walkthrough self-healing", func(t *testing.T) { lbSelfHealing(t, n) })
	t.Run("source ranges and Local policy", func(t *testing.T) { lbSourceRangesAndLocal(t, n) })
	t.Run("node selection", func(t *testing.T) { lbNodeSelection(t, n) })
	t.Run("restart keeps connections, then nftables", func(t *testing.T) { lbRestartNftables(t, n) })
	t.Run("disable servicelb", func(t *testing.T) { lbDisable(t, n) })
}

// Walkthrough 2: kubectl create, expose, scale; all three pods answer on
// the node's address; deleting everything leaves nothing behind.
func lbImperative(t *testing.T, n *node) {
	n.kubectl(t, "create", "deployment", "simple-server", "--image=simple-server:v1", "--port=8080")
	n.kubectl(t, "expose", "deployment", "simple-server", "--type=LoadBalancer", "--port=8080")
	n.kubectl(t, "scale", "deployments/simple-server", "--replicas=3")
	n.kubectl(t, "rollout", "status", "deployment/simple-server", "--timeout=120s")
	seen := map[string]int{}
	eventually(t, time.Minute, "all three pods answer on "+lbNodeIP+":8080", func() error {
		out, err := onNode("curl", "-sS", "--max-time", "3", "http://"+lbNodeIP+":8080/")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		// "Hello from Kubernetes! I am <pod>, request <n>"
		if f := strings.Fields(out); len(f) >= 8 && strings.HasPrefix(out, "Hello from Kubernetes!") {
			seen[strings.TrimSuffix(f[5], ",")]++
		}
		if len(seen) < 3 {
			return fmt.Errorf("answered by %v", seen)
		}
		return nil
	})
	n.kubectl(t, "delete", "service", "simple-server")
	n.kubectl(t, "delete", "deployment", "simple-server")
	eventually(t, 2*time.Minute, "the pods are gone", func() error {
		if out, _ := n.kubectlErr("get", "pods", "-l", "app=simple-server", "-o", "name"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("pods: %s", out)
		}
		return nil
	})
	crictl := func(args ...string) (string, error) {
		cmd := exec.Command(kedgeBin, append([]string{"crictl"}, args...)...)
		cmd.Env = append(cleanEnv(), "KEDGE_DATA_DIR="+n.dataDir(), "KEDGE_RUN_DIR="+filepath.Join(n.dir, "run"))
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	if out, err := crictl("rmi", "simple-server:v1"); err != nil {
		t.Fatalf("kedge crictl rmi simple-server:v1: %v\n%s", err, out)
	}
	eventually(t, time.Minute, "nothing left behind", func() error {
		if out, _ := crictl("images"); strings.Contains(out, "simple-server") {
			return fmt.Errorf("image still there:\n%s", out)
		}
		if out, _ := onNode("ss", "-Htln", "sport = :8080"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("port 8080 still held: %s", out)
		}
		if out, _ := onNode("iptables-save"); strings.Contains(out, "simple-server") {
			return fmt.Errorf("iptables rules left for simple-server")
		}
		return nil
	})
}

// Walkthrough 3: a Deployment file and a Service file applied separately;
// kubectl get svc shows the node's address, which answers on port 80.
func lbTwoFiles(t *testing.T, n *node) {
	dir := t.TempDir()
	deploy, svc := filepath.Join(dir, "deployment.yaml"), filepath.Join(dir, "service.yaml")
	writeTestFile(t, deploy, `apiVersion: apps/v1
kind: Deployment
metadata:
  name: flask-hello
  labels:
    app: flask-hello
spec:
  replicas: 3
  selector:
    matchLabels:
      app: flask-hello
  template:
    metadata:
      labels:
        app: flask-hello
    spec:
      containers:
      - name: flask-hello
        image: flask-hello:latest
        imagePullPolicy: Never
        ports:
        - containerPort: 5000
`)
	writeTestFile(t, svc, `apiVersion: v1
kind: Service
metadata:
  name: flask-hello
spec:
  type: LoadBalancer
  selector:
    app: flask-hello
  ports:
  - port: 80
    targetPort: 5000
`)
	n.kubectl(t, "apply", "-f", deploy)
	n.kubectl(t, "apply", "-f", svc)
	var external string
	eventually(t, time.Minute, "kubectl get svc shows an EXTERNAL-IP", func() error {
		out, _ := n.kubectlErr("get", "svc", "flask-hello")
		lines := strings.Split(strings.TrimSpace(out), "\n")
		if len(lines) != 2 || !strings.Contains(lines[0], "EXTERNAL-IP") {
			return fmt.Errorf("%s", out)
		}
		external = strings.Fields(lines[1])[3]
		if external != lbNodeIP {
			return fmt.Errorf("EXTERNAL-IP %q:\n%s", external, out)
		}
		return nil
	})
	n.kubectl(t, "rollout", "status", "deployment/flask-hello", "--timeout=120s")
	eventually(t, time.Minute, "curl http://"+external+"/ answers", func() error {
		out, err := clientCurl("", "http://"+external+"/")
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// loop sends requests to url from the client namespace until stop is
// closed, counting successes and failures.
type loop struct {
	ok, failed atomic.Int64
	lastErr    atomic.Value
	stop, done chan struct{}
}

func startLoop(url string) *loop {
	l := &loop{stop: make(chan struct{}), done: make(chan struct{})}
	go func() {
		defer close(l.done)
		for {
			select {
			case <-l.stop:
				return
			default:
			}
			out, err := clientCurl("", url)
			if err == nil && strings.Contains(out, "Hello from Kubernetes!") {
				l.ok.Add(1)
			} else {
				l.failed.Add(1)
				l.lastErr.Store(fmt.Sprintf("%v: %s", err, out))
			}
			time.Sleep(20 * time.Millisecond)
		}
	}()
	return l
}

func (l *loop) end() { close(l.stop); <-l.done }

// Walkthrough 4: requests keep succeeding through a deleted pod (once the
// replacement is Ready) and through a rolling update with maxUnavailable 0.
func lbSelfHealing(t *testing.T, n *node) {
	n.apply(t, `apiVersion: apps/v1
kind: Deployment
metadata: {name: heal}
spec:
  replicas: 3
  selector: {matchLabels: {app: heal}}
  strategy:
    rollingUpdate: {maxUnavailable: 0, maxSurge: 1}
  template:
    metadata: {labels: {app: heal}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
        lifecycle:
          # Keep serving while the endpoint is withdrawn everywhere.
          preStop: {exec: {command: [sleep, "3"]}}
---
apiVersion: v1
kind: Service
metadata: {name: heal}
spec:
  type: LoadBalancer
  selector: {app: heal}
  ports: [{port: 7000, targetPort: 8080}]
`)
	n.kubectl(t, "rollout", "status", "deployment/heal", "--timeout=120s")
	url := "http://" + lbNodeIP + ":7000/"
	eventually(t, time.Minute, "the Service answers", func() error {
		_, err := clientCurl("", url)
		return err
	})

	l := startLoop(url)
	victim := strings.Fields(n.kubectl(t, "get", "pods", "-l", "app=heal", "-o", "jsonpath={.items[0].metadata.name}"))[0]
	n.kubectl(t, "delete", "pod", victim, "--wait=false")
	eventually(t, 2*time.Minute, "a replacement is Ready", func() error {
		out, _ := n.kubectlErr("get", "deployment", "heal", "-o", "jsonpath={.status.readyReplicas}/{.status.updatedReplicas}")
		names, _ := n.kubectlErr("get", "pods", "-l", "app=heal", "-o", "name")
		if out != "3/3" || strings.Contains(names, victim) {
			return fmt.Errorf("ready %s, pods %s", out, names)
		}
		return nil
	})
	l.end()
	l = startLoop(url)
	time.Sleep(3 * time.Second)
	l.end()
	if l.failed.Load() > 0 || l.ok.Load() == 0 {
		t.Errorf("after the replacement is Ready: %d ok, %d failed (%v)", l.ok.Load(), l.failed.Load(), l.lastErr.Load())
	}

	l = startLoop(url)
	n.kubectl(t, "set", "image", "deployment/heal", "hello=kedge.test/hello:v2")
	n.kubectl(t, "rollout", "status", "deployment/heal", "--timeout=180s")
	time.Sleep(2 * time.Second)
	l.end()
	if l.failed.Load() > 0 || l.ok.Load() < 10 {
		t.Errorf("during the rolling update: %d ok, %d failed (%v)", l.ok.Load(), l.failed.Load(), l.lastErr.Load())
	}
	out, _ := clientCurl("", "http://"+lbNodeIP+":7000/version")
	if !strings.Contains(out, "v2") {
		t.Errorf("after the update /version says %q", out)
	}
}

// loadBalancerSourceRanges admit one client address and not the other;
// externalTrafficPolicy Local lets the pod see the client's address.
func lbSourceRangesAndLocal(t *testing.T, n *node) {
	n.apply(t, `apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: 1
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
---
apiVersion: v1
kind: Service
metadata: {name: ranged}
spec:
  type: LoadBalancer
  selector: {app: hello}
  loadBalancerSourceRanges: [`+lbClientIP+`/32]
  ports: [{port: 7100, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: local}
spec:
  type: LoadBalancer
  externalTrafficPolicy: Local
  selector: {app: hello}
  ports: [{port: 7200, targetPort: 8080}]
`)
	n.kubectl(t, "rollout", "status", "deployment/hello", "--timeout=120s")
	checkSourceRanges(t)
	eventually(t, time.Minute, "the pod sees the client's address through a Local Service", func() error {
		if out, err := clientCurl("", "http://"+lbNodeIP+":7200/"); err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		logs, _ := n.kubectlErr("logs", "deployment/hello")
		if !strings.Contains(logs, lbClientIP+":") {
			return fmt.Errorf("pod log has no request from %s:\n%s", lbClientIP, logs)
		}
		return nil
	})
}

func checkSourceRanges(t *testing.T) {
	t.Helper()
	url := "http://" + lbNodeIP + ":7100/"
	eventually(t, time.Minute, "an admitted client is answered", func() error {
		out, err := clientCurl(lbClientIP, url)
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out, err := clientCurl(lbOtherClientIP, url); err == nil {
		t.Errorf("a client outside loadBalancerSourceRanges was answered: %s", out)
	}
}

// Once any node has the opt-in label, only labelled nodes serve.
func lbNodeSelection(t *testing.T, n *node) {
	// A second Node object (no kubelet behind it) carries the label.
	n.apply(t, `apiVersion: v1
kind: Node
metadata:
  name: lb-other
  labels: {svccontroller.kedge.io/enablelb: "true"}
`)
	t.Cleanup(func() { n.kubectlErr("delete", "node", "lb-other") })
	eventually(t, time.Minute, "lb-node stops serving", func() error {
		if in := ingressOf(n, "default", "flask-hello"); in != "" {
			return fmt.Errorf("ingress %q", in)
		}
		return nil
	})
	waitEvent(t, n, "default", "flask-hello", "Pending", "svccontroller.kedge.io/enablelb")
	n.kubectl(t, "label", "node", "lb-node", "svccontroller.kedge.io/enablelb=true")
	eventually(t, time.Minute, "a labelled lb-node serves again", func() error {
		if in := ingressOf(n, "default", "flask-hello"); in != lbNodeIP {
			return fmt.Errorf("ingress %q", in)
		}
		out, err := clientCurl("", "http://"+lbNodeIP+"/")
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	n.kubectl(t, "label", "node", "lb-node", "svccontroller.kedge.io/enablelb-")
	n.kubectl(t, "delete", "node", "lb-other")
}

// An established connection through the load balancer survives a kedge
// restart; after a restart with the nftables kube-proxy, Services and
// source ranges work the same.
func lbRestartNftables(t *testing.T, n *node) {
	// Through kube-proxy's rule, not servicelb's relay, which answers
	// until the rule is in place (and whose connections end with kedge).
	eventually(t, time.Minute, "kube-proxy's rule for "+lbNodeIP+":80", func() error {
		out, _ := onNode("iptables-save", "-t", "nat")
		for _, line := range strings.Split(out, "\n") {
			if strings.Contains(line, "-d "+lbNodeIP+"/32") && strings.Contains(line, "--dport 80 ") {
				return nil
			}
		}
		return fmt.Errorf("no rule yet")
	})
	conn, err := dialFrom(lbClientNS, lbNodeIP+":80")
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	r := bufio.NewReader(conn)
	get := func() error {
		conn.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := fmt.Fprintf(conn, "GET / HTTP/1.1\r\nHost: x\r\n\r\n"); err != nil {
			return err
		}
		resp, err := http.ReadResponse(r, nil)
		if err != nil {
			return err
		}
		defer resp.Body.Close()
		body := make([]byte, 512)
		m, _ := resp.Body.Read(body)
		if !strings.Contains(string(body[:m]), "Hello from Kubernetes!") {
			return fmt.Errorf("body %q", body[:m])
		}
		return nil
	}
	if err := get(); err != nil {
		t.Fatalf("first request: %v", err)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	startLBNode(t, n)
	if err := get(); err != nil {
		t.Errorf("the connection opened before the restart failed after it: %v", err)
	}

	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	startLBNode(t, n, "--kube-proxy-arg", "proxy-mode=nftables")
	eventually(t, time.Minute, "kube-proxy programs nftables", func() error {
		out, _ := onNode("nft", "list", "table", "ip", "kube-proxy")
		if !strings.Contains(out, lbNodeIP) {
			return fmt.Errorf("no rule for %s in nftables yet", lbNodeIP)
		}
		return nil
	})
	eventually(t, time.Minute, "the two-file walkthrough answers with nftables", func() error {
		out, err := clientCurl("", "http://"+lbNodeIP+"/")
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	checkSourceRanges(t)
}

// --disable servicelb: addresses withdrawn, ports freed, Services pending.
func lbDisable(t *testing.T, n *node) {
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	startLBNode(t, n, "--disable", "servicelb", "--kube-proxy-arg", "proxy-mode=nftables")
	eventually(t, time.Minute, "Services are pending again", func() error {
		out, _ := n.kubectlErr("get", "svc", "flask-hello")
		if !strings.Contains(out, "<pending>") {
			return fmt.Errorf("%s", out)
		}
		if out, _ := onNode("ss", "-Htln", "sport = :80"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("port 80 still held: %s", out)
		}
		return nil
	})
	if out, err := n.kubectlErr("-n", "kube-system", "get", "lease", "kedge-servicelb"); err == nil {
		t.Errorf("the servicelb Lease is still there: %s", out)
	}
	// kube-proxy drops the rules at its next sync.
	eventually(t, 30*time.Second, "nothing answers on the node's address", func() error {
		if out, err := clientCurl("", "http://"+lbNodeIP+"/"); err == nil {
			return fmt.Errorf("a disabled servicelb still answers: %s", out)
		}
		return nil
	})
}

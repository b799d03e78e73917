package integration

import (
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.etcd.io/etcd/client/pkg/v3/transport"
	clientv3 "go.etcd.io/etcd/client/v3"
	"go.uber.org/zap"
	"google.golang.org/grpc"

	"github.com/kedge-dev/kedge/pkg/pki"
)

// keepAsking calls ask every interval until the returned stop is called,
// which reports how many calls succeeded and how many failed.
func keepAsking(every time.Duration, ask func() error) (stop func() (served, failed int64)) {
	var ok, bad atomic.Int64
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			select {
			case <-done:
				return
			case <-time.After(every):
			}
			if ask() == nil {
				ok.Add(1)
			} else {
				bad.Add(1)
			}
		}
	})
	return func() (int64, int64) {
		close(done)
		wg.Wait()
		return ok.Load(), bad.Load()
	}
}

// haNet is a LAN of network namespaces the test makes: a bridge (no
// address on the host) and one namespace per host, at 10.252.0.<10+i>.
// Nothing has a default route: every component is given its address.
type haNet struct {
	bridge string
	hosts  []string
}

func (h haNet) ip(i int) string { return fmt.Sprintf("10.252.0.%d", 10+i) }

func newHANet(t *testing.T, prefix string, n int) haNet {
	t.Helper()
	h := haNet{bridge: prefix + "-br"}
	// A run that was killed leaves its links and namespaces behind: they
	// carry this test's own names, so they are removed first.
	exec.Command("ip", "link", "delete", h.bridge).Run()
	for i := 1; i <= n; i++ {
		exec.Command("ip", "link", "delete", fmt.Sprintf("%s-v%d", prefix, i)).Run()
		exec.Command("ip", "netns", "delete", fmt.Sprintf("%s-%d", prefix, i)).Run()
	}
	mustRun(t, "ip", "link", "add", h.bridge, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "delete", h.bridge).Run() })
	mustRun(t, "ip", "link", "set", h.bridge, "up")
	for i := 1; i <= n; i++ {
		ns := fmt.Sprintf("%s-%d", prefix, i)
		veth := fmt.Sprintf("%s-v%d", prefix, i)
		mustRun(t, "ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "delete", ns).Run() })
		mustRun(t, "ip", "link", "add", veth, "type", "veth", "peer", "name", "eth0", "netns", ns)
		t.Cleanup(func() { exec.Command("ip", "link", "delete", veth).Run() })
		mustRun(t, "ip", "link", "set", veth, "master", h.bridge, "up")
		mustRun(t, "ip", "-n", ns, "addr", "add", h.ip(i)+"/24", "dev", "eth0")
		mustRun(t, "ip", "-n", ns, "link", "set", "eth0", "up")
		mustRun(t, "ip", "-n", ns, "link", "set", "lo", "up")
		h.hosts = append(h.hosts, ns)
	}
	return h
}

// haServer prepares server i of the LAN (control plane only) with extra
// flags, without starting it.
func haServer(t *testing.T, h haNet, i int, extra ...string) *node {
	t.Helper()
	name := fmt.Sprintf("s%d", i)
	n, err := newNode(t.TempDir(), append([]string{
		"--advertise-address", h.ip(i), "--node-name", name,
	}, extra...), false)
	if err != nil {
		t.Fatal(err)
	}
	n.netns, n.hostname = h.hosts[i-1], name
	// The API on the server's own address: a client on the LAN uses it.
	n.port = 6443
	for j, a := range n.args {
		if a == "--https-listen-port" {
			n.args[j+1] = "6443"
		}
	}
	t.Cleanup(func() {
		n.stop()
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", name, n.report(60))
		}
	})
	return n
}

func (n *node) startReady(t *testing.T) {
	t.Helper()
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatalf("%s: %v\n%s", n.hostname, err, n.report(40))
	}
}

// kedgeIn runs a kedge operations command in a node's namespace.
func kedgeIn(n *node, args ...string) (string, error) {
	cmd := inNetns(n.netns, kedgeBin, append(args, "--data-dir", n.dataDir(), "--config", filepath.Join(n.dir, "config.yaml"))...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// writeUntilTaken runs a kubectl write on a server until the API takes
// it (AlreadyExists: an earlier try was taken but its answer lost). Just
// after a member joins or another is killed, etcd may be electing a
// leader, and the apiserver answers a write with a timeout or "leader
// changed", as it would to any client, which tries again.
func writeUntilTaken(t *testing.T, n *node, stdin string, args ...string) {
	t.Helper()
	eventually(t, 30*time.Second, "kubectl "+strings.Join(args[:2], " "), func() error {
		out, err := kubectlRunIn(n.netns, n.kubeconfig, stdin, args...)
		if err != nil && !strings.Contains(out+err.Error(), "already exists") {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
}

func tokenOf(t *testing.T, n *node) string {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(n.dataDir(), "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(data))
}

// Three servers on embedded etcd and one agent, each in its own namespace.
// The servers survive the loss of the one whose controller manager leads:
// the API answers on the others, new pods are scheduled, and the agent's
// pods serve throughout; the server comes back with its data.
func TestZZZZZZHighAvailability(t *testing.T) {
	h := newHANet(t, "kedge-ha", 5)
	s1 := haServer(t, h, 1, "--cluster-init")
	s1.startReady(t)
	token := tokenOf(t, s1)
	s2 := haServer(t, h, 2, "--server", "https://"+h.ip(1)+":6443", "--token", token)
	s2.startReady(t)
	// The third joins through the second: any member can add one.
	s3 := haServer(t, h, 3, "--server", "https://"+h.ip(2)+":6443", "--token", token)
	s3.startReady(t)
	servers := []*node{s1, s2, s3}
	eventually(t, time.Minute, "3 healthy etcd members", func() error {
		out, err := kedgeIn(s1, "etcd", "member", "list")
		if err != nil || strings.Count(out, "healthy ") != 3 || strings.Contains(out, "unhealthy") {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
	// Secrets are encrypted in etcd too, with one configuration shared by
	// every server.
	writeUntilTaken(t, s2, "", "create", "secret", "generic", "ha-secret", "--from-literal=a=ha-plaintext-canary")
	if v := rawEtcd(t, s1, "/registry/secrets/default/ha-secret"); !strings.HasPrefix(v, "k8s:enc:aescbc:v1:") || strings.Contains(v, "ha-plaintext-canary") {
		t.Fatalf("the Secret in etcd: %q...", v[:min(40, len(v))])
	}
	for _, s := range servers[1:] {
		if string(mustRead(t, filepath.Join(s.dataDir(), "server", "cred", "encryption-config.json"))) != string(mustRead(t, filepath.Join(s1.dataDir(), "server", "cred", "encryption-config.json"))) {
			t.Fatalf("%s has another encryption configuration than s1", s.hostname)
		}
	}
	for _, s := range servers {
		if ca, _ := os.ReadFile(filepath.Join(s.dataDir(), "server", "tls", "server-ca.crt")); string(ca) != string(mustRead(t, filepath.Join(s1.dataDir(), "server", "tls", "server-ca.crt"))) {
			t.Fatalf("%s has another server CA than s1", s.hostname)
		}
	}

	// The agent, in namespace 4, knows only s1.
	t.Cleanup(cgroupRoot(t, "kedge-test-ha"))
	a := &node{netns: h.hosts[3], hostname: "a4", dir: t.TempDir(), port: 6443, kubeconfig: s2.kubeconfig}
	os.WriteFile(filepath.Join(a.dir, "config.yaml"), nil, 0o600)
	copyFile(filepath.Join(imagesDir, "hello-v1.tar"), filepath.Join(a.dataDir(), "agent", "images", "hello-v1.tar"))
	a.args = []string{"agent", "--config", filepath.Join(a.dir, "config.yaml"), "--data-dir", a.dataDir(), "--run-dir", filepath.Join(a.dir, "run"),
		"--server", "https://" + h.ip(1) + ":6443", "--token", token, "--node-ip", h.ip(4), "--node-name", "a4",
		"--flannel-iface", "eth0", "--kubelet-arg", "cgroup-root=/kedge-test-ha"}
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.stop()
		if out, err := killall(a); err != nil {
			t.Errorf("kedge-killall.sh on the agent: %v\n%s", err, out)
		}
		if t.Failed() {
			t.Logf("--- agent log ---\n%s", a.report(60))
		}
	})
	kubectl := func(args ...string) (string, error) { return kubectlRunIn(h.hosts[1], s2.kubeconfig, "", args...) }
	eventually(t, 3*time.Minute, "the agent's node is Ready", func() error {
		out, _ := kubectl("get", "node", "a4", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
	eventually(t, time.Minute, "the agent's load balancer learnt every server", func() error {
		data, _ := os.ReadFile(filepath.Join(a.dataDir(), "agent", "etc", "servers.json"))
		for i := 1; i <= 3; i++ {
			if !strings.Contains(string(data), h.ip(i)+":6443") {
				return fmt.Errorf("servers.json: %s", data)
			}
		}
		return nil
	})
	writeUntilTaken(t, s2, fmt.Sprintf(helloDeployment, 2)+`---
apiVersion: v1
kind: Service
metadata: {name: web}
spec:
  type: LoadBalancer
  selector: {app: hello}
  ports: [{port: 8080}]
`, "apply", "-f", "-")
	url := "http://" + h.ip(4) + ":8080/"
	eventually(t, 2*time.Minute, "the LoadBalancer Service answers on the agent", func() error {
		out, err := inNetns(h.hosts[4], "curl", "-sS", "--max-time", "3", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Hello from Kubernetes!") {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})

	// Which server's controller manager leads (identity: its node name).
	var leader *node
	eventually(t, 30*time.Second, "a server holds the controller manager's Lease", func() error {
		holder, err := kubectl("-n", "kube-system", "get", "lease", "kube-controller-manager", "-o", "jsonpath={.spec.holderIdentity}")
		for _, s := range servers {
			if holder == s.hostname {
				leader = s
				return nil
			}
		}
		return fmt.Errorf("holder %q is none of the servers (%v)", holder, err)
	})
	var others []*node
	for _, s := range servers {
		if s != leader {
			others = append(others, s)
		}
	}
	// The agent's pods serve all the while (from namespace 5, a client).
	stopAsking := keepAsking(200*time.Millisecond, func() error {
		out, err := inNetns(h.hosts[4], "curl", "-sS", "--max-time", "2", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Hello") {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	leader.kill()
	killed := time.Now()
	other := others[0]
	okubectl := func(args ...string) (string, error) { return kubectlRunIn(other.netns, other.kubeconfig, "", args...) }
	eventually(t, 30*time.Second, "the API answers on the other servers", func() error {
		for _, s := range others {
			if out, err := kubectlRunIn(s.netns, s.kubeconfig, "", "get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
				return fmt.Errorf("%s: %v %s", s.hostname, err, out)
			}
		}
		return nil
	})
	t.Logf("API on the other servers %s after the kill", time.Since(killed).Round(time.Second))
	writeUntilTaken(t, other, "", "create", "deployment", "after", "--image=kedge.test/hello:v1")
	eventually(t, 2*time.Minute, "a new Deployment runs on the agent", func() error {
		out, _ := okubectl("get", "pods", "-l", "app=after", "-o", "jsonpath={.items[*].status.phase}")
		if out != "Running" {
			return fmt.Errorf("phase %q", out)
		}
		return nil
	})
	if served, failed := stopAsking(); failed > 0 || served == 0 {
		t.Errorf("the agent's pods during the failover: %d answers, %d failures", served, failed)
	}

	// The killed server restarts with its data and rejoins.
	leader.startReady(t)
	eventually(t, 2*time.Minute, "3 healthy members again", func() error {
		out, err := kedgeIn(other, "etcd", "member", "list")
		if err != nil || strings.Count(out, "healthy ") != 3 || strings.Contains(out, "unhealthy") {
			return fmt.Errorf("%v\n%s", err, out)
		}
		return nil
	})
	eventually(t, 30*time.Second, "kedge's controllers have a leader", func() error {
		if holder, err := okubectl("-n", "kube-system", "get", "lease", "kedge-controllers", "-o", "jsonpath={.spec.holderIdentity}"); holder == "" {
			return fmt.Errorf("no holder (%v)", err)
		}
		return nil
	})

	// A server gone for good is removed from the cluster.
	if err := s3.stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := kedgeIn(s1, "etcd", "member", "remove", "s3"); err != nil || !strings.Contains(out, "removed s3") {
		t.Fatalf("etcd member remove: %v\n%s", err, out)
	}
	if out, err := kedgeIn(s1, "etcd", "member", "list"); err != nil || strings.Contains(out, "s3") || strings.Count(out, "healthy ") != 2 {
		t.Fatalf("members after the removal: %v\n%s", err, out)
	}

	t.Run("bad input", func(t *testing.T) {
		// Another cluster's token: refused by the CA hash, nothing kept.
		bad := haServer(t, h, 5, "--server", "https://"+h.ip(1)+":6443", "--token", "K10"+strings.Repeat("0", 64)+"::server:nope")
		if err := bad.start(); err != nil {
			t.Fatal(err)
		}
		<-bad.exited
		if log := bad.logTail(5); !strings.Contains(log, "is not the one the token names") {
			t.Errorf("joining with another cluster's token:\n%s", log)
		}
		if _, err := os.Stat(filepath.Join(bad.dataDir(), "server", "db", "etcd")); err == nil {
			t.Errorf("a refused join left etcd data")
		}
		// A URL that is not a kedge server (the agent's kubelet port).
		notKedge := haServer(t, h, 5, "--server", "https://"+h.ip(4)+":10250", "--token", token)
		if err := notKedge.start(); err != nil {
			t.Fatal(err)
		}
		select {
		case <-notKedge.exited:
		case <-time.After(time.Minute):
			t.Fatal("a server joining a URL that is no kedge server did not stop")
		}
		if log := notKedge.logTail(5); !strings.Contains(log, "is not a kedge server") {
			t.Errorf("joining a URL that is no kedge server:\n%s", log)
		}
	})
}

// A machine whose data dir holds another cluster's data is not taken
// over by --cluster-init with a new token: it stops, data untouched.
func TestClusterInitOnAnotherClustersData(t *testing.T) {
	n := ownNode(t)
	n.kubectl(t, "create", "configmap", "mine", "--from-literal=a=b")
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	db := filepath.Join(n.dataDir(), "server", "db", "state.db")
	before := mustRead(t, db)
	cmd := exec.Command(kedgeBin, append(n.args, "--cluster-init", "--token", "K10"+strings.Repeat("1", 64)+"::server:other")...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err == nil {
		t.Fatalf("kedge accepted another cluster's token on this data dir:\n%s", out)
	}
	wantAll(t, string(out), "--token", "CA hash")
	if _, err := os.Stat(filepath.Join(n.dataDir(), "server", "db", "etcd")); err == nil {
		t.Errorf("etcd data was created")
	}
	if after := mustRead(t, db); string(after) != string(before) {
		t.Errorf("the SQLite database changed")
	}
}

// rawEtcd reads a key straight from a server's embedded etcd, in its
// namespace, with kedge's etcd client certificate.
func rawEtcd(t *testing.T, n *node, key string) string {
	t.Helper()
	files := pki.FilesIn(filepath.Join(n.dataDir(), "server", "tls"))
	tlsInfo := transport.TLSInfo{CertFile: files.EtcdClientCert, KeyFile: files.EtcdClientKey, TrustedCAFile: files.EtcdServerCACert}
	tc, err := tlsInfo.ClientConfig()
	if err != nil {
		t.Fatal(err)
	}
	cli, err := clientv3.New(clientv3.Config{
		Endpoints: []string{"https://127.0.0.1:2379"}, TLS: tc, DialTimeout: 5 * time.Second, Logger: zap.NewNop(),
		DialOptions: []grpc.DialOption{grpc.WithContextDialer(func(_ context.Context, addr string) (net.Conn, error) { return dialFrom(n.netns, addr) })},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	resp, err := cli.Get(ctx, key)
	if err != nil || len(resp.Kvs) != 1 {
		t.Fatalf("etcd get %s: %v", key, err)
	}
	return string(resp.Kvs[0].Value)
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

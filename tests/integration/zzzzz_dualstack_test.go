package integration

import (
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// addIPv6 gives link in netns an IPv6 address at once (no duplicate
// address detection, which would hold it back for a second or two).
func addIPv6(t *testing.T, netns, link, addr string) {
	t.Helper()
	mustRun(t, "ip", "-n", netns, "addr", "add", addr, "dev", link, "nodad")
}

// runNode starts server n (see startCleaned) and waits for its API and
// node to be Ready.
func runNode(t *testing.T, n *node, what string) {
	t.Helper()
	startCleaned(t, n, what)
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := n.waitNodeReady(2 * time.Minute); err != nil {
		t.Fatal(err)
	}
}

// startCleaned starts n; when the test ends it stops n, runs
// kedge-killall.sh on it and prints its log if the test failed.
func startCleaned(t *testing.T, n *node, what string) {
	t.Helper()
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		n.stop()
		if out, err := killall(n); err != nil {
			t.Errorf("kedge-killall.sh on %s: %v\n%s", what, err, out)
		}
		if t.Failed() {
			t.Logf("--- %s log ---\n%s", what, n.report(80))
		}
	})
}

// podIPs are a pod's addresses, IPv4 first as the API lists them.
func podIPs(n *node, ns, pod string) []string {
	return strings.Fields(n.jsonpath(ns, "pod/"+pod, "{.status.podIPs[*].ip}"))
}

// ipv6Of is the IPv6 address among ips.
func ipv6Of(ips []string) string {
	for _, ip := range ips {
		if strings.Contains(ip, ":") {
			return ip
		}
	}
	return ""
}

// fetchFrom asks the hello pod from (in ns) to make one TCP or UDP
// exchange with addr (HOST:PORT) and returns the answer.
func fetchFrom(n *node, ns, from, proto, addr string) (string, error) {
	return n.kubectlErr("-n", ns, "exec", from, "--", "wget", "-qO-", "http://127.0.0.1:8080/"+proto+"?addr="+addr)
}

// A dual-stack cluster of two nodes in network namespaces: pods get an
// IPv4 and an IPv6 address, and pod-to-pod traffic, Services, DNS (AAAA)
// and LoadBalancer Services work over IPv6 across the nodes, and
// NetworkPolicy holds over IPv6. Then an IPv6-only node runs pods,
// Services and DNS.
func TestZZZZZDualStack(t *testing.T) {
	t.Run("dual-stack", dualStack)
	t.Run("IPv6 only", ipv6Only)
}

func dualStack(t *testing.T) {
	const nsA, nsB = "kedge-test-ds-a", "kedge-test-ds-b"
	vethPair(t, nsA, "kedge-dsa", []string{"10.251.0.1/24"}, nsB, "kedge-dsb", []string{"10.251.0.2/24"})
	addIPv6(t, nsA, "kedge-dsa", "fd00:251::1/64")
	addIPv6(t, nsB, "kedge-dsb", "fd00:251::2/64")
	t.Cleanup(cgroupRoot(t, "kedge-test-ds-a"))
	t.Cleanup(cgroupRoot(t, "kedge-test-ds-b"))
	t.Cleanup(func() {
		if procs := testContainers("/kedge-test-ds-"); len(procs) > 0 {
			t.Errorf("container processes left after killall: %v", procs)
		}
	})
	dual := []string{"--cluster-cidr", "10.42.0.0/16,fd42::/56"}
	a, err := newNode(t.TempDir(), append([]string{
		"--service-cidr", "10.43.0.0/16,fd43::/112", "--flannel-ipv6-masq",
		"--node-ip", "10.251.0.1,fd00:251::1", "--node-name", "ds-a",
		"--flannel-iface", "kedge-dsa", "--kubelet-arg", "cgroup-root=/kedge-test-ds-a",
	}, dual...), true)
	if err != nil {
		t.Fatal(err)
	}
	a.netns = nsA
	copyFile(filepath.Join(imagesDir, "hello-v1.tar"), filepath.Join(a.dataDir(), "agent", "images", "hello-v1.tar"))
	runNode(t, a, "node A")

	b := &node{netns: nsB, dir: t.TempDir(), port: a.port, kubeconfig: a.kubeconfig}
	os.WriteFile(filepath.Join(b.dir, "config.yaml"), nil, 0o600)
	token, err := os.ReadFile(filepath.Join(a.dataDir(), "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	copyFile(filepath.Join(imagesDir, "hello-v1.tar"), filepath.Join(b.dataDir(), "agent", "images", "hello-v1.tar"))
	b.args = append([]string{"agent", "--config", filepath.Join(b.dir, "config.yaml"),
		"--data-dir", b.dataDir(), "--run-dir", filepath.Join(b.dir, "run"),
		"--server", fmt.Sprintf("https://10.251.0.1:%d", a.port), "--token", strings.TrimSpace(string(token)),
		"--node-ip", "10.251.0.2,fd00:251::2", "--node-name", "ds-b",
		"--flannel-iface", "kedge-dsb", "--kubelet-arg", "cgroup-root=/kedge-test-ds-b"}, dual...)
	startCleaned(t, b, "node B")
	eventually(t, 3*time.Minute, "both nodes Ready with both addresses", func() error {
		out, _ := a.kubectlErr("get", "nodes", "-o", `jsonpath={range .items[*]}{.metadata.name}={.status.conditions[?(@.type=="Ready")].status}:{.status.addresses[*].address}:{.spec.podCIDRs} {end}`)
		for _, want := range []string{"ds-a=True:10.251.0.1 fd00:251::1", "ds-b=True:10.251.0.2 fd00:251::2", "fd42::"} {
			if !strings.Contains(out, want) {
				return fmt.Errorf("nodes: %q lack %q", out, want)
			}
		}
		return nil
	})

	// --flannel-ipv6-masq (node A only) masquerades IPv6 pod traffic
	// leaving the cluster network; without it (node B) IPv6 is not.
	eventually(t, 30*time.Second, "node A masquerades IPv6 pod traffic, node B does not", func() error {
		for ns, want := range map[string]bool{nsA: true, nsB: false} {
			out, _ := inNetns(ns, "ip6tables", "-t", "nat", "-S", "FLANNEL-POSTRTG").CombinedOutput()
			if got := strings.Contains(string(out), "fd42::/56") && strings.Contains(string(out), "MASQUERADE"); got != want {
				return fmt.Errorf("%s: IPv6 masquerade %v, want %v:\n%s", ns, got, want, out)
			}
		}
		return nil
	})

	a.apply(t, helloDaemonSet+`---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  ipFamilyPolicy: PreferDualStack
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Service
metadata: {name: web-lb, namespace: default}
spec:
  type: LoadBalancer
  ipFamilyPolicy: RequireDualStack
  selector: {app: hello}
  ports: [{port: 8081, targetPort: 8080}]
`)
	a.kubectl(t, "rollout", "status", "daemonset/hello", "--timeout=180s")
	pod := func(node string) string {
		return strings.TrimSpace(a.kubectl(t, "get", "pods", "-l", "app=hello", "--field-selector", "spec.nodeName="+node, "-o", "jsonpath={.items[0].metadata.name}"))
	}
	podA, podB := pod("ds-a"), pod("ds-b")
	ipsA := podIPs(a, "default", podA)
	v6A := ipv6Of(ipsA)
	if len(ipsA) != 2 || !strings.HasPrefix(v6A, "fd42:") {
		t.Fatalf("pod %s has addresses %v, want an IPv4 and an IPv6 one in fd42::/56", podA, ipsA)
	}

	eventually(t, 60*time.Second, "a pod on B reaches a pod on A over IPv6 (TCP and UDP)", func() error {
		out, err := fetchFrom(a, "default", podB, "tcp", net.JoinHostPort(v6A, "8080"))
		if err != nil || !strings.Contains(out, "I am "+podA) {
			return fmt.Errorf("TCP: %v %q", err, out)
		}
		out, err = fetchFrom(a, "default", podB, "udp", net.JoinHostPort(v6A, "8080"))
		if err != nil || !strings.Contains(out, "udp "+podA) {
			return fmt.Errorf("UDP: %v %q", err, out)
		}
		return nil
	})

	clusterIPs := strings.Fields(a.jsonpath("default", "service/web", "{.spec.clusterIPs[*]}"))
	v6Svc := ipv6Of(clusterIPs)
	if len(clusterIPs) != 2 || !strings.HasPrefix(v6Svc, "fd43:") {
		t.Fatalf("Service web has ClusterIPs %v, want an IPv4 and an IPv6 one", clusterIPs)
	}
	eventually(t, 60*time.Second, "the Service's IPv6 ClusterIP answers from node B", func() error {
		out, err := fetchFrom(a, "default", podB, "tcp", net.JoinHostPort(v6Svc, "80"))
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	if ips := strings.Fields(a.jsonpath("kube-system", "service/kube-dns", "{.spec.clusterIPs[*]}")); len(ips) != 2 {
		t.Errorf("kube-dns has ClusterIPs %v, want both families", ips)
	}
	eventually(t, 60*time.Second, "cluster DNS answers AAAA for the Service", func() error {
		out, err := a.kubectlErr("exec", podB, "--", "wget", "-qO-", "http://127.0.0.1:8080/dns?name=web.default.svc.cluster.local")
		if err != nil || !strings.Contains(out, v6Svc) || !strings.Contains(out, clusterIPs[0]) {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	eventually(t, 90*time.Second, "the LoadBalancer answers on node A's IPv6 address, from node B", func() error {
		ingress := a.jsonpath("default", "service/web-lb", "{.status.loadBalancer.ingress[*].ip}")
		if !strings.Contains(ingress, "fd00:251::1") {
			return fmt.Errorf("ingress %q", ingress)
		}
		out, err := inNetns(nsB, "curl", "-sS", "-g", "--max-time", "3", "http://[fd00:251::1]:8081/").CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Hello from Kubernetes!") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})

	t.Run("network policy over IPv6", func(t *testing.T) { networkPolicies(t, a, b, nsB, "ds-", true) })
}

func ipv6Only(t *testing.T) {
	const ns = "kedge-test-v6"
	vethPair(t, ns, "kedge-v6", nil, ns+"-peer", "kedge-v6p", nil)
	addIPv6(t, ns, "kedge-v6", "fd00:252::1/64")
	addIPv6(t, ns+"-peer", "kedge-v6p", "fd00:252::2/64")
	t.Cleanup(cgroupRoot(t, "kedge-test-v6"))
	t.Cleanup(func() {
		if procs := testContainers("/kedge-test-v6"); len(procs) > 0 {
			t.Errorf("container processes left after killall: %v", procs)
		}
	})
	n, err := newNode(t.TempDir(), []string{
		"--cluster-cidr", "fd42::/56", "--service-cidr", "fd43::/112",
		"--node-ip", "fd00:252::1", "--node-name", "v6-node",
		"--flannel-iface", "kedge-v6", "--kubelet-arg", "cgroup-root=/kedge-test-v6",
	}, true)
	if err != nil {
		t.Fatal(err)
	}
	n.netns = ns
	copyFile(filepath.Join(imagesDir, "hello-v1.tar"), filepath.Join(n.dataDir(), "agent", "images", "hello-v1.tar"))
	runNode(t, n, "the IPv6 node")
	if ip := n.jsonpath("default", "service/kubernetes", "{.spec.clusterIP}"); ip != "fd43::1" {
		t.Errorf("the kubernetes Service's ClusterIP is %q, want fd43::1", ip)
	}
	eventually(t, time.Minute, "kube-dns has fd43::a, the tenth address of --service-cidr", func() error {
		if ip := n.jsonpath("kube-system", "service/kube-dns", "{.spec.clusterIP}"); ip != "fd43::a" {
			return fmt.Errorf("ClusterIP %q", ip)
		}
		return nil
	})
	n.apply(t, `apiVersion: v1
kind: Pod
metadata: {name: hello, namespace: default, labels: {app: hello}}
spec:
  containers:
  - name: hello
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: default}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
`)
	n.kubectl(t, "wait", "--for=condition=Ready", "pod/hello", "--timeout=120s")
	if ips := podIPs(n, "default", "hello"); len(ips) != 1 || !strings.HasPrefix(ips[0], "fd42:") {
		t.Fatalf("the pod has addresses %v, want one in fd42::/56", ips)
	}
	eventually(t, 2*time.Minute, "the pod resolves the Service and reaches it over IPv6", func() error {
		out, err := fetchFrom(n, "default", "hello", "tcp", "web.default.svc.cluster.local:80")
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
	out, err := n.kubectlErr("exec", "hello", "--", "wget", "-qO-", "http://127.0.0.1:8080/api?path=/api")
	if err != nil || !strings.Contains(out, "APIVersions") || !strings.Contains(out, "fd00:252::1") {
		t.Errorf("the pod reads the API through the kubernetes Service over IPv6: %v %q", err, out)
	}
}

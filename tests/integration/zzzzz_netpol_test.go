package integration

import (
	"fmt"
	"net"
	"strings"
	"testing"
	"time"
)

// netpolPods are the NetworkPolicy test's pods: hello servers and clients
// on both nodes, in namespace np (team=np) and np-other (team=other).
const netpolPods = `apiVersion: v1
kind: Namespace
metadata: {name: np, labels: {team: np}}
---
apiVersion: v1
kind: Namespace
metadata: {name: np-other, labels: {team: other}}
`

// netpolPod is a hello pod pinned to node, serving TCP and UDP on 8080
// under the port names http and echo.
func netpolPod(ns, name, node, labels string) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s, labels: {%s}}
spec:
  nodeName: %s
  terminationGracePeriodSeconds: 1
  containers:
  - name: hello
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    ports:
    - {name: http, containerPort: 8080, protocol: TCP}
    - {name: echo, containerPort: 8080, protocol: UDP}
    readinessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
`, name, ns, labels, node)
}

// reach makes one new connection from pod from (in ns) to ip:8080, over
// TCP or UDP (the hello image's /tcp and /udp), and reports whether it
// was answered.
func reach(n *node, ns, from, ip string, udp bool) error {
	path, want := "tcp", "Hello from Kubernetes!"
	if udp {
		path, want = "udp", "udp "
	}
	out, err := n.kubectlErr("-n", ns, "exec", from, "--", "wget", "-qO-", "http://127.0.0.1:8080/"+path+"?addr="+net.JoinHostPort(ip, "8080"))
	if err != nil || !strings.Contains(out, want) {
		return fmt.Errorf("%s: %v %q", path, err, out)
	}
	return nil
}

// networkPolicies checks NetworkPolicy enforcement on the two nodes of
// twoNodes (IPv4) and of the dual-stack test (IPv6): every check is a
// real connection from one pod to a pod on the other node, over TCP and
// UDP, in both directions. The Nodes are <prefix>a and <prefix>b; node B's
// kedge runs in network namespace nsB.
func networkPolicies(t *testing.T, a, b *node, nsB, prefix string, ipv6 bool) {
	manifest := netpolPods
	for _, node := range []string{"a", "b"} {
		manifest += netpolPod("np", "srv-"+node, prefix+node, "app: srv")
		manifest += netpolPod("np", "friend-"+node, prefix+node, "role: friend")
		manifest += netpolPod("np", "stranger-"+node, prefix+node, "role: none")
		manifest += netpolPod("np-other", "other-"+node, prefix+node, "role: other")
	}
	a.apply(t, manifest)
	for _, ns := range []string{"np", "np-other"} {
		a.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod", "--all", "--timeout=120s")
	}
	// The checks use the pods' addresses of one family.
	ip := func(ns, pod string) string {
		for _, addr := range podIPs(a, ns, pod) {
			if strings.Contains(addr, ":") == ipv6 {
				return addr
			}
		}
		t.Fatalf("pod %s/%s has no address of the family under test", ns, pod)
		return ""
	}
	cluster, host, iptables := "10.42.0.0/16", "/32", "iptables"
	if ipv6 {
		cluster, host, iptables = "fd42::/56", "/128", "ip6tables"
	}
	srv := map[string]string{"a": ip("np", "srv-a"), "b": ip("np", "srv-b")}
	other := map[string]string{"a": "b", "b": "a"}
	proto := map[bool]string{false: "TCP", true: "UDP"}

	// expect waits until a connection from pod <who>-<node> to the server
	// on the other node is answered (open) or not.
	expect := func(ns, who, node string, udp, open bool) {
		t.Helper()
		from, to := who+"-"+node, "srv-"+other[node]
		want := map[bool]string{true: "open", false: "closed"}[open]
		eventually(t, 30*time.Second, fmt.Sprintf("%s/%s -> %s %s is %s", ns, from, to, proto[udp], want), func() error {
			err := reach(a, ns, from, srv[other[node]], udp)
			if open && err != nil {
				return err
			}
			if !open && err == nil {
				return fmt.Errorf("answered")
			}
			return nil
		})
	}
	bothWays := func(ns, who string, udp, open bool) {
		t.Helper()
		expect(ns, who, "a", udp, open)
		expect(ns, who, "b", udp, open)
	}

	// Without a policy everything is open.
	bothWays("np", "stranger", false, true)
	bothWays("np", "stranger", true, true)

	// Default deny: nothing reaches the servers.
	a.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-ingress, namespace: np}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`)
	bothWays("np", "stranger", false, false)
	bothWays("np", "stranger", true, false)

	// Allowed from labelled pods, on a named port (TCP only), and from
	// another namespace, on a UDP port range.
	a.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-friends, namespace: np}
spec:
  podSelector: {matchLabels: {app: srv}}
  ingress:
  - from: [{podSelector: {matchLabels: {role: friend}}}]
    ports: [{port: http, protocol: TCP}]
---
apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-other, namespace: np}
spec:
  podSelector: {matchLabels: {app: srv}}
  ingress:
  - from: [{namespaceSelector: {matchLabels: {team: other}}}]
    ports: [{port: 8000, endPort: 8100, protocol: UDP}]
`)
	bothWays("np", "friend", false, true)
	expect("np", "friend", "a", true, false) // the named port is TCP
	bothWays("np-other", "other", true, true)
	expect("np-other", "other", "b", false, false) // the range is UDP
	expect("np", "stranger", "b", false, false)

	// Allowed from an ipBlock, with an exception.
	a.apply(t, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: from-block, namespace: np}
spec:
  podSelector: {matchLabels: {app: srv}}
  ingress:
  - from: [{ipBlock: {cidr: "%s", except: ["%s%s"]}}]
    ports: [{port: 8080, protocol: TCP}]
`, cluster, ip("np", "stranger-a"), host))
	expect("np", "stranger", "b", false, true)  // inside the block
	expect("np", "stranger", "a", false, false) // the exception
	expect("np", "stranger", "b", true, false)  // the block is TCP

	// A restart of node B's kedge never opens B's policed pods: while it
	// is down the chain stays and the unread queue drops new connections.
	if err := b.stop(); err != nil {
		t.Fatal(err)
	}
	out, err := inNetns(nsB, iptables, "-t", "mangle", "-S", "KEDGE-NETPOL").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "-d "+srv["b"]+host+" -j NFQUEUE --queue-num 100") {
		t.Errorf("node B's chain after its kedge stopped: %v\n%s", err, out)
	}
	for i := 0; i < 3; i++ {
		if reach(a, "np", "stranger-a", srv["b"], false) == nil {
			t.Fatal("a connection the policies deny was answered while node B's kedge was down")
		}
		if reach(a, "np", "friend-a", srv["b"], false) == nil {
			t.Fatal("a new connection to a policed pod was answered unjudged while node B's kedge was down")
		}
	}
	if err := b.start(); err != nil {
		t.Fatal(err)
	}
	if err := b.waitLogged("kedge agent is ready", 2*time.Minute); err != nil {
		t.Fatal(err)
	}
	expect("np", "friend", "a", false, true)
	expect("np", "stranger", "a", false, false)

	// Deleting the policies opens the servers again.
	a.kubectl(t, "-n", "np", "delete", "networkpolicy", "--all")
	bothWays("np", "stranger", false, true)
	bothWays("np", "stranger", true, true)

	// Default-deny egress with DNS allowed: friends resolve names but reach
	// nothing else; pods the policy does not select are not held back.
	a.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: dns-only, namespace: np}
spec:
  podSelector: {matchLabels: {role: friend}}
  policyTypes: [Egress]
  egress:
  - ports: [{port: 53, protocol: UDP}, {port: 53, protocol: TCP}]
`)
	bothWays("np", "friend", false, false)
	bothWays("np", "friend", true, false)
	expect("np", "stranger", "a", false, true)
	for _, node := range []string{"a", "b"} {
		eventually(t, 30*time.Second, "friend-"+node+" resolves a Service name", func() error {
			out, err := a.kubectlErr("-n", "np", "exec", "friend-"+node, "--", "wget", "-qO-", "http://127.0.0.1:8080/dns?name=web.default.svc.cluster.local")
			if err != nil || strings.TrimSpace(out) == "" {
				return fmt.Errorf("%v %q", err, out)
			}
			return nil
		})
	}
	a.kubectl(t, "-n", "np", "delete", "networkpolicy", "dns-only")
	bothWays("np", "friend", false, true)
	a.kubectl(t, "delete", "namespace", "np", "np-other", "--wait=false")
}

package integration

import (
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"
)

// waitRejected waits until kube-proxy rejects traffic to a ClusterIP that
// has no ready endpoint (iptables or nftables), so no test packet to it
// can leave the host.
func waitRejected(t *testing.T, ip string) {
	t.Helper()
	waitRule(t, "kube-proxy rejects "+ip+" while it has no endpoint", ip, "filter", "list", "ruleset")
}

var probeLine = regexp.MustCompile(`probe \d+ at ([0-9.]+)s: answer "udp ([^:]+): `)

// A Service exposing port 80 on both TCP and UDP answers both, also to a
// UDP client that started sending before any endpoint was ready and kept
// its flow (one socket) throughout: the conntrack entry its first
// datagrams made must not pin the flow to "no endpoint" (the conformance
// test "should serve endpoints on same port and different protocols").
func TestServiceTCPAndUDPSamePort(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: both, namespace: %s}
spec:
  selector: {app: both}
  ports:
  - {name: tcp, port: 80, targetPort: 8080, protocol: TCP}
  - {name: udp, port: 80, targetPort: 8080, protocol: UDP}
`, ns))
	ip := strings.TrimSpace(shared.jsonpath(ns, "service/both", "{.spec.clusterIP}"))
	waitRejected(t, ip)
	// The client first: its datagrams meet no endpoint.
	shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: udp-client, namespace: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    args: ["--udp-probe", "%s:80"]
`, ns, ip))
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/udp-client", "--timeout=60s")
	eventually(t, time.Minute, "the client's datagrams go unanswered while there is no endpoint", func() error {
		out, _ := shared.kubectlErr("-n", ns, "logs", "udp-client")
		if strings.Count(out, "no answer") < 3 {
			return fmt.Errorf("client log: %s", out)
		}
		return nil
	})
	// Then the server, ready only after a few seconds more.
	shared.apply(t, fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: both, namespace: %s}
spec:
  replicas: 1
  selector: {matchLabels: {app: both}}
  template:
    metadata: {labels: {app: both}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080, protocol: TCP}, {containerPort: 8080, protocol: UDP}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          initialDelaySeconds: 3
          periodSeconds: 1
`, ns))
	shared.waitRollout(t, ns, "deployment/both")
	ready := time.Now()
	eventually(t, 30*time.Second, "the UDP client's own flow is answered once the endpoint is ready", func() error {
		out, _ := shared.kubectlErr("-n", ns, "logs", "udp-client", "--since-time", ready.UTC().Format(time.RFC3339))
		if m := probeLine.FindStringSubmatch(out); m == nil || !strings.HasPrefix(m[2], "both-") {
			tail := out
			if len(tail) > 400 {
				tail = tail[len(tail)-400:]
			}
			return fmt.Errorf("no answer from the server yet: %s", tail)
		}
		return nil
	})
	// TCP on the same port, from another pod.
	out, err := shared.kubectlErr("-n", ns, "exec", "udp-client", "--", "wget", "-qO-", "http://"+ip+"/")
	if err != nil || !strings.Contains(out, "I am both-") {
		t.Fatalf("TCP on the same port: %v %s", err, out)
	}
	// A fresh UDP flow is answered too.
	shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: udp-late, namespace: %s}
spec:
  terminationGracePeriodSeconds: 0
  containers:
  - name: probe
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    args: ["--udp-probe", "%s:80"]
`, ns, ip))
	eventually(t, time.Minute, "a new UDP client is answered", func() error {
		out, _ := shared.kubectlErr("-n", ns, "logs", "udp-late")
		if m := probeLine.FindStringSubmatch(out); m == nil {
			return fmt.Errorf("log: %s", out)
		}
		return nil
	})
}

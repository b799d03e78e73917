package integration

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

// Runs last (file order): it restarts the shared node.
func TestZZRestartKeepsPodsRunning(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, strings.Replace(fmt.Sprintf(helloDeployment, 2), "metadata: {name: hello}", "metadata: {name: hello, namespace: "+ns+"}", 1))
	shared.waitRollout(t, ns, "deployment/hello")
	before := shared.podsOf(ns, "app=hello")
	ips := strings.Fields(shared.jsonpath(ns, "pods", "{.items[*].status.podIP}"))
	ids := shared.jsonpath(ns, "pods", "{.items[*].status.containerStatuses[0].containerID}")
	if len(ips) != 2 {
		t.Fatalf("pod IPs %v", ips)
	}

	if err := shared.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// With kedge (and containerd) down, the containers keep serving.
	for _, ip := range ips {
		if body, err := httpGet("http://" + ip + ":8080/"); err != nil || !strings.Contains(body, "Hello from Kubernetes!") {
			t.Fatalf("pod %s while kedge is stopped: %v %q", ip, err, body)
		}
	}
	if err := shared.start(); err != nil {
		t.Fatal(err)
	}
	if err := shared.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := shared.waitNodeReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if after := shared.podsOf(ns, "app=hello"); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Fatalf("pods after restart %v, before %v", after, before)
	}
	if got := shared.jsonpath(ns, "pods", "{.items[*].status.containerStatuses[0].containerID}"); got != ids {
		t.Fatalf("containers were replaced across the restart: %s -> %s", ids, got)
	}
	// Still managed: scaling works.
	shared.kubectl(t, "-n", ns, "scale", "deployment/hello", "--replicas=3")
	shared.waitRollout(t, ns, "deployment/hello")
	if n := len(shared.podsOf(ns, "app=hello")); n != 3 {
		t.Fatalf("running pods after scale: %d", n)
	}
}

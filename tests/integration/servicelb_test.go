package integration

import (
	"bufio"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// curlLocal fetches url on the host with a short timeout.
func curlLocal(url string) (string, error) {
	out, err := exec.Command("curl", "-sS", "--max-time", "5", url).CombinedOutput()
	return string(out), err
}

// importImage loads an image archive the way the README tells users to:
// kedge ctr images import.
func importImage(t *testing.T, archive string) {
	t.Helper()
	kedgeTool(t, "", "ctr", "-n", "k8s.io", "images", "import", filepath.Join(imagesDir, archive))
}

// Walkthrough 1: one YAML file, a Deployment of 4 and a LoadBalancer
// Service on 6000, applied as written; localhost:6000 answers.
func TestWalkthroughLocalhost(t *testing.T) {
	importImage(t, "flask-hello.tar")
	file := filepath.Join(t.TempDir(), "flask-hello.yaml")
	writeTestFile(t, file, `apiVersion: apps/v1
kind: Deployment
metadata:
  name: flask-hello
spec:
  replicas: 4
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
---
apiVersion: v1
kind: Service
metadata:
  name: flask-hello-service
spec:
  selector:
    app: flask-hello
  ports:
  - protocol: TCP
    port: 6000
    targetPort: 5000
  type: LoadBalancer
`)
	shared.kubectl(t, "apply", "-f", file)
	t.Cleanup(func() { shared.kubectlErr("delete", "-f", file, "--wait=false") })
	eventually(t, 2*time.Minute, "4 pods Running in kubectl get pods", func() error {
		out, _ := shared.kubectlErr("get", "pods", "-l", "app=flask-hello")
		if n := strings.Count(out, " Running "); n != 4 {
			return fmt.Errorf("%d Running:\n%s", n, out)
		}
		return nil
	})
	eventually(t, time.Minute, "curl http://localhost:6000 answers", func() error {
		out, err := curlLocal("http://localhost:6000")
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	ingress := shared.jsonpath("default", "service/flask-hello-service", "{.status.loadBalancer.ingress[*].ip}")
	nodeIP := shared.jsonpath("", "node/"+sharedNodeName, `{.status.addresses[?(@.type=="InternalIP")].address}`)
	if strings.TrimSpace(ingress) != strings.TrimSpace(nodeIP) {
		t.Errorf("ingress %q, want the node's address %q", ingress, nodeIP)
	}
}

// lbService is a LoadBalancer Service on port for the hello pods of ns.
func lbService(ns, name string, port int, extra string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: %s, namespace: %s}
spec:
  type: LoadBalancer
  selector: {app: hello}
  ports: [{port: %d, targetPort: 8080}]
%s`, name, ns, port, extra)
}

// waitEvent waits for an Event on a Service whose message has all subs.
func waitEvent(t *testing.T, n *node, ns, svc string, subs ...string) {
	t.Helper()
	eventually(t, time.Minute, "an Event on "+svc+" saying "+strings.Join(subs, ", "), func() error {
		out, _ := n.kubectlErr("-n", ns, "get", "events", "--field-selector", "involvedObject.name="+svc, "-o", "jsonpath={range .items[*]}{.reason}: {.message}{\"\\n\"}{end}")
		for _, line := range strings.Split(out, "\n") {
			all := true
			for _, s := range subs {
				all = all && strings.Contains(line, s)
			}
			if all {
				return nil
			}
		}
		return fmt.Errorf("events: %q", out)
	})
}

func ingressOf(n *node, ns, svc string) string {
	return strings.TrimSpace(n.jsonpath(ns, "service/"+svc, "{.status.loadBalancer.ingress[*].ip}"))
}

// A port held by a host process, or by an older LoadBalancer Service,
// leaves the Service pending with an Event naming the port; the holder
// keeps working, and the Service is served once the port is free.
func TestServiceLBPortConflicts(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, strings.Replace(fmt.Sprintf(helloDeployment, 1), "metadata: {name: hello}", "metadata: {name: hello, namespace: "+ns+"}", 1))
	shared.waitRollout(t, ns, "deployment/hello")

	// A host process on 127.0.0.1.
	host, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer host.Close()
	go func() {
		for {
			c, err := host.Accept()
			if err != nil {
				return
			}
			// Read the request first: closing with unread data resets
			// the connection.
			_, _ = http.ReadRequest(bufio.NewReader(c))
			fmt.Fprint(c, "HTTP/1.0 200 OK\r\n\r\nhost process\n")
			c.Close()
		}
	}()
	port := host.Addr().(*net.TCPAddr).Port
	url := "http://127.0.0.1:" + strconv.Itoa(port)
	shared.apply(t, lbService(ns, "taken", port, ""))
	waitEvent(t, shared, ns, "taken", "Pending", fmt.Sprintf("port %d/TCP is in use on node %s by another process", port, sharedNodeName))
	if in := ingressOf(shared, ns, "taken"); in != "" {
		t.Errorf("a Service whose port a host process holds has ingress %q", in)
	}
	if out, err := curlLocal(url); err != nil || !strings.Contains(out, "host process") {
		t.Errorf("the host process no longer answers: %v %s", err, out)
	}

	// A younger Service on the same port.
	shared.apply(t, lbService(ns, "younger", port, ""))
	waitEvent(t, shared, ns, "younger", "Pending", fmt.Sprintf("port %d/TCP is already used by LoadBalancer Service %s/taken", port, ns))

	// The host process goes: the older Service gets the port.
	host.Close()
	eventually(t, time.Minute, "the Service is served once the port is free", func() error {
		if in := ingressOf(shared, ns, "taken"); in == "" {
			return fmt.Errorf("no ingress yet")
		}
		out, err := curlLocal(url)
		if err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if in := ingressOf(shared, ns, "younger"); in != "" {
		t.Errorf("the younger Service on a taken port has ingress %q", in)
	}

	// Deleting the older Service hands the port over; deleting both frees
	// it and leaves no rule behind.
	shared.kubectl(t, "-n", ns, "delete", "service", "taken")
	eventually(t, time.Minute, "the younger Service takes the port", func() error {
		if in := ingressOf(shared, ns, "younger"); in == "" {
			return fmt.Errorf("no ingress yet")
		}
		return nil
	})
	shared.kubectl(t, "-n", ns, "delete", "service", "younger")
	eventually(t, time.Minute, "the port is free and no rule is left", func() error {
		ln, err := net.Listen("tcp4", ":"+strconv.Itoa(port))
		if err != nil {
			return err
		}
		ln.Close()
		rules, _ := exec.Command("iptables-save").Output()
		if strings.Contains(string(rules), ns+"/") {
			return fmt.Errorf("iptables rules of %s are left", ns)
		}
		return nil
	})
}

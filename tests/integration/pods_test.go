package integration

import (
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// crictl runs kedge's built-in crictl against the shared node.
func (n *node) crictl(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(kedgeBin, append([]string{"crictl"}, args...)...)
	cmd.Env = append(cleanEnv(), "KEDGE_DATA_DIR="+n.dataDir(), "KEDGE_RUN_DIR="+filepath.Join(n.dir, "run"))
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("kedge crictl %s: %v\n%s%s", strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

// jsonpath reads one field of an object.
func (n *node) jsonpath(ns, obj, path string) string {
	out, _ := n.kubectlErr("-n", ns, "get", obj, "-o", "jsonpath="+path)
	return out
}

// waitRollout waits for a Deployment, StatefulSet or DaemonSet to be ready.
func (n *node) waitRollout(t *testing.T, ns, obj string) {
	t.Helper()
	n.kubectl(t, "-n", ns, "rollout", "status", obj, "--timeout=120s")
}

// podsOf lists the Running pods matching selector that are not being
// deleted, sorted by name.
func (n *node) podsOf(ns, selector string) []string {
	out, _ := n.kubectlErr("-n", ns, "get", "pods", "-l", selector, "--field-selector=status.phase=Running", "--sort-by=.metadata.name",
		"-o", "go-template={{range .items}}{{if not .metadata.deletionTimestamp}}{{.metadata.name}} {{end}}{{end}}")
	return strings.Fields(out)
}

const helloDeployment = `apiVersion: apps/v1
kind: Deployment
metadata: {name: hello}
spec:
  replicas: %d
  selector: {matchLabels: {app: hello}}
  template:
    metadata: {labels: {app: hello}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
`

func TestNodeIsReady(t *testing.T) {
	out := shared.kubectl(t, "get", "nodes", "-o", "wide")
	if !strings.Contains(out, " Ready ") {
		t.Fatalf("node not Ready:\n%s", out)
	}
	eventually(t, 30*time.Second, "node info shows containerd, the kubelet version and a pod CIDR", func() error {
		info := shared.kubectl(t, "get", "nodes", "-o", "jsonpath={.items[0].status.nodeInfo.containerRuntimeVersion} {.items[0].status.nodeInfo.kubeletVersion} {.items[0].spec.podCIDR}")
		if !strings.HasPrefix(info, "containerd://2.3") || !strings.Contains(info, "v1.36.3") || !strings.Contains(info, "10.42.") {
			return fmt.Errorf("node info: %q", info)
		}
		return nil
	})
}

func TestDeploymentAndKubectlTools(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, fmt.Sprintf("apiVersion: v1\nkind: Namespace\nmetadata: {name: %s}\n---\n", ns)+strings.Replace(fmt.Sprintf(helloDeployment, 1), "metadata: {name: hello}", "metadata: {name: hello, namespace: "+ns+"}", 1))
	shared.waitRollout(t, ns, "deployment/hello")
	pod := shared.podsOf(ns, "app=hello")[0]

	// logs: the server logs one line per request; the readiness probe
	// already made some.
	eventually(t, 30*time.Second, "kubectl logs shows requests", func() error {
		out, err := shared.kubectlErr("-n", ns, "logs", pod)
		if err != nil || !strings.Contains(out, "/healthz") {
			return fmt.Errorf("%v: %q", err, out)
		}
		return nil
	})
	if out := strings.TrimSpace(shared.kubectl(t, "-n", ns, "exec", pod, "--", "cat", "/etc/hostname")); out != pod {
		t.Fatalf("exec cat /etc/hostname = %q, want %q", out, pod)
	}

	// port-forward, then curl the pod.
	port, _ := freePort()
	pf := exec.Command(kubectlBin, "--kubeconfig", shared.kubeconfig, "-n", ns, "port-forward", "pod/"+pod, fmt.Sprintf("%d:8080", port))
	pf.Env = cleanEnv()
	if err := pf.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() { pf.Process.Kill(); pf.Wait() }()
	eventually(t, 30*time.Second, "port-forward answers", func() error {
		body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil {
			return err
		}
		if !strings.Contains(body, "Hello from Kubernetes! I am "+pod) {
			return fmt.Errorf("body %q", body)
		}
		return nil
	})

	// kubectl cp both ways.
	local := filepath.Join(t.TempDir(), "note.txt")
	os.WriteFile(local, []byte("copied by kubectl cp\n"), 0o644)
	shared.kubectl(t, "-n", ns, "cp", local, pod+":/tmp/note.txt")
	if out := shared.kubectl(t, "-n", ns, "exec", pod, "--", "cat", "/tmp/note.txt"); out != "copied by kubectl cp\n" {
		t.Fatalf("file copied in: %q", out)
	}
	back := filepath.Join(t.TempDir(), "back.txt")
	shared.kubectl(t, "-n", ns, "cp", pod+":/tmp/note.txt", back)
	if data, _ := os.ReadFile(back); string(data) != "copied by kubectl cp\n" {
		t.Fatalf("file copied out: %q", data)
	}
}

func TestHostNetworkPod(t *testing.T) {
	ns := privilegedNamespace(t, shared)
	port, _ := freePort()
	shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hostnet, namespace: %s}
spec:
  hostNetwork: true
  containers:
  - name: hello
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    env: [{name: PORT, value: "%d"}, {name: POD_NAME, value: hostnet}]
`, ns, port))
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/hostnet", "--timeout=60s")
	eventually(t, 20*time.Second, "the hostNetwork pod answers on the node", func() error {
		body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil || !strings.Contains(body, "I am hostnet") {
			return fmt.Errorf("%v %q", err, body)
		}
		return nil
	})
}

func httpGet(url string) (string, error) {
	c := &http.Client{Timeout: 5 * time.Second}
	resp, err := c.Get(url)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if resp.StatusCode != 200 {
		return string(b), fmt.Errorf("status %s", resp.Status)
	}
	return string(b), err
}

func TestSelfHealing(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, strings.Replace(fmt.Sprintf(helloDeployment, 2), "metadata: {name: hello}", "metadata: {name: hello, namespace: "+ns+"}", 1))
	shared.waitRollout(t, ns, "deployment/hello")
	pods := shared.podsOf(ns, "app=hello")

	t.Run("killed process restarts", func(t *testing.T) {
		pod := pods[0]
		id := strings.TrimSpace(shared.crictl(t, "ps", "-q", "--label", "io.kubernetes.pod.name="+pod, "--label", "io.kubernetes.pod.namespace="+ns))
		pid := strings.TrimSpace(shared.crictl(t, "inspect", "-o", "go-template", "--template", "{{.info.pid}}", id))
		p, err := strconv.Atoi(pid)
		if err != nil {
			t.Fatalf("container pid %q", pid)
		}
		if err := exec.Command("kill", "-9", strconv.Itoa(p)).Run(); err != nil {
			t.Fatal(err)
		}
		eventually(t, 60*time.Second, "restartCount increases and the pod is Ready again", func() error {
			rc := shared.jsonpath(ns, "pod/"+pod, "{.status.containerStatuses[0].restartCount}")
			ready := shared.jsonpath(ns, "pod/"+pod, "{.status.containerStatuses[0].ready}")
			if rc != "1" || ready != "true" {
				return fmt.Errorf("restartCount %s ready %s", rc, ready)
			}
			return nil
		})
		if out := strings.TrimSpace(shared.kubectl(t, "-n", ns, "exec", pod, "--", "wget", "-qO-", "http://127.0.0.1:8080/")); !strings.Contains(out, "request 1") {
			t.Fatalf("restarted container serves with a fresh counter: %q", out)
		}
	})

	t.Run("deleted pod is replaced", func(t *testing.T) {
		pod := pods[1]
		shared.kubectl(t, "-n", ns, "delete", "pod", pod, "--wait=false")
		eventually(t, 60*time.Second, "ReplicaSet replaces the pod", func() error {
			now := shared.podsOf(ns, "app=hello")
			if len(now) != 2 || strings.Contains(strings.Join(now, " "), pod) {
				return fmt.Errorf("running pods %v", now)
			}
			return nil
		})
	})

	t.Run("failing liveness probe restarts", func(t *testing.T) {
		shared.apply(t, `apiVersion: v1
kind: Pod
metadata: {name: sick, namespace: `+ns+`}
spec:
  containers:
  - name: hello
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    env: [{name: FAIL_HEALTHZ_AFTER, value: "3"}]
    livenessProbe:
      httpGet: {path: /healthz, port: 8080}
      periodSeconds: 1
      failureThreshold: 2
`)
		eventually(t, 90*time.Second, "liveness failure restarts the container", func() error {
			if rc := shared.jsonpath(ns, "pod/sick", "{.status.containerStatuses[0].restartCount}"); rc == "" || rc == "0" {
				return fmt.Errorf("restartCount %q", rc)
			}
			return nil
		})
		if ev := shared.kubectl(t, "-n", ns, "get", "events", "--field-selector", "involvedObject.name=sick"); !strings.Contains(ev, "Liveness probe failed") {
			t.Fatalf("no liveness event:\n%s", ev)
		}
	})

	t.Run("readiness probe gates Ready", func(t *testing.T) {
		shared.apply(t, `apiVersion: v1
kind: Pod
metadata: {name: gated, namespace: `+ns+`}
spec:
  containers:
  - name: worker
    image: kedge.test/worker:v1
    imagePullPolicy: Never
    args: ["--serve"]
    readinessProbe:
      exec: {command: ["cat", "/tmp/ready"]}
      periodSeconds: 1
`)
		eventually(t, 60*time.Second, "pod runs", func() error {
			if p := shared.jsonpath(ns, "pod/gated", "{.status.phase}"); p != "Running" {
				return fmt.Errorf("phase %q", p)
			}
			return nil
		})
		time.Sleep(3 * time.Second)
		if r := shared.jsonpath(ns, "pod/gated", "{.status.containerStatuses[0].ready}"); r != "false" {
			t.Fatalf("ready before the probe passes: %q", r)
		}
		shared.kubectl(t, "-n", ns, "exec", "gated", "--", "touch", "/tmp/ready")
		shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/gated", "--timeout=30s")
	})
}

func TestRollingUpdateAndUndo(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, strings.Replace(fmt.Sprintf(helloDeployment, 2), "metadata: {name: hello}", "metadata: {name: hello, namespace: "+ns+"}", 1))
	shared.waitRollout(t, ns, "deployment/hello")
	version := func() string {
		pod := shared.podsOf(ns, "app=hello")[0]
		// The answer is the last line: kubectl may warn on stderr first.
		lines := strings.Split(strings.TrimSpace(shared.kubectl(t, "-n", ns, "exec", pod, "--", "wget", "-qO-", "http://127.0.0.1:8080/version")), "\n")
		return strings.TrimSpace(lines[len(lines)-1])
	}
	shared.kubectl(t, "-n", ns, "set", "image", "deployment/hello", "hello=kedge.test/hello:v2")
	shared.waitRollout(t, ns, "deployment/hello")
	eventually(t, 30*time.Second, "old pods gone", func() error {
		if imgs := shared.jsonpath(ns, "pods", "{.items[*].spec.containers[0].image}"); strings.Contains(imgs, "v1") {
			return fmt.Errorf("images %s", imgs)
		}
		return nil
	})
	if v := version(); v != "v2" {
		t.Fatalf("after update: version %q", v)
	}
	shared.kubectl(t, "-n", ns, "rollout", "undo", "deployment/hello")
	shared.waitRollout(t, ns, "deployment/hello")
	eventually(t, 30*time.Second, "old pods gone", func() error {
		if imgs := shared.jsonpath(ns, "pods", "{.items[*].spec.containers[0].image}"); strings.Contains(imgs, "v2") {
			return fmt.Errorf("images %s", imgs)
		}
		return nil
	})
	if v := version(); v != "v1" {
		t.Fatalf("after undo: version %q", v)
	}
}

package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"
)

// autonomyApps: "auto" serves on a1 (the autonomous agent) with a
// ConfigMap and a Secret mounted, behind a LoadBalancer Service, and may
// read the ConfigMap from the API (the hello image's /api); "optout"
// runs on a1 too but asks for the upstream behaviour; "gone" runs on a1
// and is deleted while a1 is cut off; "plain" runs on a2, an agent without
// autonomy.
const autonomyApps = `apiVersion: v1
kind: ConfigMap
metadata: {name: greeting}
data: {greeting: hello-from-the-configmap}
---
apiVersion: v1
kind: Secret
metadata: {name: secret-greeting}
stringData: {greeting: hello-from-the-secret}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: Role
metadata: {name: read-greeting}
rules: [{apiGroups: [""], resources: [configmaps], resourceNames: [greeting], verbs: [get]}]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: RoleBinding
metadata: {name: read-greeting}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: Role, name: read-greeting}
subjects: [{kind: ServiceAccount, name: default, namespace: default}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: auto}
spec:
  replicas: 2
  selector: {matchLabels: {app: auto}}
  template:
    metadata: {labels: {app: auto}}
    spec:
      nodeSelector: {kubernetes.io/hostname: a1}
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        volumeMounts:
        - {name: cfg, mountPath: /cfg}
        - {name: sec, mountPath: /sec}
      volumes:
      - {name: cfg, configMap: {name: greeting}}
      - {name: sec, secret: {secretName: secret-greeting}}
---
apiVersion: v1
kind: Service
metadata: {name: auto}
spec:
  type: LoadBalancer
  selector: {app: auto}
  ports: [{port: 8080}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: optout}
spec:
  selector: {matchLabels: {app: optout}}
  template:
    metadata: {labels: {app: optout}, annotations: {kedge.io/autonomy: "false"}}
    spec:
      nodeSelector: {kubernetes.io/hostname: a1}
      containers: [{name: hello, image: kedge.test/hello:v1, imagePullPolicy: Never}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: gone}
spec:
  selector: {matchLabels: {app: gone}}
  template:
    metadata: {labels: {app: gone}}
    spec:
      nodeSelector: {kubernetes.io/hostname: a1}
      containers: [{name: hello, image: kedge.test/hello:v1, imagePullPolicy: Never}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: plain}
spec:
  selector: {matchLabels: {app: plain}}
  template:
    metadata: {labels: {app: plain}}
    spec:
      nodeSelector: {kubernetes.io/hostname: a2}
      containers: [{name: hello, image: kedge.test/hello:v1, imagePullPolicy: Never}]
`

// sinceStart is a node's log since it was last started.
func sinceStart(n *node) string {
	data, _ := os.ReadFile(n.logFile())
	log := string(data)
	if i := strings.LastIndex(log, "=== start "); i >= 0 {
		log = log[i:]
	}
	return log
}

// regexpLine reports whether a line of out matches re.
func regexpLine(out, re string) bool { return regexp.MustCompile("(?m)" + re).MatchString(out) }

// One server (with its own agent) and two agents in network namespaces, a
// client in a fourth.
// The link between the server and the agents is cut by dropping their
// packets in the server's namespace; the client still reaches the agents.
// The eviction timeouts are shortened (20 s node grace, 15 s toleration
// instead of 40 s and 300 s) so the cut outlasts them within a minute.
func TestZZZZZZAutonomy(t *testing.T) {
	h := newHANet(t, "kedge-au", 4)
	// The server runs pods too: with no Ready node at all, the node
	// lifecycle controller takes it for its own outage and evicts nothing.
	t.Cleanup(cgroupRoot(t, "kedge-test-aus1"))
	s := haServer(t, h, 1,
		"--kube-controller-manager-arg", "node-monitor-grace-period=20s",
		"--kube-apiserver-arg", "default-unreachable-toleration-seconds=15",
		"--kube-apiserver-arg", "default-not-ready-toleration-seconds=15",
		"--node-ip", h.ip(1), "--flannel-iface", "eth0", "--kubelet-arg", "cgroup-root=/kedge-test-aus1")
	s.args = slices.DeleteFunc(s.args, func(a string) bool { return a == "--disable-agent" })
	s.startReady(t)
	t.Cleanup(func() {
		s.stop()
		if out, err := killall(s); err != nil {
			t.Errorf("kedge-killall.sh on s1: %v\n%s", err, out)
		}
	})
	token := tokenOf(t, s)
	kubectl := func(args ...string) (string, error) { return kubectlRunIn(h.hosts[0], s.kubeconfig, "", args...) }

	agentNode := func(i int, extra ...string) *node {
		name := fmt.Sprintf("a%d", i-1)
		cg := "kedge-test-au" + name
		t.Cleanup(cgroupRoot(t, cg))
		a := &node{netns: h.hosts[i-1], hostname: name, dir: t.TempDir(), port: 6443, kubeconfig: s.kubeconfig}
		os.WriteFile(filepath.Join(a.dir, "config.yaml"), nil, 0o600)
		copyFile(filepath.Join(imagesDir, "hello-v1.tar"), filepath.Join(a.dataDir(), "agent", "images", "hello-v1.tar"))
		a.args = append([]string{"agent", "--config", filepath.Join(a.dir, "config.yaml"), "--data-dir", a.dataDir(), "--run-dir", filepath.Join(a.dir, "run"),
			"--server", "https://" + h.ip(1) + ":6443", "--token", token, "--node-ip", h.ip(i), "--node-name", name,
			"--flannel-iface", "eth0", "--kubelet-arg", "cgroup-root=/" + cg}, extra...)
		if err := a.start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			a.stop()
			if out, err := killall(a); err != nil {
				t.Errorf("kedge-killall.sh on %s: %v\n%s", name, err, out)
			}
			if t.Failed() {
				t.Logf("--- %s log ---\n%s", name, a.report(80))
			}
		})
		return a
	}
	a1 := agentNode(2, "--autonomy")
	agentNode(3)
	for _, name := range []string{"a1", "a2"} {
		eventually(t, 3*time.Minute, name+" is Ready", func() error {
			out, _ := kubectl("get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if out != "True" {
				return fmt.Errorf("Ready=%q", out)
			}
			return nil
		})
	}
	if out, _ := kubectl("get", "nodes", "-L", "kedge.io/autonomy", "--no-headers"); !strings.Contains(out, "a1") ||
		!regexpLine(out, `^a1\s.*\strue\s*$`) || regexpLine(out, `^a2\s.*\strue\s*$`) {
		t.Fatalf("kubectl get nodes -L kedge.io/autonomy:\n%s", out)
	}
	eventually(t, 30*time.Second, "kubectl get nodes shows a1's role", func() error {
		if out, _ := kubectl("get", "nodes", "--no-headers"); !regexpLine(out, `^a1\s+Ready\s+autonomous\s`) {
			return fmt.Errorf("kubectl get nodes:\n%s", out)
		}
		return nil
	})
	if _, err := kubectlRunIn(h.hosts[0], s.kubeconfig, autonomyApps, "apply", "-f", "-"); err != nil {
		t.Fatal(err)
	}
	for _, d := range []string{"auto", "optout", "gone", "plain"} {
		if _, err := kubectl("rollout", "status", "deployment/"+d, "--timeout=3m"); err != nil {
			t.Fatalf("%s: %v", d, err)
		}
	}
	// a1 has a CoreDNS of its own, a2 none.
	eventually(t, 2*time.Minute, "CoreDNS runs on a1", func() error {
		out, _ := kubectl("-n", "kube-system", "get", "pods", "-l", "kedge.io/coredns=autonomous", "-o", `jsonpath={range .items[*]}{.spec.nodeName}={.status.conditions[?(@.type=="Ready")].status} {end}`)
		if strings.TrimSpace(out) != "a1=True" {
			return fmt.Errorf("CoreDNS pods of autonomous nodes: %q", out)
		}
		return nil
	})
	autoIP, _ := kubectl("get", "service", "auto", "-o", "jsonpath={.spec.clusterIP}")
	url := "http://" + h.ip(2) + ":8080/"
	client := h.hosts[3]
	curl := func() error {
		out, err := inNetns(client, "curl", "-sS", "--max-time", "2", url).CombinedOutput()
		if err != nil || !strings.Contains(string(out), "Hello from Kubernetes!") {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	}
	eventually(t, 2*time.Minute, "the LoadBalancer Service answers on a1", curl)
	// readAPI has a pod of auto read the ConfigMap from the API with its
	// service-account token; cached says the node's cache answered.
	readAPI := func(cached bool) func() error {
		return func() error {
			out, err := inNetns(client, "curl", "-sS", "--max-time", "10", url+"api?path=/api/v1/namespaces/default/configmaps/greeting").CombinedOutput()
			if err != nil || !strings.HasPrefix(string(out), "200 OK") || !strings.Contains(string(out), "hello-from-the-configmap") ||
				strings.Contains(string(out), "cached copy") != cached {
				return fmt.Errorf("%v %s", err, out)
			}
			return nil
		}
	}
	eventually(t, time.Minute, "a pod of a1 reads a ConfigMap from the API", readAPI(false))
	// resolve has a pod of auto look up auto's Service name.
	resolve := func() error {
		out, err := inNetns(client, "curl", "-sS", "--max-time", "10", url+"dns?name=auto.default.svc.cluster.local").CombinedOutput()
		if err != nil || strings.TrimSpace(string(out)) != autoIP {
			return fmt.Errorf("%v %s, want %s", err, out, autoIP)
		}
		return nil
	}
	eventually(t, time.Minute, "a pod of a1 resolves a Service name", resolve)
	if log := sinceStart(a1); !strings.Contains(log, "the node's pods reach the API through its cache") {
		t.Errorf("the agent's log does not say its pods reach the API through the cache:\n%s", a1.logTail(40))
	}
	natRules := func() string {
		out, _ := inNetns(a1.netns, "iptables-save", "-t", "nat").Output()
		return string(out)
	}
	if rules := natRules(); !regexpLine(rules, `^-A KEDGE-API-CACHE -d 10\.43\.0\.1/32 -p tcp .*--dport 443 .*-j DNAT --to-destination `+regexp.QuoteMeta(h.ip(2))+`:`) ||
		!regexpLine(rules, `^-A PREROUTING .*-j KEDGE-API-CACHE`) {
		t.Errorf("a1's nat rules do not send the kubernetes Service to the cache:\n%s", rules)
	}
	autoPods, _ := kubectl("get", "pods", "-l", "app=auto", "-o", "jsonpath={.items[*].metadata.name}")
	eventually(t, 30*time.Second, "the pods of a1 tolerate its being unreachable for ever", func() error {
		out, _ := kubectl("get", "pods", "-l", "app=auto", "-o", `jsonpath={range .items[*]}{.spec.tolerations[?(@.key=="node.kubernetes.io/unreachable")].tolerationSeconds}|{end}`)
		if out != "||" {
			return fmt.Errorf("tolerationSeconds: %q", out)
		}
		return nil
	})
	for _, app := range []string{"optout", "plain"} {
		if out, _ := kubectl("get", "pods", "-l", "app="+app, "-o", `jsonpath={.items[0].spec.tolerations[?(@.key=="node.kubernetes.io/unreachable")].tolerationSeconds}`); out != "15" {
			t.Errorf("%s: tolerationSeconds %q, want the cluster default 15", app, out)
		}
	}
	// The cache is on disk (FlushInterval) before the link goes.
	time.Sleep(12 * time.Second)

	// The cut: the server drops everything from and to the agents.
	rules := [][]string{}
	for _, i := range []int{2, 3} {
		rules = append(rules, []string{"INPUT", "-s", h.ip(i), "-j", "DROP"}, []string{"OUTPUT", "-d", h.ip(i), "-j", "DROP"})
	}
	cut := func(on bool) {
		op := "-D"
		if on {
			op = "-I"
		}
		for _, r := range rules {
			if out, err := inNetns(h.hosts[0], "iptables", append([]string{op}, r...)...).CombinedOutput(); err != nil && on {
				t.Fatalf("iptables %s %v: %v %s", op, r, err, out)
			}
		}
	}
	cut(true)
	cutOn := true
	t.Cleanup(func() {
		if cutOn {
			cut(false)
		}
	})

	t.Run("pods keep serving past the eviction timeout", func(t *testing.T) {
		stopAsking := keepAsking(500*time.Millisecond, curl)
		eventually(t, 2*time.Minute, "a1 and a2 are NotReady and the pods that may be evicted are", func() error {
			for _, n := range []string{"a1", "a2"} {
				if out, _ := kubectl("get", "node", n, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`); out != "Unknown" {
					return fmt.Errorf("%s Ready=%q", n, out)
				}
			}
			for _, app := range []string{"optout", "plain"} {
				if out, _ := kubectl("get", "pods", "-l", "app="+app, "-o", "jsonpath={.items[*].metadata.deletionTimestamp}"); out == "" {
					return fmt.Errorf("%s: no pod evicted yet", app)
				}
			}
			return nil
		})
		eventually(t, 30*time.Second, "kubectl get nodes shows when a1 was last in touch", func() error {
			if out, _ := kubectl("get", "nodes", "a1", "-L", "kedge.io/last-contact", "--no-headers"); !regexpLine(out, `^a1\s+NotReady\s+autonomous\s.*\s20\d\d-\d\d-\d\dT\d\d\.\d\d\.\d\dZ\s*$`) {
				return fmt.Errorf("kubectl get nodes -L kedge.io/last-contact:\n%s", out)
			}
			return nil
		})
		eventually(t, time.Minute, "a pod of a1 reads the ConfigMap from the node's cache", readAPI(true))
		eventually(t, time.Minute, "a pod of a1 resolves a Service name, cut off", resolve)
		// Longer than the toleration of the pods that have one.
		time.Sleep(20 * time.Second)
		if served, failed := stopAsking(); failed > 0 || served == 0 {
			t.Errorf("a1's Service during the cut: %d answers, %d failures", served, failed)
		}
		out, _ := kubectl("get", "pods", "-l", "app=auto", "-o", "jsonpath={.items[*].metadata.name}|{.items[*].metadata.deletionTimestamp}")
		if out != autoPods+"|" {
			t.Errorf("the pods of auto on the server: %q, want %q and none deleted", out, autoPods)
		}
	})

	// containers of app running on a1 (pod labels are on the sandboxes).
	containers := func(app string) []string {
		var ids []string
		for _, pod := range strings.Fields(a1.crictl(t, "pods", "-q", "--label", "app="+app, "--state", "ready")) {
			ids = append(ids, strings.Fields(a1.crictl(t, "ps", "-q", "--pod", pod, "--state", "running"))...)
		}
		return ids
	}
	cid := func(app string) string {
		if ids := containers(app); len(ids) > 0 {
			return ids[0]
		}
		return ""
	}
	t.Run("a crashed container is restarted", func(t *testing.T) {
		id := cid("auto")
		if id == "" {
			t.Fatal("no running container of auto on a1")
		}
		pid := strings.TrimSpace(a1.crictl(t, "inspect", "-o", "go-template", "--template", "{{.info.pid}}", id))
		if out, err := exec.Command("kill", "-9", pid).CombinedOutput(); err != nil {
			t.Fatalf("kill %s: %v %s", pid, err, out)
		}
		eventually(t, time.Minute, "the kubelet starts the container again", func() error {
			for _, c := range containers("auto") {
				if a := strings.TrimSpace(a1.crictl(t, "inspect", "-o", "go-template", "--template", "{{.status.metadata.attempt}}", c)); a == "1" {
					return nil
				}
			}
			return fmt.Errorf("no restarted container of auto yet")
		})
	})

	if _, err := kubectl("delete", "deployment", "gone", "--wait=false"); err != nil {
		t.Fatal(err)
	}

	t.Run("a reboot while cut off starts the pods from the cache", func(t *testing.T) {
		a1.kill()
		if out, err := killall(a1); err != nil {
			t.Fatalf("kedge-killall.sh: %v\n%s", err, out)
		}
		if curl() == nil {
			t.Fatal("the Service still answers with every process of a1 gone")
		}
		if rules := natRules(); strings.Contains(rules, "KEDGE-") {
			t.Errorf("kedge's nat rules left after killall:\n%s", rules)
		}
		if err := a1.start(); err != nil {
			t.Fatal(err)
		}
		crictl := func(args ...string) (string, error) {
			// In a1's namespace: the CRI streaming server of exec is there.
			cmd := inNetns(a1.netns, kedgeBin, append([]string{"crictl"}, args...)...)
			cmd.Env = append(cleanEnv(), "KEDGE_DATA_DIR="+a1.dataDir(), "KEDGE_RUN_DIR="+filepath.Join(a1.dir, "run"))
			out, err := cmd.Output()
			return string(out), err
		}
		// The pods answer on their new addresses, and the Service follows
		// them: the cache takes note of the statuses the kubelet could not
		// write.
		eventually(t, 3*time.Minute, "both pods of auto run again and answer, still cut off", func() error {
			out, err := crictl("pods", "-q", "--label", "app=auto", "--state", "ready")
			pods := strings.Fields(out)
			if err != nil || len(pods) != 2 {
				return fmt.Errorf("%d ready pods of auto (%v)", len(pods), err)
			}
			for _, pod := range pods {
				ip, err := crictl("inspectp", "-o", "go-template", "--template", "{{.status.network.ip}}", pod)
				if err != nil {
					return err
				}
				ip = strings.TrimSpace(ip)
				out, err := inNetns(a1.netns, "curl", "-sS", "--max-time", "2", "http://"+ip+":8080/").CombinedOutput()
				if err != nil || !strings.Contains(string(out), "Hello from Kubernetes!") {
					return fmt.Errorf("pod %s at %s: %v %s", pod, ip, err, out)
				}
			}
			return nil
		})
		eventually(t, time.Minute, "the Service answers on a1 again, still cut off", curl)
		eventually(t, time.Minute, "a pod started while cut off reads the ConfigMap from the node's cache", readAPI(true))
		eventually(t, 2*time.Minute, "a pod started while cut off resolves a Service name (a1's CoreDNS, started from the cache)", resolve)
		id := cid("auto")
		for file, want := range map[string]string{"/cfg/greeting": "hello-from-the-configmap", "/sec/greeting": "hello-from-the-secret"} {
			if out, err := crictl("exec", id, "cat", file); out != want {
				t.Errorf("%s in the pod: %q (%v), want %q", file, out, err, want)
			}
		}
		if log := sinceStart(a1); !strings.Contains(log, "served from its cache") || !strings.Contains(log, "starting with the CA kept") {
			t.Errorf("the agent's log does not say it is offline:\n%s", a1.logTail(40))
		}
	})

	t.Run("back online: the node reconciles", func(t *testing.T) {
		cut(false)
		cutOn = false
		eventually(t, 2*time.Minute, "a1 is Ready again", func() error {
			out, _ := kubectl("get", "node", "a1", "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
			if out != "True" {
				return fmt.Errorf("Ready=%q", out)
			}
			return nil
		})
		eventually(t, 60*time.Second, "the pods of the Deployment deleted meanwhile are gone from a1", func() error {
			if id := cid("gone"); id != "" {
				return fmt.Errorf("container %s still runs", id)
			}
			if out, _ := kubectl("get", "pods", "-l", "app=gone", "-o", "name"); out != "" {
				return fmt.Errorf("the server still has %s", out)
			}
			return nil
		})
		eventually(t, time.Minute, "the Service answers on a1 again", curl)
		eventually(t, time.Minute, "a pod of a1 reads the ConfigMap from the server again", readAPI(false))
		eventually(t, 30*time.Second, "the last-contact label is gone", func() error {
			if out, _ := kubectl("get", "node", "a1", "-o", "jsonpath={.metadata.labels}"); strings.Contains(out, "kedge.io/last-contact") {
				return fmt.Errorf("labels: %s", out)
			}
			return nil
		})
		if out, _ := kubectl("get", "pods", "-l", "app=auto", "-o", "jsonpath={.items[*].metadata.name}"); out != autoPods {
			t.Errorf("auto's pods after the cut: %q, want the same %q", out, autoPods)
		}
		eventually(t, time.Minute, "the pods of a1 are Ready on the server", func() error {
			out, _ := kubectl("get", "pods", "-l", "app=auto", "-o", `jsonpath={.items[*].status.conditions[?(@.type=="Ready")].status}`)
			if out != "True True" {
				return fmt.Errorf("Ready: %q", out)
			}
			return nil
		})
		if log := sinceStart(a1); !strings.Contains(log, "the API server answers again") {
			t.Errorf("the agent's log does not say it is back:\n%s", a1.logTail(40))
		}
	})
}

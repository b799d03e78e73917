package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"
)

// webService deploys n replicas of the hello server with a ClusterIP
// Service "web" (port 80 -> 8080) and a client pod, and waits for them.
func webService(t *testing.T, ns string, n int, svcSpec string) {
	t.Helper()
	shared.apply(t, strings.Replace(fmt.Sprintf(helloDeployment, n), "metadata: {name: hello}", "metadata: {name: hello, namespace: "+ns+"}", 1)+`---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: `+ns+`}
spec:
  selector: {app: hello}
  ports: [{port: 80, targetPort: 8080}]
`+svcSpec+"---\n"+workerPod(ns, "client", "--serve"))
	shared.waitRollout(t, ns, "deployment/hello")
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=60s")
	waitProxied(t, shared.jsonpath(ns, "service/web", "{.spec.clusterIP}"))
}

// fromClient runs wget in the client pod.
func fromClient(ns, url string) (string, error) {
	return shared.kubectlErr("-n", ns, "exec", "client", "--", "wget", "-qO-", url)
}

// namesAnswering collects the pod names answering url over many requests.
func namesAnswering(ns, url string, requests int) ([]string, error) {
	seen := map[string]bool{}
	for i := 0; i < requests; i++ {
		out, err := fromClient(ns, url)
		if err != nil {
			return nil, fmt.Errorf("GET %s from a pod: %v %s", url, err, out)
		}
		if f := strings.Fields(out); len(f) >= 6 {
			seen[strings.TrimSuffix(f[5], ",")] = true
		}
	}
	var names []string
	for n := range seen {
		names = append(names, n)
	}
	sort.Strings(names)
	return names, nil
}

func TestServicesAndPodNetwork(t *testing.T) {
	ns := namespace(t, shared)
	webService(t, ns, 3, "")
	pods := shared.podsOf(ns, "app=hello")

	t.Run("pod to pod by IP", func(t *testing.T) {
		for _, ip := range strings.Fields(shared.kubectl(t, "-n", ns, "get", "pods", "-l", "app=hello", "-o", "jsonpath={.items[*].status.podIP}")) {
			if out, err := fromClient(ns, "http://"+ip+":8080/"); err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
				t.Fatalf("pod %s: %v %q", ip, err, out)
			}
		}
	})
	t.Run("ClusterIP balances across every pod", func(t *testing.T) {
		ip := shared.jsonpath(ns, "service/web", "{.spec.clusterIP}")
		eventually(t, 30*time.Second, "all 3 pods answer through the ClusterIP", func() error {
			got, err := namesAnswering(ns, "http://"+ip+"/", 30)
			if err != nil {
				return err
			}
			if strings.Join(got, " ") != strings.Join(pods, " ") {
				return fmt.Errorf("answered by %v, pods %v", got, pods)
			}
			return nil
		})
	})
	t.Run("DNS names of a Service", func(t *testing.T) {
		for _, name := range []string{"web", "web." + ns, "web." + ns + ".svc.cluster.local"} {
			if out, err := fromClient(ns, "http://"+name+"/"); err != nil || !strings.Contains(out, "Hello from Kubernetes!") {
				t.Fatalf("http://%s/: %v %q", name, err, out)
			}
		}
	})
	t.Run("endpoints follow replaced pods", func(t *testing.T) {
		shared.kubectl(t, "-n", ns, "delete", "pods", "-l", "app=hello", "--wait=false")
		eventually(t, 60*time.Second, "the Service answers from the new pods only", func() error {
			now := shared.podsOf(ns, "app=hello")
			if len(now) != 3 {
				return fmt.Errorf("running pods %v", now)
			}
			for _, p := range pods {
				if strings.Contains(strings.Join(now, " "), p) {
					return fmt.Errorf("old pod %s still running", p)
				}
			}
			got, err := namesAnswering(ns, "http://web/", 20)
			if err != nil {
				return err
			}
			if strings.Join(got, " ") != strings.Join(now, " ") {
				return fmt.Errorf("answered by %v, pods %v", got, now)
			}
			return nil
		})
	})
	t.Run("NodePort answers on the node", func(t *testing.T) {
		shared.kubectl(t, "-n", ns, "expose", "deployment/hello", "--name=web-np", "--type=NodePort", "--port=80", "--target-port=8080")
		port := shared.jsonpath(ns, "service/web-np", "{.spec.ports[0].nodePort}")
		// On the node's loopback address (kube-proxy serves NodePorts there).
		eventually(t, 30*time.Second, "NodePort answers", func() error {
			body, err := httpGet("http://127.0.0.1:" + port + "/")
			if err != nil || !strings.Contains(body, "Hello from Kubernetes!") {
				return fmt.Errorf("%v %q", err, body)
			}
			return nil
		})
	})
}

func TestHairpin(t *testing.T) {
	ns := namespace(t, shared)
	webService(t, ns, 1, "")
	pod := shared.podsOf(ns, "app=hello")[0]
	// The only endpoint of "web" is the pod itself.
	out, err := shared.kubectlErr("-n", ns, "exec", pod, "--", "wget", "-qO-", "http://web/")
	if err != nil || !strings.Contains(out, "I am "+pod) {
		t.Fatalf("a pod reaching its own Service: %v %q", err, out)
	}
}

func TestHeadlessAndStatefulSetDNS(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, `apiVersion: v1
kind: Service
metadata: {name: db, namespace: `+ns+`}
spec:
  clusterIP: None
  selector: {app: db}
  ports: [{port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: `+ns+`}
spec:
  serviceName: db
  replicas: 2
  selector: {matchLabels: {app: db}}
  template:
    metadata: {labels: {app: db}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
---
`+workerPod(ns, "client", "--serve"))
	shared.waitRollout(t, ns, "statefulset/db")
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/client", "--timeout=60s")
	ips := strings.Fields(shared.kubectl(t, "-n", ns, "get", "pods", "-l", "app=db", "-o", "jsonpath={.items[*].status.podIP}"))
	eventually(t, 30*time.Second, "the headless Service resolves to the pod IPs", func() error {
		out, _ := shared.kubectlErr("-n", ns, "exec", "client", "--", "nslookup", "db."+ns+".svc.cluster.local")
		for _, ip := range ips {
			if !strings.Contains(out, ip) {
				return fmt.Errorf("nslookup lacks %s:\n%s", ip, out)
			}
		}
		return nil
	})
	eventually(t, 30*time.Second, "a StatefulSet pod answers by its stable name", func() error {
		out, err := fromClient(ns, "http://db-1.db."+ns+".svc.cluster.local:8080/")
		if err != nil || !strings.Contains(out, "I am db-1") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
}

func TestHostPort(t *testing.T) {
	ns := privilegedNamespace(t, shared)
	port, _ := freePort()
	shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: hp, namespace: %s}
spec:
  containers:
  - name: hello
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    ports: [{containerPort: 8080, hostPort: %d}]
`, ns, port))
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/hp", "--timeout=60s")
	eventually(t, 30*time.Second, "hostPort answers on the node", func() error {
		body, err := httpGet(fmt.Sprintf("http://127.0.0.1:%d/", port))
		if err != nil || !strings.Contains(body, "I am hp") {
			return fmt.Errorf("%v %q", err, body)
		}
		return nil
	})
}

func TestNetworkPolicyAccepted(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, `apiVersion: networking.k8s.io/v1
kind: NetworkPolicy
metadata: {name: deny-all, namespace: `+ns+`}
spec:
  podSelector: {}
  policyTypes: [Ingress]
`)
	if out := shared.kubectl(t, "-n", ns, "get", "networkpolicy", "deny-all", "-o", "name"); strings.TrimSpace(out) != "networkpolicy.networking.k8s.io/deny-all" {
		t.Fatalf("networkpolicy: %q", out)
	}
}

func TestCoreDNSAddon(t *testing.T) {
	shared.kubectl(t, "-n", "kube-system", "rollout", "status", "deployment/coredns", "--timeout=120s")
	if ip := shared.jsonpath("kube-system", "service/kube-dns", "{.spec.clusterIP}"); ip != "10.43.0.10" {
		t.Fatalf("kube-dns ClusterIP %q", ip)
	}
	t.Run("a deleted add-on comes back", func(t *testing.T) {
		// Not the kube-dns Service: until it is back, DNS queries would
		// leave the host by the default route.
		shared.kubectl(t, "delete", "clusterrolebinding", "system:coredns")
		eventually(t, 60*time.Second, "the ClusterRoleBinding is re-created", func() error {
			_, err := shared.kubectlErr("get", "clusterrolebinding", "system:coredns")
			return err
		})
	})
	t.Run("a user's Corefile edit is kept", func(t *testing.T) {
		corefile := shared.jsonpath("kube-system", "configmap/coredns", "{.data.Corefile}")
		edited := strings.Replace(corefile, "cache 30", "cache 25", 1)
		patch := fmt.Sprintf(`{"data":{"Corefile":%q}}`, edited)
		shared.kubectl(t, "-n", "kube-system", "patch", "configmap", "coredns", "--type=merge", "-p", patch)
		eventually(t, 60*time.Second, "the deployer sees the edit and keeps it", func() error {
			if !strings.Contains(shared.logTail(3000), "keeping a user's change to an add-on object") {
				return fmt.Errorf("not yet")
			}
			return nil
		})
		if got := shared.jsonpath("kube-system", "configmap/coredns", "{.data.Corefile}"); !strings.Contains(got, "cache 25") {
			t.Fatalf("the edit was overwritten:\n%s", got)
		}
	})
}

func TestDisableCoreDNS(t *testing.T) {
	n := ownNode(t)
	eventually(t, 30*time.Second, "coredns is deployed", func() error {
		_, err := n.kubectlErr("-n", "kube-system", "get", "deployment", "coredns")
		return err
	})
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	n.args = append(n.args, "--disable", "coredns")
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "--disable coredns removes it", func() error {
		if out, err := n.kubectlErr("-n", "kube-system", "get", "deployment,service,configmap", "-o", "name"); err != nil || strings.Contains(out, "coredns") || strings.Contains(out, "kube-dns") {
			return fmt.Errorf("%v %q", err, out)
		}
		return nil
	})
}

func TestFlannel(t *testing.T) {
	node := "node/" + sharedNodeName
	if bt := shared.jsonpath("", node, `{.metadata.annotations.flannel\.alpha\.coreos\.com/backend-type}`); bt != "vxlan" {
		t.Fatalf("flannel backend-type annotation %q", bt)
	}
	if ip := shared.jsonpath("", node, `{.metadata.annotations.flannel\.alpha\.coreos\.com/public-ip}`); ip == "" {
		t.Fatalf("no flannel public-ip annotation")
	}
	out, err := exec.Command("ip", "-d", "link", "show", "flannel.1").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "vxlan id 1") || !strings.Contains(string(out), "dstport 8472") {
		t.Fatalf("flannel.1 VXLAN device: %v\n%s", err, out)
	}
	env, err := os.ReadFile(filepath.Join(shared.dir, "run", "flannel", "subnet.env"))
	podCIDR := shared.jsonpath("", node, "{.spec.podCIDR}")
	if err != nil || !strings.Contains(string(env), "FLANNEL_NETWORK=10.42.0.0/16") || !strings.Contains(string(env), "FLANNEL_SUBNET="+strings.TrimSuffix(podCIDR, "0/24")) {
		t.Fatalf("subnet.env (pod CIDR %s): %v\n%s", podCIDR, err, env)
	}
	conf, _ := os.ReadFile(filepath.Join(shared.dataDir(), "agent", "etc", "cni", "net.d", "10-kedge.conflist"))
	if !strings.Contains(string(conf), `"ipMasq": false`) || !strings.Contains(string(conf), `"mtu": 1`) {
		t.Fatalf("the conflist does not follow flannel's lease (MTU, masquerade by flannel):\n%s", conf)
	}
}

func TestUserManifestsDir(t *testing.T) {
	ns := namespace(t, shared)
	manifest := `apiVersion: v1
kind: ConfigMap
metadata: {name: dropped-in, namespace: ` + ns + `}
data: {from: manifests-dir}
`
	dir := filepath.Join(shared.dataDir(), "server", "manifests")
	if err := os.WriteFile(filepath.Join(dir, ns+".yaml"), []byte(manifest), 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.Remove(filepath.Join(dir, ns+".yaml")) })
	eventually(t, 60*time.Second, "a manifest dropped in the manifests dir is applied", func() error {
		if v := shared.jsonpath(ns, "configmap/dropped-in", "{.data.from}"); v != "manifests-dir" {
			return fmt.Errorf("configmap data %q", v)
		}
		return nil
	})
}

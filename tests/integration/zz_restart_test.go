package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
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
	shared.kubectl(t, "-n", ns, "expose", "deployment/hello", "--port=80", "--target-port=8080")
	clusterIP := shared.jsonpath(ns, "service/hello", "{.spec.clusterIP}")
	waitProxied(t, clusterIP)

	if err := shared.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	// With kedge (and containerd) down, the containers keep serving.
	for _, ip := range ips {
		if body, err := httpGet("http://" + ip + ":8080/"); err != nil || !strings.Contains(body, "Hello from Kubernetes!") {
			t.Fatalf("pod %s while kedge is stopped: %v %q", ip, err, body)
		}
	}
	// The leaf certificates are rotated while kedge is down, as the
	// README says: every one is reissued at start, the pods keep serving.
	oldServing := mustRead(t, filepath.Join(shared.dataDir(), "server", "tls", "serving-kube-apiserver.crt"))
	cert := exec.Command(kedgeBin, "certificate", "rotate", "--data-dir", shared.dataDir(), "--run-dir", filepath.Join(shared.dir, "run"), "--config", filepath.Join(shared.dir, "config.yaml"))
	cert.Env = cleanEnv()
	if out, err := cert.CombinedOutput(); err != nil || !strings.Contains(string(out), "will be reissued") {
		t.Fatalf("kedge certificate rotate: %v\n%s", err, out)
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
	if newServing := mustRead(t, filepath.Join(shared.dataDir(), "server", "tls", "serving-kube-apiserver.crt")); string(newServing) == string(oldServing) {
		t.Fatal("the apiserver's serving certificate was not reissued")
	}
	check := exec.Command(kedgeBin, "certificate", "check", "--data-dir", shared.dataDir(), "--config", filepath.Join(shared.dir, "config.yaml"))
	check.Env = cleanEnv()
	if out, err := check.CombinedOutput(); err != nil || !strings.Contains(string(out), "client-kubelet.crt") || strings.Contains(string(out), "EXPIRED") {
		t.Fatalf("kedge certificate check: %v\n%s", err, out)
	}
	if after := shared.podsOf(ns, "app=hello"); strings.Join(after, " ") != strings.Join(before, " ") {
		t.Fatalf("pods after restart %v, before %v", after, before)
	}
	if got := shared.jsonpath(ns, "pods", "{.items[*].status.containerStatuses[0].containerID}"); got != ids {
		t.Fatalf("containers were replaced across the restart: %s -> %s", ids, got)
	}
	if got := strings.Fields(shared.jsonpath(ns, "pods", "{.items[*].status.podIP}")); strings.Join(got, " ") != strings.Join(ips, " ") {
		t.Fatalf("pod IPs changed across the restart: %v -> %v", ips, got)
	}
	eventually(t, 30*time.Second, "the Service still answers after the restart", func() error {
		body, err := httpGet("http://" + clusterIP + "/")
		if err != nil || !strings.Contains(body, "Hello from Kubernetes!") {
			return fmt.Errorf("%v %q", err, body)
		}
		return nil
	})
	// Still managed: scaling works.
	shared.kubectl(t, "-n", ns, "scale", "deployment/hello", "--replicas=3")
	shared.waitRollout(t, ns, "deployment/hello")
	if n := len(shared.podsOf(ns, "app=hello")); n != 3 {
		t.Fatalf("running pods after scale: %d", n)
	}
}

// Runs after the restart test: stopping kedge leaves pods running (as
// upstream); kedge-killall.sh then removes every shim, container, mount,
// bridge and iptables rule the node made.
func TestZZZKillallCleansUp(t *testing.T) {
	if err := shared.stop(); err != nil {
		t.Fatalf("stop: %v", err)
	}
	socket := filepath.Join(shared.dir, "run", "containerd", "containerd.sock")
	shims := shimsOf(socket)
	if len(shims) == 0 {
		t.Fatalf("no shim survived the stop of kedge: pods should keep running")
	}
	// A shim that died without its containers: killall finds them too.
	if out, err := exec.Command("kill", "-KILL", shims[0]).CombinedOutput(); err != nil {
		t.Fatalf("kill shim %s: %v %s", shims[0], err, out)
	}
	out, err := killall(shared)
	if err != nil {
		t.Fatalf("kedge-killall.sh: %v\n%s", err, out)
	}
	if !strings.Contains(out, "whose shim is gone") {
		t.Errorf("kedge-killall.sh did not find the containers of the dead shim:\n%s", out)
	}
	if shims := shimsOf(socket); len(shims) > 0 {
		t.Errorf("shims left after killall: %v", shims)
	}
	eventually(t, 10*time.Second, "no container process is left", func() error {
		if procs := testContainers(""); len(procs) > 0 {
			return fmt.Errorf("container processes left after killall: %v", procs)
		}
		return nil
	})
	mounts, _ := os.ReadFile("/proc/self/mounts")
	for _, line := range strings.Split(string(mounts), "\n") {
		if f := strings.Fields(line); len(f) > 1 && strings.HasPrefix(f[1], shared.dir) {
			t.Errorf("mount left after killall: %s", f[1])
		}
	}
	for _, link := range []string{"cni0", "flannel.1"} {
		if err := exec.Command("ip", "link", "show", link).Run(); err == nil {
			t.Errorf("interface %s left after killall", link)
		}
	}
	if rules, _ := exec.Command("iptables-save", "-t", "nat").Output(); strings.Contains(string(rules), `name: \"kedge\"`) {
		t.Errorf("iptables rules of kedge's network left after killall")
	}
	if rules, _ := exec.Command("iptables-save").Output(); strings.Contains(string(rules), "KUBE-") || strings.Contains(string(rules), "CNI-") || strings.Contains(string(rules), "FLANNEL-") || strings.Contains(string(rules), "KEDGE-") {
		t.Errorf("kube-proxy's, the CNI plugins' or kedge's iptables rules left after killall:\n%s", rules)
	}
	if rules, _ := exec.Command("nft", "list", "ruleset").Output(); strings.Contains(string(rules), "net: kedge") || strings.Contains(string(rules), "kube-proxy") {
		t.Errorf("nftables rules of kedge's network or kube-proxy left after killall:\n%s", rules)
	}
}

// testContainers lists processes of the test images and CoreDNS whose
// cgroup path contains cgroup.
func testContainers(cgroup string) []string {
	var found []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.Split(string(data), "\x00")
		switch args[0] {
		case "/hello", "/worker", "/coredns":
			cg, _ := os.ReadFile(filepath.Join(filepath.Dir(p), "cgroup"))
			if strings.Contains(string(cg), cgroup) {
				found = append(found, filepath.Base(filepath.Dir(p))+" "+args[0])
			}
		}
	}
	return found
}

// shimsOf lists the PIDs of containerd shims serving socket.
func shimsOf(socket string) []string {
	var pids []string
	procs, _ := filepath.Glob("/proc/[0-9]*/cmdline")
	for _, p := range procs {
		data, err := os.ReadFile(p)
		if err != nil {
			continue
		}
		args := strings.ReplaceAll(string(data), "\x00", " ")
		if strings.Contains(args, "containerd-shim") && strings.Contains(args, "-address "+socket+" ") {
			pids = append(pids, filepath.Base(filepath.Dir(p)))
		}
	}
	return pids
}

// killall runs the repository's kedge-killall.sh for node n.
func killall(n *node) (string, error) {
	script, _ := filepath.Abs("../../scripts/kedge-killall.sh")
	cmd := inNetns(n.netns, "sh", script)
	cmd.Env = append(cleanEnv(), "KEDGE_DATA_DIR="+n.dataDir(), "KEDGE_RUN_DIR="+filepath.Join(n.dir, "run"))
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// Runs after the shared node is gone, so its kubelet is the only one on the
// host: "kedge agent" alone, beside "kedge server --disable-agent" sharing
// its data dir, makes a Ready node that runs pods.
func TestZZZZStandaloneAgent(t *testing.T) {
	n := ownNode(t)
	agentLog := filepath.Join(n.dir, "agent.log")
	logf, err := os.Create(agentLog)
	if err != nil {
		t.Fatal(err)
	}
	if err := copyFile(filepath.Join(imagesDir, "worker.tar"), filepath.Join(n.dataDir(), "agent", "images", "worker.tar")); err != nil {
		t.Fatal(err)
	}
	agent := exec.Command(kedgeBin, "agent",
		"--config", filepath.Join(n.dir, "config.yaml"),
		"--data-dir", n.dataDir(),
		"--run-dir", filepath.Join(n.dir, "run"),
		"--server", fmt.Sprintf("https://127.0.0.1:%d", n.port),
		"--node-name", "standalone-agent",
		// The other proxy mode, which the shared node does not use.
		"--kube-proxy-arg", "proxy-mode=nftables")
	agent.Env = cleanEnv()
	agent.Stdout, agent.Stderr = logf, logf
	if err := agent.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		agent.Process.Signal(syscall.SIGTERM)
		agent.Wait()
		logf.Close()
		n.stop()
		if out, err := killall(n); err != nil {
			t.Errorf("kedge-killall.sh: %v\n%s", err, out)
		}
		if t.Failed() {
			data, _ := os.ReadFile(agentLog)
			t.Logf("--- agent log ---\n%s", data)
		}
	})
	if err := n.waitNodeReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	n.runToCompletion(t, "default", "solo", "kedge.test/worker:v1", "Never", "standalone agent works")
	// A Service through kube-proxy in nftables mode.
	if err := copyFile(filepath.Join(imagesDir, "hello-v1.tar"), filepath.Join(n.dataDir(), "agent", "images", "hello-v1.tar")); err != nil {
		t.Fatal(err)
	}
	n.apply(t, strings.Replace(fmt.Sprintf(helloDeployment, 1), "metadata: {name: hello}", "metadata: {name: hello, namespace: default}", 1))
	n.kubectl(t, "rollout", "status", "deployment/hello", "--timeout=120s")
	n.kubectl(t, "expose", "deployment/hello", "--port=80", "--target-port=8080")
	ip := n.jsonpath("default", "service/hello", "{.spec.clusterIP}")
	waitProxied(t, ip)
	eventually(t, 30*time.Second, "a Service answers through kube-proxy in nftables mode", func() error {
		body, err := httpGet("http://" + ip + "/")
		if err != nil || !strings.Contains(body, "Hello from Kubernetes!") {
			return fmt.Errorf("%v %q", err, body)
		}
		return nil
	})
	if out, err := exec.Command("nft", "list", "table", "ip", "kube-proxy").CombinedOutput(); err != nil {
		t.Fatalf("kube-proxy's nftables table: %v %s", err, out)
	}
}

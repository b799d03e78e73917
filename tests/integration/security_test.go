package integration

import (
	"bytes"
	"crypto/sha256"
	"crypto/tls"
	"crypto/x509"
	"database/sql"
	"encoding/pem"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// rawSecret is the stored value of a Secret in a node's SQLite database.
func rawSecret(t *testing.T, n *node, ns, name string) []byte {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+filepath.Join(n.dataDir(), "server", "db", "state.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	var v []byte
	if err := db.QueryRow(`SELECT value FROM kine WHERE name = ? ORDER BY id DESC LIMIT 1`, "/registry/secrets/"+ns+"/"+name).Scan(&v); err != nil {
		t.Fatalf("secret %s/%s in the database: %v", ns, name, err)
	}
	return v
}

// What is rewritten every few seconds at idle (Leases, the apiserver's
// address leases) and Events live in the run dir's database, not in the
// one on the flash, and the kubernetes Service still has its endpoint.
func TestIdleWritesOffTheFlash(t *testing.T) {
	db, err := sql.Open("sqlite", "file:"+filepath.Join(shared.dataDir(), "server", "db", "state.db")+"?mode=ro")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	for _, prefix := range []string{"/registry/leases/", "/registry/events/", "/registry/masterleases/", "/registry/peerserverleases/"} {
		var n int
		if err := db.QueryRow(`SELECT count(*) FROM kine WHERE name LIKE ?`, prefix+"%").Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n != 0 {
			t.Errorf("%d rows of %s in state.db", n, prefix)
		}
	}
	if out := shared.kubectl(t, "get", "endpointslices", "-l", "kubernetes.io/service-name=kubernetes", "-o", "jsonpath={.items[*].endpoints[*].addresses[*]}"); out == "" {
		t.Errorf("the kubernetes Service has no endpoint")
	}
}

// dbFilesContain reports whether the database files hold b anywhere.
func dbFilesContain(t *testing.T, n *node, b []byte) bool {
	t.Helper()
	for _, suffix := range []string{"", "-wal"} {
		data, _ := os.ReadFile(filepath.Join(n.dataDir(), "server", "db", "state.db"+suffix))
		if bytes.Contains(data, b) {
			return true
		}
	}
	return false
}

func (n *node) secretsEncrypt(t *testing.T, args ...string) string {
	t.Helper()
	cmd := inNetns(n.netns, kedgeBin, append(append([]string{"secrets-encrypt"}, args...),
		"--data-dir", n.dataDir(), "--write-kubeconfig", n.kubeconfig, "--config", filepath.Join(n.dir, "config.yaml"))...)
	cmd.Env = cleanEnv()
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("kedge secrets-encrypt %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}

// A new cluster stores Secrets encrypted; keys rotate, Secrets are
// re-encrypted, and encryption can be turned off and on, all without a
// restart; the raw database bytes say so.
func TestSecretsEncryption(t *testing.T) {
	n := ownNode(t)
	canary := "plaintext-canary-" + fmt.Sprint(time.Now().UnixNano())
	n.kubectl(t, "create", "secret", "generic", "topsecret", "--from-literal=password="+canary)
	if v := rawSecret(t, n, "default", "topsecret"); !bytes.HasPrefix(v, []byte("k8s:enc:aescbc:v1:aescbckey-")) {
		t.Fatalf("a new cluster stores Secrets as %q...", v[:min(30, len(v))])
	}
	if dbFilesContain(t, n, []byte(canary)) {
		t.Fatal("the database files hold the Secret's plaintext")
	}
	if fi, err := os.Stat(filepath.Join(n.dataDir(), "server", "cred", "encryption-config.json")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("encryption config: %v %v", fi, err)
	}
	status := n.secretsEncrypt(t, "status")
	wantAll(t, status, "Encryption Status: Enabled", "Active Key Type Names: AES-CBC aescbckey-")
	oldKey := strings.TrimSpace(strings.TrimPrefix(status[strings.Index(status, "AES-CBC "):], "AES-CBC "))

	n.secretsEncrypt(t, "rotate-keys")
	status = n.secretsEncrypt(t, "status")
	wantAll(t, status, "Current Rotation Stage: reencrypt_finished")
	if strings.Contains(status, oldKey) {
		t.Fatalf("the old key is still in use after rotate-keys:\n%s", status)
	}
	if v := rawSecret(t, n, "default", "topsecret"); bytes.Contains(v, []byte(oldKey)) || !bytes.HasPrefix(v, []byte("k8s:enc:aescbc:v1:")) {
		t.Fatalf("after rotate-keys the Secret is stored as %q...", v[:min(60, len(v))])
	}
	if out := n.kubectl(t, "get", "secret", "topsecret", "-o", "jsonpath={.data.password}"); out == "" {
		t.Fatal("the Secret does not read back")
	}

	// The step-by-step rotation, as k3s users run it.
	n.secretsEncrypt(t, "prepare")
	wantAll(t, n.secretsEncrypt(t, "status"), "Current Rotation Stage: prepare")
	n.secretsEncrypt(t, "rotate")
	n.secretsEncrypt(t, "reencrypt")
	wantAll(t, n.secretsEncrypt(t, "status"), "Current Rotation Stage: reencrypt_finished")

	n.secretsEncrypt(t, "disable")
	n.secretsEncrypt(t, "reencrypt")
	wantAll(t, n.secretsEncrypt(t, "status"), "Encryption Status: Disabled")
	if v := rawSecret(t, n, "default", "topsecret"); bytes.HasPrefix(v, []byte("k8s:enc:")) || !bytes.Contains(v, []byte(canary)) {
		t.Fatalf("after disable and reencrypt the Secret is stored as %q...", v[:min(30, len(v))])
	}
	n.secretsEncrypt(t, "enable")
	n.secretsEncrypt(t, "reencrypt")
	if v := rawSecret(t, n, "default", "topsecret"); !bytes.HasPrefix(v, []byte("k8s:enc:aescbc:v1:")) {
		t.Fatalf("after enable and reencrypt the Secret is stored as %q...", v[:min(30, len(v))])
	}
	// A restart keeps it all.
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	n.kubectl(t, "get", "secret", "topsecret")
}

// A server started with --secrets-encryption=false stores Secrets in the
// clear, as upstream does.
func TestSecretsEncryptionOff(t *testing.T) {
	n := ownNode(t, "--secrets-encryption=false")
	n.kubectl(t, "create", "secret", "generic", "clear", "--from-literal=a=visible-canary")
	if v := rawSecret(t, n, "default", "clear"); bytes.HasPrefix(v, []byte("k8s:enc:")) {
		t.Fatal("encrypted with --secrets-encryption=false")
	}
	if _, err := os.Stat(filepath.Join(n.dataDir(), "server", "cred", "encryption-config.json")); err == nil {
		t.Fatal("an encryption config was written")
	}
}

// joinAgent starts an agent in netns as name against server, with token
// and extra flags; it returns the node, started.
func joinAgent(t *testing.T, netns, ip, server, token, name string, extra ...string) *node {
	t.Helper()
	return joinAgentWith(t, netns, ip, server, token, name, nil, extra...)
}

// joinAgentWith is joinAgent with the test images in the agent's air-gap
// images dir.
func joinAgentWith(t *testing.T, netns, ip, server, token, name string, images []string, extra ...string) *node {
	t.Helper()
	a := &node{netns: netns, dir: t.TempDir()}
	for _, img := range images {
		if err := copyFile(filepath.Join(imagesDir, img), filepath.Join(a.dataDir(), "agent", "images", img)); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(a.dir, "config.yaml"), nil, 0o600)
	a.args = append([]string{"agent", "--config", filepath.Join(a.dir, "config.yaml"), "--data-dir", a.dataDir(), "--run-dir", filepath.Join(a.dir, "run"),
		"--server", server, "--token", token, "--node-ip", ip, "--node-name", name,
		"--flannel-iface", "eth0", "--kubelet-arg", "cgroup-root=/kedge-test-id"}, extra...)
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		a.stop()
		killall(a)
	})
	return a
}

// waitExit waits for a node's kedge to exit and returns its log tail.
func waitExit(t *testing.T, n *node, within time.Duration) string {
	t.Helper()
	select {
	case <-n.exited:
	case <-time.After(within):
		t.Fatalf("kedge did not exit within %s:\n%s", within, n.logTail(20))
	}
	return n.logTail(10)
}

// Node names are bound to machines by a node password; agents may join
// with an agent token or an expiring bootstrap token but never fetch a
// server's bootstrap data with them; the server token rotates without
// disturbing joined nodes.
func TestZZZZZZNodeIdentityAndTokens(t *testing.T) {
	h := newHANet(t, "kedge-id", 3)
	t.Cleanup(cgroupRoot(t, "kedge-test-id"))
	s := haServer(t, h, 1, "--agent-token", "agent-only-secret")
	s.startReady(t)
	url := "https://" + h.ip(1) + ":6443"
	serverToken := tokenOf(t, s)
	agentToken := strings.TrimSpace(string(mustRead(t, filepath.Join(s.dataDir(), "server", "agent-token"))))
	if !strings.Contains(agentToken, "::node:agent-only-secret") {
		t.Fatalf("agent token %q", agentToken)
	}
	k := func(args ...string) (string, error) { return kubectlRunIn(s.netns, s.kubeconfig, "", args...) }
	nodeReady := func(name string) { t.Helper(); waitNodeReady(t, s, name) }

	// The agent token joins an agent...
	a := joinAgent(t, h.hosts[1], h.ip(2), url, agentToken, "edge")
	nodeReady("edge")
	if out, _ := k("-n", "kube-system", "get", "secret", "edge.node-password.kedge", "-o", "name"); !strings.Contains(out, "edge.node-password.kedge") {
		t.Fatalf("no node password Secret for edge: %q", out)
	}
	if pw, err := os.Stat(filepath.Join(a.dataDir(), "agent", "node-password")); err != nil || pw.Mode().Perm() != 0o600 {
		t.Fatalf("node password file: %v %v", pw, err)
	}
	// ...but cannot fetch what servers share.
	code, _ := inNetns(h.hosts[1], "curl", "-sk", "-o", "/dev/null", "-w", "%{http_code}", "-u", "node:agent-only-secret", url+"/v1-kedge/bootstrap").Output()
	if string(code) != "401" {
		t.Errorf("the agent token fetched the bootstrap data: HTTP %s", code)
	}
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}

	// Another machine (its own data dir) with the same node name is refused.
	clone := joinAgent(t, h.hosts[2], h.ip(3), url, agentToken, "edge")
	if log := waitExit(t, clone, 2*time.Minute); !strings.Contains(log, `node name \"edge\" is registered by another machine`) && !strings.Contains(log, `node name "edge" is registered by another machine`) {
		t.Fatalf("a second machine named edge:\n%s", log)
	}
	// With --with-node-id it gets a name of its own.
	withID := joinAgent(t, h.hosts[2], h.ip(3), url, agentToken, "edge", "--with-node-id")
	id := strings.TrimSpace(string(mustReadEventually(t, filepath.Join(withID.dataDir(), "agent", "node-id"))))
	nodeReady("edge-" + id)
	if err := withID.stop(); err != nil {
		t.Fatal(err)
	}

	// Bootstrap tokens: one valid for an hour joins, an expired one not.
	tool := func(args ...string) (string, error) {
		cmd := inNetns(s.netns, kedgeBin, append(args, "--data-dir", s.dataDir(), "--write-kubeconfig", s.kubeconfig, "--config", filepath.Join(s.dir, "config.yaml"))...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := tool("token", "create", "--ttl", "1h", "--description", "test")
	if err != nil || !strings.HasPrefix(out, "K10") {
		t.Fatalf("token create: %v %s", err, out)
	}
	bootToken := strings.TrimSpace(out)
	expired, err := tool("token", "create", "--ttl", "1s")
	if err != nil {
		t.Fatal(err)
	}
	list, _ := tool("token", "list")
	wantAll(t, list, "test", "valid")
	eventually(t, 30*time.Second, "the 1s token is listed as expired", func() error {
		if list, _ := tool("token", "list"); !strings.Contains(list, "expired") {
			return fmt.Errorf("%s", list)
		}
		return nil
	})
	late := joinAgent(t, h.hosts[2], h.ip(3), url, strings.TrimSpace(expired), "late")
	if log := waitExit(t, late, 2*time.Minute); !strings.Contains(log, "invalid join token") {
		t.Fatalf("an expired bootstrap token:\n%s", log)
	}
	boot := joinAgent(t, h.hosts[2], h.ip(3), url, bootToken, "booted")
	nodeReady("booted")
	if err := boot.stop(); err != nil {
		t.Fatal(err)
	}
	id6 := bootToken[strings.Index(bootToken, "::")+2 : strings.Index(bootToken, ".")]
	if out, err := tool("token", "delete", id6); err != nil {
		t.Fatalf("token delete: %v %s", err, out)
	}

	// The server token rotates: the old one joins nothing, the new one does,
	// and the node joined before is still Ready.
	if out, err := tool("token", "rotate", "--new-token", "rotated-secret"); err != nil {
		t.Fatalf("token rotate: %v %s", err, out)
	}
	oldJoin := joinAgent(t, h.hosts[2], h.ip(3), url, serverToken, "old-token")
	if log := waitExit(t, oldJoin, 2*time.Minute); !strings.Contains(log, "invalid join token") {
		t.Fatalf("the old server token after rotation:\n%s", log)
	}
	newToken := tokenOf(t, s)
	if !strings.HasSuffix(newToken, "::server:rotated-secret") {
		t.Fatalf("token after rotate: %q", newToken)
	}
	if err := a.start(); err != nil { // the agent that joined first, restarted
		t.Fatal(err)
	}
	nodeReady("edge")
}

// The CAs rotate under a joined agent: its pod keeps running and the API
// still reaches it (logs) with nothing restarted but the server; a join
// token from before the rotation still joins a new agent, and the agent,
// restarted, takes node certificates of the new CA.
func TestZZZZZZCARotation(t *testing.T) {
	h := newHANet(t, "kedge-ca", 3)
	t.Cleanup(cgroupRoot(t, "kedge-test-id"))
	s := haServer(t, h, 1)
	s.startReady(t)
	url := "https://" + h.ip(1) + ":6443"
	token := tokenOf(t, s)
	tlsDir := filepath.Join(s.dataDir(), "server", "tls")
	oldCA := mustRead(t, filepath.Join(tlsDir, "server-ca.crt"))
	k := func(args ...string) (string, error) { return kubectlRunIn(s.netns, s.kubeconfig, "", args...) }
	ready := func(name string) { t.Helper(); waitNodeReady(t, s, name) }
	a := joinAgentWith(t, h.hosts[1], h.ip(2), url, token, "edge", []string{"hello-v1.tar"})
	ready("edge")
	if out, err := kubectlRunIn(s.netns, s.kubeconfig, `apiVersion: v1
kind: Pod
metadata: {name: steady}
spec:
  nodeSelector: {kubernetes.io/hostname: edge}
  containers: [{name: hello, image: kedge.test/hello:v1, imagePullPolicy: Never}]
`, "apply", "-f", "-"); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	eventually(t, 2*time.Minute, "pod steady Running", func() error {
		out, _ := k("get", "pod", "steady", "-o", "jsonpath={.status.phase}")
		if out != "Running" {
			return fmt.Errorf("phase %q", out)
		}
		return nil
	})
	uid, _ := k("get", "pod", "steady", "-o", "jsonpath={.metadata.uid}")
	podIP, _ := k("get", "pod", "steady", "-o", "jsonpath={.status.podIP}")
	serves := func(when string) {
		t.Helper()
		eventually(t, time.Minute, "pod steady serves "+when, func() error {
			out, err := inNetns(a.netns, "curl", "-sS", "--max-time", "2", "http://"+podIP+":8080/").CombinedOutput()
			if err != nil || !strings.Contains(string(out), "Hello from Kubernetes!") {
				return fmt.Errorf("%s: %v %s", podIP, err, out)
			}
			return nil
		})
	}
	serves("before the rotation")

	caTool := func(args ...string) (string, error) {
		return kedgeIn(s, append([]string{"certificate"}, append(args, "--run-dir", filepath.Join(s.dir, "run"))...)...)
	}
	if out, err := caTool("rotate-ca"); err == nil || !strings.Contains(out, "kedge is running") {
		t.Fatalf("rotate-ca while kedge runs: %v\n%s", err, out)
	}
	if err := s.stop(); err != nil {
		t.Fatal(err)
	}
	serves("while the server is down")
	out, err := caTool("rotate-ca")
	if err != nil || !strings.Contains(out, "cross-signed") {
		t.Fatalf("rotate-ca: %v\n%s", err, out)
	}
	s.startReady(t)
	newCA := mustRead(t, filepath.Join(tlsDir, "server-ca.crt"))
	if bytes.Equal(newCA, oldCA) || !bytes.HasSuffix(newCA, oldCA) {
		t.Fatal("server-ca.crt is not the new CA followed by the old one")
	}
	if tok := tokenOf(t, s); tok == token || !strings.HasPrefix(tok, "K10"+fmt.Sprintf("%x", sha256.Sum256(newCA))) {
		t.Fatalf("the token file does not name the new CA: %s", tok)
	}
	check, err := caTool("check")
	if err != nil {
		t.Fatalf("certificate check: %v\n%s", err, check)
	}
	oldCN := firstCN(t, oldCA)
	for _, line := range strings.Split(check, "\n") {
		if strings.Contains(line, "server/tls/server-ca.crt") && strings.Contains(line, oldCN) {
			t.Fatalf("certificate check still lists the old server CA:\n%s", check)
		}
	}

	// The agent, not restarted, trusts only the old CA, and still works:
	// its kubelet renews its Lease through the new serving certificate.
	restarted := time.Now()
	eventually(t, 2*time.Minute, "edge renews its Lease after the rotation", func() error {
		out, err := k("-n", "kube-node-lease", "get", "lease", "edge", "-o", "jsonpath={.spec.renewTime}")
		if err != nil {
			return err
		}
		renewed, err := time.Parse(time.RFC3339Nano, out)
		if err != nil || !renewed.After(restarted) {
			return fmt.Errorf("renewTime %q (%v)", out, err)
		}
		return nil
	})
	ready("edge")
	eventually(t, time.Minute, "the API reaches the agent's kubelet", func() error {
		_, err := k("logs", "steady")
		return err
	})
	if now, _ := k("get", "pod", "steady", "-o", "jsonpath={.metadata.uid} {.status.containerStatuses[0].restartCount}"); now != uid+" 0" {
		t.Fatalf("the pod was replaced or restarted: %q (uid was %s)", now, uid)
	}
	serves("after the rotation")
	// A token from before the rotation joins a new agent.
	joinAgent(t, h.hosts[2], h.ip(3), url, token, "after")
	ready("after")
	// Restarted, the agent takes node certificates of the new CA.
	if err := a.stop(); err != nil {
		t.Fatal(err)
	}
	if err := a.start(); err != nil {
		t.Fatal(err)
	}
	for f, ca := range map[string]string{"serving-kubelet.crt": "server-ca.crt", "client-kubelet.crt": "client-ca.crt"} {
		want := firstCN(t, mustRead(t, filepath.Join(tlsDir, ca)))
		eventually(t, 2*time.Minute, "the restarted agent's "+f+" issued by the new CA", func() error {
			if got := firstIssuer(t, mustRead(t, filepath.Join(a.dataDir(), "agent", "tls", f))); got != want {
				return fmt.Errorf("issued by %s, not %s", got, want)
			}
			return nil
		})
	}
	ready("edge")
	eventually(t, time.Minute, "logs through the restarted agent", func() error {
		out, err := k("logs", "steady")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
}

// waitNodeReady waits up to 3 minutes for node name to be Ready, as the
// server s sees it.
func waitNodeReady(t *testing.T, s *node, name string) {
	t.Helper()
	eventually(t, 3*time.Minute, "node "+name+" Ready", func() error {
		out, _ := kubectlRunIn(s.netns, s.kubeconfig, "", "get", "node", name, "-o", `jsonpath={.status.conditions[?(@.type=="Ready")].status}`)
		if out != "True" {
			return fmt.Errorf("Ready=%q", out)
		}
		return nil
	})
}

// firstIssuer is the issuer of the first certificate of a PEM file.
func firstIssuer(t *testing.T, pemData []byte) string {
	t.Helper()
	return parseFirst(t, pemData).Issuer.CommonName
}

func firstCN(t *testing.T, pemData []byte) string {
	t.Helper()
	return parseFirst(t, pemData).Subject.CommonName
}

func parseFirst(t *testing.T, pemData []byte) *x509.Certificate {
	t.Helper()
	block, _ := pem.Decode(pemData)
	if block == nil {
		t.Fatal("no PEM")
	}
	c, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func mustReadEventually(t *testing.T, path string) []byte {
	t.Helper()
	var data []byte
	eventually(t, time.Minute, path+" exists", func() error {
		var err error
		data, err = os.ReadFile(path)
		return err
	})
	return data
}

// The hardening controls the README lists, each checked from outside.
func TestHardening(t *testing.T) {
	// Pod Security: baseline enforced outside kube-system.
	ns := namespace(t, shared)
	out, err := shared.kubectlIn(fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: priv, namespace: %s}
spec:
  containers:
  - name: c
    image: kedge.test/hello:v1
    securityContext: {privileged: true}
`, ns), "apply", "-f", "-")
	if err == nil || !strings.Contains(out, "violates PodSecurity \"baseline:latest\"") {
		t.Errorf("a privileged pod in a plain namespace: %v\n%s", err, out)
	}

	// The kubelet: no read-only port, no anonymous access.
	if out, err := exec.Command("curl", "-s", "--max-time", "3", "http://127.0.0.1:10255/pods").CombinedOutput(); err == nil {
		t.Errorf("the kubelet's read-only port answers: %s", out)
	}
	if out, _ := exec.Command("curl", "-sk", "--max-time", "3", "https://127.0.0.1:10250/pods").CombinedOutput(); !strings.Contains(string(out), "Unauthorized") {
		t.Errorf("the kubelet answers an anonymous request: %s", out)
	}

	// The API: profiling off, TLS 1.2 at least, strong ciphers only.
	n := ownNode(t, "--audit-log-path", filepath.Join(t.TempDir(), "audit", "audit.log"))
	if out, err := n.kubectlErr("get", "--raw", "/debug/pprof/"); err == nil {
		t.Errorf("profiling is on: %s", out[:min(80, len(out))])
	}
	addr := fmt.Sprintf("127.0.0.1:%d", n.port)
	for name, c := range map[string]*tls.Config{
		"TLS 1.1":     {InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11},
		"a CBC suite": {InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12, CipherSuites: []uint16{tls.TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA}},
	} {
		if conn, err := tls.Dial("tcp", addr, c); err == nil {
			conn.Close()
			t.Errorf("the API accepted %s", name)
		}
	}
	if conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}); err != nil {
		t.Errorf("the API refused TLS 1.2: %v", err)
	} else {
		conn.Close()
	}

	// Audit logging with one flag.
	n.kubectl(t, "create", "configmap", "audited")
	var log string
	for _, a := range n.args {
		if strings.HasSuffix(a, "audit.log") {
			log = a
		}
	}
	eventually(t, 30*time.Second, "the audit log records the request", func() error {
		data, _ := os.ReadFile(log)
		if !strings.Contains(string(data), `"resource":"configmaps"`) || !strings.Contains(string(data), "audited") {
			return fmt.Errorf("audit log: %d bytes", len(data))
		}
		return nil
	})

	// File modes: nothing under <data-dir>/server is readable by others.
	filepath.Walk(filepath.Join(n.dataDir(), "server"), func(p string, fi os.FileInfo, err error) error {
		if err != nil || strings.HasSuffix(p, ".sock") {
			return nil
		}
		want := os.FileMode(0o600)
		if fi.IsDir() {
			want = 0o700
		}
		if fi.Mode().Perm()&^want != 0 {
			t.Errorf("%s has mode %o, want %o or stricter", p, fi.Mode().Perm(), want)
		}
		return nil
	})
}

// The endpoints anyone can reach (/ping, /cacerts, /v1-kedge/...) refuse
// bad input quickly and keep serving: oversized bodies, garbage CSRs,
// wrong or replayed tokens, slow clients.
func TestUnauthenticatedEndpoints(t *testing.T) {
	n := ownNode(t)
	base := fmt.Sprintf("https://127.0.0.1:%d", n.port)
	client := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	token, err := os.ReadFile(filepath.Join(n.dataDir(), "server", "token"))
	if err != nil {
		t.Fatal(err)
	}
	secret := strings.TrimSpace(string(token[strings.LastIndex(string(token), ":")+1:]))
	post := func(user, pass string, body io.Reader) int {
		req, _ := http.NewRequest(http.MethodPost, base+"/v1-kedge/sign", body)
		req.SetBasicAuth(user, pass)
		resp, err := client.Do(req)
		if err != nil {
			return 0
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp.StatusCode
	}
	for name, c := range map[string]struct {
		user, pass string
		body       io.Reader
		want       int
	}{
		"wrong token":   {"server", "nope", strings.NewReader("{}"), http.StatusUnauthorized},
		"oversized":     {"server", secret, io.LimitReader(zeros{}, 32<<20), http.StatusBadRequest},
		"garbage CSR":   {"server", secret, strings.NewReader(`{"kind":"kubelet","nodeName":"n1","csr":"garbage"}`), http.StatusBadRequest},
		"unknown kind":  {"server", secret, strings.NewReader(`{"kind":"admin","nodeName":"n1","csr":""}`), http.StatusBadRequest},
		"not JSON":      {"server", secret, strings.NewReader("<xml/>"), http.StatusBadRequest},
		"bad node name": {"server", secret, strings.NewReader(`{"kind":"kubelet","nodeName":"../etc","csr":""}`), http.StatusBadRequest},
	} {
		got := post(c.user, c.pass, c.body)
		// The server answers an oversized body early and closes: a client
		// still sending may see the connection cut before the answer.
		if got != c.want && (name != "oversized" || got != 0) {
			t.Errorf("%s: HTTP %d, want %d", name, got, c.want)
		}
	}
	// Many wrong tokens in a row: each refused, the server unharmed.
	for i := 0; i < 300; i++ {
		if got := post("server", fmt.Sprintf("guess-%d", i), strings.NewReader("{}")); got != http.StatusUnauthorized && got != http.StatusTooManyRequests {
			t.Fatalf("guess %d: HTTP %d", i, got)
		}
	}
	// Slow clients: connections that never finish their request are cut,
	// and the server answers others all the while.
	var slow []net.Conn
	for i := 0; i < 40; i++ {
		c, err := tls.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", n.port), &tls.Config{InsecureSkipVerify: true})
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(c, "POST /v1-kedge/sign HTTP/1.1\r\nHost: x\r\nContent-Length: 1000000\r\n\r\n{")
		slow = append(slow, c)
	}
	defer func() {
		for _, c := range slow {
			c.Close()
		}
	}()
	resp, err := client.Get(base + "/ping")
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/ping beside slow clients: %v", err)
	}
	resp.Body.Close()
	begin := time.Now()
	slow[0].SetReadDeadline(time.Now().Add(time.Minute))
	buf := make([]byte, 512)
	_, rerr := slow[0].Read(buf)
	if rerr == nil {
		rerr = fmt.Errorf("answered")
	}
	if took := time.Since(begin); took > 40*time.Second {
		t.Errorf("a request body that never arrives held its connection for %s", took)
	}
	if out, err := n.kubectlErr("get", "--raw", "/readyz"); err != nil || strings.TrimSpace(out) != "ok" {
		t.Fatalf("the server after the attacks: %v %s", err, out)
	}
}

// zeros is an endless reader of zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) {
	clear(p)
	return len(p), nil
}

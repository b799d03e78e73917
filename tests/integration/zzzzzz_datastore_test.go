package integration

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

// startPostgres runs Debian's PostgreSQL (scripts/test installs it) in
// netns on ip:5432, trusting the LAN, with a database "kedge"; it is
// stopped when the test ends.
func startPostgres(t *testing.T, netns, ip string) string {
	t.Helper()
	bins, _ := filepath.Glob("/usr/lib/postgresql/*/bin/postgres")
	if len(bins) == 0 {
		t.Fatal("PostgreSQL is not installed (scripts/test installs the postgresql package)")
	}
	bin := filepath.Dir(bins[len(bins)-1])
	pg, err := user.Lookup("postgres")
	if err != nil {
		t.Fatal(err)
	}
	uid, _ := strconv.Atoi(pg.Uid)
	gid, _ := strconv.Atoi(pg.Gid)
	dir, err := os.MkdirTemp("", "kedge-test-pg-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	os.Chmod(dir, 0o755)
	if err := os.Chown(dir, uid, gid); err != nil {
		t.Fatal(err)
	}
	data := filepath.Join(dir, "data")
	if out, err := exec.Command("runuser", "-u", "postgres", "--", filepath.Join(bin, "initdb"), "-D", data, "-A", "trust", "-U", "postgres").CombinedOutput(); err != nil {
		t.Fatalf("initdb: %v\n%s", err, out)
	}
	hba, _ := os.ReadFile(filepath.Join(data, "pg_hba.conf"))
	if err := os.WriteFile(filepath.Join(data, "pg_hba.conf"), append(hba, []byte("\nhost all all 10.252.0.0/24 trust\n")...), 0o600); err != nil {
		t.Fatal(err)
	}
	cmd := inNetns(netns, "runuser", "-u", "postgres", "--", filepath.Join(bin, "postgres"), "-D", data, "-h", ip, "-p", "5432", "-k", dir)
	logf, _ := os.Create(filepath.Join(dir, "postgres.log"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// SIGINT: PostgreSQL's fast shutdown; the whole group, by its id.
		syscall.Kill(-cmd.Process.Pid, syscall.SIGINT)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL)
			<-done
		}
	})
	eventually(t, time.Minute, "PostgreSQL accepts connections", func() error {
		out, err := inNetns(netns, "psql", "-h", ip, "-p", "5432", "-U", "postgres", "-c", "select 1").CombinedOutput()
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		return nil
	})
	if out, err := inNetns(netns, "psql", "-h", ip, "-p", "5432", "-U", "postgres", "-c", "create database kedge").CombinedOutput(); err != nil {
		t.Fatalf("create database: %v\n%s", err, out)
	}
	return fmt.Sprintf("postgres://postgres@%s:5432/kedge?sslmode=disable", ip)
}

// Two servers on one PostgreSQL with one token serve one cluster (the same
// objects, the same CA); the survivor carries on when one stops. A server
// with another token is refused and writes nothing.
func TestZZZZZZExternalDatastore(t *testing.T) {
	h := newHANet(t, "kedge-pg", 4)
	endpoint := startPostgres(t, h.hosts[0], h.ip(1))
	const token = "pg-shared-secret"
	s2 := haServer(t, h, 2, "--datastore-endpoint", endpoint, "--token", token)
	s2.startReady(t)
	s3 := haServer(t, h, 3, "--datastore-endpoint", endpoint, "--token", token)
	s3.startReady(t)
	if string(mustRead(t, filepath.Join(s2.dataDir(), "server", "tls", "server-ca.crt"))) != string(mustRead(t, filepath.Join(s3.dataDir(), "server", "tls", "server-ca.crt"))) {
		t.Fatal("the two servers have different CAs")
	}
	if string(mustRead(t, filepath.Join(s2.dataDir(), "server", "tls", "service.key"))) != string(mustRead(t, filepath.Join(s3.dataDir(), "server", "tls", "service.key"))) {
		t.Fatal("the two servers have different service-account keys")
	}
	if _, err := kubectlRunIn(s2.netns, s2.kubeconfig, "", "create", "configmap", "shared", "--from-literal=from=s2"); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectlRunIn(s3.netns, s3.kubeconfig, "", "get", "configmap", "shared", "-o", "jsonpath={.data.from}"); err != nil || out != "s2" {
		t.Fatalf("s3 does not see s2's object: %v %q", err, out)
	}
	// A service-account token issued by one server is accepted by the other.
	var tok string
	eventually(t, time.Minute, "a token for the default ServiceAccount (once the controllers made it)", func() error {
		out, err := kubectlRunIn(s2.netns, s2.kubeconfig, "", "-n", "default", "create", "token", "default")
		if err != nil {
			return fmt.Errorf("%v %s", err, out)
		}
		tok = out
		return nil
	})
	whoami := inNetns(s3.netns, kubectlBin, "--kubeconfig", "/dev/null", "--server", "https://127.0.0.1:6443",
		"--certificate-authority", filepath.Join(s3.dataDir(), "server", "tls", "server-ca.crt"), "--token", strings.TrimSpace(tok), "auth", "whoami")
	whoami.Env = cleanEnv()
	if out, err := whoami.CombinedOutput(); err != nil || !strings.Contains(string(out), "system:serviceaccount:default:default") {
		t.Fatalf("s3 and a token issued by s2: %v %s", err, out)
	}
	if err := s2.stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := kubectlRunIn(s3.netns, s3.kubeconfig, "", "create", "configmap", "after", "--from-literal=a=b"); err != nil {
		t.Fatalf("s3 after s2 stopped: %v", err)
	}
	eventually(t, time.Minute, "s3 runs the controllers alone (a namespace's default ServiceAccount appears)", func() error {
		kubectlRunIn(s3.netns, s3.kubeconfig, "", "create", "namespace", "lonely")
		_, err := kubectlRunIn(s3.netns, s3.kubeconfig, "", "-n", "lonely", "get", "serviceaccount", "default")
		return err
	})

	// The CAs rotate on s2 while it is down: started, it stores them in the
	// datastore; s3, restarted, takes them rather than refusing them as
	// another cluster's, and the two serve one cluster again.
	tlsOf := func(n *node, f string) []byte { return mustRead(t, filepath.Join(n.dataDir(), "server", "tls", f)) }
	oldCA := tlsOf(s3, "server-ca.crt")
	if out, err := kedgeIn(s2, "certificate", "rotate-ca", "--run-dir", filepath.Join(s2.dir, "run")); err != nil {
		t.Fatalf("rotate-ca: %v\n%s", err, out)
	}
	s2.startReady(t)
	if err := s3.stop(); err != nil {
		t.Fatal(err)
	}
	s3.startReady(t)
	for _, f := range []string{"server-ca.crt", "server-ca.key", "client-ca.crt", "etcd/peer-ca.crt"} {
		if !bytes.Equal(tlsOf(s2, f), tlsOf(s3, f)) {
			t.Fatalf("%s differs between the servers after the rotation", f)
		}
	}
	if ca := tlsOf(s3, "server-ca.crt"); bytes.Equal(ca, oldCA) || !bytes.HasSuffix(ca, oldCA) {
		t.Fatal("s3 does not hold the rotated server CA")
	}
	if _, err := kubectlRunIn(s2.netns, s2.kubeconfig, "", "create", "secret", "generic", "rotated", "--from-literal=a=b"); err != nil {
		t.Fatal(err)
	}
	if out, err := kubectlRunIn(s3.netns, s3.kubeconfig, "", "get", "secret", "rotated", "-o", "jsonpath={.data.a}"); err != nil || out != "Yg==" {
		t.Fatalf("s3 reads s2's Secret after the rotation: %v %q", err, out)
	}

	// Another token: refused, and nothing written into its TLS dir.
	bad := haServer(t, h, 4, "--datastore-endpoint", endpoint, "--token", "not-the-token")
	if err := bad.start(); err != nil {
		t.Fatal(err)
	}
	<-bad.exited
	if log := bad.logTail(5); !strings.Contains(log, "--token is not the token this datastore's cluster was created with") {
		t.Errorf("a server with another token:\n%s", log)
	}
	if entries, _ := os.ReadDir(filepath.Join(bad.dataDir(), "server", "tls")); len(entries) > 0 {
		t.Errorf("a refused server wrote %d files into its TLS dir", len(entries))
	}
}

// A SQLite server restarted with --cluster-init moves its data into etcd
// and keeps the SQLite file; an etcd snapshot restores deleted objects;
// bad restore paths are refused with the data untouched.
func TestZZZZZZMigrationAndSnapshots(t *testing.T) {
	h := newHANet(t, "kedge-mig", 1)
	n := haServer(t, h, 1)
	n.startReady(t)
	k := func(args ...string) (string, error) { return kubectlRunIn(n.netns, n.kubeconfig, "", args...) }
	if _, err := k("create", "configmap", "before", "--from-literal=made=on-sqlite"); err != nil {
		t.Fatal(err)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	n.args = append(n.args, "--cluster-init")
	n.startReady(t)
	if out, err := k("get", "configmap", "before", "-o", "jsonpath={.data.made}"); err != nil || out != "on-sqlite" {
		t.Fatalf("after the move to etcd: %v %q", err, out)
	}
	if !strings.Contains(n.logTail(400), "moved the SQLite database into etcd") {
		t.Errorf("the log does not say the data moved")
	}
	if _, err := os.Stat(filepath.Join(n.dataDir(), "server", "db", "state.db.migrated-to-etcd")); err != nil {
		t.Errorf("the SQLite backup: %v", err)
	}
	lostLease(t, n)

	out, err := kedgeIn(n, "etcd-snapshot", "save", "--name", "test")
	if err != nil {
		t.Fatalf("etcd-snapshot save: %v\n%s", err, out)
	}
	snap := strings.TrimSpace(out)
	if out, err := kedgeIn(n, "etcd-snapshot", "ls"); err != nil || !strings.Contains(out, filepath.Base(snap)) {
		t.Fatalf("etcd-snapshot ls: %v\n%s", err, out)
	}
	if _, err := k("delete", "configmap", "before"); err != nil {
		t.Fatal(err)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	// Every component stopped, down to etcd: none ended the process.
	if log := n.logTail(80); !strings.Contains(log, "msg=stopped component=etcd ") {
		t.Errorf("kedge on etcd did not stop etcd:\n%s", log)
	}
	etcdDir := filepath.Join(n.dataDir(), "server", "db", "etcd")
	for name, c := range map[string]struct{ path, want string }{
		"missing":        {filepath.Join(n.dir, "no-such-snapshot"), "no such file"},
		"not a snapshot": {filepath.Join(n.dir, "config.yaml"), "is not an etcd snapshot"},
	} {
		cmd := inNetns(n.netns, kedgeBin, append(n.args, "--cluster-reset", "--cluster-reset-restore-path", c.path)...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), c.want) {
			t.Errorf("restore from a %s file: %v\n%s", name, err, out)
		}
		if entries, _ := os.ReadDir(filepath.Dir(etcdDir)); countPrefix(entries, "etcd-old-") > 0 {
			t.Errorf("restore from a %s file moved the etcd data", name)
		}
	}
	cmd := inNetns(n.netns, kedgeBin, append(n.args, "--cluster-reset", "--cluster-reset-restore-path", snap)...)
	cmd.Env = cleanEnv()
	if out, err := cmd.CombinedOutput(); err != nil || !strings.Contains(string(out), "restart kedge without --cluster-reset") {
		t.Fatalf("--cluster-reset from the snapshot: %v\n%s", err, out)
	}
	n.startReady(t)
	if out, err := k("get", "configmap", "before", "-o", "jsonpath={.data.made}"); err != nil || out != "on-sqlite" {
		t.Fatalf("after the restore: %v %q", err, out)
	}
	if out, err := kedgeIn(n, "etcd-snapshot", "delete", filepath.Base(snap)); err != nil {
		t.Fatalf("etcd-snapshot delete: %v\n%s", err, out)
	}
}

// lostLease: on etcd, kedge runs the controller manager and the scheduler
// under Leases. Another holder takes both; kedge stops them without
// exiting, and runs them again once that holder's Lease expires.
func lostLease(t *testing.T, n *node) {
	t.Helper()
	k := func(args ...string) (string, error) { return kubectlRunIn(n.netns, n.kubeconfig, "", args...) }
	leases := []string{"kube-controller-manager", "kube-scheduler"}
	held := func(l, what string) {
		eventually(t, time.Minute, l+what, func() error {
			if out, _ := k("-n", "kube-system", "get", "lease", l, "-o", "jsonpath={.spec.holderIdentity}"); out != n.hostname {
				return fmt.Errorf("holder %q", out)
			}
			return nil
		})
	}
	for _, l := range leases {
		held(l, " leads")
		now := time.Now().UTC().Format("2006-01-02T15:04:05.000000Z")
		patch := fmt.Sprintf(`{"spec":{"holderIdentity":"intruder","leaseDurationSeconds":20,"acquireTime":%q,"renewTime":%q}}`, now, now)
		if out, err := k("-n", "kube-system", "patch", "lease", l, "--type=merge", "-p", patch); err != nil {
			t.Fatalf("take the %s Lease: %v %s", l, err, out)
		}
	}
	for _, l := range leases {
		eventually(t, time.Minute, l+" stopped", func() error {
			if !strings.Contains(n.logTail(400), `msg="no longer leading: stopped" component=leader lease=`+l) {
				return errors.New("the log does not say so")
			}
			return nil
		})
	}
	select {
	case <-n.exited:
		t.Fatalf("kedge exited when it lost its Leases:\n%s", n.logTail(40))
	default:
	}
	for _, l := range leases {
		held(l, " leads again")
	}
	// Both work again: the controller manager makes the Deployment's pod
	// and the scheduler reports it has no node for it (no agent here).
	if _, err := k("create", "deployment", "after-lease", "--image=kedge.test/hello:v1"); err != nil {
		t.Fatal(err)
	}
	eventually(t, time.Minute, "the pod is made and the scheduler has looked at it", func() error {
		out, _ := k("get", "events", "--field-selector", "reason=FailedScheduling", "-o", "jsonpath={.items[*].involvedObject.name}")
		if !strings.Contains(out, "after-lease-") {
			return fmt.Errorf("FailedScheduling events for %q", out)
		}
		return nil
	})
	if _, err := k("delete", "deployment", "after-lease"); err != nil {
		t.Fatal(err)
	}
}

func countPrefix(entries []os.DirEntry, prefix string) int {
	n := 0
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), prefix) {
			n++
		}
	}
	return n
}

// kedge datastore snapshot copies the SQLite database while kedge runs;
// restore (kedge stopped) brings deleted objects back.
func TestDatastoreSnapshot(t *testing.T) {
	n := ownNode(t)
	n.kubectl(t, "create", "configmap", "keep", "--from-literal=a=b")
	tool := func(args ...string) (string, error) {
		cmd := exec.Command(kedgeBin, append(args, "--data-dir", n.dataDir(), "--run-dir", filepath.Join(n.dir, "run"), "--config", filepath.Join(n.dir, "config.yaml"))...)
		cmd.Env = cleanEnv()
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	out, err := tool("datastore", "snapshot")
	if err != nil {
		t.Fatalf("datastore snapshot: %v\n%s", err, out)
	}
	snap := strings.TrimSpace(out)
	n.kubectl(t, "delete", "configmap", "keep")
	if out, err := tool("datastore", "restore", snap); err == nil || !strings.Contains(out, "is running") {
		t.Fatalf("restore while kedge runs: %v\n%s", err, out)
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	if out, err := tool("datastore", "restore", filepath.Join(n.dir, "config.yaml")); err == nil {
		t.Fatalf("restore from a file that is not a database: %s", out)
	}
	if out, err := tool("datastore", "restore", snap); err != nil {
		t.Fatalf("datastore restore: %v\n%s", err, out)
	}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if out := n.kubectl(t, "get", "configmap", "keep", "-o", "jsonpath={.data.a}"); out != "b" {
		t.Fatalf("after the restore: %q", out)
	}
}

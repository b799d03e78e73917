package integration

import (
	"context"
	"crypto/sha256"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/kedge-dev/kedge/pkg/memlimit"
)

// fingerprint hashes every file under dir (certificates, keys, token).
func fingerprint(t *testing.T, dir string, files ...string) map[string]string {
	t.Helper()
	sums := map[string]string{}
	add := func(path string) {
		data, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		sums[path] = fmt.Sprintf("%x", sha256.Sum256(data))
	}
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && d.Type().IsRegular() {
			add(path)
		}
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range files {
		add(f)
	}
	return sums
}

// kedge sizes its soft memory limit from the memory it may use (the
// machine's, or the memory cgroup it shares with this test), and
// GOMEMLIMIT replaces it.
func TestSoftMemoryLimit(t *testing.T) {
	want := `msg="soft memory limit set by GOMEMLIMIT"`
	if _, set := os.LookupEnv("GOMEMLIMIT"); !set {
		usable, err := memlimit.Usable(os.DirFS("/"))
		if err != nil {
			t.Fatal(err)
		}
		want = fmt.Sprintf(`msg="soft memory limit" limit=%dMiB usable=%dMiB`, memlimit.For(usable)>>20, usable>>20)
	}
	if log, _ := os.ReadFile(shared.logFile()); !strings.Contains(string(log), want) {
		t.Errorf("the shared node's log has no %s", want)
	}
	// A server on a taken port stops at once, after it set the limit.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	t.Setenv("GOMEMLIMIT", "300MiB")
	out := runBad(t, t.TempDir(), "", "--bind-address", "127.0.0.1", "--https-listen-port", strconv.Itoa(ln.Addr().(*net.TCPAddr).Port))
	wantAll(t, out, `msg="soft memory limit set by GOMEMLIMIT" GOMEMLIMIT=300MiB`, "already in use")
}

func TestRestartKeepsStateAndCertificates(t *testing.T) {
	n := ownNode(t, "--write-kubeconfig-mode", "0644")
	n.kubectl(t, "create", "namespace", "keep")
	n.kubectl(t, "-n", "keep", "create", "configmap", "c1", "--from-literal=k=v1")
	n.kubectl(t, "-n", "keep", "create", "deployment", "d1", "--image=registry.invalid/x:v1", "--replicas=2")
	tlsDir := filepath.Join(n.dataDir(), "server", "tls")
	token := filepath.Join(n.dataDir(), "server", "token")
	before := fingerprint(t, tlsDir, token)
	if st, _ := os.Stat(n.kubeconfig); st.Mode().Perm() != 0o644 {
		t.Fatalf("--write-kubeconfig-mode 0644: mode is %o", st.Mode().Perm())
	}
	if data, _ := os.ReadFile(token); !strings.HasPrefix(string(data), "K10") || !strings.Contains(string(data), "::server:") {
		t.Fatalf("token file %q is not K10<hash>::server:<secret>", data)
	}

	if err := n.stop(); err != nil {
		t.Fatalf("graceful stop: %v", err)
	}
	if !strings.Contains(n.logTail(40), "component=kine") {
		t.Fatalf("the stop did not reach kine (reverse order):\n%s", n.logTail(40))
	}
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	if out := n.kubectl(t, "-n", "keep", "get", "configmap", "c1", "-o", "jsonpath={.data.k}"); out != "v1" {
		t.Fatalf("configmap after restart: %q", out)
	}
	if out := n.kubectl(t, "-n", "keep", "get", "deployment", "d1", "-o", "jsonpath={.spec.replicas}"); out != "2" {
		t.Fatalf("deployment after restart: %q", out)
	}
	after := fingerprint(t, tlsDir, token)
	for f, sum := range before {
		if after[f] != sum {
			t.Errorf("%s changed across restart", f)
		}
	}
	if len(after) != len(before) {
		t.Errorf("files in %s changed across restart: %d -> %d", tlsDir, len(before), len(after))
	}
}

func TestKill9KeepsAcknowledgedWrites(t *testing.T) {
	n := ownNode(t)
	cfg, err := clientcmd.BuildConfigFromFlags("", n.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	cfg.QPS, cfg.Burst = 1000, 1000
	client := kubernetes.NewForConfigOrDie(cfg)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()

	var mu sync.Mutex
	var acked []string
	var wg sync.WaitGroup
	for w := 0; w < 4; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; ctx.Err() == nil; i++ {
				name := fmt.Sprintf("w%d-%d", w, i)
				cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: name}, Data: map[string]string{"i": name}}
				cctx, ccancel := context.WithTimeout(ctx, 5*time.Second)
				_, err := client.CoreV1().ConfigMaps("default").Create(cctx, cm, metav1.CreateOptions{})
				ccancel()
				if err == nil {
					mu.Lock()
					acked = append(acked, name)
					mu.Unlock()
				}
			}
		}()
	}
	// Kill while creates are in flight.
	eventually(t, 30*time.Second, "some creates succeed", func() error {
		mu.Lock()
		defer mu.Unlock()
		if len(acked) < 200 {
			return fmt.Errorf("%d acknowledged", len(acked))
		}
		return nil
	})
	n.kill()
	cancel()
	wg.Wait()
	mu.Lock()
	want := append([]string(nil), acked...)
	mu.Unlock()

	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	list, err := client.CoreV1().ConfigMaps("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	have := map[string]bool{}
	for _, cm := range list.Items {
		have[cm.Name] = true
	}
	var lost []string
	for _, name := range want {
		if !have[name] {
			lost = append(lost, name)
		}
	}
	sort.Strings(lost)
	if len(lost) > 0 {
		t.Fatalf("%d of %d acknowledged creates lost after kill -9: %v", len(lost), len(want), lost)
	}
	t.Logf("%d acknowledged creates all present after kill -9", len(want))
}

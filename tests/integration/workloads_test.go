package integration

import (
	"fmt"
	"os/exec"

	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/layout"

	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/klauspost/compress/zstd"
)

func TestVolumes(t *testing.T) {
	ns := privilegedNamespace(t, shared)
	hostDir := t.TempDir()
	os.WriteFile(filepath.Join(hostDir, "from-host.txt"), []byte("host data\n"), 0o644)
	shared.kubectl(t, "-n", ns, "create", "configmap", "cfg", "--from-literal=color=blue")
	shared.kubectl(t, "-n", ns, "create", "secret", "generic", "sec", "--from-literal=password=s3cret")
	shared.apply(t, `apiVersion: v1
kind: Pod
metadata: {name: vols, namespace: `+ns+`}
spec:
  containers:
  - name: writer
    image: kedge.test/worker:v1
    imagePullPolicy: Never
    args: ["--write", "/shared", "--files", "2", "--serve"]
    volumeMounts: [{name: shared, mountPath: /shared}]
  - name: reader
    image: kedge.test/worker:v1
    imagePullPolicy: Never
    args: ["--serve"]
    env:
    - name: COLOR
      valueFrom: {configMapKeyRef: {name: cfg, key: color}}
    - name: PASSWORD
      valueFrom: {secretKeyRef: {name: sec, key: password}}
    volumeMounts:
    - {name: shared, mountPath: /shared}
    - {name: host, mountPath: /host}
    - {name: cfg, mountPath: /etc/cfg}
    - {name: sec, mountPath: /etc/sec}
  volumes:
  - {name: shared, emptyDir: {}}
  - {name: host, hostPath: {path: `+hostDir+`, type: Directory}}
  - {name: cfg, configMap: {name: cfg}}
  - {name: sec, secret: {secretName: sec}}
`)
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/vols", "--timeout=60s")
	exec := func(cmd string) string {
		return shared.kubectl(t, "-n", ns, "exec", "vols", "-c", "reader", "--", "sh", "-c", cmd)
	}
	checks := map[string]string{
		"cat /shared/file-1":      "file-1\n",
		"cat /host/from-host.txt": "host data\n",
		"cat /etc/cfg/color":      "blue",
		"cat /etc/sec/password":   "s3cret",
		"echo $COLOR $PASSWORD":   "blue s3cret\n",
	}
	for cmd, want := range checks {
		eventually(t, 20*time.Second, cmd, func() error {
			if got := exec(cmd); got != want {
				return fmt.Errorf("got %q want %q", got, want)
			}
			return nil
		})
	}
	// The reader writes to hostPath; the host sees it.
	exec("echo from-pod > /host/from-pod.txt")
	if data, _ := os.ReadFile(filepath.Join(hostDir, "from-pod.txt")); string(data) != "from-pod\n" {
		t.Fatalf("hostPath write: %q", data)
	}
	token := exec("cat /var/run/secrets/kubernetes.io/serviceaccount/token")
	if strings.Count(token, ".") != 2 {
		t.Fatalf("projected service-account token is not a JWT: %q", token)
	}
	if ca := exec("cat /var/run/secrets/kubernetes.io/serviceaccount/ca.crt"); !strings.Contains(ca, "BEGIN CERTIFICATE") {
		t.Fatalf("ca.crt: %q", ca)
	}
}

func TestJobDaemonSetStatefulSet(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, `apiVersion: batch/v1
kind: Job
metadata: {name: once, namespace: `+ns+`}
spec:
  backoffLimit: 0
  template:
    spec:
      restartPolicy: Never
      containers:
      - name: worker
        image: kedge.test/worker:v1
        imagePullPolicy: Never
        args: ["--message", "job done", "--sleep", "1s"]
---
apiVersion: apps/v1
kind: DaemonSet
metadata: {name: everywhere, namespace: `+ns+`}
spec:
  selector: {matchLabels: {app: everywhere}}
  template:
    metadata: {labels: {app: everywhere}}
    spec:
      containers:
      - name: worker
        image: kedge.test/worker:v1
        imagePullPolicy: Never
        args: ["--serve"]
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: `+ns+`}
spec:
  clusterIP: None
  selector: {app: web}
  ports: [{port: 8080}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: web, namespace: `+ns+`}
spec:
  serviceName: web
  replicas: 2
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
`)
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Complete", "job/once", "--timeout=90s")
	if out := shared.kubectl(t, "-n", ns, "logs", "job/once"); !strings.Contains(out, "job done") {
		t.Fatalf("job logs: %q", out)
	}
	shared.waitRollout(t, ns, "daemonset/everywhere")
	if n := shared.jsonpath(ns, "daemonset/everywhere", "{.status.numberReady}"); n != "1" {
		t.Fatalf("daemonset ready pods: %q", n)
	}
	shared.waitRollout(t, ns, "statefulset/web")
	if names := shared.podsOf(ns, "app=web"); strings.Join(names, " ") != "web-0 web-1" {
		t.Fatalf("statefulset pods: %v", names)
	}
	if h := strings.TrimSpace(shared.kubectl(t, "-n", ns, "exec", "web-1", "--", "hostname")); h != "web-1" {
		t.Fatalf("stable hostname: %q", h)
	}
}

func TestResources(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, `apiVersion: v1
kind: Pod
metadata: {name: limited, namespace: `+ns+`}
spec:
  containers:
  - name: worker
    image: kedge.test/worker:v1
    imagePullPolicy: Never
    args: ["--serve"]
    resources:
      limits: {memory: 64Mi, cpu: 200m}
---
apiVersion: v1
kind: Pod
metadata: {name: greedy, namespace: `+ns+`}
spec:
  containers:
  - name: worker
    image: kedge.test/worker:v1
    imagePullPolicy: Never
    resources:
      requests: {cpu: "500"}
`)
	shared.kubectl(t, "-n", ns, "wait", "--for=condition=Ready", "pod/limited", "--timeout=60s")
	limit := shared.kubectl(t, "-n", ns, "exec", "limited", "--", "sh", "-c", "cat /sys/fs/cgroup/memory.max 2>/dev/null || cat /sys/fs/cgroup/memory/memory.limit_in_bytes")
	if strings.TrimSpace(limit) != "67108864" {
		t.Fatalf("memory limit in the container's cgroup: %q, want 67108864", limit)
	}
	eventually(t, 30*time.Second, "the scheduler explains why greedy is Pending", func() error {
		if p := shared.jsonpath(ns, "pod/greedy", "{.status.phase}"); p != "Pending" {
			return fmt.Errorf("phase %q", p)
		}
		ev := shared.kubectl(t, "-n", ns, "describe", "pod", "greedy")
		if !strings.Contains(ev, "FailedScheduling") || !strings.Contains(ev, "Insufficient cpu") {
			return fmt.Errorf("describe:\n%s", ev)
		}
		return nil
	})
}

func TestMissingImage(t *testing.T) {
	ns := namespace(t, shared)
	shared.kubectl(t, "-n", ns, "run", "ghost", "--image=registry.invalid/ghost:v0", "--restart=Never")
	eventually(t, 90*time.Second, "ErrImagePull/ImagePullBackOff shown by describe", func() error {
		out := shared.kubectl(t, "-n", ns, "describe", "pod", "ghost")
		if !strings.Contains(out, "ErrImagePull") && !strings.Contains(out, "ImagePullBackOff") {
			return fmt.Errorf("describe:\n%s", out)
		}
		return nil
	})
	if err := shared.waitNodeReady(10 * time.Second); err != nil {
		t.Fatal(err)
	}
}

func TestImageDroppedIntoImagesDir(t *testing.T) {
	ns := namespace(t, shared)
	// zstd-compressed, written under another name and renamed into place.
	data, err := os.ReadFile(filepath.Join(imagesDir, "late.tar"))
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := zstd.NewWriter(nil)
	shared.dropImage(t, "late.tar.zst", enc.EncodeAll(data, nil))
	shared.runToCompletion(t, ns, "late", "kedge.test/late:v1", "Never", "late image works")
}

// An OCI image layout (as "docker buildx --output type=oci" or skopeo
// write), tarred, dropped into the images dir.
func TestOCIArchiveImported(t *testing.T) {
	ns := namespace(t, shared)
	img, err := workerVariant("oci")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	lp, err := layout.Write(filepath.Join(dir, "oci"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp.AppendImage(img, layout.WithAnnotations(map[string]string{"org.opencontainers.image.ref.name": "kedge.test/oci:v1"})); err != nil {
		t.Fatal(err)
	}
	archive := filepath.Join(dir, "oci.tar")
	if out, err := exec.Command("tar", "-C", filepath.Join(dir, "oci"), "-cf", archive, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatal(err)
	}
	shared.dropImage(t, "oci.tar", data)
	shared.runToCompletion(t, ns, "oci", "kedge.test/oci:v1", "Never", "oci layout works")

	// An OCI archive naming its image with a short name in
	// io.containerd.image.name (as `ctr export` and BuildKit write it) is
	// found under the name a pod uses, like a docker archive's.
	short, err := workerVariant("oci-short")
	if err != nil {
		t.Fatal(err)
	}
	lp2, err := layout.Write(filepath.Join(dir, "oci2"), empty.Index)
	if err != nil {
		t.Fatal(err)
	}
	if err := lp2.AppendImage(short, layout.WithAnnotations(map[string]string{"io.containerd.image.name": "ocishort:v1"})); err != nil {
		t.Fatal(err)
	}
	archive2 := filepath.Join(dir, "oci2.tar")
	if out, err := exec.Command("tar", "-C", filepath.Join(dir, "oci2"), "-cf", archive2, ".").CombinedOutput(); err != nil {
		t.Fatalf("tar: %v %s", err, out)
	}
	data2, err := os.ReadFile(archive2)
	if err != nil {
		t.Fatal(err)
	}
	shared.dropImage(t, "oci-short.tar", data2)
	shared.runToCompletion(t, ns, "ocishort", "ocishort:v1", "Never", "a short OCI name works")
	if out := shared.crictl(t, "images"); !strings.Contains(out, "docker.io/library/ocishort") {
		t.Errorf("crictl images does not list docker.io/library/ocishort:\n%s", out)
	}
}

package integration

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// claimPod is a PersistentVolumeClaim and a pod of the hello image that
// mounts it at /data.
func claimPod(ns, name, claimSpec string) string {
	return fmt.Sprintf(`apiVersion: v1
kind: PersistentVolumeClaim
metadata: {name: %[2]s, namespace: %[1]s}
spec:
%[3]s
---
apiVersion: v1
kind: Pod
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  terminationGracePeriodSeconds: 1
  containers:
  - name: app
    image: kedge.test/hello:v1
    imagePullPolicy: Never
    volumeMounts: [{name: data, mountPath: /data}]
  volumes:
  - name: data
    persistentVolumeClaim: {claimName: %[2]s}
`, ns, name, claimSpec)
}

// volumeDir is the local-path directory of the claim's volume.
func volumeDir(t *testing.T, n *node, ns, claim string) string {
	t.Helper()
	pv := strings.TrimSpace(n.jsonpath(ns, "pvc/"+claim, "{.spec.volumeName}"))
	if pv == "" {
		t.Fatalf("claim %s/%s is not bound", ns, claim)
	}
	return filepath.Join(n.dataDir(), "storage", pv+"_"+ns+"_"+claim)
}

// A claim without a storage class gets a local-path volume on the node of
// its pod; the data outlives the pod; deleting the claim removes the
// directory (reclaim policy Delete), a Retain class keeps it.
func TestLocalStorage(t *testing.T) {
	ns := namespace(t, shared)
	if out := shared.kubectl(t, "get", "storageclass"); !strings.Contains(out, "local-path (default)") || !strings.Contains(out, "WaitForFirstConsumer") {
		t.Fatalf("no default local-path StorageClass:\n%s", out)
	}
	shared.apply(t, claimPod(ns, "data", "  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 64Mi}}"))
	eventually(t, 2*time.Minute, "the pod with a claim runs", func() error {
		if p := shared.jsonpath(ns, "pod/data", "{.status.phase}"); p != "Running" {
			ev, _ := shared.kubectlErr("-n", ns, "get", "events")
			return fmt.Errorf("phase %q\n%s", p, ev)
		}
		return nil
	})
	if sc := shared.jsonpath(ns, "pvc/data", "{.spec.storageClassName}"); sc != "local-path" {
		t.Fatalf("claim's class %q, want local-path (the default)", sc)
	}
	pv := strings.TrimSpace(shared.jsonpath(ns, "pvc/data", "{.spec.volumeName}"))
	if aff := shared.jsonpath("", "pv/"+pv, "{.spec.nodeAffinity.required.nodeSelectorTerms[0].matchExpressions[0].values[0]}"); aff != sharedNodeName {
		t.Fatalf("volume %s node affinity %q, want %s", pv, aff, sharedNodeName)
	}
	dir := volumeDir(t, shared, ns, "data")
	shared.kubectl(t, "-n", ns, "exec", "data", "--", "sh", "-c", "echo kept > /data/file")
	if data, err := os.ReadFile(filepath.Join(dir, "file")); err != nil || string(data) != "kept\n" {
		t.Fatalf("the volume's directory %s does not hold the pod's file: %q %v", dir, data, err)
	}
	// A new pod on the same claim sees the data.
	shared.kubectl(t, "-n", ns, "delete", "pod", "data")
	shared.apply(t, claimPod(ns, "data", "  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 64Mi}}"))
	eventually(t, 2*time.Minute, "the second pod reads the file", func() error {
		out, err := shared.kubectlErr("-n", ns, "exec", "data", "--", "cat", "/data/file")
		if err != nil || out != "kept\n" {
			return fmt.Errorf("%v: %q", err, out)
		}
		return nil
	})
	shared.kubectl(t, "-n", ns, "delete", "pod", "data")
	shared.kubectl(t, "-n", ns, "delete", "pvc", "data")
	eventually(t, time.Minute, "the volume and its directory are removed", func() error {
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return fmt.Errorf("%s still there (%v)", dir, err)
		}
		if out, err := shared.kubectlErr("get", "pv", pv, "-o", "name", "--ignore-not-found"); err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("pv %s still there", pv)
		}
		return nil
	})

	t.Run("Retain keeps the directory", func(t *testing.T) {
		class := ns + "-retain"
		shared.apply(t, fmt.Sprintf(`apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: %s}
provisioner: kedge.io/local-path
reclaimPolicy: Retain
volumeBindingMode: WaitForFirstConsumer
`, class))
		t.Cleanup(func() { shared.kubectlErr("delete", "storageclass", class) })
		shared.apply(t, claimPod(ns, "kept", "  storageClassName: "+class+"\n  accessModes: [ReadWriteOncePod]\n  resources: {requests: {storage: 8Mi}}"))
		eventually(t, 2*time.Minute, "the pod runs", func() error {
			if p := shared.jsonpath(ns, "pod/kept", "{.status.phase}"); p != "Running" {
				return fmt.Errorf("phase %q", p)
			}
			return nil
		})
		dir := volumeDir(t, shared, ns, "kept")
		pv := strings.TrimSpace(shared.jsonpath(ns, "pvc/kept", "{.spec.volumeName}"))
		t.Cleanup(func() { shared.kubectlErr("delete", "pv", pv); os.RemoveAll(dir) })
		shared.kubectl(t, "-n", ns, "delete", "pod", "kept")
		shared.kubectl(t, "-n", ns, "delete", "pvc", "kept")
		eventually(t, time.Minute, "the volume is Released", func() error {
			if p := shared.jsonpath("", "pv/"+pv, "{.status.phase}"); p != "Released" {
				return fmt.Errorf("phase %q", p)
			}
			return nil
		})
		if _, err := os.Stat(dir); err != nil {
			t.Fatalf("Retain: directory removed: %v", err)
		}
	})

	t.Run("claims a node directory cannot serve get an Event", func(t *testing.T) {
		for name, c := range map[string]struct{ spec, event string }{
			"rwx":   {"  accessModes: [ReadWriteMany]\n  resources: {requests: {storage: 8Mi}}", "access mode ReadWriteMany is not supported"},
			"huge":  {"  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 900Ti}}", "not enough space on node " + sharedNodeName},
			"block": {"  accessModes: [ReadWriteOnce]\n  volumeMode: Block\n  resources: {requests: {storage: 8Mi}}", "does not support block volume"},
		} {
			manifest := claimPod(ns, name, c.spec)
			if name == "block" {
				manifest = strings.Replace(manifest, "volumeMounts: [{name: data, mountPath: /data}]", "volumeDevices: [{name: data, devicePath: /dev/data}]", 1)
			}
			shared.apply(t, manifest)
			waitEvent(t, shared, ns, name, "ProvisioningFailed", c.event)
			if p := shared.jsonpath(ns, "pvc/"+name, "{.status.phase}"); p != "Pending" {
				t.Errorf("claim %s: phase %q, want Pending", name, p)
			}
		}
		// The node is not disturbed: another claim is still served.
		shared.apply(t, claimPod(ns, "after", "  accessModes: [ReadWriteOnce]\n  resources: {requests: {storage: 8Mi}}"))
		eventually(t, 2*time.Minute, "a good claim next to the bad ones runs", func() error {
			if p := shared.jsonpath(ns, "pod/after", "{.status.phase}"); p != "Running" {
				return fmt.Errorf("phase %q", p)
			}
			return nil
		})
	})
}

// --disable local-storage, metrics-server and ingress remove what those
// add-ons deployed; --disable-helm-controller leaves HelmCharts alone.
func TestDisableAddons(t *testing.T) {
	n := ownNode(t)
	objects := map[string][]string{ // what each add-on leaves in the API
		"local-storage":  {"storageclass", "local-path"},
		"metrics-server": {"apiservice", "v1beta1.metrics.k8s.io"},
		"ingress":        {"ingressclass", "kedge"},
	}
	for addon, obj := range objects {
		eventually(t, time.Minute, addon+" is deployed", func() error {
			_, err := n.kubectlErr("get", obj[0], obj[1])
			return err
		})
	}
	if err := n.stop(); err != nil {
		t.Fatal(err)
	}
	n.args = append(n.args, "--disable", "local-storage,metrics-server", "--disable", "traefik", "--disable-helm-controller")
	if err := n.start(); err != nil {
		t.Fatal(err)
	}
	if err := n.waitReady(3 * time.Minute); err != nil {
		t.Fatal(err)
	}
	for addon, obj := range objects {
		eventually(t, time.Minute, "--disable "+addon+" removes it", func() error {
			if out, err := n.kubectlErr("get", obj[0], obj[1], "-o", "name", "--ignore-not-found"); err != nil || strings.TrimSpace(out) != "" {
				return fmt.Errorf("%v %q", err, out)
			}
			return nil
		})
	}
	if out, err := n.kubectlErr("top", "nodes"); err == nil {
		t.Fatalf("kubectl top works with metrics-server disabled:\n%s", out)
	}
	// The HelmChart API stays; no controller acts on it.
	n.apply(t, helmChartObject("default", "ignored", "  chart: nothing.tgz\n"))
	eventually(t, 10*time.Second, "the HelmChart is stored", func() error {
		_, err := n.kubectlErr("get", "helmchart", "ignored")
		return err
	})
	data, _ := os.ReadFile(n.logFile())
	last := string(data[strings.LastIndex(string(data), "=== start"):])
	if strings.Contains(last, "msg=starting component=helm-controller") || strings.Contains(last, "helmchart=default/ignored") {
		t.Fatalf("the helm controller ran with --disable-helm-controller")
	}
	if fin := n.jsonpath("default", "helmchart/ignored", "{.metadata.finalizers}"); fin != "" {
		t.Fatalf("finalizers %q on a HelmChart with the controller disabled", fin)
	}
}

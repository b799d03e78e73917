package integration

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// workerPod is the manifest of a pod of the worker image with args.
func workerPod(ns, name string, args ...string) string {
	quoted := make([]string, len(args))
	for i, a := range args {
		quoted[i] = fmt.Sprintf("%q", a)
	}
	return fmt.Sprintf(`apiVersion: v1
kind: Pod
metadata: {name: %s, namespace: %s}
spec:
  containers:
  - name: worker
    image: kedge.test/worker:v1
    imagePullPolicy: Never
    args: [%s]
`, name, ns, strings.Join(quoted, ", "))
}

// runToCompletion runs image as a pod printing message, waits for it to
// succeed and checks its log. pullPolicy is "Never" for preloaded images.
func (n *node) runToCompletion(t *testing.T, ns, name, image, pullPolicy, message string) {
	t.Helper()
	n.kubectl(t, "-n", ns, "run", name, "--image="+image, "--image-pull-policy="+pullPolicy, "--restart=Never", "--", "--message", message)
	eventually(t, 90*time.Second, "pod "+name+" of "+image+" completes", func() error {
		if p := n.jsonpath(ns, "pod/"+name, "{.status.phase}"); p != "Succeeded" {
			ev, _ := n.kubectlErr("-n", ns, "get", "events", "--field-selector", "involvedObject.name="+name)
			return fmt.Errorf("phase %q\n%s", p, ev)
		}
		return nil
	})
	if out := n.kubectl(t, "-n", ns, "logs", name); !strings.Contains(out, message) {
		t.Fatalf("logs of %s: %q", name, out)
	}
}

// dropImage writes an archive into the node's images dir under another
// name first and renames it into place, as a careful user would.
func (n *node) dropImage(t *testing.T, name string, data []byte) {
	t.Helper()
	dst := filepath.Join(n.dataDir(), "agent", "images", name)
	if err := os.WriteFile(dst+".part", data, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dst+".part", dst); err != nil {
		t.Fatal(err)
	}
}

// workerVariant is the worker image with a config of its own (another
// digest), so it is a distinct image and not the worker under a new name.
func workerVariant(tag string) (v1.Image, error) {
	base, err := tarball.ImageFromPath(filepath.Join(imagesDir, "worker.tar"), nil)
	if err != nil {
		return nil, err
	}
	cfg, err := base.ConfigFile()
	if err != nil {
		return nil, err
	}
	cfg = cfg.DeepCopy()
	cfg.Config.Env = append(cfg.Config.Env, "KEDGE_TEST_IMAGE="+tag)
	return mutate.ConfigFile(base, cfg)
}

// waitProxied waits until kube-proxy forwards the Service address ip to
// an endpoint on this host (iptables or nftables). Until then a packet to
// ip is rejected or follows the default route off the machine, which
// tests must never cause. Only the forwarding rules count: kube-proxy's
// iptables nat table and its nftables service-ips map hold ip only once
// it has an endpoint; its REJECT rule for an address without one lives
// elsewhere (and iptables-nft shows it in "nft list ruleset" too).
func waitProxied(t *testing.T, ip string) {
	t.Helper()
	waitRule(t, "kube-proxy forwards "+ip+" to an endpoint", ip, "nat", "list", "map", "ip", "kube-proxy", "service-ips")
}

// waitRule waits until kube-proxy has a rule for ip in the iptables table
// or in what "nft nftArgs..." lists.
func waitRule(t *testing.T, what, ip, table string, nftArgs ...string) {
	t.Helper()
	eventually(t, 60*time.Second, what, func() error {
		ipt, _ := exec.Command("iptables-save", "-t", table).Output()
		nft, _ := exec.Command("nft", nftArgs...).Output()
		if strings.Contains(string(ipt), ip+"/32") || strings.Contains(string(nft), ip+" ") {
			return nil
		}
		return fmt.Errorf("no rule for %s yet", ip)
	})
}

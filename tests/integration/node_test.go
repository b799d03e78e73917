package integration

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestNodeFlags(t *testing.T) {
	node := "node/" + sharedNodeName
	if l := shared.jsonpath("", node, `{.metadata.labels.kedge\.test/role}`); l != "shared" {
		t.Errorf("--node-label: label %q", l)
	}
	if taints := shared.jsonpath("", node, "{.spec.taints[*].key}={.spec.taints[*].effect}"); taints != "kedge.test/soft=PreferNoSchedule" {
		t.Errorf("--node-taint: taints %q", taints)
	}
	if pods := shared.jsonpath("", node, "{.status.capacity.pods}"); pods != "250" {
		t.Errorf("--kubelet-arg max-pods=250: capacity %q", pods)
	}
}

func TestNodeRestriction(t *testing.T) {
	kc := filepath.Join(shared.dataDir(), "agent", "kubelet.kubeconfig")
	if out, err := runKubectlWith(kc, "get", "node", sharedNodeName); err != nil {
		t.Fatalf("the node cannot read itself: %v %s", err, out)
	}
	out, err := runKubectlWith(kc, "label", "node", sharedNodeName, "node-restriction.kubernetes.io/evil=yes")
	if err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("NodeRestriction let the node set a restricted label: %v %s", err, out)
	}
	out, err = runKubectlWith(kc, "get", "secrets", "-A")
	if err == nil || !strings.Contains(out, "forbidden") {
		t.Fatalf("the node listed all secrets: %v %s", err, out)
	}
}

// kedgeTool runs kedge (or a symlink to it named as a tool) for the shared
// node and returns its stdout.
func kedgeTool(t *testing.T, argv0 string, args ...string) string {
	t.Helper()
	bin := kedgeBin
	if argv0 != "" {
		bin = filepath.Join(t.TempDir(), argv0)
		if err := os.Symlink(kedgeBin, bin); err != nil {
			t.Fatal(err)
		}
	}
	cmd := exec.Command(bin, args...)
	cmd.Env = append(cleanEnv(), "KEDGE_DATA_DIR="+shared.dataDir(), "KEDGE_RUN_DIR="+filepath.Join(shared.dir, "run"), "KEDGE_WRITE_KUBECONFIG="+shared.kubeconfig)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s%s", bin, strings.Join(args, " "), err, out, stderr.String())
	}
	return string(out)
}

func TestBuiltinTools(t *testing.T) {
	for _, tc := range []struct {
		argv0 string
		args  []string
		want  string
	}{
		{"", []string{"kubectl", "get", "nodes"}, sharedNodeName},
		{"kubectl", []string{"get", "namespaces"}, "kube-system"},
		{"", []string{"crictl", "images"}, "kedge.test/hello"},
		{"crictl", []string{"version"}, "RuntimeName:  containerd"},
		{"", []string{"ctr", "images", "ls", "-q"}, "kedge.local/pause:3.10"},
		{"ctr", []string{"version"}, "2.3.7"},
	} {
		name := strings.TrimSpace(tc.argv0 + " " + strings.Join(tc.args, " "))
		t.Run(name, func(t *testing.T) {
			if out := kedgeTool(t, tc.argv0, tc.args...); !strings.Contains(out, tc.want) {
				t.Fatalf("output lacks %q:\n%s", tc.want, out)
			}
		})
	}
}

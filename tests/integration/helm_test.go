package integration

import (
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// helmBin is the stock Helm CLI scripts/test installs (HELM overrides).
func helmBin(t *testing.T) string {
	t.Helper()
	bin := os.Getenv("HELM")
	if bin == "" {
		bin, _ = filepath.Abs("../../bin/tools/helm")
	}
	if _, err := os.Stat(bin); err != nil {
		t.Fatalf("helm CLI %s: %v (scripts/test installs it; or set HELM)", bin, err)
	}
	return bin
}

// helm runs the stock Helm CLI against n, with its own config dirs.
func (n *node) helm(t *testing.T, args ...string) string {
	t.Helper()
	out, err := n.helmErr(t, args...)
	if err != nil {
		t.Fatalf("helm %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return out
}

func (n *node) helmErr(t *testing.T, args ...string) (string, error) {
	t.Helper()
	home := filepath.Join(n.dir, "helm-home")
	cmd := exec.Command(helmBin(t), append([]string{"--kubeconfig", n.kubeconfig}, args...)...)
	cmd.Env = append(cleanEnv(), "HELM_CACHE_HOME="+home+"/cache", "HELM_CONFIG_HOME="+home+"/config", "HELM_DATA_HOME="+home+"/data")
	out, err := cmd.CombinedOutput()
	return string(out), err
}

// webChart makes the chart a user would: `helm create web`, then changed
// to run the hello image on 8080 and to keep /data on a PersistentVolume
// Claim with no storage class. Its Ingress is off unless values turn it on.
func webChart(t *testing.T, n *node) string {
	t.Helper()
	dir := t.TempDir()
	n.helm(t, "create", filepath.Join(dir, "web"))
	chart := filepath.Join(dir, "web")
	values := filepath.Join(chart, "values.yaml")
	data, err := os.ReadFile(values)
	if err != nil {
		t.Fatal(err)
	}
	v := string(data)
	for _, r := range [][2]string{
		{"  repository: nginx\n", "  repository: kedge.test/hello\n"},
		{"  tag: \"\"\n", "  tag: \"v1\"\n"},
		{"  pullPolicy: IfNotPresent\n", "  pullPolicy: Never\n"},
		{"  port: 80\n", "  port: 8080\n"},
		{"volumes: []\n", "volumes:\n- name: data\n  persistentVolumeClaim:\n    claimName: '{{ .Release.Name }}-data'\n"},
		{"volumeMounts: []\n", "volumeMounts:\n- name: data\n  mountPath: /data\n"},
	} {
		if !strings.Contains(v, r[0]) {
			t.Fatalf("helm create's values.yaml has no %q: the test needs updating", r[0])
		}
		v = strings.Replace(v, r[0], r[1], 1)
	}
	writeTestFile(t, values, v)
	// The chart's deployment template passes volumes through tpl, so a
	// claim named after the release needs that: render volumes with tpl.
	dep := filepath.Join(chart, "templates", "deployment.yaml")
	d, err := os.ReadFile(dep)
	if err != nil {
		t.Fatal(err)
	}
	dt := strings.Replace(string(d), "{{- with .Values.volumes }}\n      volumes:\n        {{- toYaml . | nindent 8 }}",
		"{{- with .Values.volumes }}\n      volumes:\n        {{- tpl (toYaml .) $ | nindent 8 }}", 1)
	if dt == string(d) {
		t.Fatalf("helm create's deployment.yaml changed; the test needs updating:\n%s", d)
	}
	writeTestFile(t, dep, dt)
	writeTestFile(t, filepath.Join(chart, "templates", "pvc.yaml"), `apiVersion: v1
kind: PersistentVolumeClaim
metadata:
  name: {{ .Release.Name }}-data
  labels:
    {{- include "web.labels" . | nindent 4 }}
spec:
  accessModes: [ReadWriteOnce]
  resources:
    requests:
      storage: 32Mi
`)
	return chart
}

// packageChart is `helm package`: the .tgz of a chart dir.
func packageChart(t *testing.T, n *node, chart string) string {
	t.Helper()
	out := t.TempDir()
	n.helm(t, "package", chart, "--destination", out)
	files, _ := filepath.Glob(filepath.Join(out, "*.tgz"))
	if len(files) != 1 {
		t.Fatalf("helm package wrote %v", files)
	}
	return files[0]
}

func helmChartObject(ns, name, spec string) string {
	return fmt.Sprintf("apiVersion: helm.cattle.io/v1\nkind: HelmChart\nmetadata: {name: %s, namespace: %s}\nspec:\n%s", name, ns, spec)
}

// waitHelmChart waits for status.state of a HelmChart, with its revision.
func waitHelmChart(t *testing.T, n *node, ns, name, state string, revision int) {
	t.Helper()
	eventually(t, 2*time.Minute, fmt.Sprintf("HelmChart %s %s at revision %d", name, state, revision), func() error {
		got := n.jsonpath(ns, "helmchart/"+name, "{.status.state} {.status.revision}")
		if got != fmt.Sprintf("%s %d", state, revision) {
			ev, _ := n.kubectlErr("-n", ns, "get", "events", "--field-selector", "involvedObject.name="+name)
			return fmt.Errorf("state, revision: %q\n%s", got, ev)
		}
		return nil
	})
}

// HelmChart objects install, upgrade and uninstall charts from
// chartContent, from the static charts dir over https, and from a file in
// the manifests dir; bad charts and values are reported on the object.
func TestHelmChartResource(t *testing.T) {
	ns := namespace(t, shared)
	target := ns + "-apps"
	t.Cleanup(func() { shared.kubectlErr("delete", "namespace", target, "--wait=false") })
	tgz := packageChart(t, shared, webChart(t, shared))
	raw, err := os.ReadFile(tgz)
	if err != nil {
		t.Fatal(err)
	}
	content := base64.StdEncoding.EncodeToString(raw)

	shared.apply(t, helmChartObject(ns, "inline", fmt.Sprintf("  targetNamespace: %s\n  createNamespace: true\n  chartContent: %s\n  valuesContent: |\n    replicaCount: 1\n", target, content)))
	waitHelmChart(t, shared, ns, "inline", "Deployed", 1)
	shared.waitRollout(t, target, "deployment/inline-web")
	if out := shared.helm(t, "list", "-n", target); !strings.Contains(out, "inline") || !strings.Contains(out, "deployed") {
		t.Fatalf("helm list does not show the release:\n%s", out)
	}

	// Upgrade: a change to the object upgrades the release; set wins
	// over valuesContent.
	shared.kubectl(t, "-n", ns, "patch", "helmchart", "inline", "--type=merge", "-p", `{"spec":{"valuesContent":"replicaCount: 3\n","set":{"replicaCount":2}}}`)
	waitHelmChart(t, shared, ns, "inline", "Deployed", 2)
	eventually(t, 2*time.Minute, "the upgrade's 2 replicas", func() error {
		if r := shared.jsonpath(target, "deployment/inline-web", "{.spec.replicas}"); r != "2" {
			return fmt.Errorf("replicas %q", r)
		}
		return nil
	})

	// A HelmChartConfig of the same name layers values over the chart's.
	shared.apply(t, fmt.Sprintf("apiVersion: helm.cattle.io/v1\nkind: HelmChartConfig\nmetadata: {name: inline, namespace: %s}\nspec:\n  valuesContent: |\n    podLabels: {configured: \"yes\"}\n", ns))
	waitHelmChart(t, shared, ns, "inline", "Deployed", 3)
	if l := shared.jsonpath(target, "deployment/inline-web", "{.spec.template.metadata.labels.configured}"); l != "yes" {
		t.Fatalf("HelmChartConfig values not applied: label %q", l)
	}

	t.Run("static charts over https", func(t *testing.T) {
		static := filepath.Join(shared.dataDir(), "server", "static", "charts")
		if err := copyFile(tgz, filepath.Join(static, "web-0.1.0.tgz")); err != nil {
			t.Fatal(err)
		}
		base := fmt.Sprintf("https://127.0.0.1:%d/static/charts/", shared.port)
		ca := filepath.Join(shared.dataDir(), "server", "tls", "server-ca.crt")
		got, err := exec.Command("curl", "-sS", "--fail", "--cacert", ca, base+"web-0.1.0.tgz").Output()
		if err != nil || string(got) != string(raw) {
			t.Fatalf("GET %sweb-0.1.0.tgz: %v (%d bytes, want %d)", base, err, len(got), len(raw))
		}
		for _, p := range []string{"", "..%2F..%2Ftoken", "../../server/token"} {
			code, _ := exec.Command("curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", "--path-as-is", "--cacert", ca, base+p).Output()
			if string(code) != "404" {
				t.Errorf("GET %s%s: %s, want 404", base, p, code)
			}
		}
		shared.apply(t, helmChartObject(ns, "fromstatic", fmt.Sprintf("  targetNamespace: %s\n  chart: https://%%{KUBERNETES_API}%%/static/charts/web-0.1.0.tgz\n", target)))
		waitHelmChart(t, shared, ns, "fromstatic", "Deployed", 1)
	})

	t.Run("a HelmChart in the manifests dir", func(t *testing.T) {
		file := filepath.Join(shared.dataDir(), "server", "manifests", ns+"-chart.yaml")
		writeTestFile(t, file, helmChartObject(ns, "fromfile", fmt.Sprintf("  targetNamespace: %s\n  chart: web-0.1.0.tgz\n", target)))
		t.Cleanup(func() { os.Remove(file) })
		waitHelmChart(t, shared, ns, "fromfile", "Deployed", 1)
		shared.waitRollout(t, target, "deployment/fromfile-web")
	})

	t.Run("bad charts and values", func(t *testing.T) {
		for name, c := range map[string]struct{ spec, event string }{
			"broken": {"  chartContent: " + base64.StdEncoding.EncodeToString([]byte("not a tgz")) + "\n", "chartContent is not a chart archive"},
			"values": {"  chartContent: " + content + "\n  valuesContent: \"replicaCount: [1\"\n", "valuesContent is not a YAML map of values"},
			"nofile": {"  chart: no-such-chart.tgz\n", `chart "no-such-chart.tgz": no repo is set`},
		} {
			shared.apply(t, helmChartObject(ns, name, c.spec))
			waitEvent(t, shared, ns, name, "Failed", c.event)
			if s := shared.jsonpath(ns, "helmchart/"+name, "{.status.state}"); s != "Failed" {
				t.Errorf("%s: state %q, want Failed", name, s)
			}
		}
		// The good release is untouched.
		if s := shared.jsonpath(ns, "helmchart/inline", "{.status.state} {.status.revision}"); s != "Deployed 3" {
			t.Errorf("the good HelmChart is now %q", s)
		}
	})

	// Deleting the object uninstalls the release, its claim and volume.
	shared.kubectl(t, "-n", ns, "delete", "helmchart", "inline", "--timeout=2m")
	eventually(t, 2*time.Minute, "the release and its objects are gone", func() error {
		if out := shared.helm(t, "list", "-n", target, "-q"); strings.Contains(out, "inline") {
			return fmt.Errorf("helm list: %s", out)
		}
		if out, _ := shared.kubectlErr("-n", target, "get", "deployment,pvc", "-o", "name"); strings.Contains(out, "inline") {
			return fmt.Errorf("left: %s", out)
		}
		return nil
	})
}

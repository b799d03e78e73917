package integration

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestAPIReadyAndVersion(t *testing.T) {
	if out := shared.kubectl(t, "get", "--raw", "/readyz"); strings.TrimSpace(out) != "ok" {
		t.Fatalf("/readyz = %q, want ok", out)
	}
	out := shared.kubectl(t, "version")
	if !strings.Contains(out, "Server Version: v1.36.3") {
		t.Fatalf("kubectl version does not show server v1.36.3:\n%s", out)
	}
	out = shared.kubectl(t, "api-resources")
	for _, want := range []string{"pods", "services", "configmaps", "secrets", "namespaces", "deployments", "replicasets", "statefulsets", "daemonsets", "jobs", "customresourcedefinitions", "roles", "leases"} {
		if !strings.Contains(out, "\n"+want+" ") {
			t.Errorf("kubectl api-resources does not list %s", want)
		}
	}
}

func TestKubeconfigFile(t *testing.T) {
	st, err := os.Stat(shared.kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != 0o600 {
		t.Fatalf("kubeconfig mode %o, want 600", st.Mode().Perm())
	}
	data, _ := os.ReadFile(shared.kubeconfig)
	if want := fmt.Sprintf("server: https://127.0.0.1:%d", shared.port); !strings.Contains(string(data), want) {
		t.Fatalf("kubeconfig does not contain %q:\n%s", want, data)
	}
}

func TestObjectsAndControllers(t *testing.T) {
	ns := namespace(t, shared)
	shared.kubectl(t, "-n", ns, "create", "configmap", "settings", "--from-literal=color=blue")
	shared.kubectl(t, "-n", ns, "create", "secret", "generic", "creds", "--from-literal=password=s3cret")
	if out := shared.kubectl(t, "-n", ns, "get", "configmap", "settings", "-o", "jsonpath={.data.color}"); out != "blue" {
		t.Fatalf("configmap data = %q", out)
	}
	if out := shared.kubectl(t, "-n", ns, "get", "secret", "creds", "-o", "jsonpath={.data.password}"); out != "czNjcmV0" {
		t.Fatalf("secret data = %q", out)
	}
	shared.kubectl(t, "-n", ns, "create", "deployment", "web", "--image=registry.invalid/web:v1", "--replicas=3")
	eventually(t, 30*time.Second, "the deployment controller creates a ReplicaSet", func() error {
		out, _ := shared.kubectlErr("-n", ns, "get", "replicaset", "-l", "app=web", "-o", "jsonpath={.items[*].spec.replicas}")
		if out != "3" {
			return fmt.Errorf("replicasets: %q", out)
		}
		return nil
	})
	eventually(t, 30*time.Second, "the ReplicaSet creates 3 Pending pods", func() error {
		out, _ := shared.kubectlErr("-n", ns, "get", "pods", "-l", "app=web", "-o", "jsonpath={.items[*].status.phase}")
		if out != "Pending Pending Pending" {
			return fmt.Errorf("pod phases: %q", out)
		}
		return nil
	})
	// The service-account controllers run too.
	eventually(t, 30*time.Second, "the default ServiceAccount exists", func() error {
		_, err := shared.kubectlErr("-n", ns, "get", "serviceaccount", "default")
		return err
	})
}

const crd = `apiVersion: apiextensions.k8s.io/v1
kind: CustomResourceDefinition
metadata:
  name: gadgets.example.kedge.dev
spec:
  group: example.kedge.dev
  scope: Namespaced
  names: {plural: gadgets, singular: gadget, kind: Gadget}
  versions:
  - name: v1
    served: true
    storage: true
    schema:
      openAPIV3Schema:
        type: object
        properties:
          spec:
            type: object
            properties:
              size: {type: integer}
`

func TestCustomResources(t *testing.T) {
	ns := namespace(t, shared)
	shared.apply(t, crd)
	shared.kubectl(t, "wait", "--for=condition=Established", "crd/gadgets.example.kedge.dev", "--timeout=30s")
	eventually(t, 30*time.Second, "a Gadget can be created", func() error {
		out, err := shared.kubectlIn(`apiVersion: example.kedge.dev/v1
kind: Gadget
metadata: {name: g1, namespace: `+ns+`}
spec: {size: 7}
`, "apply", "-f", "-")
		if err != nil {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})
	if out := shared.kubectl(t, "-n", ns, "get", "gadgets", "-o", "jsonpath={.items[*].spec.size}"); out != "7" {
		t.Fatalf("listed gadgets: %q", out)
	}
}

func TestAuthentication(t *testing.T) {
	ns := namespace(t, shared)
	shared.kubectl(t, "-n", ns, "create", "serviceaccount", "nobody")
	token := strings.TrimSpace(shared.kubectl(t, "-n", ns, "create", "token", "nobody"))
	// A kubeconfig with only the token, as a user of that account has.
	kc := filepath.Join(t.TempDir(), "token.kubeconfig")
	cmdOut, cmdErr := runKubectlWith(kc, "config", "set-cluster", "k", fmt.Sprintf("--server=https://127.0.0.1:%d", shared.port), "--insecure-skip-tls-verify=true")
	if cmdErr != nil {
		t.Fatalf("%v: %s", cmdErr, cmdOut)
	}
	runKubectlWith(kc, "config", "set-credentials", "u", "--token="+token)
	runKubectlWith(kc, "config", "set-context", "c", "--cluster=k", "--user=u")
	runKubectlWith(kc, "config", "use-context", "c")
	cmdOut, cmdErr = runKubectlWith(kc, "-n", ns, "get", "pods")
	if cmdErr == nil || !strings.Contains(cmdOut, "Forbidden") || !strings.Contains(cmdOut, "system:serviceaccount:"+ns+":nobody") {
		t.Fatalf("a ServiceAccount without RoleBinding listed pods (want Forbidden): %v\n%s", cmdErr, cmdOut)
	}

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}, Timeout: 10 * time.Second}
	status := func(path, bearer string) (int, string) {
		req, _ := http.NewRequest(http.MethodGet, fmt.Sprintf("https://127.0.0.1:%d%s", shared.port, path), nil)
		if bearer != "" {
			req.Header.Set("Authorization", "Bearer "+bearer)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	if code, body := status("/api/v1/namespaces", ""); code != http.StatusUnauthorized {
		t.Fatalf("request without credentials: %d %s, want 401", code, body)
	}
	if code, body := status("/api/v1/namespaces/"+ns+"/pods", token); code != http.StatusForbidden {
		t.Fatalf("ServiceAccount token without RoleBinding: %d %s, want 403", code, body)
	}
	if code, body := status("/ping", ""); code != http.StatusOK || body != "pong" {
		t.Fatalf("/ping: %d %q", code, body)
	}
	if code, body := status("/cacerts", ""); code != http.StatusOK || !strings.Contains(body, "BEGIN CERTIFICATE") {
		t.Fatalf("/cacerts: %d %q", code, body)
	}
}

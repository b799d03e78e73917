package integration

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/net/websocket"
)

// Ingress traffic enters on the shared node's 127.0.0.1:80 and :443,
// which servicelb relays to Traefik, as a user on the node would reach it.
func ingressGet(host, path string) (string, error) {
	return ingressDo(&http.Client{Timeout: 5 * time.Second}, "http://127.0.0.1", host, path)
}

func ingressDo(client *http.Client, base, host, path string) (string, error) {
	req, err := http.NewRequest(http.MethodGet, base+path, nil)
	if err != nil {
		return "", err
	}
	req.Host = host
	resp, err := client.Do(req)
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	if resp.StatusCode != http.StatusOK {
		return string(body), fmt.Errorf("%s", resp.Status)
	}
	return string(body), nil
}

// tlsClient talks HTTPS to 127.0.0.1:443, sending the request's host as
// SNI and trusting only ca.
func tlsClient(ca *x509.CertPool) *http.Client {
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{RootCAs: ca},
		DialContext: func(ctx context.Context, network, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, network, "127.0.0.1:443")
		},
	}}
}

// testCert is a CA and a certificate it signed for host, as PEM.
func testCert(t *testing.T, host string) (pool *x509.CertPool, certPEM, keyPEM []byte) {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "kedge test CA " + host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: host}, DNSNames: []string{host},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		KeyUsage: x509.KeyUsageDigitalSignature}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, _ := x509.MarshalECPrivateKey(key)
	pool = x509.NewCertPool()
	pool.AddCert(ca)
	return pool, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})
}

// tlsSecret creates a kubernetes.io/tls Secret from PEM files.
func tlsSecret(t *testing.T, n *node, ns, name string, certPEM, keyPEM []byte) {
	t.Helper()
	dir := t.TempDir()
	writeTestFile(t, filepath.Join(dir, "tls.crt"), string(certPEM))
	writeTestFile(t, filepath.Join(dir, "tls.key"), string(keyPEM))
	n.kubectl(t, "-n", ns, "create", "secret", "tls", name, "--cert", filepath.Join(dir, "tls.crt"), "--key", filepath.Join(dir, "tls.key"))
}

// helloApp is a Deployment and Service of the hello image named name.
func helloApp(ns, name string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  replicas: 1
  selector: {matchLabels: {app: %[2]s}}
  template:
    metadata: {labels: {app: %[2]s}}
    spec:
      containers:
      - name: hello
        image: kedge.test/hello:v1
        imagePullPolicy: Never
        ports: [{containerPort: 8080}]
        readinessProbe:
          httpGet: {path: /healthz, port: 8080}
          periodSeconds: 1
---
apiVersion: v1
kind: Service
metadata: {name: %[2]s, namespace: %[1]s}
spec:
  selector: {app: %[2]s}
  ports: [{name: http, port: 80, targetPort: 8080}]
`, ns, name)
}

// traefikServing waits until Traefik's Service holds 80 and 443 and
// answers on them.
func traefikServing(t *testing.T, n *node) {
	t.Helper()
	eventually(t, 3*time.Minute, "Traefik is deployed and its Service served", func() error {
		if ingressOf(n, "kube-system", "traefik") == "" {
			out, _ := n.kubectlErr("-n", "kube-system", "get", "deploy,svc,pods", "-l", "app.kubernetes.io/name=traefik")
			ev, _ := n.kubectlErr("-n", "kube-system", "get", "events", "--field-selector", "involvedObject.name=traefik")
			return fmt.Errorf("not served yet:\n%s\n%s", out, ev)
		}
		return nil
	})
	n.waitRollout(t, "kube-system", "deployment/traefik")
}

// traefikGone waits until kedge withdrew Traefik and freed 80 and 443.
func traefikGone(t *testing.T, n *node) {
	t.Helper()
	eventually(t, 2*time.Minute, "Traefik is withdrawn", func() error {
		if out, _ := n.kubectlErr("-n", "kube-system", "get", "deployment,service", "-l", "app.kubernetes.io/name=traefik", "-o", "name"); strings.TrimSpace(out) != "" {
			return fmt.Errorf("still there: %s", out)
		}
		return nil
	})
}

// The ingress add-on: Traefik comes only when an Ingress needs it, routes
// by host and path with a default backend, serves TLS by SNI from Secrets
// and WebSockets, reports bad Ingresses, and frees 80/443 when the last
// Ingress goes; a user's own LoadBalancer Service on 80 works without it
// and, being older, keeps the port.
func TestIngress(t *testing.T) {
	ns := namespace(t, shared)
	traefikGone(t, shared) // nothing holds 80/443 before any Ingress
	for _, app := range []string{"web", "api", "fallback"} {
		shared.apply(t, helloApp(ns, app))
	}
	for _, app := range []string{"web", "api", "fallback"} {
		shared.waitRollout(t, ns, "deployment/"+app)
	}

	// A user's LoadBalancer Service on 80, with no Ingress anywhere.
	shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Service
metadata: {name: mine, namespace: %s}
spec:
  type: LoadBalancer
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
`, ns))
	eventually(t, time.Minute, "the user's Service answers on port 80", func() error {
		out, err := curlLocal("http://127.0.0.1/")
		if err != nil || !strings.Contains(out, "I am web-") {
			return fmt.Errorf("%v: %s", err, out)
		}
		return nil
	})

	// The servicelb gives a port to the oldest Service, by creation time in
	// whole seconds: let a second pass so Traefik's Service is younger.
	eventually(t, time.Minute, "the user's Service holds 80 and is a second old", func() error {
		created, err := time.Parse(time.RFC3339, shared.jsonpath(ns, "service/mine", "{.metadata.creationTimestamp}"))
		if err != nil || ingressOf(shared, ns, "mine") == "" || !time.Now().Truncate(time.Second).After(created) {
			return fmt.Errorf("created %v (%v), ingress %q", created, err, ingressOf(shared, ns, "mine"))
		}
		return nil
	})

	webPool, webCert, webKey := testCert(t, "web.kedge.test")
	apiPool, apiCert, apiKey := testCert(t, "api.kedge.test")
	tlsSecret(t, shared, ns, "web-tls", webCert, webKey)
	tlsSecret(t, shared, ns, "api-tls", apiCert, apiKey)
	shared.apply(t, fmt.Sprintf(`apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: site, namespace: %[1]s}
spec:
  tls:
  - hosts: [web.kedge.test]
    secretName: web-tls
  - hosts: [api.kedge.test]
    secretName: api-tls
  rules:
  - host: web.kedge.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
  - host: api.kedge.test
    http:
      paths:
      - {path: /v1, pathType: Prefix, backend: {service: {name: api, port: {name: http}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: fallback, namespace: %[1]s}
spec:
  defaultBackend:
    service: {name: fallback, port: {number: 80}}
`, ns))
	if cls := shared.jsonpath(ns, "ingress/site", "{.spec.ingressClassName}"); cls != "kedge" {
		t.Fatalf("the Ingress got class %q, want the default kedge", cls)
	}
	// Traefik is wanted now, but the user's older Service holds 80.
	waitEvent(t, shared, "kube-system", "traefik", "Pending", "80")
	if out, err := curlLocal("http://127.0.0.1/"); err != nil || !strings.Contains(out, "I am web-") {
		t.Fatalf("the user's Service lost port 80 to Traefik: %v %s", err, out)
	}
	shared.kubectl(t, "-n", ns, "delete", "service", "mine")
	traefikServing(t, shared)

	for _, c := range []struct{ host, path, want string }{
		{"web.kedge.test", "/", "I am web-"},
		{"web.kedge.test", "/anything", "I am web-"},
		{"api.kedge.test", "/v1/users", "I am api-"},
		{"api.kedge.test", "/other", "I am fallback-"},
		{"unknown.example", "/", "I am fallback-"},
	} {
		eventually(t, 2*time.Minute, "http://"+c.host+c.path+" routes to "+c.want, func() error {
			out, err := ingressGet(c.host, c.path)
			if err != nil || !strings.Contains(out, c.want) {
				return fmt.Errorf("%v: %s", err, out)
			}
			return nil
		})
	}
	if addr := shared.jsonpath(ns, "ingress/site", "{.status.loadBalancer.ingress[0].ip}"); addr == "" {
		t.Errorf("the Ingress shows no ADDRESS")
	}

	t.Run("TLS by SNI from Secrets", func(t *testing.T) {
		for _, c := range []struct {
			host, want string
			pool       *x509.CertPool
		}{{"web.kedge.test", "I am web-", webPool}, {"api.kedge.test", "I am api-", apiPool}} {
			eventually(t, time.Minute, "https://"+c.host+" with its own certificate", func() error {
				out, err := ingressDo(tlsClient(c.pool), "https://"+c.host, c.host, "/v1/x")
				if err != nil || !strings.Contains(out, c.want) {
					return fmt.Errorf("%v: %s", err, out)
				}
				return nil
			})
		}
		// The wrong CA for the name is refused: each host has its own cert.
		if _, err := ingressDo(tlsClient(apiPool), "https://web.kedge.test", "web.kedge.test", "/"); err == nil {
			t.Fatal("web.kedge.test's certificate verified against api's CA")
		}
	})

	t.Run("WebSocket", func(t *testing.T) {
		cfg, err := websocket.NewConfig("ws://web.kedge.test/ws", "http://web.kedge.test/")
		if err != nil {
			t.Fatal(err)
		}
		conn, err := net.DialTimeout("tcp", "127.0.0.1:80", 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		ws, err := websocket.NewClient(cfg, conn)
		if err != nil {
			t.Fatalf("WebSocket handshake through the Ingress: %v", err)
		}
		defer ws.Close()
		ws.SetDeadline(time.Now().Add(10 * time.Second))
		for _, msg := range []string{"ping", "pong"} {
			var got string
			if err := websocket.Message.Send(ws, msg); err != nil {
				t.Fatal(err)
			}
			if err := websocket.Message.Receive(ws, &got); err != nil || !strings.HasSuffix(got, ": "+msg) || !strings.HasPrefix(got, "web-") {
				t.Fatalf("echo of %q: %q %v", msg, got, err)
			}
		}
	})

	t.Run("bad Ingresses get an Event", func(t *testing.T) {
		shared.apply(t, fmt.Sprintf(`apiVersion: v1
kind: Secret
metadata: {name: junk-tls, namespace: %[1]s}
type: Opaque
stringData: {tls.crt: "not a certificate", tls.key: "not a key"}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: missing, namespace: %[1]s}
spec:
  rules:
  - host: missing.kedge.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: nosuch, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: badtls, namespace: %[1]s}
spec:
  tls: [{hosts: [bad.kedge.test], secretName: junk-tls}]
  rules:
  - host: bad.kedge.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
---
apiVersion: networking.k8s.io/v1
kind: Ingress
metadata: {name: mixed, namespace: %[1]s}
spec:
  defaultBackend: {service: {name: web, port: {number: 80}}}
  rules:
  - host: mixed.kedge.test
    http:
      paths:
      - {path: /, pathType: Prefix, backend: {service: {name: web, port: {number: 80}}}}
`, ns))
		waitEvent(t, shared, ns, "missing", "InvalidIngress", "backend Service "+ns+"/nosuch does not exist")
		waitEvent(t, shared, ns, "mixed", "InvalidIngress", "spec.defaultBackend is ignored in an Ingress that also has rules")
		waitEvent(t, shared, ns, "badtls", "InvalidIngress", "TLS Secret "+ns+"/junk-tls does not hold a certificate")
		// The rest keeps working.
		if out, err := ingressGet("web.kedge.test", "/"); err != nil || !strings.Contains(out, "I am web-") {
			t.Fatalf("a good host after bad Ingresses: %v %s", err, out)
		}
		// Fixing the backend is noticed.
		shared.apply(t, helloApp(ns, "nosuch"))
		waitEvent(t, shared, ns, "missing", "Valid")
	})

	// The last Ingress gone, Traefik goes and 80 is free again.
	shared.kubectl(t, "-n", ns, "delete", "ingress", "--all")
	traefikGone(t, shared)
	eventually(t, time.Minute, "port 80 is free", func() error {
		if _, err := curlLocal("http://127.0.0.1/"); err == nil {
			return fmt.Errorf("something still answers on 80")
		}
		return nil
	})
}

// The README's chart flow with stock Helm: a chart made by helm create,
// changed to keep data on a claim and to use an Ingress, installs, keeps
// its data when its pod is deleted, answers through the Ingress by name
// and by TLS, upgrades, rolls back and uninstalls, deleting its volume.
func TestIngressHelmChart(t *testing.T) {
	ns := namespace(t, shared)
	chart := webChart(t, shared)
	pool, cert, key := testCert(t, "chart.kedge.test")
	tlsSecret(t, shared, ns, "chart-tls", cert, key)
	values := filepath.Join(t.TempDir(), "ingress.yaml")
	writeTestFile(t, values, `ingress:
  enabled: true
  hosts:
  - host: chart.kedge.test
    paths: [{path: /, pathType: Prefix}]
  tls:
  - secretName: chart-tls
    hosts: [chart.kedge.test]
`)
	shared.helm(t, "install", "web", chart, "-n", ns, "-f", values, "--wait", "--timeout", "3m")
	traefikServing(t, shared)
	eventually(t, 2*time.Minute, "the release answers through the Ingress by name", func() error {
		out, err := ingressGet("chart.kedge.test", "/version")
		if err != nil || out != "v1" {
			return fmt.Errorf("%v: %q", err, out)
		}
		return nil
	})
	eventually(t, time.Minute, "and by TLS", func() error {
		out, err := ingressDo(tlsClient(pool), "https://chart.kedge.test", "chart.kedge.test", "/version")
		if err != nil || out != "v1" {
			return fmt.Errorf("%v: %q", err, out)
		}
		return nil
	})

	// Data on the claim outlives the pod.
	pod := shared.podsOf(ns, "app.kubernetes.io/instance=web")
	if len(pod) != 1 {
		t.Fatalf("pods of the release: %v", pod)
	}
	shared.kubectl(t, "-n", ns, "exec", pod[0], "--", "sh", "-c", "echo survived > /data/note")
	shared.kubectl(t, "-n", ns, "delete", "pod", pod[0])
	eventually(t, 2*time.Minute, "the replacement pod reads the data", func() error {
		pods := shared.podsOf(ns, "app.kubernetes.io/instance=web")
		if len(pods) != 1 || pods[0] == pod[0] {
			return fmt.Errorf("pods %v", pods)
		}
		out, err := shared.kubectlErr("-n", ns, "exec", pods[0], "--", "cat", "/data/note")
		if err != nil || out != "survived\n" {
			return fmt.Errorf("%v: %q", err, out)
		}
		return nil
	})
	pv := strings.TrimSpace(shared.jsonpath(ns, "pvc/web-data", "{.spec.volumeName}"))
	dir := volumeDir(t, shared, ns, "web-data")

	version := func(want string) {
		t.Helper()
		eventually(t, 2*time.Minute, "the Ingress answers "+want, func() error {
			out, err := ingressGet("chart.kedge.test", "/version")
			if err != nil || out != want {
				return fmt.Errorf("%v: %q", err, out)
			}
			return nil
		})
	}
	shared.helm(t, "upgrade", "web", chart, "-n", ns, "-f", values, "--set", "image.tag=v2", "--wait", "--timeout", "3m")
	version("v2")
	shared.helm(t, "rollback", "web", "1", "-n", ns, "--wait", "--timeout", "3m")
	version("v1")
	if out := shared.helm(t, "history", "web", "-n", ns); strings.Count(out, "\n") < 4 {
		t.Fatalf("helm history:\n%s", out)
	}

	shared.helm(t, "uninstall", "web", "-n", ns, "--wait")
	eventually(t, 2*time.Minute, "the uninstall deletes the volume and its directory", func() error {
		if out, err := shared.kubectlErr("get", "pv", pv, "-o", "name", "--ignore-not-found"); err != nil || strings.TrimSpace(out) != "" {
			return fmt.Errorf("pv %s still there", pv)
		}
		if _, err := os.Stat(dir); !os.IsNotExist(err) {
			return fmt.Errorf("%s still there (%v)", dir, err)
		}
		return nil
	})
	traefikGone(t, shared)
}

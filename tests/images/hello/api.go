package main

import (
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"time"
)

// saDir is where the kubelet mounts a pod's service-account token and CA.
const saDir = "/var/run/secrets/kubernetes.io/serviceaccount"

// apiHandler serves /api?path=P: a GET of P from the Kubernetes API with
// the pod's service-account token, the way an in-cluster client makes it
// (KUBERNETES_SERVICE_HOST/PORT, the mounted token and CA). It answers
// with the API's status line, its Warning headers and its body.
func apiHandler(dir string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		p := r.URL.Query().Get("path")
		if !strings.HasPrefix(p, "/") {
			http.Error(w, "path must be an API path (/api/v1/...)", http.StatusBadRequest)
			return
		}
		host, port := os.Getenv("KUBERNETES_SERVICE_HOST"), os.Getenv("KUBERNETES_SERVICE_PORT")
		if host == "" || port == "" {
			http.Error(w, "not in a cluster: KUBERNETES_SERVICE_HOST/PORT are not set", http.StatusInternalServerError)
			return
		}
		token, err := os.ReadFile(filepath.Join(dir, "token"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		ca, err := os.ReadFile(filepath.Join(dir, "ca.crt"))
		if err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		roots := x509.NewCertPool()
		roots.AppendCertsFromPEM(ca)
		client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: roots, MinVersion: tls.VersionTLS12}}}
		req, err := http.NewRequestWithContext(r.Context(), http.MethodGet, "https://"+net.JoinHostPort(host, port)+p, nil)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		req.Header.Set("Authorization", "Bearer "+strings.TrimSpace(string(token)))
		resp, err := client.Do(req)
		if err != nil {
			http.Error(w, "the API: "+err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		fmt.Fprintf(w, "%s\n", resp.Status)
		for _, warning := range resp.Header.Values("Warning") {
			fmt.Fprintf(w, "Warning: %s\n", warning)
		}
		io.Copy(w, io.LimitReader(resp.Body, 1<<20))
	}
}

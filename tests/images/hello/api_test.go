package main

import (
	"encoding/pem"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestAPIHandler(t *testing.T) {
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer tok-1" || r.URL.Path != "/api/v1/namespaces/default/configmaps/greeting" {
			http.Error(w, "who are you", http.StatusUnauthorized)
			return
		}
		w.Header().Add("Warning", `299 - "a cached copy"`)
		io.WriteString(w, `{"data":{"greeting":"hi"}}`)
	}))
	defer api.Close()
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "token"), []byte("tok-1\n"), 0o600)
	os.WriteFile(filepath.Join(dir, "ca.crt"), pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600)
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(api.URL, "https://"))
	t.Setenv("KUBERNETES_SERVICE_HOST", host)
	t.Setenv("KUBERNETES_SERVICE_PORT", port)

	for _, tt := range []struct{ path, want string }{
		{"/api/v1/namespaces/default/configmaps/greeting", "200 OK\nWarning: 299 - \"a cached copy\"\n{\"data\":{\"greeting\":\"hi\"}}"},
		{"/api/v1/secrets", "401 Unauthorized\nwho are you\n"},
	} {
		rec := httptest.NewRecorder()
		apiHandler(dir)(rec, httptest.NewRequest(http.MethodGet, "/api?path="+tt.path, nil))
		if rec.Code != http.StatusOK || rec.Body.String() != tt.want {
			t.Errorf("%s: %d %q, want %q", tt.path, rec.Code, rec.Body.String(), tt.want)
		}
	}
	rec := httptest.NewRecorder()
	apiHandler(dir)(rec, httptest.NewRequest(http.MethodGet, "/api?path=nope", nil))
	if rec.Code != http.StatusBadRequest {
		t.Errorf("a path without /: %d", rec.Code)
	}
}

package apiproxy

import (
	"encoding/base64"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// A pod's reads go upstream with its own token; with no server, the
// cache answers that token what the server answered it, and nothing to
// another token, a request without one or an expired token.
func TestPodsServedPerToken(t *testing.T) {
	api := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("Authorization") != "Bearer pod-a" {
			http.Error(w, `{"kind":"Status","code":403}`, http.StatusForbidden)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		io.WriteString(w, `{"kind":"ConfigMap","apiVersion":"v1","metadata":{"namespace":"default","name":"greeting"},"data":{"greeting":"hi"}}`)
	}))
	dir := t.TempDir()
	ca := filepath.Join(dir, "server-ca.crt")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: api.Certificate().Raw}), 0o600)
	p, err := New(Options{Upstream: api.URL, ServerCA: ca, ClientCA: ca, TLSDir: filepath.Join(dir, "tls"), CacheDir: filepath.Join(dir, "cache"), Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Start(t.Context()); err != nil {
		t.Fatal(err)
	}
	defer p.Stop()

	const path = "/api/v1/namespaces/default/configmaps/greeting"
	get := func(token string) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodGet, path, nil)
		if token != "" {
			r.Header.Set("Authorization", "Bearer "+token)
		}
		w := httptest.NewRecorder()
		p.ServePod(w, r)
		return w
	}
	if w := get("pod-a"); w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"hi"`) {
		t.Fatalf("online, pod-a: %d %s", w.Code, w.Body)
	}
	if w := get("pod-b"); w.Code != http.StatusForbidden {
		t.Fatalf("online, pod-b: %d %s", w.Code, w.Body)
	}
	api.Close()

	w := get("pod-a")
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"hi"`) || !strings.Contains(w.Header().Get("Warning"), "cached copy") {
		t.Errorf("offline, pod-a: %d %s %v", w.Code, w.Body, w.Header())
	}
	if w := get("pod-b"); w.Code != http.StatusServiceUnavailable || strings.Contains(w.Body.String(), `"hi"`) {
		t.Errorf("offline, pod-b got another token's answer: %d %s", w.Code, w.Body)
	}
	if w := get(""); w.Code != http.StatusUnauthorized {
		t.Errorf("offline, no token: %d %s", w.Code, w.Body)
	}
	if w := get(jwt(time.Now().Add(-time.Minute))); w.Code != http.StatusUnauthorized {
		t.Errorf("offline, an expired token: %d %s", w.Code, w.Body)
	}
}

func jwt(exp time.Time) string {
	enc := base64.RawURLEncoding.EncodeToString
	return enc([]byte(`{"alg":"RS256"}`)) + "." + enc(fmt.Appendf(nil, `{"exp":%d}`, exp.Unix())) + ".c2ln"
}

func TestExpired(t *testing.T) {
	now := time.Now()
	for _, tt := range []struct {
		token string
		want  bool
	}{
		{jwt(now.Add(-time.Second)), true},
		{jwt(now.Add(time.Hour)), false},
		{"not-a-jwt", false},
		{"a.!!!.c", false},
		{"a." + base64.RawURLEncoding.EncodeToString([]byte(`{"sub":"x"}`)) + ".c", false},
	} {
		if got := expired(tt.token, now); got != tt.want {
			t.Errorf("expired(%q) = %v, want %v", tt.token, got, tt.want)
		}
	}
}

func TestScopes(t *testing.T) {
	s := tokenScope("tok")
	if s == tokenScope("other") || !strings.HasPrefix(s, scopePrefix) {
		t.Fatalf("scopes: %q %q", s, tokenScope("other"))
	}
	for _, tt := range []struct{ key, scope, rest string }{
		{"list:/api/v1/pods?", "", "list:/api/v1/pods?"},
		{s + "list:/api/v1/pods?", s, "list:/api/v1/pods?"},
		{"sa=broken", "", "sa=broken"},
	} {
		if scope, rest := splitScope(tt.key); scope != tt.scope || rest != tt.rest {
			t.Errorf("splitScope(%q) = %q, %q", tt.key, scope, rest)
		}
	}
	// A token's lists answer its gets, never another scope's.
	c := testCache(t, t.TempDir())
	if err := c.putList(s+"list:/api/v1/services?", []byte(`{"apiVersion":"v1","kind":"ServiceList","metadata":{"resourceVersion":"3"},"items":[{"metadata":{"namespace":"default","name":"kubernetes"}}]}`)); err != nil {
		t.Fatal(err)
	}
	if _, _, ok := c.getObject(s, "/api/v1/namespaces/default/services/kubernetes", "default", "kubernetes"); !ok {
		t.Error("the token's own list does not answer its get")
	}
	for _, scope := range []string{"", tokenScope("other")} {
		if _, _, ok := c.getObject(scope, "/api/v1/namespaces/default/services/kubernetes", "default", "kubernetes"); ok {
			t.Errorf("scope %q got a token's list", scope)
		}
	}
}

func TestFirstRuleJumps(t *testing.T) {
	dump := `*nat
:PREROUTING ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
-A PREROUTING -m comment --comment "kedge: pods reach the API through the node's cache" -j KEDGE-API-CACHE
-A PREROUTING -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kubernetes service portals" -j KUBE-SERVICES
-A OUTPUT -m comment --comment "kedge: pods reach the API through the node's cache" -j KEDGE-API-CACHE
COMMIT`
	if !firstRuleJumps(dump, "PREROUTING", podChain) {
		t.Error("PREROUTING: the first rule jumps to the cache")
	}
	if firstRuleJumps(dump, "OUTPUT", podChain) {
		t.Error("OUTPUT: kube-proxy's rule comes first")
	}
	if firstRuleJumps(dump, "POSTROUTING", podChain) {
		t.Error("POSTROUTING has no rule")
	}
}

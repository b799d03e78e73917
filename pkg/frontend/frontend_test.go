package frontend

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
)

func TestWrap(t *testing.T) {
	ca := filepath.Join(t.TempDir(), "server-ca.crt")
	os.WriteFile(ca, []byte("-----BEGIN CERTIFICATE-----\n"), 0o644)
	api := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(http.StatusUnauthorized) // what the apiserver says without credentials
	})
	h := Wrap(Options{ServerCAFile: ca})(api)
	for _, tc := range []struct {
		path string
		code int
		body string
	}{
		{"/ping", 200, "pong"},
		{"/cacerts", 200, "-----BEGIN CERTIFICATE-----\n"},
		{"/v1-kedge/unknown", 404, ""},
		{"/api/v1/pods", 401, ""},
		{"/pingx", 401, ""},
	} {
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.path, nil))
		if rec.Code != tc.code || (tc.body != "" && rec.Body.String() != tc.body) {
			t.Errorf("%s: %d %q, want %d %q", tc.path, rec.Code, rec.Body.String(), tc.code, tc.body)
		}
	}
}

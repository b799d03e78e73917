package frontend

import (
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Anyone reaching the API port may ask for /static/ paths: nothing outside
// the static dir is ever served.
func FuzzStaticPath(f *testing.F) {
	root := f.TempDir()
	static := filepath.Join(root, "static")
	os.MkdirAll(filepath.Join(static, "charts"), 0o700)
	os.WriteFile(filepath.Join(static, "charts", "a.tgz"), []byte("chart"), 0o600)
	os.WriteFile(filepath.Join(root, "secret"), []byte("SECRET"), 0o600)
	h := Wrap(Options{StaticDir: static})(http.NotFoundHandler())
	for _, p := range []string{"/static/charts/a.tgz", "/static/../secret", "/static/charts/../../secret", "/static/%2e%2e/secret", "/static/"} {
		f.Add(p)
	}
	f.Fuzz(func(t *testing.T, path string) {
		req, err := http.NewRequest(http.MethodGet, "https://x", nil)
		if err != nil {
			return
		}
		req.URL.Path = path
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		if strings.Contains(rec.Body.String(), "SECRET") {
			t.Fatalf("%q served a file outside the static dir", path)
		}
	})
}

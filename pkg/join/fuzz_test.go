package join

import (
	"bytes"
	"net"
	"net/http"
	"net/http/httptest"
	"testing"

	"github.com/kedge-dev/kedge/pkg/pki"
)

// The join token comes from users and the environment.
func FuzzParseToken(f *testing.F) {
	for _, s := range []string{"", "secret", "K10" + hash + "::server:s3cret", "K10" + hash + "::abcdef.0123456789abcdef", "K10zz::a:b", "K10" + hash + "::server:"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		tok, err := Parse(s)
		if err != nil {
			return
		}
		again, err := Parse(tok.String())
		if err != nil || again != tok {
			t.Fatalf("round trip of %q: %+v -> %q -> %+v %v", s, tok, tok.String(), again, err)
		}
	})
}

// The sign endpoint reads bodies from anyone holding a token.
func FuzzSignRequest(f *testing.F) {
	files, err := pki.Ensure(pki.Options{Dir: f.TempDir(), Hostname: "srv", ServiceIP: net.ParseIP("10.43.0.1")})
	if err != nil {
		f.Fatal(err)
	}
	s := &Signer{Token: Token{Username: "server", Secret: "s3cret"}, TLS: files}
	f.Add([]byte(`{"kind":"kubelet","nodeName":"n1","csr":"-----BEGIN CERTIFICATE REQUEST-----\nMIIB\n-----END CERTIFICATE REQUEST-----\n"}`))
	f.Add([]byte(`{"kind":"kubelet-serving","nodeName":"n1","sans":["a","10.0.0.1"],"csr":""}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`not json`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req := httptest.NewRequest(http.MethodPost, SignPath, bytes.NewReader(body))
		req.SetBasicAuth("server", "s3cret")
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK && rec.Code != http.StatusBadRequest {
			t.Fatalf("status %d for %q", rec.Code, body)
		}
	})
}

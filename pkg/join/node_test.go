package join

import (
	"bytes"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/kedge-dev/kedge/pkg/pki"
)

func signBody(t *testing.T, kind, node string) []byte {
	t.Helper()
	csr, err := pki.CertificateRequest(filepath.Join(t.TempDir(), "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	body, _ := json.Marshal(signRequest{Kind: kind, NodeName: node, SANs: []string{"n1", "10.0.0.5"}, CSR: string(csr)})
	return body
}

func TestSignerIdentities(t *testing.T) {
	files, err := pki.Ensure(pki.Options{Dir: t.TempDir(), Hostname: "srv", ServiceIP: net.ParseIP("10.43.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	s := &Signer{Token: Token{Username: "server", Secret: "s3cret"}, TLS: files}
	post := func(user, pass string, body []byte) *httptest.ResponseRecorder {
		req := httptest.NewRequest(http.MethodPost, SignPath, bytes.NewReader(body))
		req.SetBasicAuth(user, pass)
		rec := httptest.NewRecorder()
		s.ServeHTTP(rec, req)
		return rec
	}
	if rec := post("server", "wrong", signBody(t, KindKubelet, "n1")); rec.Code != http.StatusUnauthorized {
		t.Errorf("wrong secret: %d", rec.Code)
	}
	if rec := post("server", "s3cret", signBody(t, "admin", "n1")); rec.Code != http.StatusBadRequest || !strings.Contains(rec.Body.String(), `unknown certificate kind "admin"`) {
		t.Errorf("unknown kind: %d %s", rec.Code, rec.Body)
	}
	if rec := post("server", "s3cret", signBody(t, KindKubelet, "Bad_Name")); rec.Code != http.StatusBadRequest {
		t.Errorf("bad node name: %d", rec.Code)
	}
	for kind, want := range map[string]string{KindKubelet: "system:node:n1", KindKubeletServing: "n1", KindFlannel: "system:kedge-flannel"} {
		rec := post("server", "s3cret", signBody(t, kind, "n1"))
		if rec.Code != http.StatusOK {
			t.Fatalf("%s: %d %s", kind, rec.Code, rec.Body)
		}
		var out signResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
			t.Fatal(err)
		}
		block, _ := pem.Decode([]byte(out.Cert))
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		if cert.Subject.CommonName != want {
			t.Errorf("%s: CN %q, want %q", kind, cert.Subject.CommonName, want)
		}
		if kind == KindKubeletServing && (len(cert.IPAddresses) != 1 || cert.IPAddresses[0].String() != "10.0.0.5") {
			t.Errorf("serving SANs: %v %v", cert.DNSNames, cert.IPAddresses)
		}
	}
}

func TestRemoteRefusesAnotherCA(t *testing.T) {
	files, err := pki.Ensure(pki.Options{Dir: t.TempDir(), Hostname: "srv", ServiceIP: net.ParseIP("10.43.0.1")})
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := os.ReadFile(files.ServerCACert)
	sum := sha256.Sum256(ca)
	good := hex.EncodeToString(sum[:])
	r := &Remote{Server: "https://x", Log: slog.New(slog.NewTextHandler(io.Discard, nil))}
	r.Token = Token{CAHash: good}
	if err := r.verify(ca); err != nil {
		t.Errorf("the right CA: %v", err)
	}
	r.Token = Token{CAHash: strings.Repeat("0", 64)}
	if err := r.verify(ca); err == nil || !strings.Contains(err.Error(), "not the one the token names") {
		t.Errorf("another CA: %v", err)
	}
}

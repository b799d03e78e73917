package pki

import (
	"bytes"
	"crypto/x509"
	"os"
	"path/filepath"
	"testing"
	"time"
)

func ensureTLS(t *testing.T, dir string) Files {
	t.Helper()
	f, err := Ensure(Options{Dir: dir, Hostname: "node1"})
	if err != nil {
		t.Fatal(err)
	}
	return f
}

func readFile(t *testing.T, p string) []byte {
	t.Helper()
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// verifiesWith reports whether the leaf file (leaf + chain) verifies with
// only the CA file roots as trust, as a TLS peer would check it.
func verifiesWith(t *testing.T, leafFile, roots []byte, usage x509.ExtKeyUsage) error {
	t.Helper()
	certs := parseCerts(leafFile)
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatal("no roots")
	}
	inter := x509.NewCertPool()
	for _, c := range certs[1:] {
		inter.AddCert(c)
	}
	_, err := certs[0].Verify(x509.VerifyOptions{Roots: pool, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{usage}})
	return err
}

func TestRotateCA(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	f := ensureTLS(t, dir)
	oldServerCA := readFile(t, f.ServerCACert)
	oldClientCA := readFile(t, f.ClientCACert)
	oldServing := readFile(t, f.ServingCert)

	backup, err := RotateCA(RotateCAOptions{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(readFile(t, filepath.Join(backup, "server-ca.crt")), oldServerCA) {
		t.Fatal("the backup does not hold the old server CA")
	}
	ensureTLS(t, dir)
	newServerCA := readFile(t, f.ServerCACert)
	if !bytes.HasSuffix(newServerCA, oldServerCA) || !Rotates(newServerCA, oldServerCA) {
		t.Fatal("the new server CA file is not a rotation of the old one")
	}
	first, _ := parseCertPEM(newServerCA)
	old, _ := parseCertPEM(oldServerCA)
	if first.Equal(old) || !isSelfSigned(first) {
		t.Fatal("the server CA was not replaced by a new self-signed one")
	}
	serving := readFile(t, f.ServingCert)
	if bytes.Equal(serving, oldServing) {
		t.Fatal("Ensure kept the serving certificate of the old CA")
	}
	// Something that trusts only the old CA (an agent that has not
	// restarted) verifies the new serving cert through the cross cert;
	// new clients verify it with the new CA alone.
	if err := verifiesWith(t, serving, oldServerCA, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("old trust, new serving cert: %v", err)
	}
	if err := verifiesWith(t, serving, encodeCert(first.Raw), x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("new trust, new serving cert: %v", err)
	}
	// Old client certs stay accepted: the client CA file still holds it.
	if err := verifiesWith(t, readFile(t, filepath.Join(backup, "client-admin.crt")), readFile(t, f.ClientCACert), x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatalf("an old client cert under the rotated client CA file: %v", err)
	}
	if !Rotates(readFile(t, f.ClientCACert), oldClientCA) {
		t.Fatal("the client CA was not rotated")
	}
	// The signing copy holds the new CA alone.
	if nc := readFile(t, f.ServerCASigningCert); !bytes.Equal(nc, encodeCert(first.Raw)) {
		t.Fatal("server-ca.nochain.crt is not the new CA alone")
	}
	// A second rotation still vouches back to the first CA.
	if _, err := RotateCA(RotateCAOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	ensureTLS(t, dir)
	if !PinnedBy(readFile(t, f.ServerCACert), HashOf(oldServerCA)) {
		t.Fatal("a token from before two rotations no longer pins the CA")
	}
	if err := verifiesWith(t, readFile(t, f.ServingCert), oldServerCA, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("the first CA's trust after two rotations: %v", err)
	}
}

func TestPinnedByRefusesAnotherCA(t *testing.T) {
	ours := filepath.Join(t.TempDir(), "tls")
	theirs := filepath.Join(t.TempDir(), "tls")
	f := ensureTLS(t, ours)
	g := ensureTLS(t, theirs)
	pinned := readFile(t, f.ServerCACert)
	if !PinnedBy(pinned, HashOf(pinned)) {
		t.Fatal("the file itself")
	}
	// An attacker who copies our public CA file behind its own CA.
	forged := append(readFile(t, g.ServerCACert), pinned...)
	if PinnedBy(forged, HashOf(pinned)) || Rotates(forged, pinned) {
		t.Fatal("another CA in front of the pinned file was accepted")
	}
	// And behind a genuine rotation, an extra CA of its own.
	if _, err := RotateCA(RotateCAOptions{Dir: ours}); err != nil {
		t.Fatal(err)
	}
	rotated := readFile(t, f.ServerCACert)
	if !PinnedBy(rotated, HashOf(pinned)) {
		t.Fatal("the genuine rotation")
	}
	if PinnedBy(append(readFile(t, g.ServerCACert), rotated...), HashOf(pinned)) {
		t.Fatal("an extra CA in front of a rotation was accepted")
	}
	if PinnedBy(rotated, HashOf([]byte("something else"))) {
		t.Fatal("a hash of nothing in the file")
	}
}

func TestRotateCAFromPath(t *testing.T) {
	a := filepath.Join(t.TempDir(), "tls")
	f := ensureTLS(t, a)
	b := filepath.Join(t.TempDir(), "tls")
	if err := copyDir(a, b); err != nil { // a second server: same CAs
		t.Fatal(err)
	}
	if _, err := RotateCA(RotateCAOptions{Dir: a}); err != nil {
		t.Fatal(err)
	}
	// The second server takes the first's rotation as it is.
	if _, err := RotateCA(RotateCAOptions{Dir: b, From: a}); err != nil {
		t.Fatal(err)
	}
	for _, ca := range f.cas() {
		rel, _ := filepath.Rel(a, ca.cert)
		if !bytes.Equal(readFile(t, ca.cert), readFile(t, filepath.Join(b, rel))) {
			t.Fatalf("%s differs between the servers", rel)
		}
	}
	if _, err := RotateCA(RotateCAOptions{Dir: b, From: a}); err == nil {
		t.Fatal("rotating to the current CAs again")
	}

	// A CA of the operator's own is cross-signed by the current one.
	own := t.TempDir()
	_, certPEM, keyPEM, err := newCA("example-org-ca")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(own, "server-ca.crt"), certPEM, 0o600)
	os.WriteFile(filepath.Join(own, "server-ca.key"), keyPEM, 0o600)
	before := readFile(t, f.ServerCACert)
	if _, err := RotateCA(RotateCAOptions{Dir: a, From: own}); err != nil {
		t.Fatal(err)
	}
	after := readFile(t, f.ServerCACert)
	if !bytes.HasPrefix(after, certPEM) || !Rotates(after, before) {
		t.Fatal("the operator's CA is not first, cross-signed by the current one")
	}
	if c, _ := parseCertPEM(readFile(t, f.ClientCACert)); c.Subject.CommonName == "example-org-ca" {
		t.Fatal("a CA missing from --path was replaced")
	}
	// --force replaces without keeping the old trust.
	if _, err := RotateCA(RotateCAOptions{Dir: a, Force: true}); err != nil {
		t.Fatal(err)
	}
	if n := len(parseCerts(readFile(t, f.ServerCACert))); n != 1 {
		t.Fatalf("--force left %d certificates in the CA file", n)
	}
	// A key that is not the cert's is refused before anything changes.
	os.WriteFile(filepath.Join(own, "server-ca.key"), readFile(t, f.ClientCAKey), 0o600)
	before = readFile(t, f.ServerCACert)
	if _, err := RotateCA(RotateCAOptions{Dir: a, From: own}); err == nil {
		t.Fatal("a mismatched key in --path accepted")
	}
	if !bytes.Equal(before, readFile(t, f.ServerCACert)) {
		t.Fatal("a refused rotation changed the CA")
	}
}

func TestSignRequestCarriesChain(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tls")
	f := ensureTLS(t, dir)
	old := readFile(t, f.ServerCACert)
	if _, err := RotateCA(RotateCAOptions{Dir: dir}); err != nil {
		t.Fatal(err)
	}
	csr, err := CertificateRequest(filepath.Join(t.TempDir(), "k.key"))
	if err != nil {
		t.Fatal(err)
	}
	cert, err := SignRequest(f.ServerCACert, f.ServerCAKey, csr, Leaf{CommonName: "node1", Serving: true, SANs: []string{"node1"}})
	if err != nil {
		t.Fatal(err)
	}
	if err := verifiesWith(t, cert, old, x509.ExtKeyUsageServerAuth); err != nil {
		t.Fatalf("a node cert signed after rotation, checked with the old CA: %v", err)
	}
	c, _ := parseCertPEM(cert)
	if time.Until(c.NotAfter) < 300*24*time.Hour {
		t.Fatal("short validity")
	}
}

package pki

import (
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// Leaf names what a node certificate must say: the subject, and for a
// serving certificate its SANs. The server, not the requester, decides
// it; a joining agent only supplies the public key.
type Leaf struct {
	CommonName string
	Orgs       []string
	Serving    bool
	SANs       []string
}

func (l Leaf) spec() leafSpec {
	s := leafSpec{commonName: l.CommonName, orgs: l.Orgs, usage: x509.ExtKeyUsageClientAuth}
	if l.Serving {
		s.usage = x509.ExtKeyUsageServerAuth
		s.dnsNames, s.ips = splitSANs(l.SANs)
	}
	return s
}

// NeedsCert says why the certificate at certPath must be (re)issued for
// leaf under the CA certificate at caCertPath, or "" if it can be kept.
func NeedsCert(caCertPath, certPath, keyPath string, leaf Leaf) string {
	caCert, err := readCert("CA cert", caCertPath)
	if err != nil {
		return err.Error()
	}
	return reissueReason(&authority{cert: caCert}, certPath, keyPath, leaf.spec(), time.Now())
}

// CertificateRequest returns a PEM CSR for the key at keyPath, creating
// the key (0600) if there is none worth keeping.
func CertificateRequest(keyPath string) ([]byte, error) {
	key, fresh := reusableKey(keyPath)
	if fresh {
		var err error
		if key, err = newKey(); err != nil {
			return nil, err
		}
		data, err := encodeKey(key)
		if err != nil {
			return nil, err
		}
		if err := os.MkdirAll(filepath.Dir(keyPath), dirMode); err != nil {
			return nil, err
		}
		if err := datadir.WriteFileAtomic(keyPath, data, keyMode); err != nil {
			return nil, err
		}
	}
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{Subject: pkix.Name{CommonName: "kedge-node"}}, key)
	if err != nil {
		return nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der}), nil
}

// CheckRequest reports whether csrPEM is a PEM certificate request with a
// valid signature, before anything else is done with it.
func CheckRequest(csrPEM []byte) error {
	_, err := parseRequest(csrPEM)
	return err
}

func parseRequest(csrPEM []byte) (*x509.CertificateRequest, error) {
	block, _ := pem.Decode(csrPEM)
	if block == nil || block.Type != "CERTIFICATE REQUEST" {
		return nil, errors.New("not a PEM certificate request")
	}
	csr, err := x509.ParseCertificateRequest(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("parse certificate request: %w", err)
	}
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("certificate request signature: %w", err)
	}
	return csr, nil
}

// SignRequest signs the public key of a PEM CSR with the CA in
// caCert/caKey as leaf (the CSR's own subject is ignored) and returns the
// PEM certificate.
func SignRequest(caCert, caKey string, csrPEM []byte, leaf Leaf) ([]byte, error) {
	if leaf.CommonName == "" {
		return nil, errors.New("empty common name")
	}
	csr, err := parseRequest(csrPEM)
	if err != nil {
		return nil, err
	}
	ca, err := loadCA(caCert, caKey)
	if err != nil {
		return nil, err
	}
	der, err := signLeaf(ca, csr.PublicKey, leaf.spec(), leafValidity)
	if err != nil {
		return nil, fmt.Errorf("sign: %w", err)
	}
	return append(encodeCert(der), ca.chain...), nil
}

// WriteCert stores a PEM certificate received for the key at keyPath,
// after checking that it is one and matches the key.
func WriteCert(certPath, keyPath string, certPEM []byte) error {
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return err
	}
	key, err := readKey("key", keyPath)
	if err != nil {
		return err
	}
	if !keyMatches(cert, key) {
		return errors.New("the certificate does not match the key")
	}
	return datadir.WriteFileAtomic(certPath, certPEM, certMode)
}

// This file holds the on-disk side of the package: the layout (Files),
// atomic writes, and PEM encoding of keys and certificates.

package pki

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha1"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// File modes: only root reads any of it (CIS 1.1.19-1.1.21 ask 0600 for
// certificates too).
const (
	dirMode  fs.FileMode = 0o700
	keyMode  fs.FileMode = 0o600
	certMode fs.FileMode = 0o600
)

// Files holds the paths of every file Ensure manages; all absolute, under
// the directory passed to FilesIn.
type Files struct {
	ClientCACert, ClientCAKey string // signs all client certs (also kubelet client certs later)
	ServerCACert, ServerCAKey string // signs serving certs
	// The CA certificates alone, without the CAs they replaced
	// (kube-controller-manager's signers want one certificate).
	ClientCASigningCert, ServerCASigningCert  string
	RequestHeaderCACert, RequestHeaderCAKey   string // front-proxy / aggregation
	ServiceAccountKey                         string // private key; the public key is derived from it
	ServingCert, ServingKey                   string // kube-apiserver serving cert, signed by the server CA
	AdminCert, AdminKey                       string // CN=system:admin, O=system:masters
	SupervisorCert, SupervisorKey             string // CN=system:kedge-supervisor, O=system:masters
	ControllerCert, ControllerKey             string // CN=system:kube-controller-manager
	SchedulerCert, SchedulerKey               string // CN=system:kube-scheduler
	APIServerKubeletCert, APIServerKubeletKey string // CN=kube-apiserver-kubelet-client, O=system:masters
	AuthProxyCert, AuthProxyKey               string // CN=system:auth-proxy, signed by the request-header CA
	// Embedded etcd: a CA for its clients and one for its peers.
	EtcdServerCACert, EtcdServerCAKey string
	EtcdPeerCACert, EtcdPeerCAKey     string
	EtcdServerCert, EtcdServerKey     string // etcd's client-facing serving cert
	EtcdPeerCert, EtcdPeerKey         string // serving and client cert between members
	EtcdClientCert, EtcdClientKey     string // the apiserver's and kedge's etcd client cert
}

// FilesIn returns the paths Ensure uses inside dir. It does not touch the
// filesystem, so callers (e.g. the agent or a kubeconfig writer) can compute
// paths without generating anything.
func FilesIn(dir string) Files {
	dir = absDir(dir)
	p := func(name string) string { return filepath.Join(dir, name) }
	return Files{
		ClientCACert:         p("client-ca.crt"),
		ClientCAKey:          p("client-ca.key"),
		ServerCACert:         p("server-ca.crt"),
		ServerCAKey:          p("server-ca.key"),
		ClientCASigningCert:  p("client-ca.nochain.crt"),
		ServerCASigningCert:  p("server-ca.nochain.crt"),
		RequestHeaderCACert:  p("request-header-ca.crt"),
		RequestHeaderCAKey:   p("request-header-ca.key"),
		ServiceAccountKey:    p("service.key"),
		ServingCert:          p("serving-kube-apiserver.crt"),
		ServingKey:           p("serving-kube-apiserver.key"),
		AdminCert:            p("client-admin.crt"),
		AdminKey:             p("client-admin.key"),
		SupervisorCert:       p("client-supervisor.crt"),
		SupervisorKey:        p("client-supervisor.key"),
		ControllerCert:       p("client-controller.crt"),
		ControllerKey:        p("client-controller.key"),
		SchedulerCert:        p("client-scheduler.crt"),
		SchedulerKey:         p("client-scheduler.key"),
		APIServerKubeletCert: p("client-kube-apiserver.crt"),
		APIServerKubeletKey:  p("client-kube-apiserver.key"),
		AuthProxyCert:        p("client-auth-proxy.crt"),
		AuthProxyKey:         p("client-auth-proxy.key"),
		EtcdServerCACert:     p("etcd/server-ca.crt"),
		EtcdServerCAKey:      p("etcd/server-ca.key"),
		EtcdPeerCACert:       p("etcd/peer-ca.crt"),
		EtcdPeerCAKey:        p("etcd/peer-ca.key"),
		EtcdServerCert:       p("etcd/server.crt"),
		EtcdServerKey:        p("etcd/server.key"),
		EtcdPeerCert:         p("etcd/peer.crt"),
		EtcdPeerKey:          p("etcd/peer.key"),
		EtcdClientCert:       p("etcd/client.crt"),
		EtcdClientKey:        p("etcd/client.key"),
	}
}

// absDir makes dir absolute. filepath.Abs only fails when the working
// directory is gone; the cleaned relative path is the best we can do then.
func absDir(dir string) string {
	if abs, err := filepath.Abs(dir); err == nil {
		return abs
	}
	return filepath.Clean(dir)
}

// ensureDir creates dir with mode 0700, and tightens it if it already exists
// with looser permissions (an operator may have pre-created it).
func ensureDir(dir string) error {
	if err := os.MkdirAll(dir, dirMode); err != nil {
		return fmt.Errorf("create directory %s: %w", dir, err)
	}
	return tightenMode(dir, dirMode)
}

// tightenMode removes permission bits beyond want. It never loosens, and it
// does not change mtimes, so Ensure stays idempotent.
func tightenMode(path string, want fs.FileMode) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("stat %s: %w", path, err)
	}
	if fi.Mode().Perm()&^want == 0 {
		return nil
	}
	if err := os.Chmod(path, fi.Mode().Perm()&want); err != nil {
		return fmt.Errorf("chmod %s: %w", path, err)
	}
	return nil
}

// exists reports whether path exists. Errors other than "not exist" (e.g.
// permission denied on the directory) are returned rather than treated as
// absence, because absence leads to generating a new CA.
func exists(path string) (bool, error) {
	_, err := os.Stat(path)
	switch {
	case err == nil:
		return true, nil
	case errors.Is(err, fs.ErrNotExist):
		return false, nil
	default:
		return false, fmt.Errorf("stat %s: %w", path, err)
	}
}

// parseCertPEM returns the first certificate in data. Later blocks (an
// intermediate bundle) are ignored: the first one is the one its key signs.
func parseCertPEM(data []byte) (*x509.Certificate, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no CERTIFICATE PEM block found")
		}
		if block.Type == "CERTIFICATE" {
			return x509.ParseCertificate(block.Bytes)
		}
	}
}

// parsePrivateKeyPEM accepts the key encodings openssl and kubeadm produce
// (SEC1, PKCS#8, PKCS#1) so operators can bring their own CA. Non-key blocks
// such as "EC PARAMETERS" from `openssl ecparam -genkey` are skipped.
func parsePrivateKeyPEM(data []byte) (crypto.Signer, error) {
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return nil, errors.New("no private key PEM block found")
		}
		switch block.Type {
		case "EC PRIVATE KEY":
			return x509.ParseECPrivateKey(block.Bytes)
		case "RSA PRIVATE KEY":
			return x509.ParsePKCS1PrivateKey(block.Bytes)
		case "PRIVATE KEY":
			k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
			if err != nil {
				return nil, err
			}
			s, ok := k.(crypto.Signer)
			if !ok {
				return nil, fmt.Errorf("unsupported PKCS#8 key type %T", k)
			}
			return s, nil
		}
	}
}

// readCert reads and parses a certificate file; what names the role of the
// file in errors ("CA cert", "cert").
func readCert(what, path string) (*x509.Certificate, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	cert, err := parseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s %s: %w", what, path, err)
	}
	return cert, nil
}

// readKey reads and parses a private key file.
func readKey(what, path string) (crypto.Signer, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s %s: %w", what, path, err)
	}
	key, err := parsePrivateKeyPEM(data)
	if err != nil {
		return nil, fmt.Errorf("parse %s %s: %w", what, path, err)
	}
	return key, nil
}

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generate ECDSA P-256 key: %w", err)
	}
	return key, nil
}

// encodeKey uses SEC1 ("EC PRIVATE KEY"), which both the apiserver and
// k8s.io/client-go/util/keyutil load.
func encodeKey(key *ecdsa.PrivateKey) ([]byte, error) {
	der, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("marshal EC private key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: der}), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// keyMatches reports whether key is the private half of cert's public key; a
// mismatched pair would make TLS fail at handshake time, far from the cause.
func keyMatches(cert *x509.Certificate, key crypto.Signer) bool {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	return ok && pub.Equal(cert.PublicKey)
}

// newSerial returns a random serial in [1, 2^128): RFC 5280 requires serials
// to be positive and unique per CA, and randomness makes collisions between
// restarts (or between servers sharing a CA) practically impossible.
func newSerial() (*big.Int, error) {
	limit := new(big.Int).Sub(new(big.Int).Lsh(big.NewInt(1), 128), big.NewInt(1))
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		return nil, fmt.Errorf("generate serial number: %w", err)
	}
	return n.Add(n, big.NewInt(1)), nil
}

// subjectKeyID follows RFC 5280 4.2.1.2 method 1: SHA-1 of the public key
// bit string (the uncompressed EC point).
func subjectKeyID(key *ecdsa.PrivateKey) ([]byte, error) {
	pub, err := key.PublicKey.ECDH()
	if err != nil {
		return nil, fmt.Errorf("encode public key: %w", err)
	}
	sum := sha1.Sum(pub.Bytes())
	return sum[:], nil
}

// ensureServiceAccountKey generates the token-signing key once. An existing
// key that does not parse is an error, not something to replace: a new key
// would invalidate every service-account token already issued.
func ensureServiceAccountKey(path string) error {
	ok, err := exists(path)
	if err != nil {
		return err
	}
	if ok {
		if _, err := readKey("service-account key", path); err != nil {
			return err
		}
		return tightenMode(path, keyMode)
	}
	key, err := newKey()
	if err != nil {
		return err
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	return datadir.WriteFileAtomic(path, keyPEM, keyMode)
}

// CAHash returns the hex sha256 of the CA cert file's bytes as stored. Join
// tokens pin the file content, so it is hashed verbatim, but only after
// checking it holds a certificate so garbage is never pinned.
func CAHash(caCertPath string) (string, error) {
	data, err := ReadCA(caCertPath)
	if err != nil {
		return "", err
	}
	return HashOf(data), nil
}

// ReadCA returns the bytes of a CA cert file, checked to hold a certificate.
func ReadCA(caCertPath string) ([]byte, error) {
	data, err := os.ReadFile(caCertPath)
	if err != nil {
		return nil, fmt.Errorf("read CA cert %s: %w", caCertPath, err)
	}
	if _, err := parseCertPEM(data); err != nil {
		return nil, fmt.Errorf("parse CA cert %s: %w", caCertPath, err)
	}
	return data, nil
}

// reusableKey returns the ECDSA P-256 key at path, or fresh=true if there is
// none worth keeping (missing, unreadable, or of another type or curve).
func reusableKey(path string) (key *ecdsa.PrivateKey, fresh bool) {
	signer, err := readKey("key", path)
	if err != nil {
		return nil, true
	}
	ec, ok := signer.(*ecdsa.PrivateKey)
	if !ok || ec.Curve != elliptic.P256() {
		return nil, true
	}
	return ec, false
}

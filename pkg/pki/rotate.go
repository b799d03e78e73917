// This file replaces the CAs (kedge certificate rotate-ca). Each new CA
// is cross-signed by the one it replaces, and its file keeps the old file
// at its end, so that whatever trusts only the old CA (an agent that has
// not restarted, a kubeconfig handed out last year, a join token pinning
// the old file's hash) still verifies what the new CA signs.

package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"time"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// caFile is one CA of a TLS dir: its cert and key file, and the common
// name prefix a new one gets.
type caFile struct{ cert, key, prefix string }

func (f Files) cas() []caFile {
	return []caFile{
		{f.ClientCACert, f.ClientCAKey, "kedge-client-ca"},
		{f.ServerCACert, f.ServerCAKey, "kedge-server-ca"},
		{f.RequestHeaderCACert, f.RequestHeaderCAKey, "kedge-request-header-ca"},
		{f.EtcdServerCACert, f.EtcdServerCAKey, "kedge-etcd-server-ca"},
		{f.EtcdPeerCACert, f.EtcdPeerCAKey, "kedge-etcd-peer-ca"},
	}
}

// RotateCAOptions says where the CAs are and where new ones come from.
type RotateCAOptions struct {
	Dir string // the server's TLS dir
	// From, if set, is a directory with the new CAs under the TLS dir's
	// file names (client-ca.crt and client-ca.key, ...); a CA it lacks is
	// kept. Without it, new CAs are generated.
	From string
	// Force drops the old CAs instead of cross-signing: nothing that
	// trusts only them (agents, kubeconfigs, join tokens) works after.
	Force bool
}

// RotateCA replaces the CAs of o.Dir, after copying the directory to a
// backup beside it, whose path it returns. The leaf certificates are left
// as they are: Ensure reissues them under the new CAs at the next start.
func RotateCA(o RotateCAOptions) (backup string, err error) {
	dir := absDir(o.Dir)
	type replacement struct {
		ca           caFile
		certPEM, key []byte
	}
	var todo []replacement
	for _, ca := range FilesIn(dir).cas() {
		old, err := loadCA(ca.cert, ca.key)
		if err != nil {
			return "", err
		}
		oldPEM, err := os.ReadFile(ca.cert)
		if err != nil {
			return "", err
		}
		r := replacement{ca: ca}
		if o.From != "" {
			r.certPEM, r.key, err = fromDir(o.From, dir, ca)
			if err != nil {
				return "", err
			}
			if r.certPEM == nil || bytes.Equal(r.certPEM, oldPEM) {
				continue // not given, or already this CA
			}
			if Rotates(r.certPEM, oldPEM) || o.Force {
				// Another server's rotation of this CA, taken as it is.
				todo = append(todo, r)
				continue
			}
		} else {
			_, r.certPEM, r.key, err = newCA(fmt.Sprintf("%s@%d", ca.prefix, time.Now().Unix()))
			if err != nil {
				return "", err
			}
			if o.Force {
				todo = append(todo, r)
				continue
			}
		}
		first, err := parseCertPEM(r.certPEM)
		if err != nil {
			return "", err
		}
		cross, err := crossSign(old, first)
		if err != nil {
			return "", fmt.Errorf("cross-sign the new CA of %s: %w", ca.cert, err)
		}
		r.certPEM = slices.Concat(encodeCert(first.Raw), cross, oldPEM)
		todo = append(todo, r)
	}
	if len(todo) == 0 {
		return "", errors.New("nothing to rotate: the CAs given are the current ones")
	}
	backup = filepath.Join(filepath.Dir(dir), filepath.Base(dir)+"-"+time.Now().UTC().Format("20060102T150405Z"))
	if err := copyDir(dir, backup); err != nil {
		return "", fmt.Errorf("back up %s: %w", dir, err)
	}
	for _, r := range todo {
		// Key first, as when a CA is made: a crash between the two leaves
		// a key that does not match its cert, which loadCA reports; the
		// backup holds the pair that does.
		if err := datadir.WriteFileAtomic(r.ca.key, r.key, keyMode); err != nil {
			return backup, err
		}
		if err := datadir.WriteFileAtomic(r.ca.cert, r.certPEM, certMode); err != nil {
			return backup, err
		}
	}
	return backup, nil
}

// fromDir reads the CA ca (a file of dir) from the same relative path
// under from: nil when neither file is there.
func fromDir(from, dir string, ca caFile) (certPEM, key []byte, err error) {
	rel, _ := filepath.Rel(dir, ca.cert)
	relKey, _ := filepath.Rel(dir, ca.key)
	certPath, keyPath := filepath.Join(from, rel), filepath.Join(from, relKey)
	certPEM, certErr := os.ReadFile(certPath)
	key, keyErr := os.ReadFile(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return nil, nil, nil
	case certErr != nil:
		return nil, nil, fmt.Errorf("--path: %w", certErr)
	case keyErr != nil:
		return nil, nil, fmt.Errorf("--path: %w", keyErr)
	}
	if _, err := loadCA(certPath, keyPath); err != nil {
		return nil, nil, fmt.Errorf("--path: %w", err)
	}
	return certPEM, key, nil
}

// crossSign certifies next's subject and key with old: a chain through
// it ends at the old CA.
func crossSign(old *authority, next *x509.Certificate) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	notAfter := next.NotAfter
	if old.cert.NotAfter.Before(notAfter) {
		notAfter = old.cert.NotAfter
	}
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               next.Subject,
		NotBefore:             time.Now().Add(-backdate),
		NotAfter:              notAfter,
		KeyUsage:              next.KeyUsage,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          next.SubjectKeyId,
		AuthorityKeyId:        old.cert.SubjectKeyId,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, old.cert, next.PublicKey, old.key)
	if err != nil {
		return nil, err
	}
	return encodeCert(der), nil
}

// Rotates reports whether the CA file newer is a rotation of older: it
// ends with older's bytes, and every certificate before them is vouched
// for by older, through a certificate of the same subject and key that
// chains to it (the cross-signed twin of a new self-signed CA).
func Rotates(newer, older []byte) bool {
	if len(newer) <= len(older) || !bytes.HasSuffix(newer, older) {
		return false
	}
	roots := x509.NewCertPool()
	if !roots.AppendCertsFromPEM(older) {
		return false
	}
	all := parseCerts(newer)
	inter := x509.NewCertPool()
	for _, c := range all {
		inter.AddCert(c)
	}
	prefix := parseCerts(newer[:len(newer)-len(older)])
	if len(prefix) == 0 {
		return false
	}
	for _, c := range prefix {
		vouched := false
		for _, twin := range all {
			// A self-signed twin cannot chain to older: Go does not put
			// a subject and key twice in one chain.
			if isSelfSigned(twin) || !bytes.Equal(twin.RawSubject, c.RawSubject) || !bytes.Equal(twin.RawSubjectPublicKeyInfo, c.RawSubjectPublicKeyInfo) {
				continue
			}
			if _, err := twin.Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err == nil {
				vouched = true
				break
			}
		}
		if !vouched {
			return false
		}
	}
	return true
}

// PinnedBy reports whether the CA file bundle is the one a join token's
// hash names, or a rotation of it (see Rotates): tokens handed out
// before kedge certificate rotate-ca keep joining.
func PinnedBy(bundle []byte, hash string) bool {
	if HashOf(bundle) == hash {
		return true
	}
	begin := []byte("-----BEGIN CERTIFICATE-----")
	for i := 1; i < len(bundle); i++ {
		j := bytes.Index(bundle[i:], begin)
		if j < 0 {
			return false
		}
		i += j
		if HashOf(bundle[i:]) == hash {
			return Rotates(bundle, bundle[i:])
		}
	}
	return false
}

// HashOf is the hex sha256 of a CA file's bytes, as join tokens carry it.
func HashOf(ca []byte) string {
	sum := sha256.Sum256(ca)
	return hex.EncodeToString(sum[:])
}

// parseCerts returns every certificate of a PEM file that parses.
func parseCerts(data []byte) []*x509.Certificate {
	var out []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			return out
		}
		if block.Type != "CERTIFICATE" {
			continue
		}
		if c, err := x509.ParseCertificate(block.Bytes); err == nil {
			out = append(out, c)
		}
	}
}

func isSelfSigned(c *x509.Certificate) bool {
	return bytes.Equal(c.RawSubject, c.RawIssuer) && c.CheckSignatureFrom(c) == nil
}

// chainOf is what a CA file holds after its own certificate that a leaf
// it signs should carry: the cross-signed certificates that lead to the
// CAs it replaced.
func chainOf(caFile []byte) []byte {
	var chain []byte
	for i, c := range parseCerts(caFile) {
		if i > 0 && !isSelfSigned(c) {
			chain = append(chain, encodeCert(c.Raw)...)
		}
	}
	return chain
}

// copyDir copies the regular files of src into dst (0700 dirs, 0600 files).
func copyDir(src, dst string) error {
	return filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		target := filepath.Join(dst, rel)
		if d.IsDir() {
			return os.MkdirAll(target, dirMode)
		}
		if !d.Type().IsRegular() {
			return nil
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		return datadir.WriteFileAtomic(target, data, keyMode)
	})
}

// Package pki owns the kedge server's public key infrastructure: the client,
// server and request-header CAs, the service-account signing key and the
// control-plane leaf certificates, all kept in one directory
// (<data-dir>/server/tls).
//
// Ensure runs on every start. It writes only what is missing, expires within
// 120 days, or no longer matches the wanted subject/SANs, so a restart with
// unchanged options leaves every file byte-identical. CAs are never
// regenerated once their files exist: every kubeconfig, join token and
// kubelet certificate in the cluster trusts them.
package pki

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

const (
	caValidity   = 10 * 365 * 24 * time.Hour
	leafValidity = 365 * 24 * time.Hour
	// renewBefore is how close to expiry a leaf may get before Ensure
	// reissues it; generous so a server restarted a few times a year never
	// serves an expired cert.
	renewBefore = 120 * 24 * time.Hour
	// backdate tolerates small clock skew between nodes.
	backdate = time.Minute

	defaultClusterDomain = "cluster.local"
)

// Options describes the server whose PKI Ensure manages.
type Options struct {
	Dir           string   // e.g. /var/lib/kedge/server/tls
	Hostname      string   // node hostname, added as DNS SAN
	SANs          []string // extra names: parsed as IP if possible, else DNS name
	ServiceIP     net.IP   // first IP of the service CIDR, e.g. 10.43.0.1
	ClusterDomain string   // e.g. cluster.local; defaults to cluster.local
}

// authority is a loaded CA: its certificate and the key that signs with
// it, and the chain its leaves carry after a rotation (see chainOf).
type authority struct {
	cert  *x509.Certificate
	key   crypto.Signer
	chain []byte
}

// leafSpec is what a leaf certificate must contain to be reused.
type leafSpec struct {
	commonName string
	orgs       []string
	usage      x509.ExtKeyUsage
	// peer adds client auth to a serving cert: etcd peers are both.
	peer     bool
	dnsNames []string
	ips      []net.IP
}

func (s leafSpec) usages() []x509.ExtKeyUsage {
	if s.peer {
		return []x509.ExtKeyUsage{s.usage, x509.ExtKeyUsageClientAuth}
	}
	return []x509.ExtKeyUsage{s.usage}
}

// Ensure creates whatever is missing in o.Dir and returns the file paths.
func Ensure(o Options) (Files, error) {
	if o.Dir == "" {
		return Files{}, errors.New("pki options: Dir is empty")
	}
	dir := absDir(o.Dir)
	f := FilesIn(dir)
	for _, d := range []string{dir, filepath.Dir(f.EtcdServerCACert)} {
		if err := ensureDir(d); err != nil {
			return Files{}, err
		}
	}

	clientCA, err := ensureCA(f.ClientCACert, f.ClientCAKey, "kedge-client-ca")
	if err != nil {
		return Files{}, err
	}
	serverCA, err := ensureCA(f.ServerCACert, f.ServerCAKey, "kedge-server-ca")
	if err != nil {
		return Files{}, err
	}
	requestHeaderCA, err := ensureCA(f.RequestHeaderCACert, f.RequestHeaderCAKey, "kedge-request-header-ca")
	if err != nil {
		return Files{}, err
	}
	if err := ensureServiceAccountKey(f.ServiceAccountKey); err != nil {
		return Files{}, err
	}
	// etcd's own CAs: made on every server, so that moving to embedded
	// etcd later (--cluster-init) needs no new trust.
	etcdServerCA, err := ensureCA(f.EtcdServerCACert, f.EtcdServerCAKey, "kedge-etcd-server-ca")
	if err != nil {
		return Files{}, err
	}
	etcdPeerCA, err := ensureCA(f.EtcdPeerCACert, f.EtcdPeerCAKey, "kedge-etcd-peer-ca")
	if err != nil {
		return Files{}, err
	}

	// kube-controller-manager's signers take a file of exactly one
	// certificate; after a rotation the CA files hold several.
	for _, nc := range []struct{ from, to string }{{f.ClientCACert, f.ClientCASigningCert}, {f.ServerCACert, f.ServerCASigningCert}} {
		if err := writeFirstCert(nc.from, nc.to); err != nil {
			return Files{}, err
		}
	}

	client := func(cn string, orgs ...string) leafSpec {
		return leafSpec{commonName: cn, orgs: orgs, usage: x509.ExtKeyUsageClientAuth}
	}
	leaves := []struct {
		ca        *authority
		cert, key string
		spec      leafSpec
	}{
		{serverCA, f.ServingCert, f.ServingKey, servingSpec(o)},
		{clientCA, f.AdminCert, f.AdminKey, client("system:admin", "system:masters")},
		{clientCA, f.SupervisorCert, f.SupervisorKey, client("system:kedge-supervisor", "system:masters")},
		{clientCA, f.ControllerCert, f.ControllerKey, client("system:kube-controller-manager")},
		{clientCA, f.SchedulerCert, f.SchedulerKey, client("system:kube-scheduler")},
		{clientCA, f.APIServerKubeletCert, f.APIServerKubeletKey, client("kube-apiserver-kubelet-client", "system:masters")},
		// The aggregation layer trusts only the request-header CA for proxied
		// identities, so the proxy client cert must not come from the client CA.
		{requestHeaderCA, f.AuthProxyCert, f.AuthProxyKey, client("system:auth-proxy")},
		{etcdServerCA, f.EtcdServerCert, f.EtcdServerKey, etcdSpec(o, "kedge-etcd-server", false)},
		{etcdPeerCA, f.EtcdPeerCert, f.EtcdPeerKey, etcdSpec(o, "kedge-etcd-peer", true)},
		{etcdServerCA, f.EtcdClientCert, f.EtcdClientKey, client("kedge-etcd-client")},
	}
	for _, l := range leaves {
		if err := ensureLeaf(l.ca, l.cert, l.key, l.spec); err != nil {
			return Files{}, err
		}
	}
	return f, nil
}

// servingSpec lists every name clients use to reach the apiserver: loopback
// for local components, the in-cluster service names and IP for pods, and
// the operator-supplied names for external clients.
func servingSpec(o Options) leafSpec {
	domain := o.ClusterDomain
	if domain == "" {
		domain = defaultClusterDomain
	}
	names := []string{"localhost", "127.0.0.1", "::1", o.Hostname,
		"kubernetes", "kubernetes.default", "kubernetes.default.svc",
		"kubernetes.default.svc." + domain}
	if o.ServiceIP != nil {
		names = append(names, o.ServiceIP.String())
	}
	dns, ips := splitSANs(append(names, o.SANs...))
	return leafSpec{commonName: "kube-apiserver", usage: x509.ExtKeyUsageServerAuth, dnsNames: dns, ips: ips}
}

// etcdSpec is etcd's serving (or peer) certificate: loopback, the host
// name and the node's addresses (--tls-san and the advertise address).
func etcdSpec(o Options, cn string, peer bool) leafSpec {
	dns, ips := splitSANs(append([]string{"localhost", "127.0.0.1", "::1", o.Hostname}, o.SANs...))
	return leafSpec{commonName: cn, usage: x509.ExtKeyUsageServerAuth, peer: peer, dnsNames: dns, ips: ips}
}

// splitSANs parses each entry as an IP if it parses, else keeps it as a DNS
// name; empty entries are dropped and duplicates removed (DNS names compare
// case-insensitively, IPs by value so ::ffff:1.2.3.4 equals 1.2.3.4).
func splitSANs(sans []string) (dns []string, ips []net.IP) {
	for _, s := range sans {
		s = strings.TrimSpace(s)
		if s == "" {
			continue
		}
		if ip := net.ParseIP(s); ip != nil {
			if !containsIP(ips, ip) {
				ips = append(ips, ip)
			}
			continue
		}
		if !containsDNS(dns, s) {
			dns = append(dns, s)
		}
	}
	return dns, ips
}

func containsIP(ips []net.IP, ip net.IP) bool {
	return slices.ContainsFunc(ips, ip.Equal)
}

func containsDNS(names []string, name string) bool {
	return slices.ContainsFunc(names, func(n string) bool { return strings.EqualFold(n, name) })
}

// EnsureCA makes sure certPath/keyPath hold a CA, created when both are
// absent (a CA of a node's own, such as its API cache's).
func EnsureCA(certPath, keyPath, cnPrefix string) error {
	_, err := ensureCA(certPath, keyPath, cnPrefix)
	return err
}

// ensureCA loads the CA at certPath/keyPath, generating it only when both
// files are absent. A half-present pair is an error rather than a reason to
// regenerate: replacing a CA silently would invalidate every credential in
// the cluster, so an operator has to look at it.
func ensureCA(certPath, keyPath, cnPrefix string) (*authority, error) {
	certExists, err := exists(certPath)
	if err != nil {
		return nil, err
	}
	keyExists, err := exists(keyPath)
	if err != nil {
		return nil, err
	}
	switch {
	case certExists && keyExists:
		if err := tightenMode(keyPath, keyMode); err != nil {
			return nil, err
		}
		if err := tightenMode(certPath, certMode); err != nil {
			return nil, err
		}
		return loadCA(certPath, keyPath)
	case certExists:
		return nil, fmt.Errorf("CA key %s is missing but CA cert %s exists; refusing to regenerate the CA: %w", keyPath, certPath, fs.ErrNotExist)
	case keyExists:
		return nil, fmt.Errorf("CA cert %s is missing but CA key %s exists; refusing to regenerate the CA: %w", certPath, keyPath, fs.ErrNotExist)
	}

	ca, certPEM, keyPEM, err := newCA(fmt.Sprintf("%s@%d", cnPrefix, time.Now().Unix()))
	if err != nil {
		return nil, fmt.Errorf("generate CA %s: %w", certPath, err)
	}
	// Key first: a crash between the two renames leaves a key without a
	// cert, which the next start reports instead of guessing.
	if err := datadir.WriteFileAtomic(keyPath, keyPEM, keyMode); err != nil {
		return nil, err
	}
	if err := datadir.WriteFileAtomic(certPath, certPEM, certMode); err != nil {
		return nil, err
	}
	return ca, nil
}

// loadCA reads a CA cert/key pair and checks they belong together and that
// the cert may sign; used both by Ensure and by the Issue* functions.
func loadCA(certPath, keyPath string) (*authority, error) {
	data, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("read CA cert %s: %w", certPath, err)
	}
	cert, err := parseCertPEM(data)
	if err != nil {
		return nil, fmt.Errorf("parse CA cert %s: %w", certPath, err)
	}
	if !cert.IsCA {
		return nil, fmt.Errorf("CA cert %s is not a CA certificate", certPath)
	}
	key, err := readKey("CA key", keyPath)
	if err != nil {
		return nil, err
	}
	if !keyMatches(cert, key) {
		return nil, fmt.Errorf("CA key %s does not match CA cert %s", keyPath, certPath)
	}
	return &authority{cert: cert, key: key, chain: chainOf(data)}, nil
}

// newCA generates a self-signed CA. The CN carries a timestamp so that CAs
// from different installs never share a subject, which keeps chain building
// unambiguous when a client trusts several of them.
func newCA(commonName string) (*authority, []byte, []byte, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, nil, err
	}
	serial, err := newSerial()
	if err != nil {
		return nil, nil, nil, err
	}
	ski, err := subjectKeyID(key)
	if err != nil {
		return nil, nil, nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: commonName},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(caValidity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment,
		BasicConstraintsValid: true,
		IsCA:                  true,
		SubjectKeyId:          ski,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, nil, fmt.Errorf("parse new CA certificate: %w", err)
	}
	keyPEM, err := encodeKey(key)
	if err != nil {
		return nil, nil, nil, err
	}
	return &authority{cert: cert, key: key}, encodeCert(der), keyPEM, nil
}

// IssueClientCert signs a client cert (ExtKeyUsageClientAuth) with the CA in
// caCert/caKey and writes it to certPath/keyPath. An existing cert is kept if
// it is valid for more than 120 days, signed by that CA and has the same
// subject.
func IssueClientCert(caCert, caKey, certPath, keyPath, commonName string, orgs []string) error {
	return issueWithCA(caCert, caKey, certPath, keyPath, leafSpec{
		commonName: commonName, orgs: orgs, usage: x509.ExtKeyUsageClientAuth,
	})
}

// IssueServingCert is IssueClientCert for a serving cert (ExtKeyUsageServerAuth)
// with the given SANs (entries that parse as IPs become IP SANs). An existing
// cert is also reissued when it lacks one of sans.
func IssueServingCert(caCert, caKey, certPath, keyPath, commonName string, sans []string) error {
	dns, ips := splitSANs(sans)
	return issueWithCA(caCert, caKey, certPath, keyPath, leafSpec{
		commonName: commonName, usage: x509.ExtKeyUsageServerAuth, dnsNames: dns, ips: ips,
	})
}

func issueWithCA(caCert, caKey, certPath, keyPath string, spec leafSpec) error {
	if spec.commonName == "" {
		return fmt.Errorf("issue cert %s: empty common name", certPath)
	}
	ca, err := loadCA(caCert, caKey)
	if err != nil {
		return err
	}
	// Node certs may live outside the server tls dir (e.g. the agent's).
	for _, d := range []string{filepath.Dir(certPath), filepath.Dir(keyPath)} {
		if err := os.MkdirAll(d, dirMode); err != nil {
			return fmt.Errorf("create directory %s: %w", d, err)
		}
	}
	return ensureLeaf(ca, certPath, keyPath, spec)
}

// ensureLeaf keeps the leaf at certPath/keyPath if it still satisfies spec
// under ca, and reissues it otherwise.
func ensureLeaf(ca *authority, certPath, keyPath string, spec leafSpec) error {
	if reissueReason(ca, certPath, keyPath, spec, time.Now()) == "" {
		if err := tightenMode(certPath, certMode); err != nil {
			return err
		}
		return tightenMode(keyPath, keyMode)
	}
	return issueLeaf(ca, certPath, keyPath, spec, leafValidity)
}

// reissueReason returns why the leaf must be reissued, or "" if it can be
// kept. Unreadable leaves are reissued rather than reported: unlike CAs,
// nothing outside this server depends on their exact bytes.
func reissueReason(ca *authority, certPath, keyPath string, spec leafSpec, now time.Time) string {
	cert, err := readCert("cert", certPath)
	if err != nil {
		return err.Error()
	}
	key, err := readKey("key", keyPath)
	if err != nil {
		return err.Error()
	}
	switch {
	case !keyMatches(cert, key):
		return "key does not match cert"
	case cert.CheckSignatureFrom(ca.cert) != nil:
		// The CA was replaced by the operator; follow it.
		return "not signed by the current CA"
	case now.Before(cert.NotBefore):
		return "not yet valid"
	case now.Add(renewBefore).After(cert.NotAfter):
		return "expires within 120 days"
	case cert.Subject.CommonName != spec.commonName:
		return "common name changed"
	case !sameSet(cert.Subject.Organization, spec.orgs):
		return "organizations changed"
	case !slices.Equal(cert.ExtKeyUsage, spec.usages()):
		return "extended key usage changed"
	}
	// Extra SANs in the cert are tolerated: removing a --tls-san is not
	// worth rotating for, a missing one breaks clients.
	for _, name := range spec.dnsNames {
		if !containsDNS(cert.DNSNames, name) {
			return "missing DNS SAN " + name
		}
	}
	for _, ip := range spec.ips {
		if !containsIP(cert.IPAddresses, ip) {
			return "missing IP SAN " + ip.String()
		}
	}
	return ""
}

// issueLeaf signs a new leaf valid for validity (a parameter so tests can
// create nearly-expired certs). A readable P-256 key at keyPath is reused so
// rotation does not need to rewrite it; otherwise a new key is written first,
// and a crash before the cert lands is repaired next start by the
// key-mismatch check.
func issueLeaf(ca *authority, certPath, keyPath string, spec leafSpec, validity time.Duration) error {
	key, fresh := reusableKey(keyPath)
	if fresh {
		var err error
		if key, err = newKey(); err != nil {
			return err
		}
	}
	der, err := signLeaf(ca, key.Public(), spec, validity)
	if err != nil {
		return fmt.Errorf("sign cert %s: %w", certPath, err)
	}
	if fresh {
		keyPEM, err := encodeKey(key)
		if err != nil {
			return err
		}
		if err := datadir.WriteFileAtomic(keyPath, keyPEM, keyMode); err != nil {
			return err
		}
	} else if err := tightenMode(keyPath, keyMode); err != nil {
		return err
	}
	return datadir.WriteFileAtomic(certPath, append(encodeCert(der), ca.chain...), certMode)
}

// signLeaf signs pub as a leaf certificate for spec, returning its DER.
func signLeaf(ca *authority, pub crypto.PublicKey, spec leafSpec, validity time.Duration) ([]byte, error) {
	serial, err := newSerial()
	if err != nil {
		return nil, err
	}
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: spec.commonName, Organization: spec.orgs},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           spec.usages(),
		BasicConstraintsValid: true,
		AuthorityKeyId:        ca.cert.SubjectKeyId,
		DNSNames:              spec.dnsNames,
		IPAddresses:           spec.ips,
	}
	return x509.CreateCertificate(rand.Reader, tmpl, ca.cert, pub, ca.key)
}

// writeFirstCert makes to hold the first certificate of from, leaving
// it untouched when it does.
func writeFirstCert(from, to string) error {
	cert, err := readCert("CA cert", from)
	if err != nil {
		return err
	}
	want := encodeCert(cert.Raw)
	if have, err := os.ReadFile(to); err == nil && bytes.Equal(have, want) {
		return tightenMode(to, certMode)
	}
	return datadir.WriteFileAtomic(to, want, certMode)
}

// sameSet compares string slices ignoring order, since x509 does not
// guarantee the order of a parsed RDN's values.
func sameSet(a, b []string) bool {
	a, b = slices.Clone(a), slices.Clone(b)
	slices.Sort(a)
	slices.Sort(b)
	return slices.Equal(a, b)
}

package pki

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"io/fs"
	"maps"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"
)

func testOptions(t *testing.T) Options {
	t.Helper()
	return Options{
		Dir:           filepath.Join(t.TempDir(), "server", "tls"),
		Hostname:      "node-1",
		SANs:          []string{"192.0.2.1", "api.example.com", "2001:db8::1", "node-1", "API.example.com"},
		ServiceIP:     net.ParseIP("10.43.0.1"),
		ClusterDomain: "cluster.local",
	}
}

func mustEnsure(t *testing.T, o Options) Files {
	t.Helper()
	f, err := Ensure(o)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	return f
}

// allPaths lists every path in f by reflection, so a field added to Files
// is covered by the mode and idempotency tests without editing them.
func allPaths(f Files) []string {
	v := reflect.ValueOf(f)
	paths := make([]string, 0, v.NumField())
	for i := range v.NumField() {
		paths = append(paths, v.Field(i).String())
	}
	return paths
}

func loadCert(t *testing.T, path string) *x509.Certificate {
	t.Helper()
	c, err := readCert("cert", path)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

// verify checks that certPath chains to the CA in caPath for usage.
func verify(t *testing.T, certPath, caPath string, usage x509.ExtKeyUsage) error {
	t.Helper()
	roots := x509.NewCertPool()
	roots.AddCert(loadCert(t, caPath))
	_, err := loadCert(t, certPath).Verify(x509.VerifyOptions{
		Roots:     roots,
		KeyUsages: []x509.ExtKeyUsage{usage},
	})
	return err
}

type fileState struct {
	data  []byte
	mtime time.Time
}

func snapshot(t *testing.T, paths ...string) map[string]fileState {
	t.Helper()
	s := make(map[string]fileState, len(paths))
	for _, p := range paths {
		data, err := os.ReadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		s[p] = fileState{data: data, mtime: fi.ModTime()}
	}
	return s
}

func assertUnchanged(t *testing.T, before map[string]fileState) {
	t.Helper()
	after := snapshot(t, slices.Collect(maps.Keys(before))...)
	for p, b := range before {
		if a := after[p]; !bytes.Equal(a.data, b.data) || !a.mtime.Equal(b.mtime) {
			t.Errorf("%s changed (bytes equal %v, mtime %v -> %v)", p, bytes.Equal(a.data, b.data), b.mtime, a.mtime)
		}
	}
}

func TestEnsureCreatesPKI(t *testing.T) {
	o := testOptions(t)
	f := mustEnsure(t, o)

	t.Run("modes", func(t *testing.T) {
		fi, err := os.Stat(o.Dir)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != 0o700 {
			t.Errorf("dir mode = %o, want 700", got)
		}
		for _, p := range allPaths(f) {
			want := fs.FileMode(0o600)
			if d := filepath.Dir(p); d != o.Dir && d != filepath.Join(o.Dir, "etcd") {
				t.Errorf("%s not under %s or its etcd dir", p, o.Dir)
			}
			fi, err := os.Stat(p)
			if err != nil {
				t.Fatal(err)
			}
			if got := fi.Mode().Perm(); got != want {
				t.Errorf("%s mode = %o, want %o", filepath.Base(p), got, want)
			}
		}
	})

	t.Run("CAs", func(t *testing.T) {
		for _, ca := range []struct{ cert, key string }{
			{f.ClientCACert, f.ClientCAKey},
			{f.ServerCACert, f.ServerCAKey},
			{f.RequestHeaderCACert, f.RequestHeaderCAKey},
		} {
			c := loadCert(t, ca.cert)
			wantKU := x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature | x509.KeyUsageKeyEncipherment
			if !c.IsCA || c.KeyUsage != wantKU || len(c.SubjectKeyId) == 0 {
				t.Errorf("%s: IsCA=%v KeyUsage=%v SKID=%x", ca.cert, c.IsCA, c.KeyUsage, c.SubjectKeyId)
			}
			if life := c.NotAfter.Sub(c.NotBefore); life < caValidity {
				t.Errorf("%s: lifetime %v, want >= %v", ca.cert, life, caValidity)
			}
			if _, err := loadCA(ca.cert, ca.key); err != nil {
				t.Error(err)
			}
		}
	})

	chains := []struct {
		name      string
		cert, key string
		ca, other string // other: a CA it must NOT chain to
		usage     x509.ExtKeyUsage
		cn        string
		orgs      []string
	}{
		{"serving", f.ServingCert, f.ServingKey, f.ServerCACert, f.ClientCACert, x509.ExtKeyUsageServerAuth, "kube-apiserver", nil},
		{"admin", f.AdminCert, f.AdminKey, f.ClientCACert, f.ServerCACert, x509.ExtKeyUsageClientAuth, "system:admin", []string{"system:masters"}},
		{"supervisor", f.SupervisorCert, f.SupervisorKey, f.ClientCACert, f.RequestHeaderCACert, x509.ExtKeyUsageClientAuth, "system:kedge-supervisor", []string{"system:masters"}},
		{"controller", f.ControllerCert, f.ControllerKey, f.ClientCACert, f.ServerCACert, x509.ExtKeyUsageClientAuth, "system:kube-controller-manager", nil},
		{"scheduler", f.SchedulerCert, f.SchedulerKey, f.ClientCACert, f.ServerCACert, x509.ExtKeyUsageClientAuth, "system:kube-scheduler", nil},
		{"apiserver-kubelet", f.APIServerKubeletCert, f.APIServerKubeletKey, f.ClientCACert, f.ServerCACert, x509.ExtKeyUsageClientAuth, "kube-apiserver-kubelet-client", []string{"system:masters"}},
		{"auth-proxy", f.AuthProxyCert, f.AuthProxyKey, f.RequestHeaderCACert, f.ClientCACert, x509.ExtKeyUsageClientAuth, "system:auth-proxy", nil},
	}
	for _, tc := range chains {
		t.Run("leaf/"+tc.name, func(t *testing.T) {
			if err := verify(t, tc.cert, tc.ca, tc.usage); err != nil {
				t.Errorf("does not chain to %s: %v", filepath.Base(tc.ca), err)
			}
			if err := verify(t, tc.cert, tc.other, tc.usage); err == nil {
				t.Errorf("unexpectedly chains to %s", filepath.Base(tc.other))
			}
			c := loadCert(t, tc.cert)
			if c.Subject.CommonName != tc.cn || !sameSet(c.Subject.Organization, tc.orgs) {
				t.Errorf("subject = CN=%q O=%q, want CN=%q O=%q", c.Subject.CommonName, c.Subject.Organization, tc.cn, tc.orgs)
			}
			if !slices.Equal(c.ExtKeyUsage, []x509.ExtKeyUsage{tc.usage}) {
				t.Errorf("ExtKeyUsage = %v, want only %v", c.ExtKeyUsage, tc.usage)
			}
			if !bytes.Equal(c.AuthorityKeyId, loadCert(t, tc.ca).SubjectKeyId) {
				t.Errorf("AuthorityKeyId %x does not match CA SubjectKeyId", c.AuthorityKeyId)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 {
				t.Errorf("serial %v not a positive 128-bit number", c.SerialNumber)
			}
			if life := c.NotAfter.Sub(c.NotBefore); life != leafValidity+backdate {
				t.Errorf("lifetime %v, want %v", life, leafValidity+backdate)
			}
			pub, ok := c.PublicKey.(*ecdsa.PublicKey)
			if !ok || pub.Curve != elliptic.P256() {
				t.Errorf("public key %T is not ECDSA P-256", c.PublicKey)
			}
			key, err := readKey("key", tc.key)
			if err != nil || !keyMatches(c, key) {
				t.Errorf("key %s does not match cert (err %v)", tc.key, err)
			}
		})
	}

	t.Run("serving SANs", func(t *testing.T) {
		c := loadCert(t, f.ServingCert)
		wantDNS := []string{"localhost", "node-1", "kubernetes", "kubernetes.default",
			"kubernetes.default.svc", "kubernetes.default.svc.cluster.local", "api.example.com"}
		wantIPs := []string{"127.0.0.1", "::1", "10.43.0.1", "192.0.2.1", "2001:db8::1"}
		if !sameSet(c.DNSNames, wantDNS) {
			t.Errorf("DNS SANs = %q, want %q (deduped)", c.DNSNames, wantDNS)
		}
		var gotIPs []string
		for _, ip := range c.IPAddresses {
			gotIPs = append(gotIPs, ip.String())
		}
		if !sameSet(gotIPs, wantIPs) {
			t.Errorf("IP SANs = %q, want %q", gotIPs, wantIPs)
		}
	})
}

func TestEnsureIdempotent(t *testing.T) {
	o := testOptions(t)
	f := mustEnsure(t, o)
	before := snapshot(t, allPaths(f)...)
	time.Sleep(10 * time.Millisecond) // so a rewrite would show in mtimes

	if f2 := mustEnsure(t, o); f2 != f {
		t.Errorf("second Ensure returned %+v, want %+v", f2, f)
	}
	assertUnchanged(t, before)

	entries, err := os.ReadDir(o.Dir)
	if err != nil {
		t.Fatal(err)
	}
	etcd, err := os.ReadDir(filepath.Join(o.Dir, "etcd"))
	if err != nil {
		t.Fatal(err)
	}
	if n := len(entries) - 1 + len(etcd); n != len(before) {
		t.Errorf("dirs have %d files, want %d (leftover temp files?)", n, len(before))
	}
}

func TestEnsureNewSANReissuesServingCert(t *testing.T) {
	tests := []struct {
		name, san string
		has       func(c *x509.Certificate) bool
	}{
		{"DNS", "new.example.com", func(c *x509.Certificate) bool { return containsDNS(c.DNSNames, "new.example.com") }},
		{"IP", "198.51.100.7", func(c *x509.Certificate) bool { return containsIP(c.IPAddresses, net.ParseIP("198.51.100.7")) }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			f := mustEnsure(t, o)
			var keep []string
			for _, p := range allPaths(f) {
				// The serving cert and etcd's carry the SANs.
				if p != f.ServingCert && p != f.EtcdServerCert && p != f.EtcdPeerCert {
					keep = append(keep, p)
				}
			}
			before := snapshot(t, keep...)

			o.SANs = append(o.SANs, tc.san)
			mustEnsure(t, o)

			assertUnchanged(t, before) // CAs, other leaves and the reused serving key
			c := loadCert(t, f.ServingCert)
			if !tc.has(c) {
				t.Errorf("reissued serving cert lacks %s: DNS %q IP %v", tc.san, c.DNSNames, c.IPAddresses)
			}
			if err := verify(t, f.ServingCert, f.ServerCACert, x509.ExtKeyUsageServerAuth); err != nil {
				t.Error(err)
			}
		})
	}
}

func TestEnsureReissuesExpiringCert(t *testing.T) {
	tests := []struct {
		name     string
		validity time.Duration
		reissued bool
	}{
		{"expires in 30 days", 30 * 24 * time.Hour, true},
		{"expires in 119 days", 119 * 24 * time.Hour, true},
		{"expires in 121 days", 121 * 24 * time.Hour, false},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			f := mustEnsure(t, o)
			ca, err := loadCA(f.ClientCACert, f.ClientCAKey)
			if err != nil {
				t.Fatal(err)
			}
			spec := leafSpec{commonName: "system:admin", orgs: []string{"system:masters"}, usage: x509.ExtKeyUsageClientAuth}
			if err := issueLeaf(ca, f.AdminCert, f.AdminKey, spec, tc.validity); err != nil {
				t.Fatal(err)
			}
			short := loadCert(t, f.AdminCert)

			mustEnsure(t, o)
			c := loadCert(t, f.AdminCert)
			if reissued := !c.NotAfter.Equal(short.NotAfter); reissued != tc.reissued {
				t.Errorf("reissued = %v, want %v (NotAfter %v)", reissued, tc.reissued, c.NotAfter)
			}
			if tc.reissued && time.Until(c.NotAfter) < leafValidity-time.Hour {
				t.Errorf("reissued cert expires %v, want about a year out", c.NotAfter)
			}
		})
	}
}

func TestEnsureCAErrors(t *testing.T) {
	tests := []struct {
		name     string
		break_   func(f Files) error
		wantPath func(f Files) string
	}{
		{"key missing", func(f Files) error { return os.Remove(f.ClientCAKey) }, func(f Files) string { return f.ClientCAKey }},
		{"cert missing", func(f Files) error { return os.Remove(f.ServerCACert) }, func(f Files) string { return f.ServerCACert }},
		{"garbage cert", func(f Files) error { return os.WriteFile(f.ServerCACert, []byte("not a cert"), 0o644) }, func(f Files) string { return f.ServerCACert }},
		{"garbage key", func(f Files) error { return os.WriteFile(f.RequestHeaderCAKey, []byte("junk"), 0o600) }, func(f Files) string { return f.RequestHeaderCAKey }},
		{"mismatched key", func(f Files) error {
			k, err := os.ReadFile(f.ServerCAKey)
			if err != nil {
				return err
			}
			return os.WriteFile(f.ClientCAKey, k, 0o600)
		}, func(f Files) string { return f.ClientCAKey }},
		{"leaf as CA", func(f Files) error {
			if err := os.Rename(f.AdminCert, f.ClientCACert); err != nil {
				return err
			}
			return os.Rename(f.AdminKey, f.ClientCAKey)
		}, func(f Files) string { return f.ClientCACert }},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := testOptions(t)
			f := mustEnsure(t, o)
			if err := tc.break_(f); err != nil {
				t.Fatal(err)
			}
			var present []string
			for _, p := range allPaths(f) {
				if ok, _ := exists(p); ok {
					present = append(present, p)
				}
			}
			before := snapshot(t, present...)

			_, err := Ensure(o)
			if err == nil || !strings.Contains(err.Error(), tc.wantPath(f)) {
				t.Fatalf("Ensure error = %v, want one naming %s", err, tc.wantPath(f))
			}
			assertUnchanged(t, before)
		})
	}
}

func TestCAHash(t *testing.T) {
	o := testOptions(t)
	f := mustEnsure(t, o)
	h1, err := CAHash(f.ServerCACert)
	if err != nil {
		t.Fatal(err)
	}
	mustEnsure(t, o)
	h2, err := CAHash(f.ServerCACert)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := os.ReadFile(f.ServerCACert)
	sum := sha256.Sum256(data)
	if h1 != h2 || h1 != hex.EncodeToString(sum[:]) || len(h1) != 64 {
		t.Errorf("CAHash = %q then %q, want stable sha256 of file %x", h1, h2, sum)
	}

	garbage := filepath.Join(t.TempDir(), "bad.crt")
	if err := os.WriteFile(garbage, []byte("nope"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{garbage, filepath.Join(t.TempDir(), "missing.crt")} {
		if _, err := CAHash(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("CAHash(%s) error = %v, want one naming the file", p, err)
		}
	}
}

func TestServiceAccountKey(t *testing.T) {
	o := testOptions(t)
	f := mustEnsure(t, o)
	data, err := os.ReadFile(f.ServiceAccountKey)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "EC PRIVATE KEY" {
		t.Fatalf("service.key is not an EC PRIVATE KEY PEM block")
	}
	key, err := x509.ParseECPrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := x509.MarshalPKIXPublicKey(key.Public()); err != nil {
		t.Errorf("cannot extract public key: %v", err)
	}

	// A corrupt signing key must not be replaced: that would invalidate
	// every service-account token.
	if err := os.WriteFile(f.ServiceAccountKey, []byte("junk"), 0o600); err != nil {
		t.Fatal(err)
	}
	before := snapshot(t, f.ServiceAccountKey)
	if _, err := Ensure(o); err == nil || !strings.Contains(err.Error(), f.ServiceAccountKey) {
		t.Errorf("Ensure error = %v, want one naming %s", err, f.ServiceAccountKey)
	}
	assertUnchanged(t, before)
}

func TestIssueClientCert(t *testing.T) {
	f := mustEnsure(t, testOptions(t))
	// Node certs live outside the server dir; the parent must be created.
	certPath := filepath.Join(t.TempDir(), "agent", "client-kubelet.crt")
	keyPath := filepath.Join(filepath.Dir(certPath), "client-kubelet.key")
	issue := func(cn string, orgs ...string) error {
		return IssueClientCert(f.ClientCACert, f.ClientCAKey, certPath, keyPath, cn, orgs)
	}
	if err := issue("system:node:node-1", "system:nodes"); err != nil {
		t.Fatal(err)
	}
	if err := verify(t, certPath, f.ClientCACert, x509.ExtKeyUsageClientAuth); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name     string
		cn       string
		orgs     []string
		reissued bool
	}{
		{"same subject", "system:node:node-1", []string{"system:nodes"}, false},
		{"orgs changed", "system:node:node-1", []string{"system:nodes", "extra"}, true},
		{"CN changed", "system:node:node-2", []string{"system:nodes", "extra"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := snapshot(t, certPath)
			if err := issue(tc.cn, tc.orgs...); err != nil {
				t.Fatal(err)
			}
			after := snapshot(t, certPath)
			if reissued := !bytes.Equal(before[certPath].data, after[certPath].data); reissued != tc.reissued {
				t.Errorf("reissued = %v, want %v", reissued, tc.reissued)
			}
			c := loadCert(t, certPath)
			if c.Subject.CommonName != tc.cn || !sameSet(c.Subject.Organization, tc.orgs) {
				t.Errorf("subject = %v, want CN=%s O=%v", c.Subject, tc.cn, tc.orgs)
			}
		})
	}

	t.Run("missing CA key", func(t *testing.T) {
		missing := filepath.Join(t.TempDir(), "nope.key")
		err := IssueClientCert(f.ClientCACert, missing, certPath, keyPath, "x", nil)
		if err == nil || !strings.Contains(err.Error(), missing) {
			t.Errorf("error = %v, want one naming %s", err, missing)
		}
	})
}

func TestIssueServingCert(t *testing.T) {
	f := mustEnsure(t, testOptions(t))
	dir := t.TempDir()
	certPath, keyPath := filepath.Join(dir, "serving-kubelet.crt"), filepath.Join(dir, "serving-kubelet.key")
	tests := []struct {
		name     string
		sans     []string
		reissued bool
	}{
		{"first issue", []string{"node-1", "192.0.2.5"}, true},
		{"same SANs", []string{"192.0.2.5", "node-1"}, false},
		{"subset of SANs", []string{"node-1"}, false},
		{"new IP SAN", []string{"node-1", "192.0.2.5", "fd00::5"}, true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var old []byte
			if ok, _ := exists(certPath); ok {
				old = snapshot(t, certPath)[certPath].data
			}
			if err := IssueServingCert(f.ServerCACert, f.ServerCAKey, certPath, keyPath, "node-1", tc.sans); err != nil {
				t.Fatal(err)
			}
			if reissued := !bytes.Equal(old, snapshot(t, certPath)[certPath].data); reissued != tc.reissued {
				t.Errorf("reissued = %v, want %v", reissued, tc.reissued)
			}
			if err := verify(t, certPath, f.ServerCACert, x509.ExtKeyUsageServerAuth); err != nil {
				t.Error(err)
			}
			if reason := reissueReason(mustLoadCA(t, f.ServerCACert, f.ServerCAKey), certPath, keyPath,
				leafSpec{commonName: "node-1", usage: x509.ExtKeyUsageServerAuth, dnsNames: []string{"node-1"}}, time.Now()); reason != "" {
				t.Errorf("fresh cert needs reissue: %s", reason)
			}
		})
	}
}

func mustLoadCA(t *testing.T, certPath, keyPath string) *authority {
	t.Helper()
	ca, err := loadCA(certPath, keyPath)
	if err != nil {
		t.Fatal(err)
	}
	return ca
}

func TestSplitSANs(t *testing.T) {
	tests := []struct {
		name    string
		in      []string
		wantDNS []string
		wantIPs []string
	}{
		{"empty", nil, nil, nil},
		{"mixed", []string{"a.example", "10.0.0.1", "::1"}, []string{"a.example"}, []string{"10.0.0.1", "::1"}},
		{"dedupe", []string{"A.example", "a.example", "10.0.0.1", "::ffff:10.0.0.1"}, []string{"A.example"}, []string{"10.0.0.1"}},
		{"blank entries", []string{"", "  ", " b.example "}, []string{"b.example"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			dns, ips := splitSANs(tc.in)
			var gotIPs []string
			for _, ip := range ips {
				gotIPs = append(gotIPs, ip.String())
			}
			if !slices.Equal(dns, tc.wantDNS) || !slices.Equal(gotIPs, tc.wantIPs) {
				t.Errorf("splitSANs(%q) = %q, %q; want %q, %q", tc.in, dns, gotIPs, tc.wantDNS, tc.wantIPs)
			}
		})
	}
}

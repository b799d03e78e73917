package bootstrap

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/kedge-dev/kedge/pkg/pki"
)

func ensureIn(dir string) func() error {
	return func() error {
		_, err := pki.Ensure(pki.Options{Dir: dir, Hostname: "test"})
		return err
	}
}

func TestSealOpen(t *testing.T) {
	b := Bundle{"a.crt": []byte("cert"), "etcd/b.key": []byte("key")}
	data, err := b.Seal("s3cret")
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(data), "cert") {
		t.Fatal("the sealed bundle holds the plain text")
	}
	got, err := Open(data, "s3cret")
	if err != nil || !got.Equal(b) {
		t.Fatalf("open: %v %v", got, err)
	}
	if _, err := Open(data, "wrong"); !errors.Is(err, ErrWrongToken) {
		t.Fatalf("wrong secret: %v", err)
	}
	if _, err := Open([]byte("junk"), "s3cret"); err == nil || errors.Is(err, ErrWrongToken) {
		t.Fatalf("junk: %v", err)
	}
}

func TestInstallRefusesAnotherCluster(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if err := ensureIn(a)(); err != nil {
		t.Fatal(err)
	}
	if err := ensureIn(b)(); err != nil {
		t.Fatal(err)
	}
	bundleA, err := Collect(a)
	if err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(b, "server-ca.crt"))
	if err := bundleA.Install(b); !errors.Is(err, ErrOtherCluster) {
		t.Fatalf("install over another cluster: %v", err)
	}
	if after, _ := os.ReadFile(filepath.Join(b, "server-ca.crt")); string(after) != string(before) {
		t.Fatal("a refused install changed a file")
	}
	fresh := t.TempDir()
	if err := bundleA.Install(fresh); err != nil {
		t.Fatal(err)
	}
	if err := bundleA.Install(fresh); err != nil {
		t.Fatalf("installing the same bundle again: %v", err)
	}
	if fi, err := os.Stat(filepath.Join(fresh, "server-ca.key")); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("key mode: %v %v", fi, err)
	}
}

// memKV is an in-memory KV.
type memKV struct {
	mu sync.Mutex
	m  map[string][]byte
}

func (k *memKV) Get(_ context.Context, key string) ([]byte, bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	v, ok := k.m[key]
	return v, ok, nil
}

func (k *memKV) Create(_ context.Context, key string, value []byte) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if _, ok := k.m[key]; ok {
		return false, nil
	}
	k.m[key] = value
	return true, nil
}

func TestSync(t *testing.T) {
	kv := &memKV{m: map[string][]byte{}}
	first, second, wrong := t.TempDir(), t.TempDir(), t.TempDir()
	if err := Sync(context.Background(), kv, "tok", first, ensureIn(first)); err != nil {
		t.Fatal(err)
	}
	if err := Sync(context.Background(), kv, "tok", second, ensureIn(second)); err != nil {
		t.Fatal(err)
	}
	a, _ := Collect(first)
	b, _ := Collect(second)
	if !a.Equal(b) {
		t.Fatal("the second server got other CAs")
	}
	if _, err := os.Stat(filepath.Join(second, "serving-kube-apiserver.crt")); err != nil {
		t.Fatalf("the second server issued no leaf certificates: %v", err)
	}
	err := Sync(context.Background(), kv, "other", wrong, ensureIn(wrong))
	if err == nil || !strings.Contains(err.Error(), "--token") {
		t.Fatalf("wrong token: %v", err)
	}
	if entries, _ := os.ReadDir(wrong); len(entries) != 0 {
		t.Fatalf("a wrong token wrote %d files", len(entries))
	}
}

func (k *memKV) Swap(_ context.Context, key string, old, value []byte) (bool, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if string(k.m[key]) != string(old) {
		return false, nil
	}
	k.m[key] = value
	return true, nil
}

// A server that rotated its CAs stores them in the datastore at its next
// start; the other server takes them at its own, not as another cluster's.
func TestSyncCARotation(t *testing.T) {
	ctx := context.Background()
	kv := &memKV{m: map[string][]byte{}}
	first, second := t.TempDir(), t.TempDir()
	for _, dir := range []string{first, second} {
		if err := Sync(ctx, kv, "tok", dir, ensureIn(dir)); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := pki.RotateCA(pki.RotateCAOptions{Dir: first}); err != nil {
		t.Fatal(err)
	}
	if err := Sync(ctx, kv, "tok", first, ensureIn(first)); err != nil {
		t.Fatalf("the rotating server: %v", err)
	}
	if err := Sync(ctx, kv, "tok", second, ensureIn(second)); err != nil {
		t.Fatalf("the other server: %v", err)
	}
	a, _ := Collect(first)
	b, _ := Collect(second)
	if !a.Equal(b) {
		t.Fatal("the other server did not take the rotated CAs")
	}
	// An older bundle (a member not yet restarted) does not undo it.
	old, err := Collect(first + "-" + backupSuffix(t, first))
	if err != nil {
		t.Fatal(err)
	}
	if err := old.Install(second); err != nil {
		t.Fatalf("the pre-rotation bundle over the rotated dir: %v", err)
	}
	if now, _ := Collect(second); !now.Equal(a) {
		t.Fatal("the pre-rotation bundle replaced the rotated CAs")
	}
}

// backupSuffix finds the timestamp of the backup RotateCA made of dir.
func backupSuffix(t *testing.T, dir string) string {
	t.Helper()
	m, _ := filepath.Glob(dir + "-*")
	if len(m) != 1 {
		t.Fatalf("backups of %s: %v", dir, m)
	}
	return strings.TrimPrefix(m[0], dir+"-")
}

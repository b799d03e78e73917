package bootstrap

import (
	"context"
	"errors"
	"fmt"

	clientv3 "go.etcd.io/etcd/client/v3"
)

// Key holds the sealed bundle in an external datastore.
const Key = "/kedge/bootstrap"

// KV is the little of a datastore Sync needs.
type KV interface {
	// Get returns the value of key, and whether it exists.
	Get(ctx context.Context, key string) ([]byte, bool, error)
	// Create stores value at key unless the key exists; it reports
	// whether it did.
	Create(ctx context.Context, key string, value []byte) (bool, error)
	// Swap stores value at key if it still holds old; it reports whether
	// it did.
	Swap(ctx context.Context, key string, old, value []byte) (bool, error)
}

// Sync makes the TLS dir hold the cluster's bundle of the datastore: a
// server on a datastore that has one takes it (ensure then issues its own
// leaf certificates); the first server makes the bundle (ensure creates
// the CAs) and stores it, sealed with secret. A wrong secret, or a data
// dir of another cluster, is an error before anything is written.
func Sync(ctx context.Context, kv KV, secret, dir string, ensure func() error) error {
	had := Present(dir)
	data, found, err := kv.Get(ctx, Key)
	if err != nil {
		return fmt.Errorf("read the cluster's bootstrap data from the datastore: %w", err)
	}
	if found {
		return take(ctx, kv, data, secret, dir, ensure)
	}
	if err := ensure(); err != nil {
		return err
	}
	b, err := Collect(dir)
	if err != nil {
		return err
	}
	sealed, err := b.Seal(secret)
	if err != nil {
		return err
	}
	created, err := kv.Create(ctx, Key, sealed)
	if err != nil {
		return fmt.Errorf("store the cluster's bootstrap data in the datastore: %w", err)
	}
	if created {
		return nil
	}
	// Another server stored its bundle first: this one's is fresh (had
	// is false) and is replaced by it; an older one is another cluster.
	data, _, err = kv.Get(ctx, Key)
	if err != nil {
		return err
	}
	theirs, err := Open(data, secret)
	if err != nil {
		return wrongToken(err)
	}
	if theirs.Equal(b) {
		return nil
	}
	if had {
		return fmt.Errorf("%w: another server initialised this datastore", ErrOtherCluster)
	}
	if err := theirs.replace(dir); err != nil {
		return err
	}
	return ensure()
}

// take installs the datastore's bundle; when this server has rotated a CA
// since (kedge certificate rotate-ca), its own bundle replaces the stored
// one, for the other servers to take at their next start.
func take(ctx context.Context, kv KV, data []byte, secret, dir string, ensure func() error) error {
	b, err := Open(data, secret)
	if err != nil {
		return wrongToken(err)
	}
	newer, err := b.install(dir)
	if err != nil {
		return err
	}
	if err := ensure(); err != nil {
		return err
	}
	if !newer {
		return nil
	}
	ours, err := Collect(dir)
	if err != nil {
		return err
	}
	sealed, err := ours.Seal(secret)
	if err != nil {
		return err
	}
	swapped, err := kv.Swap(ctx, Key, data, sealed)
	if err != nil {
		return fmt.Errorf("store the rotated CAs in the datastore: %w", err)
	}
	if !swapped {
		return errors.New("the cluster's bootstrap data changed in the datastore while this server stored its rotated CAs: start it again")
	}
	return nil
}

func wrongToken(err error) error {
	if errors.Is(err, ErrWrongToken) {
		return errors.New("--token is not the token this datastore's cluster was created with (its bootstrap data does not open with it): start every server on one datastore with the same --token")
	}
	return err
}

// EtcdKV is KV over the etcd API (kine speaks it too).
type EtcdKV struct{ Client *clientv3.Client }

func (e EtcdKV) Get(ctx context.Context, key string) ([]byte, bool, error) {
	resp, err := e.Client.Get(ctx, key)
	if err != nil {
		return nil, false, err
	}
	if len(resp.Kvs) == 0 {
		return nil, false, nil
	}
	return resp.Kvs[0].Value, true, nil
}

// Swap compares the revision, not the value: kine's transactions know
// only the forms the apiserver uses (a put if the revision still is).
func (e EtcdKV) Swap(ctx context.Context, key string, old, value []byte) (bool, error) {
	cur, err := e.Client.Get(ctx, key)
	if err != nil {
		return false, err
	}
	if len(cur.Kvs) == 0 || string(cur.Kvs[0].Value) != string(old) {
		return false, nil
	}
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", cur.Kvs[0].ModRevision)).
		Then(clientv3.OpPut(key, string(value))).
		Else(clientv3.OpGet(key)).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

func (e EtcdKV) Create(ctx context.Context, key string, value []byte) (bool, error) {
	resp, err := e.Client.Txn(ctx).
		If(clientv3.Compare(clientv3.ModRevision(key), "=", 0)).
		Then(clientv3.OpPut(key, string(value))).
		Commit()
	if err != nil {
		return false, err
	}
	return resp.Succeeded, nil
}

package apiproxy

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/kedge-dev/kedge/pkg/datadir"
)

// forgetAfter drops entries nobody has asked for in this long;
// forgetTokenAfter those of a pod's token, which the kubelet replaces
// at least daily while a server answers.
const (
	forgetAfter      = 30 * 24 * time.Hour
	forgetTokenAfter = 3 * 24 * time.Hour
)

// cache holds the last good answers the node's components got, in memory
// and, encrypted with the node's cache key, in one file per entry.
type cache struct {
	dir string
	gcm cipher.AEAD
	log *slog.Logger

	mu      sync.Mutex
	entries map[string]*entry
}

// entry is one cached answer: a list kept current by the watch events
// that followed it, a single object, or a token.
type entry struct {
	Key string `json:"key"`
	// A list: its kind, resource version and items by namespace/name.
	List *list `json:"list,omitempty"`
	// A single object or token answer, as the server sent it.
	Body json.RawMessage `json:"body,omitempty"`
	// Expires is when a cached token stops being valid.
	Expires time.Time `json:"expires,omitzero"`
	// Updated is when the server last sent it; Seen when a component last
	// asked (kept on disk to the day, to forget entries nobody uses).
	Updated time.Time `json:"updated"`
	Seen    time.Time `json:"seen"`

	dirty bool
	// local names the items changed on the node, not by a server.
	local map[string]bool
}

type list struct {
	APIVersion      string                     `json:"apiVersion"`
	Kind            string                     `json:"kind"`
	ResourceVersion string                     `json:"resourceVersion"`
	Items           map[string]json.RawMessage `json:"items"`
}

type meta struct {
	Metadata struct {
		Name            string `json:"name"`
		Namespace       string `json:"namespace"`
		ResourceVersion string `json:"resourceVersion"`
		Continue        string `json:"continue"`
	} `json:"metadata"`
}

func objectKey(raw json.RawMessage) (key, rv string, err error) {
	var m meta
	if err := json.Unmarshal(raw, &m); err != nil {
		return "", "", err
	}
	if m.Metadata.Name == "" {
		return "", m.Metadata.ResourceVersion, errors.New("object without a name")
	}
	return m.Metadata.Namespace + "/" + m.Metadata.Name, m.Metadata.ResourceVersion, nil
}

// openCache loads the entries in dir with the key in keyFile (created on
// first use). Entries that do not open are dropped with a warning.
func openCache(dir, keyFile string, log *slog.Logger) (*cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, err
	}
	key, err := os.ReadFile(keyFile)
	if errors.Is(err, fs.ErrNotExist) {
		key = make([]byte, 32)
		if _, err := rand.Read(key); err != nil {
			return nil, err
		}
		if err := datadir.WriteFileAtomic(keyFile, key, 0o600); err != nil {
			return nil, err
		}
	} else if err != nil {
		return nil, err
	}
	if len(key) != 32 {
		return nil, fmt.Errorf("node cache key %s: %d bytes, want 32", keyFile, len(key))
	}
	block, err := aes.NewCipher(key)
	if err != nil {
		return nil, err
	}
	gcm, err := cipher.NewGCM(block)
	if err != nil {
		return nil, err
	}
	c := &cache{dir: dir, gcm: gcm, log: log, entries: map[string]*entry{}}
	files, err := os.ReadDir(dir)
	if err != nil {
		return nil, err
	}
	for _, f := range files {
		if !strings.HasSuffix(f.Name(), ".cache") {
			continue
		}
		p := filepath.Join(dir, f.Name())
		e, err := c.read(p)
		if err != nil {
			log.Warn("dropping an unreadable node cache entry", "file", p, "err", err)
			os.Remove(p)
			continue
		}
		if scope, _ := splitScope(e.Key); time.Since(e.Seen) > forgetAfter || scope != "" && time.Since(e.Seen) > forgetTokenAfter {
			os.Remove(p)
			continue
		}
		c.entries[e.Key] = e
	}
	return c, nil
}

func (c *cache) file(key string) string {
	sum := sha256.Sum256([]byte(key))
	return filepath.Join(c.dir, hex.EncodeToString(sum[:12])+".cache")
}

func (c *cache) read(p string) (*entry, error) {
	data, err := os.ReadFile(p)
	if err != nil {
		return nil, err
	}
	n := c.gcm.NonceSize()
	if len(data) < n {
		return nil, errors.New("too short")
	}
	plain, err := c.gcm.Open(nil, data[:n], data[n:], nil)
	if err != nil {
		return nil, errors.New("does not open with the node's cache key")
	}
	var e entry
	if err := json.Unmarshal(plain, &e); err != nil {
		return nil, err
	}
	return &e, nil
}

// flush writes the entries changed since the last flush.
func (c *cache) flush() error {
	c.mu.Lock()
	var out []struct {
		file string
		data []byte
	}
	for _, e := range c.entries {
		if !e.dirty {
			continue
		}
		plain, err := json.Marshal(e)
		if err != nil {
			c.mu.Unlock()
			return err
		}
		nonce := make([]byte, c.gcm.NonceSize())
		if _, err := rand.Read(nonce); err != nil {
			c.mu.Unlock()
			return err
		}
		out = append(out, struct {
			file string
			data []byte
		}{c.file(e.Key), c.gcm.Seal(nonce, nonce, plain, nil)})
		e.dirty = false
	}
	c.mu.Unlock()
	var errs []error
	for _, o := range out {
		errs = append(errs, datadir.WriteFileAtomic(o.file, o.data, 0o600))
	}
	return errors.Join(errs...)
}

// seen notes a component asked for e; on disk once a day is enough.
func (e *entry) seen(now time.Time) {
	if now.Sub(e.Seen) > 24*time.Hour {
		e.dirty = true
	}
	e.Seen = now
}

// putList replaces the list at key with a complete list answer.
func (c *cache) putList(key string, body []byte) error {
	var l struct {
		APIVersion string            `json:"apiVersion"`
		Kind       string            `json:"kind"`
		Items      []json.RawMessage `json:"items"`
		meta
	}
	if err := json.Unmarshal(body, &l); err != nil {
		return err
	}
	if l.Metadata.Continue != "" {
		return nil // one page of many: not the whole list
	}
	items := make(map[string]json.RawMessage, len(l.Items))
	for _, it := range l.Items {
		k, _, err := objectKey(it)
		if err != nil {
			return err
		}
		items[k] = it
	}
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(key)
	changed := e.List == nil || e.List.ResourceVersion != l.Metadata.ResourceVersion || len(e.List.Items) != len(items)
	if !changed {
		for k, v := range items {
			if !bytes.Equal(e.List.Items[k], v) {
				changed = true
				break
			}
		}
	}
	e.List = &list{APIVersion: l.APIVersion, Kind: l.Kind, ResourceVersion: l.Metadata.ResourceVersion, Items: items}
	e.Updated, e.local = now, nil
	e.seen(now)
	e.dirty = e.dirty || changed
	return nil
}

// initialEventsEnd is the annotation of the bookmark that ends the
// initial events of a streaming list (a watch with sendInitialEvents).
const initialEventsEnd = "k8s.io/initial-events-end"

// streamingList collects the initial events of a streaming list; at their
// end it replaces the list at key.
type streamingList struct {
	key   string
	items map[string]json.RawMessage
	done  bool
}

// event applies one watch event of a streaming list: before the end of
// its initial events they are collected, after it they apply as usual.
func (c *cache) streamEvent(s *streamingList, typ string, obj json.RawMessage) {
	if s.done {
		c.event(s.key, typ, obj)
		return
	}
	switch typ {
	case "ADDED", "MODIFIED":
		if k, _, err := objectKey(obj); err == nil {
			s.items[k] = obj
		}
	case "BOOKMARK":
		var b struct {
			APIVersion string `json:"apiVersion"`
			Kind       string `json:"kind"`
			Metadata   struct {
				ResourceVersion string            `json:"resourceVersion"`
				Annotations     map[string]string `json:"annotations"`
			} `json:"metadata"`
		}
		if json.Unmarshal(obj, &b) != nil || b.Metadata.Annotations[initialEventsEnd] != "true" {
			return
		}
		s.done = true
		now := time.Now()
		c.mu.Lock()
		defer c.mu.Unlock()
		e := c.entry(s.key)
		e.List = &list{APIVersion: b.APIVersion, Kind: b.Kind + "List", ResourceVersion: b.Metadata.ResourceVersion, Items: s.items}
		e.Updated, e.dirty, e.local = now, true, nil
		e.seen(now)
	}
}

// initialEvents renders the list at key as the initial events of a
// streaming list: an ADDED event per item, then the closing bookmark.
func (c *cache) initialEvents(key string) ([]byte, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.List == nil {
		return nil, time.Time{}, false
	}
	e.seen(time.Now())
	kind := strings.TrimSuffix(e.List.Kind, "List")
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	for _, k := range sortedKeys(e.List.Items) {
		var obj map[string]json.RawMessage
		if json.Unmarshal(e.List.Items[k], &obj) != nil {
			continue
		}
		// Items of a list answer carry no kind; events must.
		if _, ok := obj["kind"]; !ok {
			obj["kind"], _ = json.Marshal(kind)
			obj["apiVersion"], _ = json.Marshal(e.List.APIVersion)
		}
		_ = enc.Encode(map[string]any{"type": "ADDED", "object": obj})
	}
	_ = enc.Encode(map[string]any{"type": "BOOKMARK", "object": map[string]any{
		"kind": kind, "apiVersion": e.List.APIVersion,
		"metadata": map[string]any{"resourceVersion": e.List.ResourceVersion, "annotations": map[string]string{initialEventsEnd: "true"}},
	}})
	return buf.Bytes(), e.Updated, true
}

func sortedKeys(m map[string]json.RawMessage) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}

// event applies one watch event to the list at key, if there is one.
func (c *cache) event(key, typ string, obj json.RawMessage) {
	k, rv, err := objectKey(obj)
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.List == nil {
		return
	}
	switch typ {
	case "ADDED", "MODIFIED":
		if err != nil {
			return
		}
		e.List.Items[k] = obj
		delete(e.local, k)
	case "DELETED":
		if err != nil {
			return
		}
		delete(e.List.Items, k)
		delete(e.local, k)
	case "BOOKMARK":
	default:
		return
	}
	if rv != "" {
		e.List.ResourceVersion = rv
	}
	e.Updated = time.Now()
	e.dirty = true
}

// putObject keeps a single answer (an object, a token) at key.
func (c *cache) putObject(key string, body []byte, expires time.Time) {
	now := time.Now()
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entry(key)
	if !bytes.Equal(e.Body, body) || !e.Expires.Equal(expires) {
		e.dirty = true
	}
	e.Body, e.Expires, e.Updated = append(json.RawMessage(nil), body...), expires, now
	e.seen(now)
}

// entry is the entry at key, created empty when there is none (c.mu held).
func (c *cache) entry(key string) *entry {
	e := c.entries[key]
	if e == nil {
		e = &entry{Key: key}
		c.entries[key] = e
	}
	return e
}

func (c *cache) hasList(key string) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	return e != nil && e.List != nil
}

// getList renders the list at key as the server would answer it.
func (c *cache) getList(key string) ([]byte, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.List == nil {
		return nil, time.Time{}, false
	}
	e.seen(time.Now())
	names := sortedKeys(e.List.Items)
	items := make([]json.RawMessage, 0, len(names))
	for _, k := range names {
		items = append(items, e.List.Items[k])
	}
	body, err := json.Marshal(map[string]any{
		"apiVersion": e.List.APIVersion,
		"kind":       e.List.Kind,
		"metadata":   map[string]string{"resourceVersion": e.List.ResourceVersion},
		"items":      items,
	})
	return body, e.Updated, err == nil
}

// getObject is the object at the API path p in scope: its own answer,
// else the copy in a list of its collection (namespaced, or across
// namespaces) in the same scope.
func (c *cache) getObject(scope, p, namespace, name string) ([]byte, time.Time, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	now := time.Now()
	if e := c.entries[scope+objectKeyOf(p)]; e != nil && e.Body != nil {
		e.seen(now)
		return e.Body, e.Updated, true
	}
	collection := path.Dir(p)
	wide := collection
	if namespace != "" {
		wide = strings.Replace(collection, "/namespaces/"+namespace+"/", "/", 1)
	}
	var best *entry
	var body json.RawMessage
	for key, e := range c.entries {
		s, rest := splitScope(key)
		if e.List == nil || s != scope {
			continue
		}
		lp, _, _ := strings.Cut(strings.TrimPrefix(rest, "list:"), "?")
		if lp != collection && lp != wide {
			continue
		}
		if it, ok := e.List.Items[namespace+"/"+name]; ok && (best == nil || e.Updated.After(best.Updated)) {
			best, body = e, it
		}
	}
	if best == nil {
		return nil, time.Time{}, false
	}
	best.seen(now)
	return body, best.Updated, true
}

// getToken is a cached token answer that is still valid.
func (c *cache) getToken(key string) ([]byte, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.Body == nil || !time.Now().Before(e.Expires) {
		return nil, false
	}
	e.seen(time.Now())
	return e.Body, true
}

func objectKeyOf(p string) string { return "get:" + p }

// scopePrefix starts the keys of a pod's entries: "sa=<token hash>|".
const scopePrefix = "sa="

// tokenScope is the scope of the answers to a bearer token.
func tokenScope(token string) string {
	sum := sha256.Sum256([]byte(token))
	return scopePrefix + hex.EncodeToString(sum[:16]) + "|"
}

// splitScope splits a key into its scope ("" for the node's components)
// and the rest.
func splitScope(key string) (scope, rest string) {
	if !strings.HasPrefix(key, scopePrefix) {
		return "", key
	}
	i := strings.IndexByte(key, '|')
	if i < 0 {
		return "", key
	}
	return key[:i+1], key[i+1:]
}

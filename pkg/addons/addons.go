// Package addons applies the add-on manifests kedge embeds (manifests/,
// rendered with the cluster's values) and the user's own manifests dropped
// in <data-dir>/server/manifests, and keeps them applied: a deleted add-on
// object comes back. It uses server-side apply without force, so a field a
// user changed (say, the coredns ConfigMap's Corefile) stays as the user
// left it.
package addons

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"text/template"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/restmapper"
)

// Values are what embedded manifests may use.
type Values struct {
	ClusterDNS    string
	ClusterDomain string
	CoreDNSImage  string
	// ServerCABundle is the server CA, base64 (an APIService's caBundle).
	ServerCABundle string
	// TraefikImage is the Ingress controller's image.
	TraefikImage string
}

const fieldManager = "kedge"

// Deployer is the add-on component.
type Deployer struct {
	Config   *rest.Config
	Embedded fs.FS
	Values   Values
	Disabled map[string]bool
	UserDir  string
	Interval time.Duration
	Log      *slog.Logger

	applier *Applier
	applied atomic.Bool
	cancel  context.CancelFunc
	done    chan struct{}
}

func (d *Deployer) Name() string { return "addons" }

func (d *Deployer) Start(context.Context) error {
	a, err := NewApplier(d.Config, d.Log)
	if err != nil {
		return err
	}
	d.applier = a
	ctx, cancel := context.WithCancel(context.Background())
	d.cancel, d.done = cancel, make(chan struct{})
	go d.loop(ctx)
	return nil
}

// Ready once the embedded add-ons were applied once.
func (d *Deployer) Ready(context.Context) error {
	if !d.applied.Load() {
		return errors.New("add-ons not applied yet")
	}
	return nil
}

func (d *Deployer) Stop() error {
	if d.cancel != nil {
		d.cancel()
		<-d.done
	}
	return nil
}

func (d *Deployer) loop(ctx context.Context) {
	defer close(d.done)
	for {
		wait := d.Interval
		if err := d.applyAll(ctx); err != nil {
			d.Log.Warn("applying manifests", "err", err)
			// A CRD applied a moment ago, say: try again soon.
			wait = min(wait, 5*time.Second)
		} else {
			d.applied.Store(true)
		}
		select {
		case <-ctx.Done():
			return
		case <-time.After(wait):
		}
	}
}

// Prerequisite applies some embedded manifests ahead of the add-on
// deployer, for components that need them before the deployer's first
// full pass (the node's components need the RBAC of rbac.yaml and
// local-storage.yaml). Ready applies them until that works; the deployer
// keeps them applied afterwards.
type Prerequisite struct {
	Config   *rest.Config
	Embedded fs.FS
	Files    []string
	Values   Values
	Log      *slog.Logger

	applier *Applier
}

func (p *Prerequisite) Name() string { return "addons-prerequisites" }

func (p *Prerequisite) Start(context.Context) error {
	a, err := NewApplier(p.Config, p.Log)
	p.applier = a
	return err
}

func (p *Prerequisite) Ready(ctx context.Context) error {
	for _, file := range p.Files {
		data, err := Render(p.Embedded, file, p.Values)
		if err != nil {
			return err
		}
		if err := p.applier.Apply(ctx, file, data); err != nil {
			return err
		}
	}
	return nil
}

func (p *Prerequisite) Stop() error { return nil }

// applyAll applies every enabled embedded add-on and every user manifest,
// and deletes the objects of disabled add-ons.
func (d *Deployer) applyAll(ctx context.Context) error {
	var errs []error
	names, err := fs.Glob(d.Embedded, "*.yaml")
	if err != nil {
		return err
	}
	for _, file := range names {
		addon := strings.TrimSuffix(file, ".yaml")
		data, err := Render(d.Embedded, file, d.Values)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if d.Disabled[addon] {
			errs = append(errs, d.applier.Delete(ctx, file, data))
			continue
		}
		errs = append(errs, d.applier.Apply(ctx, file, data))
	}
	for _, file := range d.userFiles() {
		data, err := os.ReadFile(file)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		errs = append(errs, d.applier.Apply(ctx, file, data))
	}
	return errors.Join(errs...)
}

// Render executes the manifest template file of fsys with values.
func Render(fsys fs.FS, file string, values Values) ([]byte, error) {
	text, err := fs.ReadFile(fsys, file)
	if err != nil {
		return nil, err
	}
	tmpl, err := template.New(file).Option("missingkey=error").Parse(string(text))
	if err != nil {
		return nil, fmt.Errorf("manifest %s: %w", file, err)
	}
	var buf bytes.Buffer
	if err := tmpl.Execute(&buf, values); err != nil {
		return nil, fmt.Errorf("manifest %s: %w", file, err)
	}
	return buf.Bytes(), nil
}

func (d *Deployer) userFiles() []string {
	var files []string
	for _, pattern := range []string{"*.yaml", "*.yml", "*.json"} {
		m, _ := filepath.Glob(filepath.Join(d.UserDir, pattern))
		files = append(files, m...)
	}
	sort.Strings(files)
	return files
}

// Decode splits a manifest into objects.
func Decode(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		if err := dec.Decode(&m); err != nil {
			if errors.Is(err, io.EOF) {
				return objs, nil
			}
			return nil, err
		}
		if len(m) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: m}
		if u.GetKind() == "" || u.GetName() == "" {
			return nil, fmt.Errorf("an object without kind or metadata.name")
		}
		objs = append(objs, u)
	}
}

// Applier applies manifests with server-side apply (field manager kedge,
// no force: a field someone else took over keeps their value) and deletes
// their objects.
type Applier struct {
	client dynamic.Interface
	mapper meta.ResettableRESTMapper
	log    *slog.Logger

	mu   sync.Mutex
	kept map[string]bool // objects whose user changes were kept (logged once)
	// applied is what the last apply of each object sent and got back.
	applied map[string]appliedObject
}

// appliedObject is the last apply of one object: the sha256 of the body
// sent and the resourceVersion it left.
type appliedObject struct {
	sum             [sha256.Size]byte
	resourceVersion string
}

// NewApplier returns an Applier acting as cfg's identity.
func NewApplier(cfg *rest.Config, log *slog.Logger) (*Applier, error) {
	client, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	disc, err := discovery.NewDiscoveryClientForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Applier{
		client:  client,
		mapper:  restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(disc)),
		log:     log,
		kept:    map[string]bool{},
		applied: map[string]appliedObject{},
	}, nil
}

func (a *Applier) resource(u *unstructured.Unstructured) (dynamic.ResourceInterface, error) {
	gvk := u.GroupVersionKind()
	mapping, err := a.mapper.RESTMapping(gvk.GroupKind(), gvk.Version)
	if err != nil {
		// A CRD applied a moment ago: look again next time.
		a.mapper.Reset()
		return nil, err
	}
	if mapping.Scope.Name() == meta.RESTScopeNameNamespace {
		ns := u.GetNamespace()
		if ns == "" {
			ns = "default"
		}
		return a.client.Resource(mapping.Resource).Namespace(ns), nil
	}
	return a.client.Resource(mapping.Resource), nil
}

// Apply applies every object of the manifest data read from file.
func (a *Applier) Apply(ctx context.Context, file string, data []byte) error {
	objs, err := Decode(data)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", file, err)
	}
	var errs []error
	for _, u := range objs {
		key := file + ":" + u.GetKind() + "/" + u.GetNamespace() + "/" + u.GetName()
		ri, err := a.resource(u)
		if err != nil {
			errs = append(errs, fmt.Errorf("manifest %s: %s %s: %w", file, u.GetKind(), u.GetName(), err))
			continue
		}
		body, err := json.Marshal(u.Object)
		if err != nil {
			return err
		}
		sum := sha256.Sum256(body)
		if a.unchanged(ctx, ri, key, u.GetName(), sum) {
			continue
		}
		got, err := ri.Patch(ctx, u.GetName(), types.ApplyPatchType, body, metav1.PatchOptions{FieldManager: fieldManager})
		a.mu.Lock()
		switch {
		case err == nil:
			delete(a.kept, key)
			a.applied[key] = appliedObject{sum: sum, resourceVersion: got.GetResourceVersion()}
		case apierrors.IsConflict(err):
			// Someone else now owns a field we set: keep their change.
			if !a.kept[key] {
				a.log.Info("keeping a user's change to an add-on object", "manifest", file, "object", key, "detail", err.Error())
				a.kept[key] = true
			}
		default:
			errs = append(errs, fmt.Errorf("apply %s %s from %s: %w", u.GetKind(), u.GetName(), file, err))
		}
		a.mu.Unlock()
	}
	return errors.Join(errs...)
}

// unchanged reports whether the object is as the last apply of the same
// body left it: then applying again would change nothing. Reading it from
// the apiserver's cache is far cheaper than a server-side apply, which the
// deployer would otherwise make for every add-on object every pass. An
// object deleted or changed since (a newer resourceVersion: a user's edit,
// a controller's status) is applied again.
func (a *Applier) unchanged(ctx context.Context, ri dynamic.ResourceInterface, key, name string, sum [sha256.Size]byte) bool {
	a.mu.Lock()
	last, ok := a.applied[key]
	a.mu.Unlock()
	if !ok || last.sum != sum {
		return false
	}
	cur, err := ri.Get(ctx, name, metav1.GetOptions{ResourceVersion: "0"})
	return err == nil && cur.GetResourceVersion() == last.resourceVersion
}

// Delete deletes every object of the manifest data read from file.
func (a *Applier) Delete(ctx context.Context, file string, data []byte) error {
	objs, err := Decode(data)
	if err != nil {
		return fmt.Errorf("manifest %s: %w", file, err)
	}
	var errs []error
	for _, u := range objs {
		ri, err := a.resource(u)
		if err != nil {
			continue
		}
		err = ri.Delete(ctx, u.GetName(), metav1.DeleteOptions{})
		if err == nil {
			a.log.Info("removed add-on object", "manifest", file, "kind", u.GetKind(), "name", u.GetName())
		} else if !apierrors.IsNotFound(err) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

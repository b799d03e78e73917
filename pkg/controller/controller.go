// Package controller is the shape every kedge controller shares: one set
// of shared informers per process and identity (Informers, created by the
// composition root and started by whoever registers an informer), and one
// run loop (Loop): a rate-limited workqueue of keys fed by informer events
// and drained by workers that call a reconcile function.
package controller

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"k8s.io/apimachinery/pkg/util/runtime"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/dynamic/dynamicinformer"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
)

// Informers are the shared informers of one identity. Controllers register
// the informers they need, then call Start, which starts what is new; the
// component that owns Informers stops them all after the controllers.
type Informers struct {
	Config  *rest.Config
	Client  kubernetes.Interface
	Dynamic dynamic.Interface
	Typed   informers.SharedInformerFactory
	Untyped dynamicinformer.DynamicSharedInformerFactory

	mu     sync.Mutex
	stop   chan struct{}
	closed bool
}

// NewInformers returns informers (no resync) for the identity of cfg.
func NewInformers(cfg *rest.Config) (*Informers, error) {
	client, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(cfg)
	if err != nil {
		return nil, err
	}
	return &Informers{
		Config:  cfg,
		Client:  client,
		Dynamic: dyn,
		Typed:   informers.NewSharedInformerFactory(client, 0),
		Untyped: dynamicinformer.NewDynamicSharedInformerFactory(dyn, 0),
		stop:    make(chan struct{}),
	}, nil
}

// Start starts every informer registered so far and not yet running.
func (i *Informers) Start() {
	i.mu.Lock()
	defer i.mu.Unlock()
	if i.closed {
		return
	}
	i.Typed.Start(i.stop)
	i.Untyped.Start(i.stop)
}

// Component returns the lifecycle of the informers: list it before the
// controllers that use them, so it stops after them.
func (i *Informers) Component(name string) *InformersComponent {
	return &InformersComponent{name: name, informers: i}
}

// InformersComponent stops the shared informers; it starts nothing itself.
type InformersComponent struct {
	name      string
	informers *Informers
}

func (c *InformersComponent) Name() string { return c.name }

// Informers are the informers this component stops.
func (c *InformersComponent) Informers() *Informers { return c.informers }

func (c *InformersComponent) Start(context.Context) error { return nil }
func (c *InformersComponent) Ready(context.Context) error { return nil }

func (c *InformersComponent) Stop() error {
	i := c.informers
	i.mu.Lock()
	if !i.closed {
		i.closed = true
		close(i.stop)
	}
	i.mu.Unlock()
	i.Typed.Shutdown()
	i.Untyped.Shutdown()
	return nil
}

// Loop is a controller's run loop: keys go into a rate-limited queue, and
// workers call Reconcile for each. A key whose Reconcile fails is retried
// with backoff; one that succeeds is forgotten.
type Loop struct {
	Name      string
	Reconcile func(ctx context.Context, key string) error
	Log       *slog.Logger

	once   sync.Once
	queue  workqueue.TypedRateLimitingInterface[string]
	synced atomic.Bool
}

func (l *Loop) init() {
	l.once.Do(func() {
		l.queue = workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](500*time.Millisecond, 2*time.Minute),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: l.Name})
	})
}

// Add queues key.
func (l *Loop) Add(key string) {
	l.init()
	l.queue.Add(key)
}

// AddAfter queues key after d (a periodic re-check).
func (l *Loop) AddAfter(key string, d time.Duration) {
	l.init()
	l.queue.AddAfter(key, d)
}

// Handler queues the keys keysOf returns for every added, changed or
// deleted object. KeyOf suits objects that are their own key.
func (l *Loop) Handler(keysOf func(obj any) []string) cache.ResourceEventHandler {
	add := func(obj any) {
		if d, ok := obj.(cache.DeletedFinalStateUnknown); ok {
			obj = d.Obj
		}
		for _, k := range keysOf(obj) {
			l.Add(k)
		}
	}
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    add,
		UpdateFunc: func(_, obj any) { add(obj) },
		DeleteFunc: add,
	}
}

// KeyOf is the namespace/name key of obj.
func KeyOf(obj any) []string {
	k, err := cache.MetaNamespaceKeyFunc(obj)
	if err != nil {
		return nil
	}
	return []string{k}
}

// Run waits for the informers' caches, then runs workers until ctx is done.
func (l *Loop) Run(ctx context.Context, workers int, synced ...cache.InformerSynced) error {
	l.init()
	defer l.queue.ShutDown()
	if !cache.WaitForCacheSync(ctx.Done(), synced...) {
		return errors.New(l.Name + ": caches did not sync")
	}
	l.synced.Store(true)
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for l.next(ctx) {
			}
		})
	}
	<-ctx.Done()
	l.queue.ShutDown()
	wg.Wait()
	return nil
}

// Ready is nil once Run saw the caches synced: a component's Ready probe.
func (l *Loop) Ready() error {
	if !l.synced.Load() {
		return errors.New(l.Name + ": waiting for the informer caches")
	}
	return nil
}

func (l *Loop) next(ctx context.Context) bool {
	key, quit := l.queue.Get()
	if quit {
		return false
	}
	defer l.queue.Done(key)
	err := func() (err error) {
		defer func() {
			if r := recover(); r != nil {
				err = fmt.Errorf("panic: %v", r)
				runtime.HandleError(err)
			}
		}()
		return l.Reconcile(ctx, key)
	}()
	if err == nil {
		l.queue.Forget(key)
		return true
	}
	if ctx.Err() == nil {
		l.Log.Warn("reconcile failed; retrying", "key", key, "retries", l.queue.NumRequeues(key), "err", err)
	}
	l.queue.AddRateLimited(key)
	return true
}

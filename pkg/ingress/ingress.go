// Package ingress runs kedge's Ingress add-on: Traefik, the controller of
// the default IngressClass "kedge". Traefik takes ports 80 and 443 of the
// nodes (a LoadBalancer Service, through the servicelb), so kedge deploys
// it only while it is needed: while an Ingress of class kedge exists, or
// while the IngressClass carries ingress.kedge.io/always: "true". Until
// then a user's own Service may use those ports. The controller also
// checks each Ingress of the class and records a Warning Event for what
// Traefik would silently skip: a backend Service that does not exist, a
// TLS Secret that is missing or holds no valid certificate, and a Traefik
// image the node does not have.
package ingress

import (
	"context"
	"crypto/tls"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	listersv1 "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/tools/record"

	"github.com/kedge-dev/kedge/pkg/addons"
	"github.com/kedge-dev/kedge/pkg/controller"
)

const (
	// ClassName is kedge's IngressClass.
	ClassName = "kedge"
	// AnnAlways on the IngressClass keeps Traefik deployed without Ingresses.
	AnnAlways = "ingress.kedge.io/always"
	// Namespace and Name of Traefik's Deployment and Service.
	Namespace = "kube-system"
	Name      = "traefik"

	// legacyClass is the annotation older manifests use instead of
	// spec.ingressClassName.
	legacyClass = "kubernetes.io/ingress.class"
	traefikKey  = "\x00traefik" // the queue key of the deploy decision
)

// Controller is the Ingress add-on component.
type Controller struct {
	Informers *controller.Informers
	Applier   *addons.Applier
	// Manifest is Traefik's rendered Deployment and Service.
	Manifest []byte
	// Image is Traefik's image, named in the missing-image Event.
	Image string
	// Disabled withdraws Traefik (--disable ingress).
	Disabled bool
	Log      *slog.Logger

	ingresses networkinglisters.IngressLister
	classes   networkinglisters.IngressClassLister
	services  listersv1.ServiceLister
	loop      *controller.Loop
	recorder  record.EventRecorder
	events    record.EventBroadcaster
	cancel    context.CancelFunc
	done      chan struct{}

	mu       sync.Mutex
	problems map[string]string // Ingress -> the problems last recorded
	deployed *bool
}

func (c *Controller) Name() string { return "ingress" }

func (c *Controller) Start(context.Context) error {
	ctx, cancel := context.WithCancel(context.Background())
	c.cancel, c.done = cancel, make(chan struct{})
	c.problems = map[string]string{}
	if c.Disabled {
		go func() {
			defer close(c.done)
			c.withdraw(ctx)
		}()
		return nil
	}
	f := c.Informers.Typed
	ingInf, classInf, svcInf := f.Networking().V1().Ingresses(), f.Networking().V1().IngressClasses(), f.Core().V1().Services()
	c.ingresses, c.classes, c.services = ingInf.Lister(), classInf.Lister(), svcInf.Lister()
	c.loop = &controller.Loop{Name: "ingress", Reconcile: c.reconcile, Log: c.Log}
	ingressKeys := func(obj any) []string { return append(controller.KeyOf(obj), traefikKey) }
	// A Service change may fix or break an Ingress's backend.
	serviceKeys := func(obj any) []string {
		svc, ok := obj.(*corev1.Service)
		if !ok {
			return nil
		}
		var keys []string
		all, _ := c.ingresses.Ingresses(svc.Namespace).List(labels.Everything())
		for _, ing := range all {
			if slices.Contains(backendServices(ing), svc.Name) {
				keys = append(keys, ing.Namespace+"/"+ing.Name)
			}
		}
		return keys
	}
	if _, err := ingInf.Informer().AddEventHandler(c.loop.Handler(ingressKeys)); err != nil {
		return err
	}
	if _, err := classInf.Informer().AddEventHandler(c.loop.Handler(func(any) []string { return []string{traefikKey} })); err != nil {
		return err
	}
	if _, err := svcInf.Informer().AddEventHandler(c.loop.Handler(serviceKeys)); err != nil {
		return err
	}
	c.events = record.NewBroadcaster()
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Informers.Client.CoreV1().Events("")})
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: "kedge-ingress"})
	c.Informers.Start()
	go func() {
		defer close(c.done)
		if err := c.loop.Run(ctx, 1, ingInf.Informer().HasSynced, classInf.Informer().HasSynced, svcInf.Informer().HasSynced); err != nil && ctx.Err() == nil {
			c.Log.Error("ingress", "err", err)
		}
	}()
	c.loop.Add(traefikKey)
	return nil
}

func (c *Controller) Ready(context.Context) error {
	if c.Disabled {
		return nil
	}
	return c.loop.Ready()
}

func (c *Controller) Stop() error {
	if c.cancel == nil {
		return nil
	}
	c.cancel()
	<-c.done
	if c.events != nil {
		c.events.Shutdown()
	}
	return nil
}

func (c *Controller) reconcile(ctx context.Context, key string) error {
	if key == traefikKey {
		return c.reconcileTraefik(ctx)
	}
	ns, name, _ := strings.Cut(key, "/")
	ing, err := c.ingresses.Ingresses(ns).Get(name)
	if apierrors.IsNotFound(err) {
		c.mu.Lock()
		delete(c.problems, key)
		c.mu.Unlock()
		return nil
	}
	if err != nil {
		return err
	}
	if !c.ours(ing) || ing.DeletionTimestamp != nil {
		return nil
	}
	c.check(ctx, key, ing)
	return nil
}

// ours reports whether kedge's class serves ing: named, by annotation,
// or by default (no class at all: kedge's class is the default one).
func (c *Controller) ours(ing *networkingv1.Ingress) bool {
	if cn := ing.Spec.IngressClassName; cn != nil {
		return *cn == ClassName
	}
	switch ing.Annotations[legacyClass] {
	case "", ClassName, "traefik":
		return true
	}
	return false
}

// reconcileTraefik deploys Traefik when needed and withdraws it when not.
func (c *Controller) reconcileTraefik(ctx context.Context) error {
	want, why := c.wanted()
	c.mu.Lock()
	changed := c.deployed == nil || *c.deployed != want
	c.mu.Unlock()
	var err error
	if want {
		err = c.Applier.Apply(ctx, "ingress/traefik.yaml", c.Manifest)
	} else {
		err = c.Applier.Delete(ctx, "ingress/traefik.yaml", c.Manifest)
	}
	if err != nil {
		return err
	}
	if changed {
		if want {
			c.Log.Info("Traefik deployed: ports 80 and 443 go to Ingresses", "because", why)
		} else {
			c.Log.Info("Traefik not deployed: no Ingress of class "+ClassName+" needs it; ports 80 and 443 stay free", "class", ClassName)
		}
	}
	c.mu.Lock()
	c.deployed = &want
	c.mu.Unlock()
	if want {
		c.checkImage(ctx)
		// Watch its pods come up, to report a missing image.
		c.loop.AddAfter(traefikKey, 30*time.Second)
	}
	return nil
}

// wanted reports whether Traefik should run, and why.
func (c *Controller) wanted() (bool, string) {
	if class, err := c.classes.Get(ClassName); err == nil && class.Annotations[AnnAlways] == "true" {
		return true, "IngressClass " + ClassName + " has " + AnnAlways + "=true"
	}
	all, _ := c.ingresses.List(labels.Everything())
	for _, ing := range all {
		if c.ours(ing) && ing.DeletionTimestamp == nil {
			return true, "Ingress " + ing.Namespace + "/" + ing.Name
		}
	}
	return false, ""
}

// checkImage records an Event on the IngressClass when Traefik's pod
// cannot start because the node lacks its image.
func (c *Controller) checkImage(ctx context.Context) {
	pods, err := c.Informers.Client.CoreV1().Pods(Namespace).List(ctx, metav1.ListOptions{LabelSelector: "app.kubernetes.io/name=" + Name})
	if err != nil {
		return
	}
	class, err := c.classes.Get(ClassName)
	if err != nil {
		return
	}
	for _, p := range pods.Items {
		for _, cs := range p.Status.ContainerStatuses {
			if w := cs.State.Waiting; w != nil && (w.Reason == "ErrImagePull" || w.Reason == "ImagePullBackOff" || w.Reason == "ErrImageNeverPull") {
				c.recorder.Eventf(class, corev1.EventTypeWarning, "ImageMissing",
					"node %s has no %s: put kedge-addons-<arch>.tar.zst (a kedge release artifact; install.sh places it) in <data-dir>/agent/images on the node, or run kedge with --disable ingress",
					p.Spec.NodeName, c.Image)
			}
		}
	}
}

// check records what is wrong with ing, when that changes.
func (c *Controller) check(ctx context.Context, key string, ing *networkingv1.Ingress) {
	var problems []string
	for _, b := range backends(ing) {
		svc, err := c.services.Services(ing.Namespace).Get(b.Name)
		if err != nil {
			problems = append(problems, fmt.Sprintf("backend Service %s/%s does not exist", ing.Namespace, b.Name))
			continue
		}
		if b.Port != nil && !hasPort(svc, *b.Port) {
			problems = append(problems, fmt.Sprintf("backend Service %s/%s has no port %s", ing.Namespace, b.Name, portString(*b.Port)))
		}
	}
	if ing.Spec.DefaultBackend != nil {
		if len(ing.Spec.Rules) > 0 {
			problems = append(problems, "spec.defaultBackend is ignored in an Ingress that also has rules (Traefik serves it only alone): put the default backend in an Ingress of its own")
		} else if other := c.otherDefault(ing); other != "" {
			problems = append(problems, "Ingress "+other+" already holds the cluster's default backend; Traefik serves only one")
		}
	}
	for _, t := range ing.Spec.TLS {
		if t.SecretName == "" {
			continue // Traefik's default certificate
		}
		if p := c.checkSecret(ctx, ing.Namespace, t.SecretName); p != "" {
			problems = append(problems, p)
		}
	}
	slices.Sort(problems)
	problems = slices.Compact(problems)
	text := strings.Join(problems, "; ")
	c.mu.Lock()
	last, seen := c.problems[key]
	c.problems[key] = text
	c.mu.Unlock()
	if seen && last == text {
		return
	}
	switch {
	case text != "":
		c.recorder.Event(ing, corev1.EventTypeWarning, "InvalidIngress", text)
		c.Log.Info("Ingress has problems", "ingress", key, "problems", text)
	case seen:
		c.recorder.Event(ing, corev1.EventTypeNormal, "Valid", "all backends and TLS Secrets found")
	}
}

// otherDefault names the oldest other Ingress of the class that holds a
// default backend alone, if it is older than ing.
func (c *Controller) otherDefault(ing *networkingv1.Ingress) string {
	all, _ := c.ingresses.List(labels.Everything())
	for _, o := range all {
		if o.UID == ing.UID || !c.ours(o) || o.Spec.DefaultBackend == nil || len(o.Spec.Rules) > 0 || o.DeletionTimestamp != nil {
			continue
		}
		if o.CreationTimestamp.Before(&ing.CreationTimestamp) || (o.CreationTimestamp.Equal(&ing.CreationTimestamp) && o.UID < ing.UID) {
			return o.Namespace + "/" + o.Name
		}
	}
	return ""
}

func (c *Controller) checkSecret(ctx context.Context, ns, name string) string {
	s, err := c.Informers.Client.CoreV1().Secrets(ns).Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return fmt.Sprintf("TLS Secret %s/%s does not exist (Traefik serves its default certificate instead)", ns, name)
	}
	if err != nil {
		return ""
	}
	if _, err := tls.X509KeyPair(s.Data[corev1.TLSCertKey], s.Data[corev1.TLSPrivateKeyKey]); err != nil {
		return fmt.Sprintf("TLS Secret %s/%s does not hold a certificate and its key in tls.crt and tls.key (%v); Traefik serves its default certificate instead", ns, name, err)
	}
	return ""
}

type backend struct {
	Name string
	Port *networkingv1.ServiceBackendPort
}

func backends(ing *networkingv1.Ingress) []backend {
	var out []backend
	add := func(b *networkingv1.IngressBackend) {
		if b != nil && b.Service != nil {
			out = append(out, backend{Name: b.Service.Name, Port: &b.Service.Port})
		}
	}
	add(ing.Spec.DefaultBackend)
	for _, r := range ing.Spec.Rules {
		if r.HTTP == nil {
			continue
		}
		for i := range r.HTTP.Paths {
			add(&r.HTTP.Paths[i].Backend)
		}
	}
	return out
}

func backendServices(ing *networkingv1.Ingress) []string {
	var names []string
	for _, b := range backends(ing) {
		names = append(names, b.Name)
	}
	return names
}

func hasPort(svc *corev1.Service, p networkingv1.ServiceBackendPort) bool {
	return slices.ContainsFunc(svc.Spec.Ports, func(sp corev1.ServicePort) bool {
		return (p.Name != "" && sp.Name == p.Name) || (p.Name == "" && sp.Port == p.Number)
	})
}

func portString(p networkingv1.ServiceBackendPort) string {
	if p.Name != "" {
		return fmt.Sprintf("%q", p.Name)
	}
	return fmt.Sprint(p.Number)
}

// withdraw removes Traefik (--disable ingress), retrying until done.
func (c *Controller) withdraw(ctx context.Context) {
	for {
		err := c.Applier.Delete(ctx, "ingress/traefik.yaml", c.Manifest)
		if err == nil {
			c.Log.Info("ingress is disabled: Traefik is not deployed")
			return
		}
		c.Log.Warn("ingress: withdraw", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

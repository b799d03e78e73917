package servicelb

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/kubernetes/scheme"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/ptr"
)

// Controller writes the status of LoadBalancer Services (see the package
// comment). With Disabled set it instead withdraws: it deletes the Lease,
// so every Speaker lets go of its ports, and clears the addresses it had
// published, leaving the Services pending as upstream does without a
// cloud provider.
type Controller struct {
	Config   *rest.Config
	Identity string // the Lease holder: the server's node name
	Disabled bool
	// Resync re-examines every Service this often even without changes.
	Resync time.Duration
	Log    *slog.Logger

	client   kubernetes.Interface
	cancel   context.CancelFunc
	done     chan struct{}
	kick     chan struct{}
	synced   chan struct{}
	recorder record.EventRecorder
	events   record.EventBroadcaster
	pending  map[string]string // Service -> the reason last recorded
}

func (c *Controller) Name() string { return "servicelb" }

func (c *Controller) Start(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	c.client = client
	c.done, c.kick, c.synced = make(chan struct{}), make(chan struct{}, 1), make(chan struct{})
	c.pending = map[string]string{}
	ctx, c.cancel = context.WithCancel(ctx)
	if c.Disabled {
		go func() {
			defer close(c.done)
			c.withdraw(ctx)
		}()
		close(c.synced)
		return nil
	}
	c.events = record.NewBroadcaster(record.WithContext(ctx))
	c.events.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: client.CoreV1().Events("")})
	c.recorder = c.events.NewRecorder(scheme.Scheme, corev1.EventSource{Component: Component})
	go c.run(ctx)
	return nil
}

// Ready is nil once the informers have synced.
func (c *Controller) Ready(context.Context) error {
	select {
	case <-c.synced:
		return nil
	default:
		return errors.New("waiting for the Service, Node and EndpointSlice caches")
	}
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

func (c *Controller) trigger() {
	select {
	case c.kick <- struct{}{}:
	default:
	}
}

func (c *Controller) run(ctx context.Context) {
	defer close(c.done)
	factory := informers.NewSharedInformerFactory(c.client, 0)
	svcInf := factory.Core().V1().Services()
	nodeInf := factory.Core().V1().Nodes()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { c.trigger() },
		UpdateFunc: func(any, any) { c.trigger() },
		DeleteFunc: func(any) { c.trigger() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), nodeInf.Informer(), sliceInf.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			c.Log.Error("servicelb: watch", "err", err)
		}
	}
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, nodeInf.Informer().HasSynced, sliceInf.Informer().HasSynced) {
		return
	}
	close(c.synced)
	resync := c.Resync
	if resync <= 0 {
		resync = 30 * time.Second
	}
	tick := time.NewTicker(resync)
	defer tick.Stop()
	lease := time.NewTicker(10 * time.Second)
	defer lease.Stop()
	c.renewLease(ctx)
	for {
		// Coalesce bursts of events into one pass.
		time.Sleep(100 * time.Millisecond)
		services, _ := svcInf.Lister().List(labels.Everything())
		nodes, _ := nodeInf.Lister().List(labels.Everything())
		if err := c.sync(ctx, services, nodes, func(svc *corev1.Service) []*discoveryv1.EndpointSlice {
			s, _ := sliceInf.Lister().EndpointSlices(svc.Namespace).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: svc.Name}))
			return s
		}); err != nil {
			c.Log.Warn("servicelb: sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-c.kick:
		case <-tick.C:
		case <-lease.C:
			c.renewLease(ctx)
		}
	}
}

// sync brings every handled Service's status in line with the plan.
func (c *Controller) sync(ctx context.Context, services []*corev1.Service, nodes []*corev1.Node, slicesOf func(*corev1.Service) []*discoveryv1.EndpointSlice) error {
	adm := Admit(services)
	eligible := Eligible(nodes)
	var errs []error
	seen := map[string]bool{}
	for _, svc := range services {
		if !Handled(svc) {
			continue
		}
		k := key(svc)
		seen[k] = true
		var ips []string
		reason := adm.Refused[k]
		if reason == "" {
			ips, reason = Plan(svc, eligible, slicesOf(svc))
		}
		if reason != "" && c.pending[k] != reason {
			c.recorder.Eventf(svc, corev1.EventTypeWarning, "Pending", "LoadBalancer Service pending: %s", reason)
			c.Log.Info("servicelb: Service pending", "service", k, "reason", reason)
		}
		if reason == "" && c.pending[k] != "" {
			c.recorder.Eventf(svc, corev1.EventTypeNormal, "Serving", "LoadBalancer Service served on %v", ips)
		}
		c.pending[k] = reason
		if err := c.setIngress(ctx, svc, ips); err != nil {
			errs = append(errs, err)
		}
	}
	for k := range c.pending {
		if !seen[k] {
			delete(c.pending, k)
		}
	}
	return errors.Join(errs...)
}

func ingressIPs(svc *corev1.Service) []string {
	var out []string
	for _, in := range svc.Status.LoadBalancer.Ingress {
		out = append(out, in.IP)
	}
	return out
}

func (c *Controller) setIngress(ctx context.Context, svc *corev1.Service, ips []string) error {
	if slices.Equal(ingressIPs(svc), ips) {
		return nil
	}
	updated := svc.DeepCopy()
	updated.Status.LoadBalancer.Ingress = nil
	for _, ip := range ips {
		updated.Status.LoadBalancer.Ingress = append(updated.Status.LoadBalancer.Ingress,
			corev1.LoadBalancerIngress{IP: ip, IPMode: ptr.To(corev1.LoadBalancerIPModeVIP)})
	}
	if _, err := c.client.CoreV1().Services(svc.Namespace).UpdateStatus(ctx, updated, metav1.UpdateOptions{FieldManager: Component}); err != nil {
		return fmt.Errorf("update status of %s: %w", key(svc), err)
	}
	c.Log.Info("servicelb: Service ingress", "service", key(svc), "ips", ips)
	return nil
}

// renewLease creates or renews the Lease that tells Speakers to serve.
func (c *Controller) renewLease(ctx context.Context) {
	leases := c.client.CoordinationV1().Leases(LeaseNamespace)
	now := metav1.NewMicroTime(time.Now())
	l, err := leases.Get(ctx, LeaseName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		_, err = leases.Create(ctx, &coordinationv1.Lease{
			ObjectMeta: metav1.ObjectMeta{Name: LeaseName, Namespace: LeaseNamespace},
			Spec:       coordinationv1.LeaseSpec{HolderIdentity: &c.Identity, RenewTime: &now, LeaseDurationSeconds: ptr.To[int32](60)},
		}, metav1.CreateOptions{FieldManager: Component})
	case err == nil:
		l.Spec.HolderIdentity, l.Spec.RenewTime = &c.Identity, &now
		_, err = leases.Update(ctx, l, metav1.UpdateOptions{FieldManager: Component})
	}
	if err != nil && ctx.Err() == nil {
		c.Log.Warn("servicelb: lease", "err", err)
	}
}

// withdraw undoes what an enabled Controller did, retrying until done.
func (c *Controller) withdraw(ctx context.Context) {
	for {
		err := c.withdrawOnce(ctx)
		if err == nil {
			c.Log.Info("servicelb is disabled: LoadBalancer Services stay pending")
			return
		}
		c.Log.Warn("servicelb: withdraw", "err", err)
		select {
		case <-ctx.Done():
			return
		case <-time.After(5 * time.Second):
		}
	}
}

func (c *Controller) withdrawOnce(ctx context.Context) error {
	err := c.client.CoordinationV1().Leases(LeaseNamespace).Delete(ctx, LeaseName, metav1.DeleteOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	nodes, err := c.client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	nodeIPs := map[string]bool{}
	for i := range nodes.Items {
		for _, a := range nodes.Items[i].Status.Addresses {
			nodeIPs[a.Address] = true
		}
	}
	services, err := c.client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for i := range services.Items {
		svc := &services.Items[i]
		ips := ingressIPs(svc)
		// Only addresses servicelb published (node addresses) are cleared;
		// another load balancer's addresses are left alone.
		if !Handled(svc) || len(ips) == 0 || slices.ContainsFunc(ips, func(ip string) bool { return !nodeIPs[ip] }) {
			continue
		}
		if err := c.setIngress(ctx, svc, nil); err != nil {
			return err
		}
	}
	return nil
}

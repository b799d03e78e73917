package servicelb

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	listersv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
)

// Speaker is the node half of servicelb (see the package comment): it
// holds the ports of the LoadBalancer Services its node serves and relays
// connections kube-proxy leaves alone (to 127.0.0.1, say) to endpoints.
type Speaker struct {
	Config   *rest.Config
	NodeName string
	// Interval is how often ports held by others are tried again.
	Interval time.Duration
	Log      *slog.Logger

	client kubernetes.Interface
	slices listersv1.EndpointSliceLister
	cancel context.CancelFunc
	done   chan struct{}
	kick   chan struct{}
	synced chan struct{}
	held   map[Port]*holder
	inUse  map[Port]bool // as last published
}

func (s *Speaker) Name() string { return "servicelb-speaker" }

func (s *Speaker) Start(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(s.Config)
	if err != nil {
		return err
	}
	s.client = client
	s.done, s.kick, s.synced = make(chan struct{}), make(chan struct{}, 1), make(chan struct{})
	s.held = map[Port]*holder{}
	ctx, s.cancel = context.WithCancel(ctx)
	go s.run(ctx)
	return nil
}

func (s *Speaker) Ready(context.Context) error {
	select {
	case <-s.synced:
		return nil
	default:
		return errors.New("waiting for the Service, Node and EndpointSlice caches")
	}
}

// Stop lets go of every port. Connections kube-proxy rewrote live on in
// the kernel; relayed ones (to 127.0.0.1) end with the process.
func (s *Speaker) Stop() error {
	if s.cancel == nil {
		return nil
	}
	s.cancel()
	<-s.done
	return nil
}

func (s *Speaker) trigger() {
	select {
	case s.kick <- struct{}{}:
	default:
	}
}

func (s *Speaker) run(ctx context.Context) {
	defer close(s.done)
	defer func() {
		for p, h := range s.held {
			h.close()
			delete(s.held, p)
		}
	}()
	factory := informers.NewSharedInformerFactory(s.client, 0)
	svcInf := factory.Core().V1().Services()
	nodeInf := factory.Core().V1().Nodes()
	sliceInf := factory.Discovery().V1().EndpointSlices()
	s.slices = sliceInf.Lister()
	handler := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { s.trigger() },
		UpdateFunc: func(any, any) { s.trigger() },
		DeleteFunc: func(any) { s.trigger() },
	}
	for _, inf := range []cache.SharedIndexInformer{svcInf.Informer(), nodeInf.Informer()} {
		if _, err := inf.AddEventHandler(handler); err != nil {
			s.Log.Error("servicelb: watch", "err", err)
		}
	}
	sliceInf.Informer() // registered before Start: the relay reads it
	factory.Start(ctx.Done())
	defer factory.Shutdown()
	if !cache.WaitForCacheSync(ctx.Done(), svcInf.Informer().HasSynced, nodeInf.Informer().HasSynced, sliceInf.Informer().HasSynced) {
		return
	}
	close(s.synced)
	interval := s.Interval
	if interval <= 0 {
		interval = 5 * time.Second
	}
	tick := time.NewTicker(interval)
	defer tick.Stop()
	for {
		time.Sleep(100 * time.Millisecond)
		services, _ := svcInf.Lister().List(labels.Everything())
		nodes, _ := nodeInf.Lister().List(labels.Everything())
		if err := s.sync(ctx, services, nodes); err != nil && ctx.Err() == nil {
			s.Log.Warn("servicelb: sync", "err", err)
		}
		select {
		case <-ctx.Done():
			return
		case <-s.kick:
		case <-tick.C:
		}
	}
}

// sync holds the ports this node should serve, lets go of the others and
// publishes the ports it could not hold.
func (s *Speaker) sync(ctx context.Context, services []*corev1.Service, nodes []*corev1.Node) error {
	var self *corev1.Node
	for _, n := range nodes {
		if n.Name == s.NodeName {
			self = n
		}
	}
	if self == nil {
		return nil // not registered yet
	}
	desired := map[Port]target{}
	_, err := s.client.CoordinationV1().Leases(LeaseNamespace).Get(ctx, LeaseName, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err):
		// servicelb is disabled, or the server has not started it yet.
	case err != nil:
		return fmt.Errorf("read Lease %s/%s: %w", LeaseNamespace, LeaseName, err)
	case Selected(self, nodes):
		for p, svc := range Admit(services).Owner {
			t := target{namespace: svc.Namespace, name: svc.Name, local: svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal}
			for _, r := range svc.Spec.LoadBalancerSourceRanges {
				if _, cidr, err := net.ParseCIDR(strings.TrimSpace(r)); err == nil {
					t.sourceRanges = append(t.sourceRanges, cidr)
				}
			}
			for _, sp := range svc.Spec.Ports {
				if sp.Port == p.Port && (sp.Protocol == p.Protocol || sp.Protocol == "" && p.Protocol == corev1.ProtocolTCP) {
					t.portName = sp.Name
				}
			}
			desired[p] = t
		}
	}
	for p, h := range s.held {
		if _, ok := desired[p]; !ok {
			h.close()
			delete(s.held, p)
			s.Log.Info("servicelb: released port", "port", p.String())
		}
	}
	inUse, held := map[Port]bool{}, map[Port]bool{}
	for p, t := range desired {
		if h := s.held[p]; h != nil {
			h.target.Store(&t)
			held[p] = true
			continue
		}
		h, err := listen(p, s)
		if err != nil {
			inUse[p] = true
			if !s.inUse[p] {
				s.Log.Warn("servicelb: port in use on this node; the Service is not served here until it is free", "port", p.String(), "service", t.namespace+"/"+t.name, "err", err)
			}
			continue
		}
		h.target.Store(&t)
		s.held[p] = h
		held[p] = true
		s.Log.Info("servicelb: holding port", "port", p.String(), "service", t.namespace+"/"+t.name)
	}
	s.inUse = inUse
	return s.annotate(ctx, self, map[string]map[Port]bool{HeldPortsAnnotation: held, PortsInUseAnnotation: inUse})
}

// annotate publishes on this node's Node the ports held here and those
// held by others.
func (s *Speaker) annotate(ctx context.Context, self *corev1.Node, sets map[string]map[Port]bool) error {
	changes := map[string]any{}
	for annotation, ports := range sets {
		want := formatPorts(ports)
		if self.Annotations[annotation] == want {
			continue
		}
		changes[annotation] = want
		if want == "" {
			changes[annotation] = nil
		}
	}
	if len(changes) == 0 {
		return nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": changes}})
	_, err := s.client.CoreV1().Nodes().Patch(ctx, s.NodeName, types.MergePatchType, patch, metav1.PatchOptions{FieldManager: Component})
	return err
}

// target is the Service port a held port belongs to.
type target struct {
	namespace, name, portName string
	local                     bool
	sourceRanges              []*net.IPNet
}

// admits reports whether a client may use t: loadBalancerSourceRanges
// apply as kube-proxy applies them, and clients on the node itself
// (loopback) are always admitted.
func (t *target) admits(client net.Addr) bool {
	if len(t.sourceRanges) == 0 {
		return true
	}
	var ip net.IP
	switch a := client.(type) {
	case *net.TCPAddr:
		ip = a.IP
	case *net.UDPAddr:
		ip = a.IP
	}
	if ip == nil {
		return false
	}
	if ip.IsLoopback() {
		return true
	}
	for _, r := range t.sourceRanges {
		if r.Contains(ip) {
			return true
		}
	}
	return false
}

// endpoints lists ready endpoint addresses ("ip:port") for t and proto,
// this node's first when t's traffic policy is Local.
func (s *Speaker) endpoints(t *target, proto corev1.Protocol) []string {
	slices, err := s.slices.EndpointSlices(t.namespace).List(labels.SelectorFromSet(labels.Set{discoveryv1.LabelServiceName: t.name}))
	if err != nil {
		return nil
	}
	var local, all []string
	for _, sl := range slices {
		for _, p := range sl.Ports {
			if p.Port == nil || ptrString(p.Name) != t.portName || (p.Protocol != nil && *p.Protocol != proto) {
				continue
			}
			for _, e := range sl.Endpoints {
				if e.Conditions.Ready != nil && !*e.Conditions.Ready {
					continue
				}
				for _, a := range e.Addresses {
					addr := net.JoinHostPort(a, strconv.Itoa(int(*p.Port)))
					all = append(all, addr)
					if e.NodeName != nil && *e.NodeName == s.NodeName {
						local = append(local, addr)
					}
				}
			}
		}
	}
	if t.local && len(local) > 0 {
		return local
	}
	return all
}

func ptrString(p *string) string {
	if p == nil {
		return ""
	}
	return *p
}

// holder owns one port on every address of the node.
type holder struct {
	port   Port
	target atomicTarget
	tcp    net.Listener
	udp    net.PacketConn
	wg     sync.WaitGroup
}

type atomicTarget struct {
	mu sync.Mutex
	t  *target
}

func (a *atomicTarget) Store(t *target) {
	a.mu.Lock()
	defer a.mu.Unlock()
	c := *t
	a.t = &c
}

func (a *atomicTarget) Load() *target {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.t
}

func (h *holder) close() {
	if h.tcp != nil {
		_ = h.tcp.Close()
	}
	if h.udp != nil {
		_ = h.udp.Close()
	}
	h.wg.Wait()
}

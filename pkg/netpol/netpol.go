// Package netpol enforces NetworkPolicy on a node.
//
// The policy engine is kube-network-policies (sigs.k8s.io, the one kind
// runs): it judges the first packet of each connection in user space, read
// from a netlink queue, against the NetworkPolicies, Pods and Namespaces in
// its informers. The verdict rides on the connection in conntrack, so later
// packets never leave the kernel.
//
// What goes to the queue is kedge's part. The library's own nftables rule
// needs the kernel's nft queue support (CONFIG_NFT_QUEUE), which many
// kernels lack, and it deletes its table when it stops. kedge therefore
// sends the packets with an iptables chain of its own, KEDGE-NETPOL in the
// mangle table's POSTROUTING (after Service DNAT, before SNAT): new
// connections from or to the node's pods that some policy selects, except
// those of the host's root (the kubelet's probes). The chain stays in
// place when kedge stops: a queue nobody reads drops what reaches it, so a
// restart closes new connections of policy-selected pods for a few seconds
// instead of opening them. On kernels with nft queue the library's table
// queues the same packets too; they are judged twice, alike.
package netpol

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	corelisters "k8s.io/client-go/listers/core/v1"
	networkinglisters "k8s.io/client-go/listers/networking/v1"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
	netutils "k8s.io/utils/net"
	"sigs.k8s.io/kube-network-policies/pkg/networkpolicy"

	"github.com/kedge-dev/kedge/pkg/component"
)

const (
	// Chain is kedge's mangle chain that queues packets for judgement.
	Chain utiliptables.Chain = "KEDGE-NETPOL"
	// QueueID is the netlink queue the engine reads.
	QueueID = 100
	// NFTable is the engine's own nftables table (inet family).
	NFTable = "kedge-network-policies"
	// resync is how often the chain and its jump are checked even when
	// nothing changed (another program may flush the table).
	resync = 30 * time.Second
)

// queueStats is where the kernel lists the netlink queues someone reads.
var queueStats = "/proc/net/netfilter/nfnetlink_queue"

// Enforcer is the node's NetworkPolicy component (see the package comment).
type Enforcer struct {
	Config   *rest.Config
	NodeName string
	Log      *slog.Logger

	ipt      map[utiliptables.Protocol]utiliptables.Interface
	pods     corelisters.PodLister
	policies networkinglisters.NetworkPolicyLister
	cancel   context.CancelFunc
	done     chan struct{}
	kick     chan struct{}
	synced   atomic.Bool
	engine   atomic.Value // error: why the engine stopped, when it did
}

func (e *Enforcer) Name() string { return "network-policy" }

func (e *Enforcer) Start(ctx context.Context) error {
	client, err := kubernetes.NewForConfig(e.Config)
	if err != nil {
		return err
	}
	e.ipt = map[utiliptables.Protocol]utiliptables.Interface{}
	for _, proto := range []utiliptables.Protocol{utiliptables.ProtocolIPv4, utiliptables.ProtocolIPv6} {
		ipt := utiliptables.New(proto)
		if err := ipt.Present(); err != nil {
			if proto == utiliptables.ProtocolIPv4 {
				return fmt.Errorf("network policy needs iptables: %w", err)
			}
			e.Log.Info("no IPv6 iptables; IPv6 pods are not policed", "err", err)
			continue
		}
		e.ipt[proto] = ipt
	}
	factory := informers.NewSharedInformerFactory(client, 0)
	pods := factory.Core().V1().Pods()
	policies := factory.Networking().V1().NetworkPolicies()
	namespaces := factory.Core().V1().Namespaces()
	engine, err := networkpolicy.NewController(client, policies, namespaces, pods, nil, nil, nil, nil, networkpolicy.Config{
		QueueID: QueueID, NodeName: e.NodeName, NFTableName: NFTable, NRIdisabled: true,
	})
	if err != nil {
		return fmt.Errorf("network policy engine: %w", err)
	}
	e.pods, e.policies = pods.Lister(), policies.Lister()
	e.kick = make(chan struct{}, 1)
	onChange := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { e.trigger() },
		UpdateFunc: func(any, any) { e.trigger() },
		DeleteFunc: func(any) { e.trigger() },
	}
	for _, inf := range []cache.SharedIndexInformer{pods.Informer(), policies.Informer(), namespaces.Informer()} {
		if _, err := inf.AddEventHandler(onChange); err != nil {
			return err
		}
	}
	ctx, e.cancel = context.WithCancel(ctx)
	e.done = make(chan struct{})
	factory.Start(ctx.Done())
	go func() {
		defer close(e.done)
		defer factory.Shutdown()
		engineDone := make(chan struct{})
		go func() {
			defer close(engineDone)
			err := engine.Run(klog.NewContext(ctx, klog.Background().WithValues("component", "network-policy")))
			if ctx.Err() == nil {
				if err == nil {
					err = errors.New("stopped")
				}
				err = fmt.Errorf("network policy engine (netlink queue %d): %w", QueueID, err)
				e.engine.Store(err)
				component.Fail(ctx, err)
			}
		}()
		e.run(ctx, factory)
		<-engineDone
	}()
	return nil
}

func (e *Enforcer) trigger() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// run keeps the chain in step with the policies and pods until ctx ends.
func (e *Enforcer) run(ctx context.Context, factory informers.SharedInformerFactory) {
	for typ, ok := range factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			e.Log.Error("cache did not sync", "type", typ.String())
			return
		}
	}
	written := map[utiliptables.Protocol]string{}
	force := true
	for {
		if err := e.sync(written, force); err != nil {
			e.Log.Error("cannot write the network policy chain", "err", err)
		} else {
			e.synced.Store(true)
		}
		force = false
		select {
		case <-ctx.Done():
			return
		case <-e.kick:
			// Let a burst of changes (a Deployment rolling) settle.
			time.Sleep(200 * time.Millisecond)
		case <-time.After(resync):
			force = true // another program may have flushed the table
		}
	}
}

// sync writes each family's chain for the policed local pods when it
// differs from what was last written (or force), and makes sure
// POSTROUTING jumps to it first.
func (e *Enforcer) sync(written map[utiliptables.Protocol]string, force bool) error {
	ips, err := e.policedIPs()
	if err != nil {
		return err
	}
	var errs []error
	for proto, ipt := range e.ipt {
		data := chainRules(proto, ips[proto])
		if !force && written[proto] == string(data) {
			continue
		}
		if err := ipt.Restore(utiliptables.TableMangle, data, utiliptables.NoFlushTables, utiliptables.NoRestoreCounters); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", proto, err))
			continue
		}
		if _, err := ipt.EnsureRule(utiliptables.Prepend, utiliptables.TableMangle, utiliptables.ChainPostrouting, jump...); err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", proto, err))
			continue
		}
		if written[proto] != string(data) {
			e.Log.Info("network policy chain written", "family", string(proto), "pods", len(ips[proto]))
		}
		written[proto] = string(data)
	}
	return errors.Join(errs...)
}

// jump is POSTROUTING's rule that sends packets through the chain.
var jump = []string{"-m", "comment", "--comment", "kedge network policy", "-j", string(Chain)}

// policedIPs are the addresses of this node's pods that some
// NetworkPolicy selects, by IP family.
func (e *Enforcer) policedIPs() (map[utiliptables.Protocol][]string, error) {
	policies, err := e.policies.List(labels.Everything())
	if err != nil {
		return nil, err
	}
	out := map[utiliptables.Protocol][]string{}
	seen := map[string]bool{}
	for _, pol := range policies {
		sel, err := metav1.LabelSelectorAsSelector(&pol.Spec.PodSelector)
		if err != nil {
			e.Log.Info("NetworkPolicy with a bad pod selector", "policy", pol.Namespace+"/"+pol.Name, "err", err)
			continue
		}
		pods, err := e.pods.Pods(pol.Namespace).List(sel)
		if err != nil {
			return nil, err
		}
		for _, pod := range pods {
			if pod.Spec.NodeName != e.NodeName || pod.Spec.HostNetwork || podDone(pod) {
				continue
			}
			for _, ip := range pod.Status.PodIPs {
				if seen[ip.IP] {
					continue
				}
				seen[ip.IP] = true
				proto := utiliptables.ProtocolIPv4
				if netutils.IsIPv6String(ip.IP) {
					proto = utiliptables.ProtocolIPv6
				}
				out[proto] = append(out[proto], ip.IP)
			}
		}
	}
	for _, ips := range out {
		slices.Sort(ips)
	}
	return out, nil
}

func podDone(pod *corev1.Pod) bool {
	return pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed
}

// chainRules is the iptables-restore input that replaces the chain for
// one IP family: established flows and the host's root pass, new
// connections from or to a policed pod go to the queue.
func chainRules(proto utiliptables.Protocol, ips []string) []byte {
	var b strings.Builder
	b.WriteString("*mangle\n:" + string(Chain) + " - [0:0]\n")
	rule := func(args ...string) {
		b.WriteString("-A " + string(Chain) + " " + strings.Join(args, " ") + "\n")
	}
	rule("-m", "conntrack", "--ctstate", "RELATED,ESTABLISHED", "-j", "RETURN")
	rule("-m", "owner", "--uid-owner", "0", "-j", "RETURN")
	if proto == utiliptables.ProtocolIPv6 {
		rule("-p", "ipv6-icmp", "-j", "RETURN") // neighbour discovery
	}
	queue := []string{"-j", "NFQUEUE", "--queue-num", strconv.Itoa(QueueID)}
	for _, ip := range ips {
		rule(append([]string{"-s", ip}, queue...)...)
		rule(append([]string{"-d", ip}, queue...)...)
	}
	b.WriteString("COMMIT\n")
	return []byte(b.String())
}

// Ready once the chain is written and the engine reads its queue.
func (e *Enforcer) Ready(context.Context) error {
	if err, ok := e.engine.Load().(error); ok {
		return err
	}
	if !e.synced.Load() {
		return errors.New("waiting for the NetworkPolicy, Pod and Namespace caches")
	}
	if !queueBound(QueueID) {
		return fmt.Errorf("waiting for the policy engine to read netlink queue %d", QueueID)
	}
	return nil
}

// queueBound reports whether a process reads netlink queue id.
func queueBound(id int) bool {
	data, err := os.ReadFile(queueStats)
	if err != nil {
		return false
	}
	for _, line := range strings.Split(string(data), "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == strconv.Itoa(id) {
			return true
		}
	}
	return false
}

// Stop stops judging. The chain stays (see the package comment): until
// the next start, new connections of policed pods are dropped, not let
// through unjudged.
func (e *Enforcer) Stop() error {
	if e.cancel == nil {
		return nil
	}
	e.cancel()
	<-e.done
	return nil
}

// Remove deletes the chain and its jumps: for a node that runs without
// network policy (--disable-network-policy) after it ran with it.
func Remove() {
	for _, proto := range []utiliptables.Protocol{utiliptables.ProtocolIPv4, utiliptables.ProtocolIPv6} {
		ipt := utiliptables.New(proto)
		if ipt.Present() != nil {
			continue
		}
		if exists, _ := ipt.ChainExists(utiliptables.TableMangle, Chain); !exists {
			continue
		}
		_ = ipt.DeleteRule(utiliptables.TableMangle, utiliptables.ChainPostrouting, jump...)
		_ = ipt.FlushChain(utiliptables.TableMangle, Chain)
		_ = ipt.DeleteChain(utiliptables.TableMangle, Chain)
	}
}

var _ component.Component = (*Enforcer)(nil)

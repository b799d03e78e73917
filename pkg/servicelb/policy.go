// Package servicelb gives Services of type LoadBalancer an address without
// a cloud provider and without any image: the nodes that serve a Service
// are listed in its status.loadBalancer.ingress, so kube-proxy (iptables or
// nftables) forwards traffic sent to those node addresses on the Service's
// ports to its endpoints, enforcing loadBalancerSourceRanges and
// externalTrafficPolicy Local itself.
//
// Two halves cooperate:
//   - the Controller, in `kedge server`, decides which Services get which
//     ports (the oldest Service wins a port) and which nodes serve them,
//     writes the status and records Events when a Service stays pending;
//   - the Speaker, on every node, holds each served port on the node so no
//     host process can take it (and reports ports a host process already
//     holds in an annotation on its Node), and relays what kube-proxy does
//     not rewrite, such as connections to 127.0.0.1, to the endpoints.
//
// The Lease kube-system/kedge-servicelb says the Controller runs: Speakers
// hold nothing without it, so `--disable servicelb` frees every port.
package servicelb

import (
	"cmp"
	"fmt"
	"net"
	"slices"
	"strconv"
	"strings"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
)

const (
	// EnableLabel opts nodes in: once any node has it set to "true", only
	// those nodes serve LoadBalancer Services.
	EnableLabel = "svccontroller.kedge.io/enablelb"
	// HeldPortsAnnotation lists, on a Node, the LoadBalancer ports
	// ("6000/TCP,53/UDP") its Speaker holds: a node serves a Service only
	// once it holds all its ports, so no host process's traffic is ever
	// redirected.
	HeldPortsAnnotation = "servicelb.kedge.io/ports-held"
	// PortsInUseAnnotation lists the ports the Speaker could not hold
	// because something else on the node holds them.
	PortsInUseAnnotation = "servicelb.kedge.io/ports-in-use"
	// LeaseName and LeaseNamespace name the Lease the Controller keeps.
	LeaseName      = "kedge-servicelb"
	LeaseNamespace = "kube-system"
	// Component names kedge's servicelb in Events and field managers.
	Component = "kedge-servicelb"
)

// Port is one port a LoadBalancer Service listens on: "6000/TCP".
type Port struct {
	Protocol corev1.Protocol
	Port     int32
}

func (p Port) String() string { return strconv.Itoa(int(p.Port)) + "/" + string(p.Protocol) }

// parsePort is the inverse of Port.String.
func parsePort(s string) (Port, bool) {
	num, proto, ok := strings.Cut(strings.TrimSpace(s), "/")
	n, err := strconv.Atoi(num)
	if !ok || err != nil || n < 1 || n > 65535 {
		return Port{}, false
	}
	return Port{Protocol: corev1.Protocol(strings.ToUpper(proto)), Port: int32(n)}, true
}

// Handled reports whether kedge's servicelb is responsible for svc: a
// LoadBalancer Service that names no other load balancer class.
func Handled(svc *corev1.Service) bool {
	return svc.Spec.Type == corev1.ServiceTypeLoadBalancer && svc.Spec.LoadBalancerClass == nil && svc.DeletionTimestamp == nil
}

// Ports lists the ports svc needs on its serving nodes.
func Ports(svc *corev1.Service) []Port {
	var ports []Port
	for _, p := range svc.Spec.Ports {
		proto := p.Protocol
		if proto == "" {
			proto = corev1.ProtocolTCP
		}
		ports = append(ports, Port{Protocol: proto, Port: p.Port})
	}
	return ports
}

// key names a Service as namespace/name.
func key(svc *corev1.Service) string { return svc.Namespace + "/" + svc.Name }

// Admission is the outcome of sharing node ports among Services: each
// port's owner, and why each refused Service is refused.
type Admission struct {
	Owner   map[Port]*corev1.Service
	Refused map[string]string
}

// Admit shares ports among the handled Services: a port on a node can
// carry one Service, so the oldest Service (then the first by name) wins
// it and a Service that loses any of its ports gets none of them. SCTP is
// refused: the Speaker cannot hold an SCTP port.
func Admit(services []*corev1.Service) Admission {
	sorted := slices.Clone(services)
	slices.SortFunc(sorted, func(a, b *corev1.Service) int {
		if c := a.CreationTimestamp.Compare(b.CreationTimestamp.Time); c != 0 {
			return c
		}
		return cmp.Compare(key(a), key(b))
	})
	adm := Admission{Owner: map[Port]*corev1.Service{}, Refused: map[string]string{}}
	for _, svc := range sorted {
		if !Handled(svc) {
			continue
		}
		var reasons []string
		for _, p := range Ports(svc) {
			if p.Protocol != corev1.ProtocolTCP && p.Protocol != corev1.ProtocolUDP {
				reasons = append(reasons, fmt.Sprintf("port %s: only TCP and UDP are supported", p))
			} else if other, taken := adm.Owner[p]; taken && key(other) != key(svc) {
				reasons = append(reasons, fmt.Sprintf("port %s is already used by LoadBalancer Service %s", p, key(other)))
			}
		}
		if len(reasons) > 0 {
			adm.Refused[key(svc)] = strings.Join(reasons, "; ")
			continue
		}
		for _, p := range Ports(svc) {
			adm.Owner[p] = svc
		}
	}
	return adm
}

// Eligible returns the nodes allowed to serve LoadBalancer Services: every
// Ready node, or, once any node carries EnableLabel=true, only those.
func Eligible(nodes []*corev1.Node) []*corev1.Node {
	labelled := slices.ContainsFunc(nodes, func(n *corev1.Node) bool { return n.Labels[EnableLabel] == "true" })
	var out []*corev1.Node
	for _, n := range nodes {
		if n.DeletionTimestamp != nil || !ready(n) || (labelled && n.Labels[EnableLabel] != "true") {
			continue
		}
		out = append(out, n)
	}
	slices.SortFunc(out, func(a, b *corev1.Node) int { return cmp.Compare(a.Name, b.Name) })
	return out
}

// Selected reports whether node may serve LoadBalancer Services, by the
// same rule as Eligible but without the readiness condition (a Speaker
// holds ports on its node whatever the kubelet reports).
func Selected(node *corev1.Node, nodes []*corev1.Node) bool {
	labelled := slices.ContainsFunc(nodes, func(n *corev1.Node) bool { return n.Labels[EnableLabel] == "true" })
	return !labelled || node.Labels[EnableLabel] == "true"
}

func ready(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PortsInUse reads a node's PortsInUseAnnotation.
func PortsInUse(n *corev1.Node) map[Port]bool { return portsIn(n, PortsInUseAnnotation) }

// PortsHeld reads a node's HeldPortsAnnotation.
func PortsHeld(n *corev1.Node) map[Port]bool { return portsIn(n, HeldPortsAnnotation) }

func portsIn(n *corev1.Node, annotation string) map[Port]bool {
	out := map[Port]bool{}
	for _, s := range strings.Split(n.Annotations[annotation], ",") {
		if p, ok := parsePort(s); ok {
			out[p] = true
		}
	}
	return out
}

// formatPorts is the annotation value for a set of ports, sorted.
func formatPorts(ports map[Port]bool) string {
	var s []string
	for p := range ports {
		s = append(s, p.String())
	}
	slices.Sort(s)
	return strings.Join(s, ",")
}

// Addresses returns the addresses a node serves on: its external IPs if it
// has any, else its internal IPs (one per IP family).
func Addresses(n *corev1.Node) []string {
	for _, t := range []corev1.NodeAddressType{corev1.NodeExternalIP, corev1.NodeInternalIP} {
		var out []string
		seen := map[bool]bool{}
		for _, a := range n.Status.Addresses {
			ip := net.ParseIP(a.Address)
			if a.Type != t || ip == nil || seen[ip.To4() != nil] {
				continue
			}
			seen[ip.To4() != nil] = true
			out = append(out, ip.String())
		}
		if len(out) > 0 {
			return out
		}
	}
	return nil
}

// ofFamilies keeps the addresses of the Service's IP families (all, when
// the Service names none): a single-stack Service on a dual-stack node
// is served on the node's address of its family.
func ofFamilies(ips []string, families []corev1.IPFamily) []string {
	if len(families) == 0 {
		return ips
	}
	var out []string
	for _, ip := range ips {
		family := corev1.IPv4Protocol
		if net.ParseIP(ip).To4() == nil {
			family = corev1.IPv6Protocol
		}
		if slices.Contains(families, family) {
			out = append(out, ip)
		}
	}
	return out
}

// LocalEndpointNodes returns the names of the nodes running a ready
// endpoint of the Service the slices belong to.
func LocalEndpointNodes(slices []*discoveryv1.EndpointSlice) map[string]bool {
	out := map[string]bool{}
	for _, s := range slices {
		for _, e := range s.Endpoints {
			if e.NodeName != nil && (e.Conditions.Ready == nil || *e.Conditions.Ready) {
				out[*e.NodeName] = true
			}
		}
	}
	return out
}

// Plan decides which of the eligible nodes serve svc: those whose Speaker
// holds all its ports and, for externalTrafficPolicy Local, that run one
// of its ready endpoints. It returns the ingress addresses in order, or
// why there are none.
func Plan(svc *corev1.Service, eligible []*corev1.Node, slices []*discoveryv1.EndpointSlice) (ips []string, pending string) {
	local := svc.Spec.ExternalTrafficPolicy == corev1.ServiceExternalTrafficPolicyLocal
	withEndpoints := LocalEndpointNodes(slices)
	var blocked, waiting []string
	for _, n := range eligible {
		inUse, held := PortsInUse(n), PortsHeld(n)
		var taken, notYet []string
		for _, p := range Ports(svc) {
			switch {
			case inUse[p]:
				taken = append(taken, p.String())
			case !held[p]:
				notYet = append(notYet, p.String())
			}
		}
		if len(taken) > 0 {
			blocked = append(blocked, fmt.Sprintf("port %s is in use on node %s by another process", strings.Join(taken, ", "), n.Name))
			continue
		}
		if len(notYet) > 0 {
			waiting = append(waiting, fmt.Sprintf("node %s does not hold port %s yet", n.Name, strings.Join(notYet, ", ")))
			continue
		}
		if local && !withEndpoints[n.Name] {
			continue
		}
		ips = append(ips, ofFamilies(Addresses(n), svc.Spec.IPFamilies)...)
	}
	if len(ips) > 0 {
		return ips, ""
	}
	switch {
	case len(blocked) > 0:
		return nil, strings.Join(blocked, "; ")
	case len(waiting) > 0:
		return nil, strings.Join(waiting, "; ")
	case len(eligible) == 0:
		return nil, "no Ready node may serve LoadBalancer Services (label nodes " + EnableLabel + "=true, or remove that label from all)"
	case local:
		return nil, "externalTrafficPolicy is Local and no serving node runs a ready endpoint"
	}
	return nil, "no serving node has an address"
}

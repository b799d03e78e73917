package servicelb

import (
	"bufio"
	"io"
	"log/slog"
	"net"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	listersv1 "k8s.io/client-go/listers/discovery/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/utils/ptr"
)

func lbService(name string, age time.Duration, ports ...int32) *corev1.Service {
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "default", CreationTimestamp: metav1.NewTime(time.Unix(1e9, 0).Add(-age))},
		Spec:       corev1.ServiceSpec{Type: corev1.ServiceTypeLoadBalancer},
	}
	for _, p := range ports {
		svc.Spec.Ports = append(svc.Spec.Ports, corev1.ServicePort{Name: "p" + strconv.Itoa(int(p)), Port: p, Protocol: corev1.ProtocolTCP})
	}
	return svc
}

func node(name string, ready bool, labels map[string]string, addrs ...corev1.NodeAddress) *corev1.Node {
	status := corev1.ConditionFalse
	if ready {
		status = corev1.ConditionTrue
	}
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels, Annotations: map[string]string{}},
		Status: corev1.NodeStatus{
			Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: status}},
			Addresses:  addrs,
		},
	}
}

func internal(ip string) corev1.NodeAddress {
	return corev1.NodeAddress{Type: corev1.NodeInternalIP, Address: ip}
}

func TestAdmitOldestWinsAPort(t *testing.T) {
	old := lbService("old", time.Hour, 80, 443)
	young := lbService("young", time.Minute, 8080, 443)
	other := lbService("other", 0, 9090)
	classed := lbService("classed", 2*time.Hour, 9090)
	classed.Spec.LoadBalancerClass = ptr.To("example.com/lb")
	sctp := lbService("sctp", 0, 7000)
	sctp.Spec.Ports[0].Protocol = corev1.ProtocolSCTP
	adm := Admit([]*corev1.Service{young, other, sctp, old, classed})
	if got := adm.Refused["default/young"]; !strings.Contains(got, "port 443/TCP is already used by LoadBalancer Service default/old") {
		t.Errorf("young refused for %q", got)
	}
	if adm.Owner[Port{corev1.ProtocolTCP, 8080}] != nil {
		t.Error("a refused Service holds none of its ports")
	}
	if adm.Owner[Port{corev1.ProtocolTCP, 443}] != old || adm.Owner[Port{corev1.ProtocolTCP, 9090}] != other {
		t.Errorf("owners: %v", adm.Owner)
	}
	if !strings.Contains(adm.Refused["default/sctp"], "only TCP and UDP") {
		t.Errorf("sctp: %q", adm.Refused["default/sctp"])
	}
}

func TestEligibleAndLabelOptIn(t *testing.T) {
	a := node("a", true, nil, internal("10.0.0.1"))
	b := node("b", true, nil, internal("10.0.0.2"))
	down := node("c", false, nil, internal("10.0.0.3"))
	names := func(ns []*corev1.Node) (out []string) {
		for _, n := range ns {
			out = append(out, n.Name)
		}
		return out
	}
	if got := names(Eligible([]*corev1.Node{b, down, a})); !slices.Equal(got, []string{"a", "b"}) {
		t.Errorf("eligible %v", got)
	}
	b.Labels = map[string]string{EnableLabel: "true"}
	all := []*corev1.Node{a, b, down}
	if got := names(Eligible(all)); !slices.Equal(got, []string{"b"}) {
		t.Errorf("with a labelled node: %v", got)
	}
	if Selected(a, all) || !Selected(b, all) {
		t.Error("Selected disagrees with the label")
	}
}

func TestAddressesPreferExternal(t *testing.T) {
	n := node("a", true, nil, internal("10.0.0.1"), corev1.NodeAddress{Type: corev1.NodeHostName, Address: "a"},
		corev1.NodeAddress{Type: corev1.NodeExternalIP, Address: "203.0.113.5"}, internal("fd00::1"))
	if got := Addresses(n); !slices.Equal(got, []string{"203.0.113.5"}) {
		t.Errorf("got %v", got)
	}
	n = node("b", true, nil, internal("10.0.0.1"), internal("10.0.0.9"), internal("fd00::1"))
	if got := Addresses(n); !slices.Equal(got, []string{"10.0.0.1", "fd00::1"}) {
		t.Errorf("got %v", got)
	}
}

func TestPlan(t *testing.T) {
	a := node("a", true, nil, internal("10.0.0.1"))
	b := node("b", true, nil, internal("10.0.0.2"))
	svc := lbService("web", 0, 80)
	if ips, why := Plan(svc, []*corev1.Node{a, b}, nil); ips != nil || !strings.Contains(why, "node a does not hold port 80/TCP yet") {
		t.Errorf("before the Speakers hold the port: %v %q", ips, why)
	}
	a.Annotations[HeldPortsAnnotation] = "80/TCP"
	b.Annotations[HeldPortsAnnotation] = "80/TCP,443/TCP"
	if ips, why := Plan(svc, []*corev1.Node{a, b}, nil); !slices.Equal(ips, []string{"10.0.0.1", "10.0.0.2"}) || why != "" {
		t.Errorf("plain: %v %q", ips, why)
	}
	b.Annotations[PortsInUseAnnotation] = "80/TCP,53/UDP"
	if ips, _ := Plan(svc, []*corev1.Node{a, b}, nil); !slices.Equal(ips, []string{"10.0.0.1"}) {
		t.Errorf("port in use on b: %v", ips)
	}
	if ips, why := Plan(svc, []*corev1.Node{b}, nil); ips != nil || !strings.Contains(why, "port 80/TCP is in use on node b by another process") {
		t.Errorf("only b: %v %q", ips, why)
	}
	svc.Spec.ExternalTrafficPolicy = corev1.ServiceExternalTrafficPolicyLocal
	slice := &discoveryv1.EndpointSlice{Endpoints: []discoveryv1.Endpoint{
		{Addresses: []string{"10.42.0.5"}, NodeName: ptr.To("a"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}},
		{Addresses: []string{"10.42.1.5"}, NodeName: ptr.To("c"), Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(false)}},
	}}
	delete(b.Annotations, PortsInUseAnnotation)
	if ips, _ := Plan(svc, []*corev1.Node{a, b}, []*discoveryv1.EndpointSlice{slice}); !slices.Equal(ips, []string{"10.0.0.1"}) {
		t.Errorf("Local: %v", ips)
	}
	if _, why := Plan(svc, []*corev1.Node{b}, []*discoveryv1.EndpointSlice{slice}); !strings.Contains(why, "Local") {
		t.Errorf("Local without endpoints: %q", why)
	}
	if _, why := Plan(svc, nil, nil); !strings.Contains(why, EnableLabel) {
		t.Errorf("no nodes: %q", why)
	}
}

func TestPortsAnnotationRoundTrip(t *testing.T) {
	in := map[Port]bool{{corev1.ProtocolUDP, 53}: true, {corev1.ProtocolTCP, 6000}: true}
	s := formatPorts(in)
	if s != "53/UDP,6000/TCP" {
		t.Errorf("format %q", s)
	}
	n := node("a", true, nil)
	n.Annotations[PortsInUseAnnotation] = s + ", bogus,70000/TCP"
	got := PortsInUse(n)
	if len(got) != 2 || !got[Port{corev1.ProtocolUDP, 53}] || !got[Port{corev1.ProtocolTCP, 6000}] {
		t.Errorf("parse %v", got)
	}
}

// TestRelayTCP holds a port and relays to two endpoints on loopback in
// turn, as the Speaker does for connections to 127.0.0.1.
func TestRelayTCP(t *testing.T) {
	var eps []string
	for _, name := range []string{"one", "two"} {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		defer ln.Close()
		eps = append(eps, ln.Addr().String())
		go func() {
			for {
				c, err := ln.Accept()
				if err != nil {
					return
				}
				line, _ := bufio.NewReader(c).ReadString('\n')
				_, _ = io.WriteString(c, name+":"+line)
				c.Close()
			}
		}()
	}
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	// Both servers listen on 127.0.0.1, so each gets a slice of its own
	// with its own port, as two pods of one Service could.
	for i, ep := range eps {
		host, p, _ := net.SplitHostPort(ep)
		n, _ := strconv.Atoi(p)
		_ = indexer.Add(&discoveryv1.EndpointSlice{
			ObjectMeta: metav1.ObjectMeta{Name: "web-" + strconv.Itoa(i), Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "web"}},
			Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{host}, Conditions: discoveryv1.EndpointConditions{Ready: ptr.To(true)}}},
			Ports:      []discoveryv1.EndpointPort{{Name: ptr.To("http"), Port: ptr.To(int32(n)), Protocol: ptr.To(corev1.ProtocolTCP)}},
		})
	}
	s := &Speaker{NodeName: "a", slices: listersv1.NewEndpointSliceLister(indexer), Log: slog.New(slog.DiscardHandler)}
	free, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := Port{corev1.ProtocolTCP, int32(free.Addr().(*net.TCPAddr).Port)}
	free.Close()
	h, err := listen(p, s)
	if err != nil {
		t.Fatal(err)
	}
	h.target.Store(&target{namespace: "default", name: "web", portName: "http"})
	seen := map[string]bool{}
	for i := range 4 {
		c, err := net.Dial("tcp", "127.0.0.1:"+strconv.Itoa(int(p.Port)))
		if err != nil {
			t.Fatal(err)
		}
		_, _ = io.WriteString(c, "hello "+strconv.Itoa(i)+"\n")
		reply, _ := io.ReadAll(c)
		c.Close()
		who, rest, _ := strings.Cut(string(reply), ":")
		if rest != "hello "+strconv.Itoa(i)+"\n" {
			t.Fatalf("reply %q", reply)
		}
		seen[who] = true
	}
	if !seen["one"] || !seen["two"] {
		t.Errorf("round-robin reached %v", seen)
	}
	if _, err := net.Listen("tcp4", ":"+strconv.Itoa(int(p.Port))); err == nil {
		t.Error("the port is not held")
	}
	h.close()
	ln, err := net.Listen("tcp4", ":"+strconv.Itoa(int(p.Port)))
	if err != nil {
		t.Fatalf("the port is still held after close: %v", err)
	}
	ln.Close()
}

func TestSourceRanges(t *testing.T) {
	_, r, _ := net.ParseCIDR("10.1.0.0/16")
	tg := &target{sourceRanges: []*net.IPNet{r}}
	for addr, want := range map[net.Addr]bool{
		&net.TCPAddr{IP: net.ParseIP("10.1.2.3")}:  true,
		&net.TCPAddr{IP: net.ParseIP("10.2.0.1")}:  false,
		&net.UDPAddr{IP: net.ParseIP("127.0.0.1")}: true,
		&net.UDPAddr{IP: net.ParseIP("192.0.2.1")}: false,
	} {
		if got := tg.admits(addr); got != want {
			t.Errorf("admits(%v) = %v", addr, got)
		}
	}
	if !(&target{}).admits(&net.TCPAddr{IP: net.ParseIP("192.0.2.1")}) {
		t.Error("no ranges admit everyone")
	}
}

// TestRelayUDP relays a datagram to an endpoint and its reply back.
func TestRelayUDP(t *testing.T) {
	echo, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		buf := make([]byte, 1500)
		for {
			n, from, err := echo.ReadFrom(buf)
			if err != nil {
				return
			}
			_, _ = echo.WriteTo(append([]byte("echo:"), buf[:n]...), from)
		}
	}()
	epPort := int32(echo.LocalAddr().(*net.UDPAddr).Port)
	indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	_ = indexer.Add(&discoveryv1.EndpointSlice{
		ObjectMeta: metav1.ObjectMeta{Name: "dns-1", Namespace: "default", Labels: map[string]string{discoveryv1.LabelServiceName: "dns"}},
		Endpoints:  []discoveryv1.Endpoint{{Addresses: []string{"127.0.0.1"}}},
		Ports:      []discoveryv1.EndpointPort{{Name: ptr.To("dns"), Port: ptr.To(epPort), Protocol: ptr.To(corev1.ProtocolUDP)}},
	})
	s := &Speaker{NodeName: "a", slices: listersv1.NewEndpointSliceLister(indexer), Log: slog.New(slog.DiscardHandler)}
	free, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := Port{corev1.ProtocolUDP, int32(free.LocalAddr().(*net.UDPAddr).Port)}
	free.Close()
	h, err := listen(p, s)
	if err != nil {
		t.Fatal(err)
	}
	defer h.close()
	h.target.Store(&target{namespace: "default", name: "dns", portName: "dns"})
	c, err := net.Dial("udp", "127.0.0.1:"+strconv.Itoa(int(p.Port)))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	for _, msg := range []string{"one", "two"} {
		if _, err := c.Write([]byte(msg)); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 100)
		n, err := c.Read(buf)
		if err != nil || string(buf[:n]) != "echo:"+msg {
			t.Fatalf("reply %q, %v", buf[:n], err)
		}
	}
}

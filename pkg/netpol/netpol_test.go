package netpol

import (
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes/fake"
	utiliptables "k8s.io/kubernetes/pkg/util/iptables"
)

func pod(ns, name, node string, lbl map[string]string, ips ...string) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: lbl},
		Spec:       corev1.PodSpec{NodeName: node},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, ip := range ips {
		p.Status.PodIPs = append(p.Status.PodIPs, corev1.PodIP{IP: ip})
	}
	return p
}

func TestPolicedIPs(t *testing.T) {
	done := pod("a", "done", "n1", map[string]string{"app": "web"}, "10.42.0.9")
	done.Status.Phase = corev1.PodSucceeded
	host := pod("a", "host", "n1", map[string]string{"app": "web"}, "192.168.1.5")
	host.Spec.HostNetwork = true
	objs := []*corev1.Pod{
		pod("a", "web1", "n1", map[string]string{"app": "web"}, "10.42.0.2", "fd42::2"),
		pod("a", "web2", "n2", map[string]string{"app": "web"}, "10.42.1.2"), // another node
		pod("a", "db", "n1", map[string]string{"app": "db"}, "10.42.0.3"),    // not selected
		pod("b", "web3", "n1", map[string]string{"app": "web"}, "10.42.0.4"), // selected by {} in b
		done, host,
	}
	policies := []*networkingv1.NetworkPolicy{
		{ObjectMeta: metav1.ObjectMeta{Namespace: "a", Name: "web"}, Spec: networkingv1.NetworkPolicySpec{PodSelector: metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "all"}},
		{ObjectMeta: metav1.ObjectMeta{Namespace: "b", Name: "all-again"}}, // the same pods twice
	}
	factory := informers.NewSharedInformerFactory(fake.NewSimpleClientset(), 0)
	for _, p := range objs {
		factory.Core().V1().Pods().Informer().GetIndexer().Add(p)
	}
	for _, p := range policies {
		factory.Networking().V1().NetworkPolicies().Informer().GetIndexer().Add(p)
	}
	e := &Enforcer{NodeName: "n1", Log: slog.New(slog.DiscardHandler),
		pods: factory.Core().V1().Pods().Lister(), policies: factory.Networking().V1().NetworkPolicies().Lister()}
	got, err := e.policedIPs()
	if err != nil {
		t.Fatal(err)
	}
	want := map[utiliptables.Protocol][]string{
		utiliptables.ProtocolIPv4: {"10.42.0.2", "10.42.0.4"},
		utiliptables.ProtocolIPv6: {"fd42::2"},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("policed: %v, want %v", got, want)
	}
}

func TestChainRules(t *testing.T) {
	v4 := string(chainRules(utiliptables.ProtocolIPv4, []string{"10.42.0.2"}))
	for _, line := range []string{
		"*mangle", ":KEDGE-NETPOL - [0:0]",
		"-A KEDGE-NETPOL -m conntrack --ctstate RELATED,ESTABLISHED -j RETURN",
		"-A KEDGE-NETPOL -m owner --uid-owner 0 -j RETURN",
		"-A KEDGE-NETPOL -s 10.42.0.2 -j NFQUEUE --queue-num 100",
		"-A KEDGE-NETPOL -d 10.42.0.2 -j NFQUEUE --queue-num 100",
		"COMMIT",
	} {
		if !strings.Contains(v4, line+"\n") {
			t.Errorf("IPv4 rules lack %q:\n%s", line, v4)
		}
	}
	if strings.Contains(v4, "ipv6-icmp") {
		t.Errorf("IPv4 rules pass ICMPv6:\n%s", v4)
	}
	// The established flows pass before anything is queued.
	if strings.Index(v4, "ESTABLISHED") > strings.Index(v4, "NFQUEUE") {
		t.Errorf("queueing comes before the established flows pass:\n%s", v4)
	}
	v6 := string(chainRules(utiliptables.ProtocolIPv6, nil))
	if !strings.Contains(v6, "-p ipv6-icmp -j RETURN") || strings.Contains(v6, "NFQUEUE") {
		t.Errorf("IPv6 rules without pods:\n%s", v6)
	}
}

func TestQueueBound(t *testing.T) {
	f := filepath.Join(t.TempDir(), "nfnetlink_queue")
	os.WriteFile(f, []byte("    7  12345     0 2   128     0     0        0  1\n  100  23456     0 2   128     0     0       42  1\n"), 0o644)
	old := queueStats
	queueStats = f
	t.Cleanup(func() { queueStats = old })
	if !queueBound(100) || queueBound(10) || queueBound(1) {
		t.Fatal("queueBound misreads the kernel's queue list")
	}
}

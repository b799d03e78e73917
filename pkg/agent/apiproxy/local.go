package apiproxy

import (
	"encoding/json"
	"path"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/apimachinery/pkg/util/strategicpatch"
)

// While no server answers, the node's own pods still change: after a
// reboot they run again on new addresses. The kubelet's status writes
// are refused (it makes them again once a server answers), but the cache
// takes note of them, so that the endpoints of the node's own pods in the
// cached EndpointSlices follow: kube-proxy and servicelb, watching those,
// keep the node's Services pointed at its pods. When a server answers,
// every list is read again from it and these local notes are gone.

// podStatus merges a status patch of the kubelet into the cached pod
// ns/name and returns the pod as it now is (nil: not cached).
func (c *cache) podStatus(ns, name string, patch []byte) *corev1.Pod {
	c.mu.Lock()
	defer c.mu.Unlock()
	var out *corev1.Pod
	for key, e := range c.entries {
		if e.List == nil || !isCollection(key, "pods") {
			continue
		}
		raw, ok := e.List.Items[ns+"/"+name]
		if !ok {
			continue
		}
		merged, err := strategicpatch.StrategicMergePatch(raw, patch, &corev1.Pod{})
		if err != nil {
			continue
		}
		var pod corev1.Pod
		if json.Unmarshal(merged, &pod) != nil {
			continue
		}
		e.List.Items[ns+"/"+name] = merged
		e.dirty = true
		out = &pod
	}
	return out
}

// isCollection: the list key is one of resource (across namespaces or in one).
func isCollection(key, resource string) bool {
	_, rest := splitScope(key)
	p, _, _ := strings.Cut(strings.TrimPrefix(rest, "list:"), "?")
	return path.Base(p) == resource
}

// podEndpoints points the cached endpoints of pod at its address and
// readiness, and returns the MODIFIED events of the slices it changed,
// by list key.
func (c *cache) podEndpoints(pod *corev1.Pod) map[string][]byte {
	ready := false
	for _, cond := range pod.Status.Conditions {
		if cond.Type == corev1.PodReady {
			ready = cond.Status == corev1.ConditionTrue
		}
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	events := map[string][]byte{}
	for key, e := range c.entries {
		if e.List == nil || !isCollection(key, "endpointslices") {
			continue
		}
		for k, raw := range e.List.Items {
			var s discoveryv1.EndpointSlice
			if json.Unmarshal(raw, &s) != nil || (s.AddressType != discoveryv1.AddressTypeIPv4 && s.AddressType != discoveryv1.AddressTypeIPv6) {
				continue
			}
			changed := false
			for i := range s.Endpoints {
				ep := &s.Endpoints[i]
				ref := ep.TargetRef
				if ref == nil || ref.Kind != "Pod" || ref.Namespace != pod.Namespace || ref.Name != pod.Name {
					continue
				}
				var ips []string
				for _, ip := range pod.Status.PodIPs {
					if strings.Contains(ip.IP, ":") == (s.AddressType == discoveryv1.AddressTypeIPv6) {
						ips = append(ips, ip.IP)
					}
				}
				if len(ips) == 0 {
					continue
				}
				same := len(ep.Addresses) == len(ips) && ep.Conditions.Ready != nil && *ep.Conditions.Ready == ready
				for j := range ips {
					same = same && ep.Addresses[j] == ips[j]
				}
				if same {
					continue
				}
				r := ready
				ep.Addresses, ep.Conditions.Ready, ep.Conditions.Serving = ips, &r, &r
				changed = true
			}
			if !changed {
				continue
			}
			s.TypeMeta.Kind, s.TypeMeta.APIVersion = "EndpointSlice", discoveryv1.SchemeGroupVersion.String()
			data, err := json.Marshal(&s)
			if err != nil {
				continue
			}
			e.List.Items[k] = data
			e.dirty, e.Updated = true, time.Now()
			if e.local == nil {
				e.local = map[string]bool{}
			}
			e.local[k] = true
			ev, _ := json.Marshal(map[string]any{"type": "MODIFIED", "object": json.RawMessage(data)})
			events[key] = append(events[key], append(ev, '\n')...)
		}
	}
	return events
}

// localEvents are MODIFIED events of the items of the list at key that
// changed on the node since the last answer from a server: a watch that
// starts now gets them first, in case its client listed before.
func (c *cache) localEvents(key string) []byte {
	c.mu.Lock()
	defer c.mu.Unlock()
	e := c.entries[key]
	if e == nil || e.List == nil {
		return nil
	}
	var out []byte
	for k := range e.local {
		if raw, ok := e.List.Items[k]; ok {
			ev, _ := json.Marshal(map[string]any{"type": "MODIFIED", "object": raw})
			out = append(append(out, ev...), '\n')
		}
	}
	return out
}

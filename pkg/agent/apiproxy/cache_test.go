package apiproxy

import (
	"encoding/json"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func testCache(t *testing.T, dir string) *cache {
	t.Helper()
	c, err := openCache(filepath.Join(dir, "cache"), filepath.Join(dir, "key"), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func pod(ns, name, rv, phase string) string {
	return `{"apiVersion":"v1","kind":"Pod","metadata":{"namespace":"` + ns + `","name":"` + name + `","resourceVersion":"` + rv + `"},"status":{"phase":"` + phase + `"}}`
}

// A list, then watch events: the cached list is the server's list after
// them, it survives a restart (encrypted on disk), and single objects are
// found in it.
func TestListKeptCurrentByWatchEvents(t *testing.T) {
	dir := t.TempDir()
	c := testCache(t, dir)
	key := "list:/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"
	if err := c.putList(key, []byte(`{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"10"},"items":[`+pod("a", "p1", "5", "Running")+`,`+pod("a", "p2", "6", "Running")+`]}`)); err != nil {
		t.Fatal(err)
	}
	c.event(key, "ADDED", json.RawMessage(pod("b", "p3", "11", "Pending")))
	c.event(key, "MODIFIED", json.RawMessage(pod("a", "p1", "12", "Failed")))
	c.event(key, "DELETED", json.RawMessage(pod("a", "p2", "13", "Running")))
	c.event(key, "BOOKMARK", json.RawMessage(`{"kind":"Pod","apiVersion":"v1","metadata":{"resourceVersion":"20"}}`))
	c.event("list:/api/v1/other?", "ADDED", json.RawMessage(pod("a", "x", "14", "Running")))
	if err := c.flush(); err != nil {
		t.Fatal(err)
	}

	c2 := testCache(t, dir)
	body, at, ok := c2.getList(key)
	if !ok || time.Since(at) > time.Minute {
		t.Fatalf("list not kept: %v %v", ok, at)
	}
	var l struct {
		Kind     string
		Metadata struct{ ResourceVersion string }
		Items    []struct {
			Metadata struct{ Namespace, Name string }
			Status   struct{ Phase string }
		}
	}
	if err := json.Unmarshal(body, &l); err != nil {
		t.Fatal(err)
	}
	if l.Kind != "PodList" || l.Metadata.ResourceVersion != "20" || len(l.Items) != 2 ||
		l.Items[0].Metadata.Name != "p1" || l.Items[0].Status.Phase != "Failed" || l.Items[1].Metadata.Name != "p3" {
		t.Fatalf("list after the events: %s", body)
	}
	if _, _, ok := c2.getList("list:/api/v1/other?"); ok {
		t.Error("a watch with no list before it made a list")
	}
	got, _, ok := c2.getObject("", "/api/v1/namespaces/b/pods/p3", "b", "p3")
	if !ok || !strings.Contains(string(got), `"p3"`) {
		t.Errorf("single pod from the cross-namespace list: %v %s", ok, got)
	}
	if _, _, ok := c2.getObject("", "/api/v1/namespaces/a/pods/p2", "a", "p2"); ok {
		t.Error("a deleted pod is still served")
	}

	files, _ := filepath.Glob(filepath.Join(dir, "cache", "*.cache"))
	for _, f := range files {
		data, _ := os.ReadFile(f)
		if strings.Contains(string(data), "p1") {
			t.Errorf("%s holds plain text", f)
		}
	}
	if err := os.WriteFile(filepath.Join(dir, "key"), make([]byte, 32), 0o600); err != nil {
		t.Fatal(err)
	}
	if c3 := testCache(t, dir); len(c3.entries) != 0 {
		t.Errorf("entries opened with another key: %d", len(c3.entries))
	}
}

// One page of a paginated list is not the whole list; an expired token is
// not served.
func TestPartialListsAndExpiredTokens(t *testing.T) {
	c := testCache(t, t.TempDir())
	if err := c.putList("list:/api/v1/pods?", []byte(`{"kind":"PodList","metadata":{"continue":"abc"},"items":[]}`)); err != nil {
		t.Fatal(err)
	}
	if c.hasList("list:/api/v1/pods?") {
		t.Error("a page was kept as the list")
	}
	c.putObject("token:t", []byte(`{}`), time.Now().Add(-time.Second))
	if _, ok := c.getToken("token:t"); ok {
		t.Error("an expired token was served")
	}
	c.putObject("token:u", []byte(`{"status":{}}`), time.Now().Add(time.Hour))
	if _, ok := c.getToken("token:u"); !ok {
		t.Error("a valid token was not served")
	}
}

// A streaming list (watch with sendInitialEvents) replaces the list at the
// bookmark that ends its initial events; served back offline, the events
// carry kinds and end with that bookmark.
func TestStreamingList(t *testing.T) {
	c := testCache(t, t.TempDir())
	key := "list:/api/v1/services?"
	s := &streamingList{key: key, items: map[string]json.RawMessage{}}
	c.streamEvent(s, "ADDED", json.RawMessage(`{"kind":"Service","apiVersion":"v1","metadata":{"namespace":"default","name":"kubernetes","resourceVersion":"3"}}`))
	if c.hasList(key) {
		t.Fatal("the list was kept before its initial events ended")
	}
	c.streamEvent(s, "BOOKMARK", json.RawMessage(`{"kind":"Service","apiVersion":"v1","metadata":{"resourceVersion":"9","annotations":{"k8s.io/initial-events-end":"true"}}}`))
	c.streamEvent(s, "ADDED", json.RawMessage(`{"kind":"Service","apiVersion":"v1","metadata":{"namespace":"a","name":"web","resourceVersion":"10"}}`))
	body, _, ok := c.getList(key)
	if !ok || !strings.Contains(string(body), `"kind":"ServiceList"`) || !strings.Contains(string(body), `"web"`) || !strings.Contains(string(body), `"resourceVersion":"10"`) {
		t.Fatalf("list: %v %s", ok, body)
	}
	events, _, ok := c.initialEvents(key)
	lines := strings.Split(strings.TrimSpace(string(events)), "\n")
	if !ok || len(lines) != 3 || !strings.Contains(lines[2], `"BOOKMARK"`) || !strings.Contains(lines[2], `"k8s.io/initial-events-end":"true"`) {
		t.Fatalf("initial events: %s", events)
	}
	// Items from a list answer have no kind: the events get one.
	if err := c.putList("list:/api/v1/nodes?", []byte(`{"apiVersion":"v1","kind":"NodeList","metadata":{"resourceVersion":"4"},"items":[{"metadata":{"name":"n1"}}]}`)); err != nil {
		t.Fatal(err)
	}
	events, _, _ = c.initialEvents("list:/api/v1/nodes?")
	if !strings.Contains(string(events), `"kind":"Node"`) || !strings.Contains(string(events), `"apiVersion":"v1"`) {
		t.Errorf("events without kinds: %s", events)
	}
}

// A status the kubelet could not write moves the cached endpoints of its
// pod to the pod's new address; a server's answer replaces that note.
func TestOwnEndpointsFollowPodStatus(t *testing.T) {
	c := testCache(t, t.TempDir())
	pods := "list:/api/v1/pods?fieldSelector=spec.nodeName%3Dn1"
	slices := "list:/apis/discovery.k8s.io/v1/endpointslices?labelSelector=%21service.kubernetes.io%2Fheadless"
	if err := c.putList(pods, []byte(`{"apiVersion":"v1","kind":"PodList","metadata":{"resourceVersion":"5"},"items":[{"metadata":{"namespace":"a","name":"web-1","uid":"u1"},"status":{"podIP":"10.42.0.5","podIPs":[{"ip":"10.42.0.5"}]}}]}`)); err != nil {
		t.Fatal(err)
	}
	if err := c.putList(slices, []byte(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList","metadata":{"resourceVersion":"6"},"items":[{"metadata":{"namespace":"a","name":"web-x"},"addressType":"IPv4","endpoints":[{"addresses":["10.42.0.5"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","namespace":"a","name":"web-1"}},{"addresses":["10.42.1.9"],"conditions":{"ready":true},"targetRef":{"kind":"Pod","namespace":"a","name":"elsewhere"}}]}]}`)); err != nil {
		t.Fatal(err)
	}
	pod := c.podStatus("a", "web-1", []byte(`{"metadata":{"uid":"u1"},"status":{"podIP":"10.42.0.77","podIPs":[{"ip":"10.42.0.77"}],"conditions":[{"type":"Ready","status":"True"}]}}`))
	if pod == nil || pod.Status.PodIP != "10.42.0.77" {
		t.Fatalf("pod after the patch: %+v", pod)
	}
	events := c.podEndpoints(pod)
	ev := string(events[slices])
	if len(events) != 1 || !strings.Contains(ev, `"type":"MODIFIED"`) || !strings.Contains(ev, `"10.42.0.77"`) || !strings.Contains(ev, `"10.42.1.9"`) || !strings.Contains(ev, `"kind":"EndpointSlice"`) {
		t.Fatalf("events: %q", events)
	}
	if again := c.podEndpoints(pod); len(again) != 0 {
		t.Errorf("no change, yet events: %q", again)
	}
	if local := c.localEvents(slices); !strings.Contains(string(local), `"10.42.0.77"`) {
		t.Errorf("a watch starting now misses the change: %q", local)
	}
	if err := c.putList(slices, []byte(`{"apiVersion":"discovery.k8s.io/v1","kind":"EndpointSliceList","metadata":{"resourceVersion":"9"},"items":[]}`)); err != nil {
		t.Fatal(err)
	}
	if local := c.localEvents(slices); len(local) != 0 {
		t.Errorf("local changes outlive the server's answer: %q", local)
	}
}

package etcd

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	"go.etcd.io/etcd/api/v3/etcdserverpb"
	clientv3 "go.etcd.io/etcd/client/v3"

	"github.com/kedge-dev/kedge/pkg/join"
)

// JoinPath is where a joining server asks a member to add it.
const JoinPath = "/v1-kedge/etcd/join"

// JoinRequest names the member to add.
type JoinRequest struct {
	Name    string `json:"name"`
	PeerURL string `json:"peerURL"`
}

// JoinResponse is the cluster the new member starts with.
type JoinResponse struct {
	InitialCluster string `json:"initialCluster"`
}

// Member is one member as `kedge etcd member list` shows it.
type Member struct {
	ID      uint64
	Name    string
	PeerURL string
	Learner bool
	// Healthy: its client URL answered a status request.
	Healthy bool
	Leader  bool
}

// AddLearner adds name at peerURL as a learner (it gets no vote until it
// has caught up, so a member that never starts cannot cost the cluster
// its quorum) and returns the initial cluster it must start with. A
// member of the same name or peer URL (a server that lost its data) is
// removed first.
func AddLearner(ctx context.Context, cli *clientv3.Client, name, peerURL string) (string, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return "", fmt.Errorf("etcd member list: %w", err)
	}
	for _, m := range list.Members {
		if m.Name == name || slices.Contains(m.PeerURLs, peerURL) {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return "", fmt.Errorf("remove the old member %s (%x): %w", m.Name, m.ID, err)
			}
		}
	}
	resp, err := cli.MemberAddAsLearner(ctx, []string{peerURL})
	if err != nil {
		return "", fmt.Errorf("etcd member add %s: %w", name, err)
	}
	var parts []string
	for _, m := range resp.Members {
		n := m.Name
		if m.ID == resp.Member.ID {
			n = name
		}
		if n == "" {
			continue // another learner that has not started yet
		}
		for _, u := range m.PeerURLs {
			parts = append(parts, n+"="+u)
		}
	}
	sort.Strings(parts)
	return strings.Join(parts, ","), nil
}

// Promote makes the learner name a voting member, retrying while it is
// still catching up, until ctx ends.
func Promote(ctx context.Context, cli *clientv3.Client, name string) error {
	for {
		list, err := cli.MemberList(ctx)
		if err == nil {
			var m *etcdserverpb.Member
			for _, x := range list.Members {
				if x.Name == name {
					m = x
				}
			}
			if m != nil && !m.IsLearner {
				return nil
			}
			if m != nil {
				if _, err = cli.MemberPromote(ctx, m.ID); err == nil {
					return nil
				}
			} else {
				err = fmt.Errorf("no member named %s", name)
			}
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("promote %s: %w (last error: %v)", name, ctx.Err(), err)
		case <-time.After(2 * time.Second):
		}
	}
}

// Remove removes the member name; a member that is not there is no error.
func Remove(ctx context.Context, cli *clientv3.Client, name string) (bool, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return false, err
	}
	for _, m := range list.Members {
		if m.Name == name {
			if _, err := cli.MemberRemove(ctx, m.ID); err != nil {
				return false, fmt.Errorf("remove member %s: %w", name, err)
			}
			return true, nil
		}
	}
	return false, nil
}

// Members returns the members with their health, leader first.
func Members(ctx context.Context, cli *clientv3.Client) ([]Member, error) {
	list, err := cli.MemberList(ctx)
	if err != nil {
		return nil, err
	}
	var out []Member
	for _, m := range list.Members {
		mem := Member{ID: m.ID, Name: m.Name, Learner: m.IsLearner}
		if len(m.PeerURLs) > 0 {
			mem.PeerURL = m.PeerURLs[0]
		}
		for _, u := range m.ClientURLs {
			sctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			st, err := cli.Status(sctx, u)
			cancel()
			if err == nil {
				mem.Healthy = true
				mem.Leader = st.Leader == m.ID
				break
			}
		}
		out = append(out, mem)
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Leader && !out[j].Leader })
	return out, nil
}

// JoinHandler serves JoinPath on a member: a server holding the token
// is added as a learner.
type JoinHandler struct {
	Auth   *join.Authenticator
	Client func() (*clientv3.Client, error)
}

func (h *JoinHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		http.Error(w, "use POST", http.StatusMethodNotAllowed)
		return
	}
	if h.Auth.Authenticate(r) != join.AsServer {
		http.Error(w, "invalid server token (an agent token cannot join a server)", http.StatusUnauthorized)
		return
	}
	var req JoinRequest
	if err := json.NewDecoder(io.LimitReader(r.Body, 64<<10)).Decode(&req); err != nil || req.Name == "" || !strings.HasPrefix(req.PeerURL, "https://") {
		http.Error(w, "bad request: want {\"name\": NODE, \"peerURL\": \"https://IP:2380\"}", http.StatusBadRequest)
		return
	}
	cli, err := h.Client()
	if err != nil {
		http.Error(w, "etcd: "+err.Error(), http.StatusServiceUnavailable)
		return
	}
	defer cli.Close()
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	cluster, err := AddLearner(ctx, cli, req.Name, req.PeerURL)
	if err != nil {
		http.Error(w, err.Error(), http.StatusServiceUnavailable)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(JoinResponse{InitialCluster: cluster})
}

// joinRetry bounds how long Join asks again while the cluster is not
// ready for a new member (503: a member that joined moments ago is not
// yet connected or promoted, so etcd calls the cluster unhealthy).
const joinRetry = 2 * time.Minute

// Join asks the server behind remote to add this server as a member.
func Join(ctx context.Context, remote *join.Remote, name, ip string, log *slog.Logger) (string, error) {
	var resp JoinResponse
	deadline := time.Now().Add(joinRetry)
	for wait := time.Second; ; wait = min(2*wait, 10*time.Second) {
		err := remote.Call(ctx, JoinPath, JoinRequest{Name: name, PeerURL: PeerURL(ip)}, &resp)
		if err == nil {
			break
		}
		var se *join.ServerError
		if !errors.As(err, &se) || se.Code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return "", fmt.Errorf("join the etcd cluster of %s: %w (is it a server started with --cluster-init?)", remote.Server, err)
		}
		log.Info("the etcd cluster cannot take a member yet; asking again", "server", remote.Server, "in", wait, "answer", err)
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(wait):
		}
	}
	if resp.InitialCluster == "" {
		return "", errors.New("join: the server returned no cluster")
	}
	return resp.InitialCluster, nil
}

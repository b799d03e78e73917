package controlplane

import (
	"strings"
	"testing"

	"github.com/kedge-dev/kedge/pkg/config"
)

func TestArgsOverride(t *testing.T) {
	a := Args{"anonymous-auth": "false", "v": "0"}
	if err := a.Override([]string{"v=4", "--audit-log-path=/x", "feature-gates=A=true,B=false"}); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(a.List(), " ")
	want := "--anonymous-auth=false --audit-log-path=/x --feature-gates=A=true,B=false --v=4"
	if got != want {
		t.Fatalf("got %s\nwant %s", got, want)
	}
	if err := a.Override([]string{"oops"}); err == nil {
		t.Fatal("malformed arg accepted")
	}
}

func TestCheckUserArgs(t *testing.T) {
	ok := config.Config{
		KubeAPIServerArgs:         []string{"audit-log-maxage=3", "v=2"},
		KubeControllerManagerArgs: []string{"terminated-pod-gc-threshold=100"},
		KubeSchedulerArgs:         []string{"v=1"},
	}
	if err := CheckUserArgs(ok); err != nil {
		t.Fatalf("valid args refused: %v", err)
	}
	bad := config.Config{
		KubeAPIServerArgs:         []string{"no-such-flag=1"},
		KubeControllerManagerArgs: []string{"terminated-pod-gc-threshold=lots"},
		KubeSchedulerArgs:         []string{"novalue"},
	}
	err := CheckUserArgs(bad)
	if err == nil {
		t.Fatal("bad args accepted")
	}
	for _, want := range []string{"--kube-apiserver-arg", "no-such-flag", "--kube-controller-manager-arg", "lots", "--kube-scheduler-arg"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error does not mention %q: %v", want, err)
		}
	}
}

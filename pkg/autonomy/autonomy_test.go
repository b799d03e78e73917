package autonomy

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestTolerations(t *testing.T) {
	five := int64(300)
	in := []corev1.Toleration{
		{Key: corev1.TaintNodeNotReady, Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute, TolerationSeconds: &five},
		{Key: "dedicated", Operator: corev1.TolerationOpEqual, Value: "edge", Effect: corev1.TaintEffectNoSchedule},
	}
	out, changed := Tolerations(in)
	if !changed {
		t.Fatal("no change reported")
	}
	seen := map[string]bool{}
	for _, tol := range out {
		if tol.Key == "dedicated" && tol.Value != "edge" {
			t.Errorf("a user's toleration changed: %+v", tol)
		}
		for _, k := range Taints {
			if tol.Key == k {
				seen[k] = true
				if tol.TolerationSeconds != nil || tol.Effect != corev1.TaintEffectNoExecute {
					t.Errorf("%s still limited: %+v", k, tol)
				}
			}
		}
	}
	if len(seen) != 2 || len(out) != 3 {
		t.Errorf("tolerations: %+v", out)
	}
	if _, again := Tolerations(out); again {
		t.Error("a second pass changes them again")
	}
}

package memlimit

import (
	"testing"
	"testing/fstest"
)

const meminfo = "MemTotal:        1015152 kB\nMemFree:          200000 kB\n"

func TestUsable(t *testing.T) {
	machine := int64(1015152) << 10
	for _, tc := range []struct {
		name string
		fs   fstest.MapFS
		want int64
	}{
		{"no cgroups", fstest.MapFS{"proc/meminfo": {Data: []byte(meminfo)}}, machine},
		{"v2, no limit", fstest.MapFS{
			"proc/meminfo":                           {Data: []byte(meminfo)},
			"proc/self/cgroup":                       {Data: []byte("0::/kedge.service\n")},
			"sys/fs/cgroup/kedge.service/memory.max": {Data: []byte("max\n")},
		}, machine},
		{"v2, a lower limit", fstest.MapFS{
			"proc/meminfo":                           {Data: []byte(meminfo)},
			"proc/self/cgroup":                       {Data: []byte("0::/kedge.service\n")},
			"sys/fs/cgroup/kedge.service/memory.max": {Data: []byte("536870912\n")},
		}, 512 << 20},
		{"v1 (hybrid), a limit above the machine's memory", fstest.MapFS{
			"proc/meminfo":     {Data: []byte(meminfo)},
			"proc/self/cgroup": {Data: []byte("12:cpu,cpuacct:/\n4:memory:/user.slice\n0::/user.slice\n")},
			"sys/fs/cgroup/memory/user.slice/memory.limit_in_bytes": {Data: []byte("9223372036854771712\n")},
		}, machine},
		{"v1, a lower limit", fstest.MapFS{
			"proc/meminfo":     {Data: []byte(meminfo)},
			"proc/self/cgroup": {Data: []byte("4:memory:/kedge\n")},
			"sys/fs/cgroup/memory/kedge/memory.limit_in_bytes": {Data: []byte("268435456\n")},
		}, 256 << 20},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Usable(tc.fs)
			if err != nil || got != tc.want {
				t.Fatalf("Usable = %d, %v; want %d", got, err, tc.want)
			}
		})
	}
	if _, err := Usable(fstest.MapFS{"proc/meminfo": {Data: []byte("MemFree: 1 kB\n")}}); err == nil {
		t.Error("a meminfo without MemTotal was accepted")
	}
}

func TestFor(t *testing.T) {
	for total, want := range map[int64]int64{
		512 << 20: Floor,     // a 512 MB board: the floor
		1 << 30:   256 << 20, // 1 GB: a quarter
		4 << 30:   1 << 30,
	} {
		if got := For(total); got != want {
			t.Errorf("For(%d MiB) = %d MiB, want %d MiB", total>>20, got>>20, want>>20)
		}
	}
}

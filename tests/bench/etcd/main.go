// Command etcd is the upstream etcd server (go.etcd.io/etcd/server/v3's
// etcdmain), built at the version kedge's go.mod carries, for the baseline
// of scripts/bench. It is a module of its own so kedge's go.mod stays as
// it is.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() { etcdmain.Main(os.Args) }

// etcd, as go.etcd.io/etcd/server/v3's own main builds it, for the Rust tests. Its version is the
// one k8s.io/kubernetes v1.37.2 requires (go.mod), so one module builds both binaries.
package main

import (
	"os"

	"go.etcd.io/etcd/server/v3/etcdmain"
)

func main() {
	etcdmain.Main(os.Args)
}

// Command kubeapi-server is headlesslb's test bed for Kubernetes API clients: the real
// k8s.io/apiserver machinery (generic server, registry store, etcd3 storage and watch cache,
// request filters, discovery) serving discovery.k8s.io/v1 EndpointSlices and core/v1
// Namespaces over etcd, on a loopback address only.
//
// It is not kube-apiserver: no admission, no OpenAPI, no controllers, and a subset of
// EndpointSlice validation. Authentication is by bearer token from a CSV file re-read on every
// request, authorization by a file of users and verbs re-read on every request, so a test can
// rotate a token or deny a user while the server runs. TLS uses a CA this program writes to
// --cert-dir/ca.crt (kept across restarts) and a serving certificate issued at each start.
package main

import (
	"context"
	"flag"
	"fmt"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	genericapiserver "k8s.io/apiserver/pkg/server"
	"k8s.io/apiserver/pkg/server/dynamiccertificates"
	"k8s.io/apiserver/pkg/server/healthz"
	"k8s.io/apiserver/pkg/storage/storagebackend/factory"
	"k8s.io/apiserver/pkg/util/compatibility"
	restclient "k8s.io/client-go/rest"
	"k8s.io/klog/v2"
)

type options struct {
	bindAddress        string
	bindPort           int
	portFile           string
	certDir            string
	etcdServers        string
	tokenFile          string
	policyFile         string
	watchCache         bool
	compactionInterval time.Duration
}

func main() {
	var o options
	flag.StringVar(&o.bindAddress, "bind-address", "127.0.0.1", "loopback address to listen on (127.0.0.0/8 or ::1; anything else is refused)")
	flag.IntVar(&o.bindPort, "bind-port", 0, "port to listen on; 0 picks a free one (see --port-file)")
	flag.StringVar(&o.portFile, "port-file", "", "file to write the listening port to once the socket is bound")
	flag.StringVar(&o.certDir, "cert-dir", "", "directory for ca.crt/ca.key (created once, kept) and the serving certificate (issued at each start)")
	flag.StringVar(&o.etcdServers, "etcd-servers", "http://127.0.0.1:2379", "etcd client URL (loopback only)")
	flag.StringVar(&o.tokenFile, "token-file", "", "CSV of token,user,uid[,\"group1,group2\"]; re-read on every request")
	flag.StringVar(&o.policyFile, "policy-file", "", "lines of 'user verb[,verb...]' ('*' for all verbs); re-read on every request")
	flag.BoolVar(&o.watchCache, "watch-cache", true, "serve lists and watches from the watch cache, as kube-apiserver does; false reads etcd directly")
	flag.DurationVar(&o.compactionInterval, "etcd-compaction-interval", 5*time.Minute, "how often this server compacts etcd, as kube-apiserver does (0 disables)")
	klog.InitFlags(nil)
	flag.Parse()
	if err := run(genericapiserver.SetupSignalContext(), o); err != nil {
		fmt.Fprintf(os.Stderr, "kubeapi-server: %v\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.certDir == "" || o.tokenFile == "" || o.policyFile == "" {
		return fmt.Errorf("--cert-dir, --token-file and --policy-file are required")
	}
	ip := net.ParseIP(o.bindAddress)
	if ip == nil || !ip.IsLoopback() {
		return fmt.Errorf("--bind-address %q is not a loopback address", o.bindAddress)
	}
	etcdURL, err := url.Parse(o.etcdServers)
	if err != nil {
		return fmt.Errorf("--etcd-servers: %v", err)
	}
	if host := net.ParseIP(etcdURL.Hostname()); host == nil || !host.IsLoopback() {
		return fmt.Errorf("--etcd-servers %q is not a loopback URL", o.etcdServers)
	}

	listener, err := net.Listen("tcp", net.JoinHostPort(ip.String(), strconv.Itoa(o.bindPort)))
	if err != nil {
		return err
	}
	port := listener.Addr().(*net.TCPAddr).Port
	certs, err := loadOrCreateCerts(o.certDir, ip)
	if err != nil {
		return err
	}

	scheme, codecs := newScheme()
	config := genericapiserver.NewConfig(codecs)
	config.EffectiveVersion = compatibility.DefaultBuildEffectiveVersion()
	config.ExternalAddress = net.JoinHostPort(ip.String(), strconv.Itoa(port))
	serving, err := dynamiccertificates.NewStaticCertKeyContent("serving", certs.servingCert, certs.servingKey)
	if err != nil {
		return err
	}
	config.SecureServing = &genericapiserver.SecureServingInfo{Listener: listener, Cert: serving}
	config.LoopbackClientConfig = &restclient.Config{
		Host:            "https://" + config.ExternalAddress,
		BearerToken:     randomToken(),
		TLSClientConfig: restclient.TLSClientConfig{CAData: certs.caCert},
	}
	config.Authentication.Authenticator = newTokenFileAuthenticator(o.tokenFile)
	config.Authorization.Authorizer = newPolicyFileAuthorizer(o.policyFile)

	storage := newStorageConfig(etcdURL.String(), o.compactionInterval)
	readyCheck, err := factory.CreateReadyCheck(*storage, ctx.Done())
	if err != nil {
		return err
	}
	config.AddReadyzChecks(healthz.NamedCheck("etcd-readiness", func(*http.Request) error { return readyCheck() }))

	server, err := config.Complete(nil).New("kubeapi-server", genericapiserver.NewEmptyDelegate())
	if err != nil {
		return err
	}
	groups, err := newAPIGroups(scheme, codecs, storage, o.watchCache)
	if err != nil {
		return err
	}
	for _, g := range groups {
		if err := installGroup(server, config, scheme, codecs, g); err != nil {
			return err
		}
	}

	if o.portFile != "" {
		if err := writeFileAtomic(o.portFile, []byte(strconv.Itoa(port)+"\n")); err != nil {
			return err
		}
	}
	klog.Infof("serving https://%s (CA %s, watch cache %v)", config.ExternalAddress,
		filepath.Join(o.certDir, "ca.crt"), o.watchCache)
	return server.PrepareRun().RunWithContext(ctx)
}

// installGroup does what GenericAPIServer.InstallAPIGroup does, without the OpenAPI models it
// needs for server-side apply: Debian packages no generated OpenAPI definitions, so managed
// fields are tracked with a type converter deduced from the objects themselves.
func installGroup(s *genericapiserver.GenericAPIServer, c *genericapiserver.Config,
	scheme *runtime.Scheme, codecs serializer.CodecFactory, g apiGroup) error {
	gv := g.version
	version := newAPIGroupVersion(s, c, scheme, codecs, g)
	resources, _, err := version.InstallREST(s.Handler.GoRestfulContainer)
	if err != nil {
		return fmt.Errorf("install %s: %w", gv, err)
	}
	s.RegisterDestroyFunc(func() {
		for _, st := range g.storage {
			st.Destroy()
		}
	})
	for name, st := range g.storage {
		registerReadiness(s, gv.WithResource(name), st)
	}
	if gv.Group == "" {
		installLegacyDiscovery(s, c, codecs, gv, resources)
		return nil
	}
	installGroupDiscovery(s, codecs, gv, resources)
	return nil
}

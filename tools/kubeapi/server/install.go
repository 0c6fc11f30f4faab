package main

import (
	"net/http"
	"time"

	apidiscoveryv2 "k8s.io/api/apidiscovery/v2"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	"k8s.io/apimachinery/pkg/util/managedfields"
	genericapi "k8s.io/apiserver/pkg/endpoints"
	"k8s.io/apiserver/pkg/endpoints/discovery"
	discoveryendpoint "k8s.io/apiserver/pkg/endpoints/discovery/aggregated"
	"k8s.io/apiserver/pkg/registry/rest"
	genericapiserver "k8s.io/apiserver/pkg/server"
)

// newAPIGroupVersion builds what GenericAPIServer.getAPIGroupVersion builds: every field it
// sets from the server's private state is public on the Config or the server. No admission.
func newAPIGroupVersion(s *genericapiserver.GenericAPIServer, c *genericapiserver.Config,
	scheme *runtime.Scheme, codecs serializer.CodecFactory, g apiGroup) *genericapi.APIGroupVersion {
	storage := make(map[string]rest.Storage, len(g.storage))
	served := make(map[string][]string, len(g.storage))
	for name, st := range g.storage {
		storage[name] = st
		if g.version.Group == "" {
			served[name] = []string{g.version.Version}
		} else {
			served[name] = []string{g.version.String()}
		}
	}
	return &genericapi.APIGroupVersion{
		Root:                        g.root(),
		GroupVersion:                g.version,
		Storage:                     storage,
		AllServedVersionsByResource: served,
		ParameterCodec:              runtime.NewParameterCodec(scheme),
		Serializer:                  codecs,
		Creater:                     scheme,
		Convertor:                   scheme,
		ConvertabilityChecker:       scheme,
		UnsafeConvertor:             runtime.UnsafeObjectConvertor(scheme),
		Defaulter:                   scheme,
		Typer:                       scheme,
		Namer:                       runtime.Namer(meta.NewAccessor()),
		EquivalentResourceRegistry:  s.EquivalentResourceRegistry,
		Authorizer:                  s.Authorizer,
		MinRequestTimeout:           time.Duration(c.MinRequestTimeout) * time.Second,
		MaxRequestBodyBytes:         c.MaxRequestBodyBytes,
		// Server-side apply needs a type converter; without OpenAPI models, deduce one.
		TypeConverter: managedfields.NewDeducedTypeConverter(),
	}
}

func registerReadiness(s *genericapiserver.GenericAPIServer, gvr schema.GroupVersionResource, st rest.Storage) {
	if withReadiness, ok := st.(rest.StorageWithReadiness); ok {
		s.StorageReadinessHook.RegisterStorage(metav1.GroupVersionResource{
			Group: gvr.Group, Version: gvr.Version, Resource: gvr.Resource,
		}, withReadiness)
	}
}

// installGroupDiscovery lists a named group under /apis (both the legacy APIGroupList and the
// aggregated discovery document that kubectl and client-go ask for first) and serves
// /apis/<group>.
func installGroupDiscovery(s *genericapiserver.GenericAPIServer, codecs serializer.CodecFactory,
	gv schema.GroupVersion, resources []apidiscoveryv2.APIResourceDiscovery) {
	s.AggregatedDiscoveryGroupManager.AddGroupVersion(gv.Group, apidiscoveryv2.APIVersionDiscovery{
		Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent,
		Version:   gv.Version,
		Resources: resources,
	})
	forDiscovery := metav1.GroupVersionForDiscovery{GroupVersion: gv.String(), Version: gv.Version}
	group := metav1.APIGroup{
		Name:             gv.Group,
		Versions:         []metav1.GroupVersionForDiscovery{forDiscovery},
		PreferredVersion: forDiscovery,
	}
	s.DiscoveryGroupManager.AddGroup(group)
	s.Handler.GoRestfulContainer.Add(discovery.NewAPIGroupHandler(codecs, group).WebService())
}

// installLegacyDiscovery serves /api (the core group's versions), as InstallLegacyAPIGroup does.
func installLegacyDiscovery(s *genericapiserver.GenericAPIServer, c *genericapiserver.Config,
	codecs serializer.CodecFactory, gv schema.GroupVersion, resources []apidiscoveryv2.APIResourceDiscovery) {
	s.AggregatedLegacyDiscoveryGroupManager.AddGroupVersion(gv.Group, apidiscoveryv2.APIVersionDiscovery{
		Freshness: apidiscoveryv2.DiscoveryFreshnessCurrent,
		Version:   gv.Version,
		Resources: resources,
	})
	root := discovery.NewLegacyRootAPIHandler(c.DiscoveryAddresses, codecs, "/api")
	var legacy http.Handler = s.AggregatedLegacyDiscoveryGroupManager
	wrapped := discoveryendpoint.WrapAggregatedDiscoveryToHandler(root, legacy, legacy)
	s.Handler.GoRestfulContainer.Add(wrapped.GenerateWebService("/api", metav1.APIVersions{}))
}

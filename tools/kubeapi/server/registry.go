package main

import (
	"context"
	"net"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	"k8s.io/apimachinery/pkg/api/validation"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/runtime/serializer"
	utilvalidation "k8s.io/apimachinery/pkg/util/validation"
	"k8s.io/apimachinery/pkg/util/validation/field"
	"k8s.io/apiserver/pkg/registry/generic"
	genericregistry "k8s.io/apiserver/pkg/registry/generic/registry"
	"k8s.io/apiserver/pkg/registry/rest"
	serverstorage "k8s.io/apiserver/pkg/server/storage"
	"k8s.io/apiserver/pkg/storage"
	"k8s.io/apiserver/pkg/storage/names"
	"k8s.io/apiserver/pkg/storage/storagebackend"
)

// The v1 types double as the internal (hub) version: with a single served version there is
// nothing to convert, and Debian packages none of kube's internal API types.
var (
	discoveryInternal = schema.GroupVersion{Group: discoveryv1.GroupName, Version: runtime.APIVersionInternal}
	coreInternal      = schema.GroupVersion{Group: "", Version: runtime.APIVersionInternal}
)

func newScheme() (*runtime.Scheme, serializer.CodecFactory) {
	scheme := runtime.NewScheme()
	metav1.AddToGroupVersion(scheme, schema.GroupVersion{Version: "v1"})
	scheme.AddUnversionedTypes(schema.GroupVersion{Version: "v1"},
		&metav1.Status{}, &metav1.APIVersions{}, &metav1.APIGroupList{}, &metav1.APIGroup{},
		&metav1.APIResourceList{})
	must(discoveryv1.AddToScheme(scheme))
	must(corev1.AddToScheme(scheme))
	scheme.AddKnownTypes(discoveryInternal, &discoveryv1.EndpointSlice{}, &discoveryv1.EndpointSliceList{})
	scheme.AddKnownTypes(coreInternal, &corev1.Namespace{}, &corev1.NamespaceList{})
	must(scheme.SetVersionPriority(discoveryv1.SchemeGroupVersion))
	must(scheme.SetVersionPriority(corev1.SchemeGroupVersion))
	return scheme, serializer.NewCodecFactory(scheme)
}

func must(err error) {
	if err != nil {
		panic(err)
	}
}

// newStorageConfig is the etcd3 backend as kube-apiserver configures it: keys under /registry,
// objects stored as protobuf, compaction every interval (through compact_rev_key, so several
// servers on one etcd compact once).
func newStorageConfig(etcdURL string, compactionInterval time.Duration) *storagebackend.Config {
	c := storagebackend.NewDefaultConfig("/registry", nil)
	c.Transport.ServerList = []string{etcdURL}
	c.CompactionInterval = compactionInterval
	return c
}

type apiGroup struct {
	version schema.GroupVersion
	storage map[string]rest.Storage
}

// withShortNames gives a store the short names kubectl resolves (kubectl get ns).
type withShortNames struct {
	*genericregistry.Store
	shortNames []string
}

func (s withShortNames) ShortNames() []string { return s.shortNames }

func (g apiGroup) root() string {
	if g.version.Group == "" {
		return "/api"
	}
	return "/apis"
}

type restOptionsGetter struct {
	config    *storagebackend.Config
	codecs    serializer.CodecFactory
	memory    schema.GroupVersion
	stored    schema.GroupVersion
	decorator generic.StorageDecorator
}

func (g restOptionsGetter) GetRESTOptions(resource schema.GroupResource, _ runtime.Object) (generic.RESTOptions, error) {
	codec, versioner, err := serverstorage.NewStorageCodec(serverstorage.StorageCodecConfig{
		StorageMediaType:  runtime.ContentTypeProtobuf,
		StorageSerializer: g.codecs,
		StorageVersion:    g.stored,
		MemoryVersion:     g.memory,
		Config:            *g.config,
	})
	if err != nil {
		return generic.RESTOptions{}, err
	}
	config := *g.config
	config.Codec = codec
	config.EncodeVersioner = versioner
	return generic.RESTOptions{
		StorageConfig:           config.ForResource(resource),
		Decorator:               g.decorator,
		DeleteCollectionWorkers: 1,
		ResourcePrefix:          resource.Resource,
		CountMetricPollPeriod:   time.Minute,
	}, nil
}

func newAPIGroups(scheme *runtime.Scheme, codecs serializer.CodecFactory,
	config *storagebackend.Config, watchCache bool) ([]apiGroup, error) {
	decorator := generic.UndecoratedStorage
	if watchCache {
		decorator = genericregistry.StorageWithCacher()
	}
	base := strategy{scheme, names.SimpleNameGenerator}
	slices := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &discoveryv1.EndpointSlice{} },
		NewListFunc:               func() runtime.Object { return &discoveryv1.EndpointSliceList{} },
		DefaultQualifiedResource:  discoveryv1.Resource("endpointslices"),
		SingularQualifiedResource: discoveryv1.Resource("endpointslice"),
		CreateStrategy:            sliceStrategy{base},
		UpdateStrategy:            sliceStrategy{base},
		DeleteStrategy:            sliceStrategy{base},
		TableConvertor:            rest.NewDefaultTableConvertor(discoveryv1.Resource("endpointslices")),
	}
	err := slices.CompleteWithOptions(&generic.StoreOptions{
		RESTOptions: restOptionsGetter{config, codecs, discoveryInternal, discoveryv1.SchemeGroupVersion, decorator},
		AttrFunc:    storage.DefaultNamespaceScopedAttr,
	})
	if err != nil {
		return nil, err
	}
	namespaces := &genericregistry.Store{
		NewFunc:                   func() runtime.Object { return &corev1.Namespace{} },
		NewListFunc:               func() runtime.Object { return &corev1.NamespaceList{} },
		DefaultQualifiedResource:  corev1.Resource("namespaces"),
		SingularQualifiedResource: corev1.Resource("namespace"),
		CreateStrategy:            namespaceStrategy{base},
		UpdateStrategy:            namespaceStrategy{base},
		DeleteStrategy:            namespaceStrategy{base},
		TableConvertor:            rest.NewDefaultTableConvertor(corev1.Resource("namespaces")),
	}
	err = namespaces.CompleteWithOptions(&generic.StoreOptions{
		RESTOptions: restOptionsGetter{config, codecs, coreInternal, corev1.SchemeGroupVersion, decorator},
		AttrFunc:    storage.DefaultClusterScopedAttr,
	})
	if err != nil {
		return nil, err
	}
	return []apiGroup{
		{discoveryv1.SchemeGroupVersion, map[string]rest.Storage{"endpointslices": slices}},
		{corev1.SchemeGroupVersion, map[string]rest.Storage{"namespaces": withShortNames{namespaces, []string{"ns"}}}},
	}, nil
}

// strategy is what both stores' strategies share: no create on update, updates without a
// resourceVersion allowed (as for most kube types), no warnings.
type strategy struct {
	runtime.ObjectTyper
	names.NameGenerator
}

func (strategy) AllowCreateOnUpdate() bool      { return false }
func (strategy) AllowUnconditionalUpdate() bool { return true }
func (strategy) Canonicalize(runtime.Object)    {}
func (strategy) WarningsOnCreate(context.Context, runtime.Object) []string {
	return nil
}
func (strategy) WarningsOnUpdate(context.Context, runtime.Object, runtime.Object) []string {
	return nil
}

// sliceStrategy follows kube's EndpointSlice strategy where a client can see it: the v1
// defaults (port name "", protocol TCP), generation 1 on create and bumped when the
// endpoints, ports or address type change, addressType immutable, and the validation
// rules a client most often trips (address syntax per addressType, counts, port ranges).
type sliceStrategy struct{ strategy }

func (sliceStrategy) NamespaceScoped() bool { return true }

func (sliceStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	s := obj.(*discoveryv1.EndpointSlice)
	s.Generation = 1
	defaultPorts(s)
}

func (sliceStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	s, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	defaultPorts(s)
	s.Generation = o.Generation
	if !apiequality.Semantic.DeepEqual(s.Endpoints, o.Endpoints) ||
		!apiequality.Semantic.DeepEqual(s.Ports, o.Ports) || s.AddressType != o.AddressType {
		s.Generation = o.Generation + 1
	}
}

func (sliceStrategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	s := obj.(*discoveryv1.EndpointSlice)
	errs := validation.ValidateObjectMeta(&s.ObjectMeta, true, validation.NameIsDNSSubdomain, field.NewPath("metadata"))
	return append(errs, validateSlice(s)...)
}

func (sliceStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	s, o := obj.(*discoveryv1.EndpointSlice), old.(*discoveryv1.EndpointSlice)
	errs := validation.ValidateObjectMetaUpdate(&s.ObjectMeta, &o.ObjectMeta, field.NewPath("metadata"))
	errs = append(errs, validateSlice(s)...)
	if s.AddressType != o.AddressType {
		errs = append(errs, field.Invalid(field.NewPath("addressType"), s.AddressType, "field is immutable"))
	}
	return errs
}

func defaultPorts(s *discoveryv1.EndpointSlice) {
	for i := range s.Ports {
		if s.Ports[i].Name == nil {
			s.Ports[i].Name = new(string)
		}
		if s.Ports[i].Protocol == nil {
			tcp := corev1.ProtocolTCP
			s.Ports[i].Protocol = &tcp
		}
	}
}

func validateSlice(s *discoveryv1.EndpointSlice) field.ErrorList {
	var errs field.ErrorList
	switch s.AddressType {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6, discoveryv1.AddressTypeFQDN:
	default:
		errs = append(errs, field.NotSupported(field.NewPath("addressType"), s.AddressType,
			[]string{"IPv4", "IPv6", "FQDN"}))
	}
	endpoints := field.NewPath("endpoints")
	if len(s.Endpoints) > 1000 {
		errs = append(errs, field.TooMany(endpoints, len(s.Endpoints), 1000))
	}
	for i, ep := range s.Endpoints {
		addresses := endpoints.Index(i).Child("addresses")
		if len(ep.Addresses) == 0 || len(ep.Addresses) > 100 {
			errs = append(errs, field.Invalid(addresses, len(ep.Addresses), "must contain between 1 and 100 addresses"))
		}
		for j, a := range ep.Addresses {
			if msg := checkAddress(s.AddressType, a); msg != "" {
				errs = append(errs, field.Invalid(addresses.Index(j), a, msg))
			}
		}
		if ep.Hostname != nil {
			for _, msg := range utilvalidation.IsDNS1123Label(*ep.Hostname) {
				errs = append(errs, field.Invalid(endpoints.Index(i).Child("hostname"), *ep.Hostname, msg))
			}
		}
	}
	ports := field.NewPath("ports")
	if len(s.Ports) > 100 {
		errs = append(errs, field.TooMany(ports, len(s.Ports), 100))
	}
	for i, p := range s.Ports {
		if p.Name != nil && *p.Name != "" {
			for _, msg := range utilvalidation.IsValidPortName(*p.Name) {
				errs = append(errs, field.Invalid(ports.Index(i).Child("name"), *p.Name, msg))
			}
		}
		if p.Port != nil {
			for _, msg := range utilvalidation.IsValidPortNum(int(*p.Port)) {
				errs = append(errs, field.Invalid(ports.Index(i).Child("port"), *p.Port, msg))
			}
		}
		if p.Protocol != nil {
			switch *p.Protocol {
			case corev1.ProtocolTCP, corev1.ProtocolUDP, corev1.ProtocolSCTP:
			default:
				errs = append(errs, field.NotSupported(ports.Index(i).Child("protocol"), *p.Protocol,
					[]string{"TCP", "UDP", "SCTP"}))
			}
		}
	}
	return errs
}

func checkAddress(t discoveryv1.AddressType, a string) string {
	ip := net.ParseIP(a)
	switch t {
	case discoveryv1.AddressTypeIPv4:
		if ip == nil || ip.To4() == nil {
			return "must be a valid IPv4 address"
		}
	case discoveryv1.AddressTypeIPv6:
		if ip == nil || ip.To4() != nil {
			return "must be a valid IPv6 address"
		}
	case discoveryv1.AddressTypeFQDN:
		if msgs := utilvalidation.IsDNS1123Subdomain(a); len(msgs) > 0 {
			return strings.Join(msgs, "; ")
		}
	}
	return ""
}

// namespaceStrategy is enough for kubectl and clients that list or create namespaces: names
// are DNS labels and a new namespace is Active. No finalization: deleting one is immediate
// and does not delete its EndpointSlices.
type namespaceStrategy struct{ strategy }

func (namespaceStrategy) NamespaceScoped() bool { return false }
func (namespaceStrategy) PrepareForCreate(_ context.Context, obj runtime.Object) {
	obj.(*corev1.Namespace).Status = corev1.NamespaceStatus{Phase: corev1.NamespaceActive}
}
func (namespaceStrategy) PrepareForUpdate(_ context.Context, obj, old runtime.Object) {
	obj.(*corev1.Namespace).Status = old.(*corev1.Namespace).Status
}
func (namespaceStrategy) Validate(_ context.Context, obj runtime.Object) field.ErrorList {
	ns := obj.(*corev1.Namespace)
	return validation.ValidateObjectMeta(&ns.ObjectMeta, false, validation.NameIsDNSLabel, field.NewPath("metadata"))
}
func (namespaceStrategy) ValidateUpdate(_ context.Context, obj, old runtime.Object) field.ErrorList {
	return validation.ValidateObjectMetaUpdate(&obj.(*corev1.Namespace).ObjectMeta,
		&old.(*corev1.Namespace).ObjectMeta, field.NewPath("metadata"))
}

package main

import (
	"context"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"strings"

	"k8s.io/apiserver/pkg/authentication/authenticator"
	"k8s.io/apiserver/pkg/authentication/request/bearertoken"
	"k8s.io/apiserver/pkg/authentication/user"
	"k8s.io/apiserver/pkg/authorization/authorizer"
)

// tokenFile authenticates a bearer token against a CSV file in kube-apiserver's static token
// format (token,user,uid[,"group1,group2"]). The file is read on every request, so a token
// removed from it is refused (401) by the next request: no restart, no cache.
type tokenFile struct{ path string }

func newTokenFileAuthenticator(path string) authenticator.Request {
	return bearertoken.New(tokenFile{path})
}

func (t tokenFile) AuthenticateToken(_ context.Context, token string) (*authenticator.Response, bool, error) {
	f, err := os.Open(t.path)
	if err != nil {
		return nil, false, err
	}
	defer f.Close()
	r := csv.NewReader(f)
	r.FieldsPerRecord = -1
	r.Comment = '#'
	for {
		rec, err := r.Read()
		if errors.Is(err, io.EOF) {
			return nil, false, nil
		}
		if err != nil {
			return nil, false, fmt.Errorf("%s: %w", t.path, err)
		}
		if len(rec) < 3 || rec[0] != token {
			continue
		}
		groups := []string{user.AllAuthenticated}
		if len(rec) > 3 && rec[3] != "" {
			groups = append(groups, strings.Split(rec[3], ",")...)
		}
		return &authenticator.Response{User: &user.DefaultInfo{Name: rec[1], UID: rec[2], Groups: groups}}, true, nil
	}
}

// policyFile authorizes resource requests by user and verb from a file of lines
// "user verb[,verb...]" ("*" allows every verb), read on every request: a user absent from it
// is refused (403). Members of system:masters (the server's own loopback client) may do
// anything. Any authenticated user may read discovery, /version and the health endpoints, as
// the system:discovery and system:public-info-viewer roles allow on a real cluster.
type policyFile struct{ path string }

func newPolicyFileAuthorizer(path string) authorizer.Authorizer { return policyFile{path} }

var publicPaths = []string{"/api", "/api/*", "/apis", "/apis/*", "/version", "/version/",
	"/healthz", "/readyz", "/livez", "/openapi/*"}

func (p policyFile) Authorize(_ context.Context, a authorizer.Attributes) (authorizer.Decision, string, error) {
	u := a.GetUser()
	if u == nil {
		return authorizer.DecisionNoOpinion, "no user", nil
	}
	if slices.Contains(u.GetGroups(), user.SystemPrivilegedGroup) {
		return authorizer.DecisionAllow, "", nil
	}
	if !a.IsResourceRequest() && a.GetVerb() == "get" && isPublic(a.GetPath()) {
		return authorizer.DecisionAllow, "", nil
	}
	data, err := os.ReadFile(p.path)
	if err != nil {
		return authorizer.DecisionNoOpinion, "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		fields := strings.Fields(line)
		if len(fields) != 2 || fields[0] != u.GetName() {
			continue
		}
		for _, verb := range strings.Split(fields[1], ",") {
			if verb == "*" || verb == a.GetVerb() {
				return authorizer.DecisionAllow, "", nil
			}
		}
	}
	return authorizer.DecisionNoOpinion, fmt.Sprintf("user %q may not %s (policy file)", u.GetName(), a.GetVerb()), nil
}

func isPublic(path string) bool {
	for _, p := range publicPaths {
		if prefix, ok := strings.CutSuffix(p, "*"); ok {
			if strings.HasPrefix(path, prefix) {
				return true
			}
		} else if path == p || strings.HasPrefix(path, p+"/") {
			return true
		}
	}
	return false
}
